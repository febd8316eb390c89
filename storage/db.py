"""Engine and transactions: SQLite (WAL) by default, PostgreSQL by URL, schema by Alembic."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlmodel import Session, create_engine

from storage import rows
from storage.threads import DatabaseThreads, Priority, RolledBack
from storage.unit_of_work import Deferred, Hooks, Topic, UnitOfWork, committed

if TYPE_CHECKING:
    from alembic.config import Config

log = logging.getLogger(__name__)

T = TypeVar("T")

MIGRATIONS = Path(__file__).with_name("migrations")
SCHEMA_HEAD = "0011"  # the newest revision in migrations/versions (a test keeps them equal)


# deadlock detected, serialization failure, a group's lock wait past GROUP_LOCK_TIMEOUT
_LOST_A_LOCK_RACE = {"40P01", "40001", "55P03"}
# How long a group commit on PostgreSQL waits for a row lock before it gives up and its jobs
# run again one at a time (where they wait as long as it takes). Two groups that lock two runs
# in opposite orders deadlock, and the server only looks for deadlocks after its
# deadlock_timeout (1 s by default, settable by superusers alone): the acknowledgements the
# groups hold would wait that long. A group holds its locks for milliseconds (up to 64 jobs or
# 10 ms of them, then its commit), so a wait this long is almost always such a deadlock.
GROUP_LOCK_TIMEOUT_MS = 200


def _broken(conn: Connection) -> bool:
    """Whether the database has ended or aborted the connection's transaction by itself:
    SQLite rolls the whole transaction back on some errors (a full disk); PostgreSQL refuses
    everything but a rollback after an error outside a savepoint, and would answer a COMMIT
    by rolling back."""
    dbapi = conn.connection.dbapi_connection
    if isinstance(dbapi, sqlite3.Connection):
        return not dbapi.in_transaction
    status = getattr(getattr(dbapi, "info", None), "transaction_status", None)  # psycopg
    return getattr(status, "name", None) == "INERROR"


def _rolled_back_to(conn: Connection, savepoint: str) -> bool:
    """Whether what was done since `savepoint` is undone (and the savepoint gone)."""
    try:
        rows.send(conn, f"ROLLBACK TO SAVEPOINT {savepoint}")
        rows.send(conn, f"RELEASE SAVEPOINT {savepoint}")
    except DBAPIError:
        return False
    return True


def _sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the driver error `exc` wraps or was raised from, if any."""
    seen: BaseException | None = exc
    while seen is not None:
        code = getattr(getattr(seen, "orig", None), "sqlstate", None) or getattr(
            seen, "sqlstate", None
        )
        if isinstance(code, str):
            return code
        seen = seen.__cause__ or seen.__context__
    return None


class Database:
    """One engine per process; `transaction()` is the unit of work: one commit or nothing."""

    def __init__(self, url: str) -> None:
        self.url = make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        self.is_postgres = self.url.get_backend_name() == "postgresql"
        if self.is_postgres and self.url.drivername == "postgresql":
            self.url = self.url.set(drivername="postgresql+psycopg")
        if self.is_postgres:
            from storage.models import with_postgresql_conditions

            with_postgresql_conditions()
        self.engine = self._create_engine()
        self.reader = self.engine.execution_options(crewchief_read=True)
        self.hooks: Hooks = {topic: [] for topic in Topic}
        # Each thread commits together the work that is ready at once. SQLite has one writer
        # at a time, so one thread. PostgreSQL gets a few: while one waits for the server,
        # another works. Two of its groups that lock two runs in opposite orders deadlock; a
        # group gives up a lock wait after GROUP_LOCK_TIMEOUT_MS, and its jobs run again one
        # at a time.
        self._group = threading.local()
        self.threads = DatabaseThreads(1 if self.is_sqlite else 3, group=self._grouped)

    async def call(
        self,
        work: Callable[..., T],
        *args: Any,
        priority: Priority = Priority.BACKGROUND,
        **kwargs: Any,
    ) -> T:
        """`work(*args, **kwargs)` on the database threads; the event loop goes on meanwhile.
        Inbound events pass `priority=Priority.INBOUND`: their acknowledgement waits."""
        job = functools.partial(work, *args, **kwargs)
        if priority == Priority.INBOUND:
            job = functools.partial(self._isolated, job)
        result: T = await asyncio.wrap_future(self.threads.submit(priority, job))
        return result

    def _isolated(self, work: Callable[[], T]) -> T:
        """`work` with savepoints for its transactions in a group commit: an inbound event
        fails on bad input often enough that it is rolled back alone, not with its group."""
        self._group.isolated = True
        try:
            return work()
        finally:
            self._group.isolated = False

    def on_commit(self, topic: Topic, hook: Callable[[], None]) -> None:
        """Call `hook` after every commit whose writes armed `topic` (a wake-up, say)."""
        self.hooks[topic].append(hook)

    def _create_engine(self) -> Engine:
        if not self.is_sqlite:
            return create_engine(self.url, pool_pre_ping=True)
        database = self.url.database
        if database and database != ":memory:":
            # a folder that cannot be made is reported by SQLite when it opens the file
            with contextlib.suppress(OSError):
                Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        # `?timeout=5` in the URL: how long a writer waits for another process's lock
        wait = self.url.query.get("timeout", "30")
        timeout = float(wait if isinstance(wait, str) else wait[-1])
        # `?synchronous=normal`: faster commits, but a power cut may lose the last ones. FULL
        # (the default) syncs every commit, so an acknowledged command survives a power cut;
        # group commit makes that one sync for all the work committed together.
        sync = self.url.query.get("synchronous", "full")
        synchronous = (sync if isinstance(sync, str) else sync[-1]).upper()
        if synchronous not in {"FULL", "NORMAL", "EXTRA", "OFF"}:
            raise ArgumentError(f"synchronous={sync} is not full, normal, extra or off")
        url = self.url.difference_update_query(["synchronous"])
        engine = create_engine(url, connect_args={"timeout": timeout, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself (below) instead of pysqlite's lazy BEGIN, so
            # write transactions take the lock up front and never deadlock on upgrade.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Readers take no write lock: they see a snapshot and never wait for a writer.
            reading = conn.get_execution_options().get("crewchief_read")
            rows.send(conn, "BEGIN" if reading else "BEGIN IMMEDIATE")

        return engine

    @contextmanager
    def _grouped(self) -> Iterator[Callable[[], bool]]:
        """One outer transaction for the jobs a database thread runs together: their own
        transactions join it, and their wake-ups fire once it has committed. It gives the
        check of whether one of them failed, after which the outer transaction is rolled
        back, not committed."""
        deferred = Deferred()
        group = self._group
        with self.engine.connect() as conn, conn.begin():
            if self.is_postgres:
                rows.send(conn, f"SET LOCAL lock_timeout = {GROUP_LOCK_TIMEOUT_MS}")
            group.conn, group.deferred, group.failed, group.savepoints = conn, deferred, False, 0
            try:
                yield lambda: bool(group.failed) or _broken(conn)
            finally:
                group.conn = None
        deferred.fire(self.hooks)

    def _joined(self) -> Connection | None:
        return getattr(self._group, "conn", None)

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: it commits on success, rolls back on any exception, and after the
        commit wakes whoever its writes concern (storage.unit_of_work). Inside a group commit
        it joins the group's transaction, and a failure rolls the group back
        (storage.threads runs its jobs again one at a time); an inbound event's is a savepoint
        of it, rolled back alone."""
        conn = self._joined()
        if conn is None:
            with (
                UnitOfWork(self.engine, expire_on_commit=False, hooks=self.hooks) as session,
                session.begin(),
            ):
                yield session
            return
        if self._group.failed:
            raise RolledBack
        with self._joining(conn) as joined:
            yield joined

    @contextmanager
    def _joining(self, conn: Connection) -> Iterator[Session]:
        """A transaction in a group's: a session bound to the group's connection, whose
        transaction it joins without a begin and commit of its own. What it wrote is flushed
        at its end, and what its commit would have woken waits for the group's. An inbound
        event's is a savepoint, crewchief's own, sent as its other statements are: bad input
        rolls it back alone. With one statement in it such a transaction takes 15.5 us, 34
        with SQLAlchemy's begin and commit of the session; with a savepoint 24, against 106
        with SQLAlchemy's nested transaction (best of 5, 3,000 in a group)."""
        isolated = getattr(self._group, "isolated", False)
        savepoint = None
        if isolated:
            self._group.savepoints += 1
            savepoint = f"crewchief_{self._group.savepoints}"
            rows.send(conn, f"SAVEPOINT {savepoint}")
        session = UnitOfWork(
            bind=conn,
            join_transaction_mode="rollback_only",
            expire_on_commit=False,
            hooks=self.hooks,
            deferred=self._group.deferred,
        )
        rows.use_connection(session, conn)
        try:
            yield session
            session.flush()
            if savepoint is not None:
                rows.send(conn, f"RELEASE SAVEPOINT {savepoint}")
        except BaseException as exc:
            # The group's transaction goes with it, unless it was a savepoint rolled back
            # alone. A savepoint that lost a race for a lock (a deadlock PostgreSQL broke, a
            # lock waited for past GROUP_LOCK_TIMEOUT_MS) fails the group too: run again
            # alone, its job will not meet that race.
            undone = (
                savepoint is not None
                and _sqlstate(exc) not in _LOST_A_LOCK_RACE
                and _rolled_back_to(conn, savepoint)
            )
            if not undone or _broken(conn):
                self._group.failed = True
            raise
        else:
            committed(session)
        finally:
            session.close()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A session for reading only (on SQLite it takes no write lock). Inside a group
        commit it reads the group's own writes."""
        conn = self._joined()
        if conn is None:
            with Session(self.reader, expire_on_commit=False) as session:
                yield session
            return
        # A reader never commits; closing it leaves the group's transaction as it was.
        with Session(
            bind=conn, join_transaction_mode="rollback_only", expire_on_commit=False
        ) as session:
            rows.use_connection(session, conn)
            yield session

    def schema_is_current(self) -> bool:
        try:
            with self.engine.connect() as conn:
                found = conn.exec_driver_sql("SELECT version_num FROM alembic_version").all()
        except DBAPIError:
            return False  # no schema yet
        return [row[0] for row in found] == [SCHEMA_HEAD]

    def upgrade(self) -> None:
        """Apply every pending Alembic migration (idempotent: a current schema is left alone,
        without even loading Alembic)."""
        if self.schema_is_current():
            return
        with self.engine.begin() as conn:
            if self.is_postgres:
                # Replicas starting together: one migrates, the others wait, then find it done.
                conn.exec_driver_sql("SELECT pg_advisory_xact_lock(74657201)")
            from alembic import command  # loaded only to migrate (0.3 s)

            cfg = alembic_config(self.url.render_as_string(hide_password=False))
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")

    def dispose(self) -> None:
        self.threads.shutdown()
        self.engine.dispose()


def alembic_config(url: str) -> Config:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg
