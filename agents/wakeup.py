"""Wake-ups: work starts when a commit creates it, not on the next slow poll."""

from __future__ import annotations

import asyncio
from datetime import datetime


class Wakeup:
    """A level-triggered signal: `wake()` from any code path or thread (commits happen in
    worker threads), `wait()` in the loops of one event loop."""

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def wake(self) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            self._event.set()
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._event.set()
        else:
            loop.call_soon_threadsafe(self._event.set)

    async def wait(self, timeout: float, stop: asyncio.Event) -> None:
        """Until woken, `stop` is set or `timeout` passes. Several loops share one wake-up,
        and one of them may clear it before another starts waiting: `stop` is watched as
        well, so a stop is never missed that way."""
        self._loop = asyncio.get_running_loop()
        if stop.is_set():
            return
        waits = {asyncio.ensure_future(self._event.wait()), asyncio.ensure_future(stop.wait())}
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()
        self._event.clear()


def seconds_until(due: datetime | None, now: datetime, *, idle: float = 5.0) -> float:
    """How long a loop may sleep before `due`: at least 20 ms, at most `idle` seconds (the
    poll that notices work created by other processes)."""
    if due is None:
        return idle
    return max(0.02, min(idle, (due - now).total_seconds()))
