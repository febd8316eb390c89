"""Batching for the event loop: items that arrive while the previous batch is being written
are written together in one call, and each caller waits for the write that holds its item."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")

Write = Callable[[list[tuple[K, V]]], Awaitable[None]]


class Batch(Generic[K, V]):
    def __init__(self, write: Write[K, V]) -> None:
        self._write = write
        self._waiting: list[tuple[K, V, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def add(self, key: K, value: V) -> None:
        """Returns once the batch holding this item is written; raises what the write raised."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((key, value, done))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._drain())
        await done

    async def _drain(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting, []
            try:
                await self._write([(key, value) for key, value, _ in batch])
            except Exception as exc:
                for *_, done in batch:
                    if not done.done():
                        done.set_exception(exc)
            else:
                for *_, done in batch:
                    if not done.done():
                        done.set_result(None)
