"""The LLM gateway's interface: one request shape, one result shape, two providers behind it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class LLMRequest:
    """What an agent asks of a model.

    `role`, `topic`, `feedback` and `version` are not sent to a real model (the prompt already
    carries them); the offline provider uses them to write deterministic, useful text.
    """

    agent: str  # agent name from the config, e.g. "writer"
    role: str  # researcher | writer | publisher | any role a config defines
    model: str
    system: str
    prompt: str
    topic: str = ""
    feedback: str | None = None
    version: int = 1
    inputs: dict[str, str] = field(default_factory=dict)  # earlier steps' outputs by step name
    max_output_tokens: int | None = None


@dataclass(frozen=True)
class Completion:
    text: str
    provider: str  # "openai" | "offline"
    model: str
    input_tokens: int
    output_tokens: int
    cost_usd: float
    latency_ms: int


class LLMError(Exception):
    """A model call that failed after the provider's retries (status, timeout, bad answer).

    The message is safe to show to people: it never contains an API key.
    """

    def __init__(self, message: str, *, retryable: bool = True, status: int | None = None):
        super().__init__(message)
        self.retryable = retryable
        self.status = status


class LLMProvider(Protocol):
    name: str

    async def complete(self, request: LLMRequest) -> Completion: ...

    async def aclose(self) -> None: ...
