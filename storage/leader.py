"""Which replica schedules: on PostgreSQL, the one holding an advisory lock on a connection of
its own. The lock lives as long as that connection, so when the holder dies the server drops
it and another replica takes it over. SQLite serves one process; it always leads."""

from __future__ import annotations

import logging
import zlib

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from storage.db import Database

log = logging.getLogger(__name__)

LOCK_CLASS = 74657202  # crewchief's scheduler; the object id names the schema it schedules for


class LeaderLock:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Connection | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None or self.db.is_sqlite

    def try_acquire(self) -> bool:
        """Take the lock if nobody holds it; True while this process holds it (and the
        connection holding it is still alive)."""
        if self.db.is_sqlite:
            return True
        if self._conn is not None:
            if self._alive(self._conn):
                return True
            self._drop()
        conn = self.db.engine.connect()
        try:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            key = zlib.crc32(str(schema).encode()) - 2**31  # a signed 32-bit int
            got = conn.execute(
                text("SELECT pg_try_advisory_lock(:cls, :key)"), {"cls": LOCK_CLASS, "key": key}
            ).scalar_one()
            conn.commit()
        except DBAPIError:
            conn.close()
            return False
        if not got:
            conn.close()
            return False
        self._conn = conn
        log.info("scheduler: this process holds the scheduler lock")
        return True

    def release(self) -> None:
        self._drop()

    @staticmethod
    def _alive(conn: Connection) -> bool:
        try:
            conn.execute(text("SELECT 1"))
            conn.commit()
        except DBAPIError:
            return False
        return True

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.invalidate()  # closing the session ends its advisory locks
            finally:
                conn.close()
