"""Heartbeats: a live worker keeps renewing its short lease, so a dead one's work is taken up
within one lease while a slow LLM call (minutes) keeps its step."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

log = logging.getLogger(__name__)

Renew = Callable[[], Awaitable[bool]]  # extends the lease; False when it is no longer ours


def interval(lease: timedelta) -> float:
    """Renew three times per lease: two renewals may be late before the lease runs out."""
    return max(0.05, lease.total_seconds() / 3)


@contextlib.asynccontextmanager
async def heartbeat(renew: Renew, every: float, what: str) -> AsyncIterator[None]:
    """Await `renew` every `every` seconds while the block runs. A lease found lost stops
    the heartbeat; the caller's late result is dropped when it tries to record it, as it is
    for any lease that ran out."""

    async def beat() -> None:
        while True:
            await asyncio.sleep(every)
            try:
                alive = await renew()
            except Exception:
                log.warning("%s: the lease could not be renewed; trying again", what, exc_info=True)
                continue
            if not alive:
                log.warning("%s: lease lost to another worker", what)
                return

    task = asyncio.create_task(beat(), name=f"heartbeat {what}")
    try:
        yield
    finally:
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise  # the caller was cancelled meanwhile, not only the heartbeat
