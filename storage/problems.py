"""What is wrong with the database, in words an operator can act on, and how the loops that
use it behave while it is unusable (full disk, locked, read-only, server gone)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path

from sqlalchemy.engine import URL
from sqlalchemy.exc import OperationalError

FULL = "database or disk is full"
PAUSE_S = 1.0  # between the tries of a loop whose last one failed


def unusable(exc: BaseException) -> bool:
    """The database refused the work or could not be reached; trying again later can succeed.
    Anything else (a constraint, a bug) is not this."""
    return isinstance(exc, OperationalError)


def describe(exc: BaseException, url: URL) -> str:
    """One line: the database's own first line, and for an SQLite file what it means there."""
    detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    reason = detail[0] if detail else type(exc).__name__
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return reason
    path = Path(url.database).expanduser()
    if path.is_dir():
        return f"{path} is a directory, not a database file"
    if not path.parent.is_dir():
        return f"{reason}: the folder {path.parent} does not exist and cannot be made"
    if reason == "database is locked":
        return f"{reason}: another process holds it (set ?timeout=SECONDS to wait longer)"
    if reason == FULL:
        return f"{reason}: no space is left on the disk that holds {path}"
    return reason


def report(log: logging.Logger, exc: BaseException, url: URL, what: str) -> None:
    """Log that `what` failed: with the database's problem named when it is unusable (a
    warning: nothing is wrong with crewchief), else with the traceback (an error)."""
    if unusable(exc):
        log.warning("%s: the database cannot be used (%s)", what, describe(exc, url))
    else:
        log.error("%s: %s", what, exc, exc_info=exc)


class Outage:
    """A background loop's account of failures: the first failure of a streak is logged with
    its cause (a warning for an unusable database, the traceback for anything else), the
    rest of the streak once each, quietly for the database, and the loop pauses between
    tries instead of spinning; the first success after a streak says so."""

    def __init__(self, log: logging.Logger, what: str, url: URL) -> None:
        self.log = log
        self.what = what
        self.url = url
        self.failures = 0

    async def failed(self, exc: Exception, stop: asyncio.Event) -> None:
        self.failures += 1
        if not unusable(exc) or self.failures == 1:
            report(self.log, exc, self.url, f"{self.what}; trying again every {PAUSE_S:.0f} s")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), PAUSE_S)

    def succeeded(self) -> None:
        if self.failures:
            self.log.warning("%s: working again after %d failed tries", self.what, self.failures)
            self.failures = 0
