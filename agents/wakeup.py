"""Wake-ups: work starts when a commit creates it, not on the next slow poll."""

from __future__ import annotations

import asyncio
import contextlib


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
