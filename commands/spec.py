"""One declarative spec per command: parsing, usage lines, help and access all come from it."""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agents.outcomes import Outcome
from commands.context import Context
from commands.events import COMMAND


@dataclass(frozen=True)
class Arg:
    name: str
    required: bool = True
    rest: bool = False  # takes the rest of the line, verbatim (apostrophes and all)

    @property
    def usage(self) -> str:
        text = f"<{self.name}>"
        return text if self.required else f"[{self.name}]"


@dataclass(frozen=True)
class Reply:
    """A platform-neutral answer; adapters render `templates/<platform>/<template>.j2`."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)
    private: bool = True  # ephemeral in Slack/Discord; an aside in the shell
    quiet: bool = False  # informational: chat platforms may drop it where it would be noise
    run_id: int | None = None  # the run it is about: a private notice shows in its thread


Handler = Callable[[Context, dict[str, str]], Reply | Outcome]
Visible = Callable[[Context], bool]


def _everyone(_: Context) -> bool:
    return True


@dataclass(frozen=True)
class CommandSpec:
    name: str
    summary: str
    handler: Handler
    args: tuple[Arg, ...] = ()
    aliases: tuple[str, ...] = ()
    visible: Visible = _everyone  # who may run it, and so who sees it in help

    @property
    def usage(self) -> str:
        return " ".join([COMMAND, self.name, *(a.usage for a in self.args)])


class UsageError(Exception):
    """Bad input: the message is the whole answer (usage line, suggestion)."""

    def __init__(self, message: str, usage: str | None = None, suggestion: str | None = None):
        super().__init__(message)
        self.usage = usage
        self.suggestion = suggestion


def did_you_mean(word: str, choices: list[str]) -> str | None:
    found = difflib.get_close_matches(word.lower(), choices, n=1, cutoff=0.5)
    return found[0] if found else None


def tokenize_args(text: str, args: tuple[Arg, ...]) -> dict[str, str]:
    """Split `text` into the spec's arguments.

    A word may be quoted ("two words" or 'two words'); a `rest` argument takes everything
    left verbatim, unwrapping one pair of quotes around all of it.
    """
    values: dict[str, str] = {}
    remaining = text.strip()
    for arg in args:
        if not remaining:
            break
        if arg.rest:
            if len(remaining) >= 2 and remaining[0] == remaining[-1] and remaining[0] in "\"'":
                remaining = remaining[1:-1]
            values[arg.name] = remaining
            remaining = ""
            break
        if remaining[0] in "\"'":
            end = remaining.find(remaining[0], 1)
            if end == -1:
                raise UsageError(f"unclosed quote in {arg.usage}")
            values[arg.name] = remaining[1:end]
            remaining = remaining[end + 1 :].lstrip()
        else:
            word, _, remaining = remaining.partition(" ")
            values[arg.name] = word
            remaining = remaining.lstrip()
    if remaining:
        raise UsageError(f"unexpected extra text: {remaining[:40]!r}")
    return values


class Registry:
    def __init__(self, specs: list[CommandSpec]) -> None:
        self.specs = specs
        self._by_name = {n: s for s in specs for n in (s.name, *s.aliases)}

    def names(self) -> list[str]:
        return [s.name for s in self.specs]

    def parse(self, text: str) -> tuple[CommandSpec, dict[str, str]]:
        """`run blog-post Why heat pumps…` -> (spec, {"workflow": …, "text": …})."""
        text = text.strip()
        if not text:
            return self._by_name["help"], {}
        name, _, rest = text.partition(" ")
        spec = self._by_name.get(name.lower())
        if spec is None:
            suggestion = did_you_mean(name, list(self._by_name))
            raise UsageError(
                f"unknown command {name[:40]!r}",
                usage=f"{COMMAND} <command> …  ({COMMAND} help lists them)",
                suggestion=f"{COMMAND} {suggestion}" if suggestion else None,
            )
        try:
            values = tokenize_args(rest, spec.args)
        except UsageError as exc:
            raise UsageError(str(exc), usage=spec.usage) from None
        missing = [a for a in spec.args if a.required and not values.get(a.name, "").strip()]
        if missing:
            raise UsageError(f"{spec.name} needs {missing[0].usage}", usage=spec.usage)
        return spec, values
