"""Fixtures: a real database per test (a SQLite file, and PostgreSQL when it is configured)
and a test bot driven through the shell platform, as a person would type."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import sqlite3
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console
from sqlmodel import Session, SQLModel, select

from agents.config import CrewConfig, builtin_defaults, merge
from agents.llm import LLMProvider
from bot.app import App, build_app
from bot.platforms.shell import ShellPlatform, ShellSession
from bot.settings import Settings
from storage import models, outbox
from storage.db import SCHEMA_HEAD, Database

POSTGRES_URL = os.environ.get("CREWCHIEF_TEST_POSTGRES_URL")

backends = ["sqlite"] + (["postgres"] if POSTGRES_URL else [])


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file that Alembic brought to the newest schema, once per test process."""
    path = tmp_path_factory.mktemp("template") / "crewchief.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()
    with contextlib.closing(sqlite3.connect(path)) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # every page in the file itself
    return path


class PostgresSchema:
    """A PostgreSQL schema of this test process, migrated once by Alembic and emptied for each
    test: no connection of an earlier test survives, no row is left, every id sequence
    restarts."""

    def __init__(self, url: str) -> None:
        self.admin = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        self.name = f"t_{uuid.uuid4().hex[:12]}"
        sep = "&" if "?" in url else "?"
        # the application name marks this schema's connections, subprocesses' ones too
        self.url = f"{url}{sep}options=-csearch_path%3D{self.name}&application_name={self.name}"
        self.tables = [t.name for t in reversed(SQLModel.metadata.sorted_tables)]
        self.sequences: list[str] = []
        self._create()

    def _create(self) -> None:
        with self.admin.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{self.name}"'))
        db = Database(self.url)
        db.upgrade()
        db.dispose()
        with self.admin.connect() as conn:
            self.sequences = list(
                conn.execute(
                    sa.text("SELECT sequencename FROM pg_sequences WHERE schemaname = :schema"),
                    {"schema": self.name},
                ).scalars()
            )

    def _end_other_connections(self, conn: sa.Connection) -> None:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": self.name},
        )

    def emptied(self) -> str:
        """The schema's URL, after emptying it (or making it again if a test changed it)."""
        with self.admin.begin() as conn:
            self._end_other_connections(conn)
            conn.execute(sa.text("SET LOCAL lock_timeout = '30s'"))
            version = conn.execute(
                sa.text(f'SELECT version_num FROM "{self.name}".alembic_version')
            ).scalars()
            if list(version) == [SCHEMA_HEAD]:
                for table in self.tables:
                    conn.execute(sa.text(f'DELETE FROM "{self.name}"."{table}"'))
                for sequence in self.sequences:
                    conn.execute(sa.text(f'ALTER SEQUENCE "{self.name}"."{sequence}" RESTART'))
                return self.url
        self.drop()
        self._create()
        return self.url

    def drop(self) -> None:
        with self.admin.begin() as conn:
            self._end_other_connections(conn)
            conn.execute(sa.text(f'DROP SCHEMA "{self.name}" CASCADE'))


@pytest.fixture(scope="session")
def _postgres_schema() -> Iterator[PostgresSchema]:
    assert POSTGRES_URL
    schema = PostgresSchema(POSTGRES_URL)
    yield schema
    schema.drop()
    schema.admin.dispose()


@pytest.fixture(params=backends)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the newest schema, with no rows: a SQLite file copied from one that
    Alembic migrated once per test process, or that process's PostgreSQL schema, emptied.
    A test marked `empty_database` gets a database without any schema: a new SQLite file, or
    a PostgreSQL schema of its own."""
    empty = request.node.get_closest_marker("empty_database") is not None
    if request.param == "sqlite":
        path = tmp_path / "crewchief.db"
        if not empty:
            shutil.copyfile(request.getfixturevalue("_sqlite_template"), path)
        yield f"sqlite:///{path}"
        return
    assert POSTGRES_URL
    if not empty:
        yield request.getfixturevalue("_postgres_schema").emptied()
        return
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in POSTGRES_URL else "?"
    yield f"{POSTGRES_URL}{sep}options=-csearch_path%3D{schema}"
    with admin.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


class FakeClock:
    """Time that tests move by hand, for timeouts and leases."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kwargs: float) -> None:
        self.now += timedelta(**kwargs)


def blog_post(approvers: list[str], **approval: Any) -> dict[str, Any]:
    """crewchief.yml's blog-post workflow with the draft's approval policy spelled out."""
    return {
        "workflows": {
            "blog-post": {
                "steps": [
                    {"name": "research", "agent": "researcher"},
                    {
                        "name": "draft",
                        "agent": "writer",
                        "approval": {"approvers": approvers, **approval},
                    },
                    {"name": "publish", "agent": "publisher", "publish": {"to": "thread"}},
                ]
            }
        }
    }


def seed_failed_runs(
    db: Any,
    *,
    platform: str,
    channel: str,
    requester: str,
    at: datetime,
    count: int = 3,
    workflow: str = "blog-post",
) -> None:
    """`count` runs of `workflow` that failed just before `at`: enough to trip failure-rate."""
    with db.transaction() as session:
        for i in range(count):
            session.add(
                models.Run(
                    workflow=workflow,
                    text=f"run {i}",
                    requester=requester,
                    platform=platform,
                    channel=channel,
                    status="failed",
                    finished_at=at - timedelta(minutes=1),
                )
            )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def queue_posts(db: Database, run_id: int, *keys: str) -> None:
    """A post of run `run_id` in the outbox for each key, in one transaction, in order."""
    with db.transaction() as s:
        for key in keys:
            queue_post(s, run_id, key)


def queue_post(session: Session, run_id: int, key: str) -> None:
    """A post of run `run_id` in the outbox, in `session`'s transaction."""
    outbox.post(
        session,
        key=key,
        kind="notes",
        platform="shell",
        channel="c",
        run_id=run_id,
        template="notice",
        context={"text": key},
    )


def post_recorded(
    db: Database, message_id: int, ts: str | None, *, leased_to: str | None = None
) -> None:
    """Message `message_id`'s post as recorded with platform id `ts`, or, with None, as a
    sender leaves it between the platform taking it and the recording: its message without an
    id, the post pending (leased to `leased_to` for five minutes, when given: that sender is
    still at it)."""
    with db.transaction() as s:
        message = s.get(models.Message, message_id)
        assert message is not None
        post = s.exec(
            select(models.Outbox).where(
                models.Outbox.message_id == message_id,
                models.Outbox.kind == models.OutboxKind.POST,
            )
        ).one()
        message.platform_id = ts
        if ts is None:
            post.status, post.sent_at = models.OutboxStatus.PENDING, None
            post.lease_owner = leased_to
            post.lease_until = models.utcnow() + timedelta(minutes=5) if leased_to else None
        else:
            post.status, post.sent_at = models.OutboxStatus.SENT, models.utcnow()
            post.lease_owner = post.lease_until = None
        s.add_all([message, post])


def all_rows(db: Database, table: type[Any]) -> list[Any]:
    """Every row of `table` in the order of its primary key (for an integer id, the order they
    were written in): PostgreSQL returns an unordered SELECT in the order its pages hold."""
    with db.read() as s:
        return list(s.exec(select(table).order_by(*table.__table__.primary_key.columns)).all())


def make_config(overrides: dict[str, Any] | None = None) -> CrewConfig:
    return CrewConfig.model_validate(merge(builtin_defaults(), overrides or {}))


@dataclass
class Bot:
    """The whole bot, driven through the shell platform (errbot's testbot, for crewchief)."""

    app: App
    session: ShellSession
    output: io.StringIO
    clock: FakeClock | None = None
    _typed_at: int = field(default=0)

    async def type(self, *lines: str) -> str:
        """Type lines as the current user; returns what was printed meanwhile."""
        self._typed_at = start = self.output.tell()
        for line in lines:
            await self.session.execute(line)
        return self._since(start)

    async def wait(self) -> str:
        """Until no work is pending; returns what was printed since the last `type` began
        (the bot works while a line is handled, so its messages may land before it returns)."""
        await self.app.wait_idle(timeout=30)
        return self._since(self._typed_at)

    def _since(self, start: int) -> str:
        return self.output.getvalue()[start:]

    @property
    def transcript(self) -> str:
        return self.output.getvalue()

    def act_as(self, name: str) -> None:
        self.session.user = name

    # -- what is stored ------------------------------------------------------------------

    def run(self, run_id: int = 1) -> models.Run:
        with self.app.db.read() as s:
            run = s.get(models.Run, run_id)
            assert run is not None
            return run

    def steps(self, run_id: int = 1) -> list[models.Step]:
        with self.app.db.read() as s:
            return list(
                s.exec(
                    select(models.Step)
                    .where(models.Step.run_id == run_id)
                    .order_by(models.Step.position)  # type: ignore[arg-type]
                ).all()
            )

    def messages(self, kind: str | None = None, run_id: int | None = None) -> list[models.Message]:
        with self.app.db.read() as s:
            q = select(models.Message).order_by(models.Message.id)  # type: ignore[arg-type]
            if kind:
                q = q.where(models.Message.kind == kind)
            if run_id:
                q = q.where(models.Message.run_id == run_id)
            return list(s.exec(q).all())

    def latest_draft(self, run_id: int = 1) -> models.Message:
        drafts = self.messages("draft", run_id)
        assert drafts, "no draft posted"
        return drafts[-1]

    def rows(self, table: type[Any]) -> list[Any]:
        return all_rows(self.app.db, table)

    def audit(self, action: str) -> list[models.AuditEntry]:
        return [a for a in self.rows(models.AuditEntry) if a.action == action]


@pytest.fixture
def bot_factory(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Build bots on the test's database; several calls share it (a restart)."""
    built: list[App] = []

    def factory(
        config: dict[str, Any] | None = None,
        *,
        approvers: list[str] | None = None,
        user: str = "alice",
        clock: FakeClock | None = None,
        llm: LLMProvider | None = None,
        env: dict[str, Any] | None = None,
    ) -> Bot:
        settings = Settings(
            _env_file=None,  # type: ignore[call-arg]
            crewchief_database_url=db_url,
            crewchief_config=tmp_path / "absent.yml",
            crewchief_llm="offline",
            **(env or {}),
        )
        app = build_app(
            settings,
            config=make_config(config),
            default_approvers=["shell:editor"] if approvers is None else approvers,
            clock=clock or models.utcnow,
            llm=llm,
        )
        output = io.StringIO()
        console = Console(file=output, width=200, highlight=False, color_system=None)
        platform = ShellPlatform(console, chart_dir=tmp_path / "charts")
        app.add_platform(platform)
        built.append(app)
        return Bot(app, ShellSession(app, platform, user=user), output, clock)

    return factory


@pytest.fixture
async def bot(bot_factory) -> AsyncIterator[Bot]:  # type: ignore[no-untyped-def]
    b: Bot = bot_factory()
    async with b.app.running():
        yield b
    await b.app.aclose()
