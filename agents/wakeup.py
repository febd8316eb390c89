"""Wake-ups: work starts when a commit creates it, not on the next slow poll."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import datetime


class Wakeup:
    """A level-triggered signal: `wake()` from any code path, `wait()` in one loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        self._event.set()

    async def wait(self, timeout: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._event.wait(), timeout)
        self._event.clear()


def seconds_until(due: datetime | None, now: datetime, *, idle: float = 5.0) -> float:
    """How long a loop may sleep before `due`: at least 20 ms, at most `idle` seconds (the
    poll that notices work created by other processes)."""
    if due is None:
        return idle
    return max(0.02, min(idle, (due - now).total_seconds()))
