"""Message rendering: one Jinja2 environment per platform, escaping every value it prints.

Template text is ours and trusted; every `{{ value }}` is user or LLM text until proven
otherwise, so `finalize` escapes it for the platform. Values a template builds on purpose
(mentions of approvers) come from filters that return Markup, which passes through.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from types import CodeType
from typing import Any

from jinja2 import BytecodeCache, Environment, PackageLoader, StrictUndefined
from jinja2.bccache import Bucket
from markupsafe import Markup

from bot.escaping import ESCAPERS

Mention = Callable[[str], str]


_NAME = re.compile(r"[a-z0-9_+\-]+")


def _emoji_for(prefer_names: bool) -> Callable[[Any], str]:
    """Show one of a decision's configured emoji: Slack people react by name (`:x:`), a
    terminal shows the character (`❌`)."""

    def emoji(choices: Any) -> str:
        options = [str(c) for c in (choices if isinstance(choices, list) else [choices])]
        names = [o for o in options if _NAME.fullmatch(o)]
        chars = [o for o in options if not _NAME.fullmatch(o)]
        if prefer_names and names:
            return f":{names[0]}:"
        return chars[0] if chars else f":{names[0]}:"

    return emoji


def _duration(seconds: Any) -> str:
    s = int(seconds or 0)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m {s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 86400}d {s % 86400 // 3600}h"


class _CompiledTemplates(BytecodeCache):
    """Each template compiled once per process and shared by every Renderer: they configure
    their environments alike, so a template's code differs only with its source, which the
    bucket's checksum covers."""

    def __init__(self) -> None:
        self._code: dict[str, tuple[str, CodeType]] = {}

    def load_bytecode(self, bucket: Bucket) -> None:
        found = self._code.get(bucket.key)
        if found is not None and found[0] == bucket.checksum:
            bucket.code = found[1]

    def dump_bytecode(self, bucket: Bucket) -> None:
        if bucket.code is not None:
            self._code[bucket.key] = (bucket.checksum, bucket.code)


_COMPILED = _CompiledTemplates()


class Renderer:
    def __init__(self, platform: str, mention: Mention, *, emoji_names: bool = False) -> None:
        escape = ESCAPERS[platform]

        def finalize(value: Any) -> Any:
            if value is None:
                return ""
            if isinstance(value, Markup):
                return str(value)
            return escape(str(value))

        self.env = Environment(
            loader=PackageLoader("bot", f"templates/{platform}"),
            finalize=finalize,
            undefined=StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            autoescape=False,
            bytecode_cache=_COMPILED,
            auto_reload=False,  # the package's templates do not change while it runs
        )
        self._templates: frozenset[str] | None = None
        self.env.filters["duration"] = _duration
        self.env.filters["emoji"] = _emoji_for(emoji_names)
        self.env.filters["mention"] = lambda who: Markup(mention(str(who)))
        self.env.filters["mentions"] = lambda ids: Markup(", ".join(mention(str(w)) for w in ids))

    def has(self, template: str) -> bool:
        if self._templates is None:
            self._templates = frozenset(self.env.list_templates())
        return f"{template}.j2" in self._templates

    def render(self, template: str, context: dict[str, Any]) -> str:
        return self.env.get_template(f"{template}.j2").render(context).strip()
