"""The short references people type: `3` is run 3, `#12` is the bot's message 12."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"[0-9]{1,12}")  # ASCII digits only: "²" or "١" are not refs


def message_ref(text: str) -> int | None:
    """`#12` or `12` -> 12; anything else -> None."""
    text = text.strip().removeprefix("#")
    return int(text) if _NUMBER.fullmatch(text) else None


def run_ref(text: str) -> tuple[str, int] | None:
    """`3` -> ("run", 3); `#12` -> ("message", 12); anything else -> None."""
    text = text.strip()
    if text.startswith("#"):
        number = message_ref(text)
        return ("message", number) if number is not None else None
    return ("run", int(text)) if _NUMBER.fullmatch(text) else None
