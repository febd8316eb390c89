"""Publishing an approved draft, once per run: to the thread, a folder or a webhook.

What is published is the approved draft itself, word for word: people approved that text, so
no model may change it afterwards. The publisher agent's output travels alongside as notes.

The publish step performs the effect (a file, an HTTP POST) before it records success, so a
run turns green only once the content has really gone out. A retry repeats the effect under
the same idempotency key `<run>:<step>:<version>`: the same file path and content, the same
`Idempotency-Key` header, so a careful receiver applies it once.
"""

from __future__ import annotations

import asyncio
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from sqlmodel import Session

from agents import cards
from agents.config import PublishTarget
from storage.audit import audit
from storage.models import MessageKind, Run, Step

if TYPE_CHECKING:
    import httpx


class PublishError(Exception):
    """The effect did not happen; the message is safe to show (no URL credentials)."""


@dataclass(frozen=True)
class Publication:
    key: str
    content: str  # the approved draft
    notes: str  # the publisher agent's output
    version: int


class _Retryable(Exception):
    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Publisher:
    """Performs publishing effects. One HTTP client for the process, made when the first
    webhook is published to (httpx and tenacity load only then) and closed with it."""

    def __init__(self, *, timeout: float = 15.0, attempts: int = 4, max_wait: float = 30.0):
        self.timeout = timeout
        self.attempts = attempts
        self.max_wait = max_wait
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(timeout=self.timeout)
        return self._client

    async def perform(self, target: PublishTarget, run: dict[str, Any], pub: Publication) -> None:
        if target.to == "folder" and target.path:
            path = folder_path(target.path, run["id"], run["topic"])
            try:
                await asyncio.to_thread(write_atomically, path, pub.content)
            except OSError as exc:
                raise PublishError(f"could not write {path}: {exc.strerror}") from None
        elif target.to == "webhook" and target.url:
            await self._post(target.url, run, pub)

    async def _post(self, url: str, run: dict[str, Any], pub: Publication) -> None:
        from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt

        payload = {**run, "content": pub.content, "notes": pub.notes, "version": pub.version}
        where = display_host(url)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.attempts),
            wait=_wait(self.max_wait),
            retry=retry_if_exception(lambda e: isinstance(e, _Retryable)),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    await self._post_once(url, where, pub.key, payload)
        except _Retryable as exc:
            raise PublishError(f"{exc} (gave up after {self.attempts} tries)") from None

    async def _post_once(self, url: str, where: str, key: str, payload: dict[str, Any]) -> None:
        import httpx

        try:
            response = await self.client.post(
                url, json=payload, headers={"Idempotency-Key": key, "User-Agent": "crewchief"}
            )
        except httpx.HTTPError as exc:
            raise _Retryable(f"webhook at {where} unreachable ({type(exc).__name__})") from None
        if response.status_code == 429 or response.status_code >= 500:
            after = response.headers.get("Retry-After", "")
            raise _Retryable(
                f"webhook at {where} answered {response.status_code}",
                retry_after=float(after) if after.isdigit() else None,
            )
        if response.status_code >= 400:
            raise PublishError(f"webhook at {where} refused it: {response.status_code}")

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()


def _wait(max_wait: float) -> Any:
    from tenacity import wait_exponential_jitter

    backoff = wait_exponential_jitter(multiplier=0.5, max=max_wait, jitter=0.5)

    def wait(state: Any) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, _Retryable) and exc.retry_after is not None:
            return min(exc.retry_after, max_wait)
        return float(backoff(state))

    return wait


def record(
    session: Session,
    run: Run,
    step: Step,
    target: PublishTarget,
    pub: Publication,
    *,
    offline: bool,
) -> None:
    """The published card and the audit entry, in the step's completing transaction."""
    assert run.id is not None
    location = "this thread"
    if target.to == "folder" and target.path:
        location = str(folder_path(target.path, run.id, run.text))
    elif target.to == "webhook" and target.url:
        location = display_host(target.url)
    cards.post_in_thread(
        session,
        run,
        key=f"run:{run.id}:published",
        kind=MessageKind.PUBLISHED,
        step=step,
        context={"to": target.to, "location": location, "content": pub.content, "offline": offline},
    )
    audit(session, "crewchief", "run.published", run.id, to=target.to, key=pub.key)


def folder_path(folder: str, run_id: int, topic: str) -> Path:
    return Path(folder).expanduser() / f"{run_id:05d}-{slugify(topic)}.md"


def display_host(url: str) -> str:
    """Host and port only: a webhook URL's credentials, path and query often hold secrets."""
    parts = urlsplit(url)
    host = parts.hostname or "webhook"
    return f"{host}:{parts.port}" if parts.port else host


class RedactedURLs(logging.Filter):
    """httpx logs every request's whole URL at INFO, and a webhook URL's user, password, path
    and query are often its credentials (Slack's own incoming webhooks keep the secret in the
    path). On the logger it guards, each URL argument becomes its scheme and host only."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_redacted(arg) for arg in record.args)
        return True


def _redacted(value: Any) -> Any:
    text = str(value) if type(value).__name__ == "URL" or isinstance(value, str) else ""
    if not re.match(r"https?://", text, re.IGNORECASE):
        return value
    return f"{urlsplit(text).scheme}://{display_host(text)}/…"


def redact_http_logs(logger: str = "httpx") -> None:
    """Install `RedactedURLs` on the HTTP client's logger, once."""
    target = logging.getLogger(logger)
    if not any(isinstance(f, RedactedURLs) for f in target.filters):
        target.addFilter(RedactedURLs())


def slugify(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "run"


def write_atomically(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)
