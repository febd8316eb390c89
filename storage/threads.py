"""The database's threads: work runs off the event loop, the most urgent first.

An acknowledgement waits for its transaction, so an inbound event goes ahead of the
background work (claims, results, deliveries) already queued; among equals, first come, first
served. SQLite gets one thread (one writer at a time: no lock contention, no busy waiting),
PostgreSQL one per pooled connection.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    INBOUND = 0  # someone is waiting for the answer (a command's ack)
    BACKGROUND = 1


_STOP = object()


class DatabaseThreads:
    def __init__(self, threads: int, name: str = "crewchief-db") -> None:
        self._queue: queue.PriorityQueue[tuple[int, int, Any, Future[Any]]] = queue.PriorityQueue()
        self._order = itertools.count()
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True)
            for i in range(threads)
        ]
        self._started = False
        self._lock = threading.Lock()

    def submit(self, priority: Priority, work: Callable[[], Any]) -> Future[Any]:
        with self._lock:
            if not self._started:
                for thread in self._threads:
                    thread.start()
                self._started = True
        future: Future[Any] = Future()
        self._queue.put((priority, next(self._order), work, future))
        return future

    def _serve(self) -> None:
        while True:
            _, _, work, future = self._queue.get()
            if work is _STOP:
                return
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(work())
            except BaseException as exc:
                future.set_exception(exc)

    def shutdown(self) -> None:
        """Finish what is queued, then stop the threads."""
        with self._lock:
            if not self._started:
                return
            self._started = False
        for _ in self._threads:
            self._queue.put((Priority.BACKGROUND + 1, next(self._order), _STOP, Future()))
        for thread in self._threads:
            thread.join()
        self._threads = [
            threading.Thread(target=self._serve, name=t.name, daemon=True) for t in self._threads
        ]
