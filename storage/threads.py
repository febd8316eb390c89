"""The database's threads: work runs off the event loop, the most urgent first.

An acknowledgement waits for its transaction, so an inbound event goes ahead of the
background work (claims, results, deliveries) already queued; among equals, first come, first
served. SQLite gets one thread (one writer at a time: no lock contention, no busy waiting),
PostgreSQL a few (storage.db).

Group commit: given a `group`, a thread runs the jobs waiting in the queue one after the other
inside one outer transaction (each job's own transactions join it) and commits them together,
then answers each job. One commit, and with `synchronous=FULL` one fsync, for all the work
that was ready at once; nobody hears of a result before it is committed. A transaction that
fails rolls the whole group back (a savepoint per job would cost two statements each, for a
failure that is rare), as does a database that ended or aborted the transaction by itself, or
a lock a group waited for too long on PostgreSQL (two groups deadlocked, storage.db): its jobs
then run again one at a time, each committing alone, so the others' work stands and the
failing one gets its own answer. (An inbound event, which bad input fails, keeps savepoints:
storage.db.) A group stops growing after `GROUP_SIZE` jobs or `GROUP_TIME` seconds, so the
urgent work that arrives meanwhile still waits only briefly. After an inbound event's job it
takes only another inbound event's (they wait at the head of the queue): a burst of commands
or reactions commits together, and no acknowledgement waits for the background work queued
behind it.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from contextlib import AbstractContextManager
from enum import IntEnum
from typing import Any


class Priority(IntEnum):
    INBOUND = 0  # someone is waiting for the answer (a command's ack)
    BACKGROUND = 1


# one outer transaction for many jobs; it gives a check of whether a job's transaction failed
Group = Callable[[], AbstractContextManager[Callable[[], bool]]]
Job = tuple[int, int, Any, "Future[Any]"]

GROUP_SIZE = 64
GROUP_TIME = 0.01

_STOP = object()


class DatabaseThreads:
    def __init__(
        self, threads: int, name: str = "crewchief-db", *, group: Group | None = None
    ) -> None:
        self._queue: queue.PriorityQueue[Job] = queue.PriorityQueue()
        self._order = itertools.count()
        self._group = group
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
            job = self._queue.get()
            if job[2] is _STOP:
                return
            if self._group is None:
                _answer(job[3], *_run(job))
            else:
                self._run_group(job, self._group)

    def _run_group(self, first: Job, group: Group) -> None:
        done: list[tuple[Job, bool, Any]] = []  # each job that ran, and what came of it
        try:
            with group() as failed:
                job: Job | None = first
                started = time.monotonic()
                while job is not None:
                    if job[3].set_running_or_notify_cancel():
                        done.append((job, *_call(job)))
                        if failed():
                            raise RolledBack
                    # after an inbound event's, only another's: someone waits for the commit
                    urgent = job[0] == Priority.INBOUND
                    job = self._next_in_group(len(done), started, urgent=urgent)
        except RolledBack:
            for job, _, _ in done:  # outside the group now: each in its own transactions
                _answer(job[3], *_call(job))
            return
        except BaseException as exc:  # the commit failed: nothing of the group was stored
            for job, ok, value in done:
                _answer(job[3], False, exc if ok else value)
            if not done:
                _answer(first[3], False, exc)
            return
        for job, ok, value in done:
            _answer(job[3], ok, value)

    def _next_in_group(self, size: int, started: float, *, urgent: bool) -> Job | None:
        if size >= GROUP_SIZE or time.monotonic() - started >= GROUP_TIME:
            return None
        try:
            job = self._queue.get_nowait()
        except queue.Empty:
            return None
        if job[2] is _STOP or (urgent and job[0] != Priority.INBOUND):
            self._queue.put(job)  # after this group, in its place
            return None
        return job

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


def _run(job: Job) -> tuple[bool, Any]:
    """(True, result) or (False, the exception); (False, None) when it was cancelled."""
    if not job[3].set_running_or_notify_cancel():
        return False, None
    return _call(job)


def _call(job: Job) -> tuple[bool, Any]:
    try:
        return True, job[2]()
    except BaseException as exc:
        return False, exc


class RolledBack(BaseException):
    """A job's transaction failed and took the group's transaction with it. Raised too by a
    transaction begun after that in the same group: its work would not be the group's."""


def _answer(future: Future[Any], ok: bool, value: Any) -> None:
    # cancelled before it ran (even while being answered): nobody waits for it
    with contextlib.suppress(InvalidStateError):
        if ok:
            future.set_result(value)
        else:
            future.set_exception(value)
