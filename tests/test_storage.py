"""Storage on real databases: migrations, claiming under concurrency, outbox order."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import bindparam, event, inspect
from sqlalchemy import select as sa_select
from sqlalchemy import text as sa_text
from sqlalchemy.exc import DBAPIError, IntegrityError, StatementError
from sqlmodel import Session, SQLModel, select

from storage import models, outbox, rows
from storage.db import Database
from storage.models import Outbox, OutboxStatus, Run, Step, StepStatus
from storage.queries import (
    Sent,
    claim_outbox,
    claim_step,
    lock_run,
    mark_sent,
    pending_work,
    steps_of,
)
from storage.threads import Priority
from tests.conftest import POSTGRES_URL, queue_post, queue_posts


def fresh(db_url: str) -> Database:
    db = Database(db_url)
    db.upgrade()
    return db


@pytest.mark.empty_database
def test_migrations_match_the_models_and_are_idempotent(db_url: str) -> None:
    db = fresh(db_url)
    db.upgrade()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), SQLModel.metadata)
    assert diff == []
    assert db.schema_is_current()
    db.dispose()


def test_the_schema_head_start_up_checks_is_the_newest_migration() -> None:
    """Start-up skips Alembic when the database is at SCHEMA_HEAD: a new migration must move
    it, or start-up would never apply that migration."""
    from alembic.script import ScriptDirectory

    from storage.db import SCHEMA_HEAD, alembic_config

    assert ScriptDirectory.from_config(alembic_config("sqlite://")).get_heads() == [SCHEMA_HEAD]


@pytest.mark.empty_database
def test_a_database_one_migration_behind_is_brought_up_to_date(db_url: str) -> None:
    from alembic import command

    from storage.db import alembic_config

    db = Database(db_url)
    with db.engine.begin() as conn:
        cfg = alembic_config(db.url.render_as_string(hide_password=False))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0001")
    assert not db.schema_is_current()
    db.upgrade()
    assert db.schema_is_current()
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    db.dispose()


def add_runs(db: Database, n: int) -> None:
    now = datetime.now(UTC)
    with db.transaction() as s:
        for i in range(n):
            run = Run(
                workflow="w", text=f"t{i}", requester="shell:a", platform="shell", channel="c"
            )
            s.add(run)
            s.flush()
            assert run.id is not None
            s.add(
                Step(
                    run_id=run.id,
                    position=0,
                    name="s",
                    agent="a",
                    status=StepStatus.PENDING,
                    available_at=now,
                )
            )


def add_event(db: Database, key: str, *, fail: bool = False) -> str:
    """An inbound event's id in a transaction of its own, which raises after it when `fail`."""
    with db.transaction() as session:
        rows.add(session, models.InboundEvent, key=key)
        if fail:
            raise ValueError(key)
    return key


def test_concurrent_workers_claim_each_step_exactly_once(db_url: str) -> None:
    db = fresh(db_url)
    add_runs(db, 40)
    claimed: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        start.wait()
        while True:
            with db.transaction() as s:
                step = claim_step(
                    s,
                    owner=name,
                    now=datetime.now(UTC),
                    lease=timedelta(minutes=1),
                    skip_locked=db.is_postgres,
                )
                if step is None:
                    return
                with lock:
                    claimed.append(step.id or 0)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(claimed) == sorted(set(claimed)) and len(claimed) == 40
    db.dispose()


def test_an_expired_lease_is_claimed_again_and_a_live_one_is_not(db_url: str) -> None:
    db = fresh(db_url)
    add_runs(db, 1)
    now = datetime.now(UTC)
    lease = timedelta(seconds=30)
    with db.transaction() as s:
        assert claim_step(s, owner="a", now=now, lease=lease, skip_locked=False) is not None
    with db.transaction() as s:
        assert (
            claim_step(
                s, owner="b", now=now + timedelta(seconds=10), lease=lease, skip_locked=False
            )
            is None
        )
    with db.transaction() as s:
        step = claim_step(
            s, owner="b", now=now + timedelta(seconds=31), lease=lease, skip_locked=False
        )
        # taken over from a worker that stopped renewing: the same attempt, run again
        assert step is not None and step.lease_owner == "b" and step.attempts == 1
    db.dispose()


@pytest.mark.empty_database
def test_steps_are_claimed_oldest_run_first_runnable_or_taken_over(db_url: str) -> None:
    db = fresh(db_url)
    add_runs(db, 4)
    now = datetime.now(UTC)
    lease = timedelta(seconds=30)
    # (status, runnable since, lease until) of each run's step
    steps = {
        1: (StepStatus.RUNNING, now - timedelta(seconds=10), now - timedelta(seconds=1)),
        2: (StepStatus.PENDING, now - timedelta(seconds=1), None),
        3: (StepStatus.PENDING, now - timedelta(seconds=20), None),
        4: (StepStatus.RUNNING, now - timedelta(seconds=30), now + timedelta(seconds=9)),
    }
    with db.transaction() as s:
        for step in s.exec(select(Step)).all():
            step.status, step.available_at, step.lease_until = steps[step.run_id]
            step.lease_owner = "gone" if step.status == StepStatus.RUNNING else None
            s.add(step)

    def claim() -> int | None:
        with db.transaction() as s:
            step = claim_step(s, owner="a", now=now, lease=lease, skip_locked=db.is_postgres)
            return None if step is None else step.run_id

    # run 1's worker stopped renewing: its step is taken over first; run 2's step became
    # runnable after run 3's (a draft approved a moment ago) and still goes before it, the
    # older run first; run 4's lease is still held
    assert [claim() for _ in range(4)] == [1, 2, 3, None]
    db.dispose()


def test_outbox_delivers_one_thread_in_order_and_waits_behind_a_delayed_row(db_url: str) -> None:
    db = fresh(db_url)
    add_runs(db, 1)
    with db.transaction() as s:
        for i in range(3):
            outbox.post(
                s,
                key=f"m{i}",
                kind="notes",
                platform="shell",
                channel="c",
                run_id=1,
                template="notice",
                context={"text": str(i)},
            )
        outbox.notice(
            s,
            platform="shell",
            channel="c",
            recipient="shell:x",
            template="notice",
            context={"text": "aside"},
        )
    now = datetime.now(UTC)
    lease = timedelta(minutes=1)

    def claim(at: datetime) -> Outbox | None:
        with db.transaction() as s:
            rows = claim_outbox(s, owner="o", now=at, lease=lease, skip_locked=db.is_postgres)
            return rows[0] if rows else None

    # the notice belongs to no run and goes first
    other = claim(now)
    assert other is not None and other.kind == "notice"
    first = claim(now)
    assert first is not None and first.key == "post:m0"
    # m0 is out for delivery: m1 must wait for it
    assert claim(now) is None
    # the platform said "retry in 5 s" for m0: m1 still waits behind it
    with db.transaction() as s:
        row = s.get(Outbox, first.id)
        assert row is not None
        row.lease_owner, row.lease_until = None, None
        row.available_at = now + timedelta(seconds=5)
        s.add(row)
    assert claim(now + timedelta(seconds=1)) is None
    again = claim(now + timedelta(seconds=6))
    assert again is not None and again.key == "post:m0"
    with db.transaction() as s:
        row = s.get(Outbox, again.id)
        assert row is not None
        row.status = OutboxStatus.SENT
        s.add(row)
    nxt = claim(now + timedelta(seconds=6))
    assert nxt is not None and nxt.key == "post:m1"
    with db.read() as s:
        assert pending_work(s) == 4  # the step, the notice and m1 (out for delivery), m2
    db.dispose()


def test_outbox_delivers_older_runs_first_and_what_belongs_to_no_run_before_them(
    db_url: str,
) -> None:
    db = fresh(db_url)
    add_runs(db, 3)

    # newer runs' posts queued first, then the oldest run's post (its draft approved just
    # now), then a private answer that belongs to no run
    queue_posts(db, 3, "run3-notes")
    queue_posts(db, 2, "run2-notes")
    queue_posts(db, 1, "run1-published")
    with db.transaction() as s:
        outbox.notice(
            s,
            platform="shell",
            channel="c",
            recipient="shell:x",
            template="notice",
            context={"text": "not yours to approve"},
        )
    with db.transaction() as s:
        rows = claim_outbox(
            s,
            owner="o",
            now=datetime.now(UTC),
            lease=timedelta(minutes=1),
            skip_locked=db.is_postgres,
            limit=4,
        )
    assert [row.key for row in rows] == [
        rows[0].key,
        "post:run1-published",
        "post:run2-notes",
        "post:run3-notes",
    ]
    assert rows[0].kind == "notice"
    db.dispose()


def claimed_and_rows_read(db: Database, table_name: str, claim: Callable[[Session], Any]) -> Any:
    """What `claim(session)` returned, and the most rows of `table_name` that one scan of the
    claim's statement read: the statement is run under EXPLAIN ANALYZE just before it is sent,
    in its transaction, as it is planned then (PostgreSQL)."""
    plans: list[dict[str, Any]] = []

    def explain(_c: Any, cursor: Any, sql: str, parameters: Any, *_: Any) -> None:
        if f"FROM {table_name}" in sql and not plans:
            with cursor.connection.cursor() as explaining:
                explaining.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", parameters)
                plans.append(explaining.fetchone()[0][0]["Plan"])

    event.listen(db.engine, "before_cursor_execute", explain)
    try:
        with db.transaction() as s:
            claimed = claim(s)
    finally:
        event.remove(db.engine, "before_cursor_execute", explain)

    def scans(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
        if node.get("Relation Name") == table_name:
            yield node
        for child in node.get("Plans", []):
            yield from scans(child)

    assert plans, f"no statement read {table_name}"
    read = [n["Actual Rows"] + n.get("Rows Removed by Filter", 0) for n in scans(plans[0])]
    assert read, json.dumps(plans[0])[:3000]
    return claimed, max(read)


# A backlog on tables autovacuum has not analyzed yet: PostgreSQL's estimates say few rows
# wait, and a claim must still stop at what it takes rather than read (and sort) every waiting
# row, on every claim.
def on_postgres_only(test: Callable[..., None]) -> Callable[..., None]:
    """A test of what PostgreSQL alone does (its planner, its row locks): run on PostgreSQL
    only, skipped without one."""
    on_postgres = pytest.mark.parametrize("db_url", ["postgres"], indirect=True)(test)
    reason = "needs PostgreSQL (CREWCHIEF_TEST_POSTGRES_URL)"
    return pytest.mark.skipif(not POSTGRES_URL, reason=reason)(on_postgres)


@on_postgres_only
def test_a_locked_run_still_takes_the_rows_that_refer_to_it(db_url: str) -> None:
    """While a decision holds its run locked, a worker records an LLM call of that run (a row
    whose foreign key names the run) without waiting for the decision to commit; a second
    lock of the run still waits."""
    db = fresh(db_url)
    add_runs(db, 1)
    with db.transaction() as holder, db.engine.connect() as other:
        assert lock_run(holder, 1) is not None
        other.exec_driver_sql("SET lock_timeout = '500ms'")  # a wait fails rather than hangs
        other.commit()
        with other.begin(), Session(bind=other) as worker:
            rows.add(worker, models.LLMCall, run_id=1, agent="a", provider="p", model="m")
        with (
            other.begin(),
            Session(bind=other) as decision,
            pytest.raises(DBAPIError, match="lock timeout"),
        ):
            lock_run(decision, 1)
    db.dispose()


@on_postgres_only
def test_a_group_commit_gives_up_a_locked_run_and_its_job_runs_again_alone(db_url: str) -> None:
    """A group that finds a run locked (by another group that may in turn wait for one of its
    runs: a deadlock the server finds only after 1 s) gives up the wait; the job runs again in
    a transaction of its own, which waits for the lock and gets it once the holder commits."""
    db = fresh(db_url)
    add_runs(db, 1)
    attempts: list[bool] = []  # whether each attempt ran inside a group
    rerun = threading.Event()
    holding = threading.Event()

    def hold() -> None:  # a decision holding the run, until the job has been run again
        with db.transaction() as holder:
            assert lock_run(holder, 1) is not None
            holding.set()
            rerun.wait(timeout=10)

    def job() -> int:
        attempts.append(db._joined() is not None)
        if len(attempts) == 2:
            rerun.set()
        with db.transaction() as s:
            run = lock_run(s, 1)
            assert run is not None
            rows.change(s, run, current_step=run.current_step + 1)
            return run.current_step

    holder = threading.Thread(target=hold)
    holder.start()
    assert holding.wait(timeout=10)
    assert db.threads.submit(Priority.BACKGROUND, job).result(timeout=30) == 1
    holder.join()
    assert attempts == [True, False]  # the group's attempt gave up; alone, it waited
    with db.read() as s:
        assert s.get(Run, 1).current_step == 1  # type: ignore[union-attr]
    db.dispose()


@on_postgres_only
@pytest.mark.empty_database
def test_a_step_claim_reads_few_runnable_steps_however_many_wait(db_url: str) -> None:
    db = fresh(db_url)
    add_runs(db, 1000)
    step, read = claimed_and_rows_read(
        db,
        "step",
        lambda s: claim_step(
            s, owner="o", now=datetime.now(UTC), lease=timedelta(minutes=1), skip_locked=True
        ),
    )
    assert step is not None and step.run_id == 1
    assert read < 10  # it read all 1,000 when one condition said "runnable or lease ran out"
    db.dispose()


@on_postgres_only
@pytest.mark.empty_database
def test_an_outbox_claim_reads_few_waiting_rows_however_many_wait(db_url: str) -> None:
    db = fresh(db_url)
    runs = 1000
    add_runs(db, runs)
    with db.transaction() as s:
        for run_id in range(1, runs + 1):  # two posts a run: the second waits for the first
            for part in "ab":
                queue_post(s, run_id, f"{run_id}{part}")

    def claim_and_go_on(s: Session) -> tuple[list[Any], str]:
        leased = claim_outbox(
            s,
            owner="o",
            now=datetime.now(UTC),
            lease=timedelta(minutes=1),
            skip_locked=True,
            limit=16,
        )
        # a group's next job in the same transaction: the planner may sort again
        return leased, s.execute(sa_text("SHOW enable_sort")).scalar_one()

    (claimed, sorting), read = claimed_and_rows_read(db, "outbox", claim_and_go_on)
    assert [row.key for row in claimed] == [f"post:{i}a" for i in range(1, 17)]
    assert read < 100  # it read all 2,000 when the planner chose to sort them
    assert sorting == "on"
    db.dispose()


def _post(s: Session, key: str, text: str, thread_of: int | None = None) -> outbox.Posted:
    """A post of run 1's, its context's text `text`."""
    return outbox.post(
        s,
        key=key,
        kind="run_card" if thread_of is None else "notes",
        platform="shell",
        channel="c",
        run_id=1,
        thread_of=thread_of,
        template="notice",
        context={"text": text},
    )


def _deliver(db: Database, now: datetime, *, sent: bool = True) -> list[Any]:
    """One claim of the outbox sender (up to 5 rows): what it took, then marked sent or, with
    sent=False, failed and waiting to be tried again."""
    with db.transaction() as s:
        found = claim_outbox(
            s, owner="o", now=now, lease=timedelta(minutes=1), skip_locked=db.is_postgres, limit=5
        )
        if sent:
            mark_sent(s, [Sent(row.id, row.message_id, f"ts-{row.id}") for row in found], now)
        else:
            retry = {"lease_owner": None, "lease_until": None, "available_at": now}
            rows.change_by_id(s, Outbox, [{"row_id": row.id, **retry} for row in found])
    return found


def test_an_edit_waits_for_its_messages_post_but_not_for_the_threads_other_posts(
    db_url: str,
) -> None:
    db = fresh(db_url)
    add_runs(db, 1)
    with db.transaction() as s:
        card = _post(s, "card", "card")
        _post(s, "notes", "notes", thread_of=card.id)
        outbox.update(s, card, template="notice", context={"text": "card, edited"})
    now = datetime.now(UTC)

    def claim() -> list[str]:
        return sorted(":".join(row.key.split(":")[:2]) for row in _deliver(db, now))

    # the card's edit cannot go before the card is posted, nor the notes in its thread
    assert claim() == ["post:card"]
    # then the thread's next post and the card's edit go side by side
    assert claim() == ["post:notes", "update:card"]
    assert claim() == []
    db.dispose()


def test_of_a_messages_edits_waiting_together_only_the_latest_goes_out(db_url: str) -> None:
    db = fresh(db_url)
    add_runs(db, 1)
    now = datetime.now(UTC)

    def edit(card: outbox.Posted, text: str, **order: str) -> None:
        with db.transaction() as s:
            outbox.update(s, card, template="notice", context={"text": text}, **order)

    def deliver(*, sent: bool = True) -> list[str]:
        return [row.context["text"] for row in _deliver(db, now, sent=sent)]

    def delivered_until_none_waits() -> list[str]:
        sent: list[str] = []
        for _ in range(10):
            sent += deliver()
            with db.read() as s:
                if not s.exec(select(Outbox).where(Outbox.status == "pending")).first():
                    return sent
        raise AssertionError(f"still waiting after 10 claims; sent {sent}")

    with db.transaction() as s:
        card = _post(s, "card", "v0")
    for text in ("v1", "v2", "v3"):
        edit(card, text)
    assert delivered_until_none_waits() == ["v0", "v3"]
    # An edit whose sending failed waits to be tried again; a newer edit goes out instead
    edit(card, "v4")
    assert deliver(sent=False) == ["v4"]
    edit(card, "v5")
    assert delivered_until_none_waits() == ["v5"]
    # and so do edits ordered with the posts of their thread (an alert card's)
    edit(card, "v6", order_key="thread")
    edit(card, "v7", order_key="thread")
    assert delivered_until_none_waits() == ["v7"]
    db.dispose()


def test_rows_written_past_the_orm_read_back_alike_and_fail_as_sqlalchemy_reports(
    db_url: str,
) -> None:
    db = fresh(db_url)
    seen: list[str] = []

    def record(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        seen.append(statement)

    event.listen(db.engine, "before_cursor_execute", record)
    created = datetime(2026, 3, 29, 1, 30, 15, 123456, tzinfo=UTC)
    context = {"text": "ünïcode <b>", "n": [1, 2.5, None]}
    with db.transaction() as s:
        rows.add(
            s,
            Outbox,
            key="k1",
            kind=models.OutboxKind.NOTICE,
            platform="shell",
            channel="c",
            order_key="o",
            template="notice",
            context=context,
            status=OutboxStatus.PENDING,
            created_at=created,
        )
        assert rows.add_once(s, models.InboundEvent, key="e1") == "e1"
        assert rows.add_once(s, models.InboundEvent, key="e1") is None
    with db.read() as s:
        stored = s.exec(select(Outbox)).one()
    assert (stored.kind, stored.status, stored.context) == ("notice", "pending", context)
    assert stored.created_at == created and stored.attempts == 0  # the model's default
    assert sum("INSERT INTO inboundevent" in statement for statement in seen) == 2
    t = rows.table(Outbox)  # read past the ORM (a LIMIT SQLite sends with an OFFSET 0 of its own)
    query = sa_select(t).where(t.c.key == bindparam("key")).limit(bindparam("n"))
    with db.transaction() as s:
        (read,) = rows.execute(s, query, [{"key": "k1", "n": 5}], fetch=True).rows
    assert (read.kind, read.status, read.context, read.created_at) == (
        "notice",
        "pending",
        context,
        created,
    )
    with pytest.raises(ValueError, match="list"), db.transaction() as s:  # IN (...) is Core's
        rows.execute(s, sa_select(t).where(t.c.id.in_([1, 2])), [{}], fetch=True)

    with pytest.raises(IntegrityError), db.transaction() as s:
        rows.add(s, models.InboundEvent, key="e2")
        rows.add(s, models.InboundEvent, key="e1")
    with pytest.raises(StatementError) as unstorable, db.transaction() as s:
        rows.add(s, models.InboundEvent, key="e3")
        rows.add(s, models.AuditEntry, actor="a", action="x", detail={"not json": object()})
    assert unstorable.type is StatementError and "auditentry" in str(unstorable.value)
    with db.read() as s:  # the failed transaction left nothing
        assert [e.key for e in s.exec(select(models.InboundEvent)).all()] == ["e1"]
    db.dispose()


def test_runs_and_steps_read_or_made_past_the_orm_are_records_of_the_rows_the_orm_loads(
    db_url: str,
) -> None:
    db = fresh(db_url)
    add_runs(db, 2)

    def stored(obj: SQLModel) -> str:
        return f"{type(obj).__name__} " + json.dumps(obj.model_dump(mode="json"), sort_keys=True)

    with db.read() as s:  # through the ORM
        expected = {stored(r) for r in s.exec(select(Run)).all()}
        expected |= {stored(st) for st in s.exec(select(Step)).all()}
    with db.transaction() as s:
        s.add(Step(run_id=1, position=1, name="pending", agent="a", status=StepStatus.WAITING))
        run = lock_run(s, 1)  # with its steps: what the session had pending was flushed first
        assert run is not None and lock_run(s, 1) is run  # read again: the same object
        steps = steps_of(s, 1)
        assert [st.name for st in steps] == ["s", "pending"]
        assert steps_of(s, 1, lock=True)[0] is steps[0]  # read again (locked): the same
        loaded = [run, steps[0], lock_run(s, 2)]
        # records: not in the session, which neither flushes nor expires them
        assert all(inspect(obj).transient and obj not in s for obj in loaded)
        assert {stored(obj) for obj in loaded} <= expected
        assert run.created_at.tzinfo is not None  # as the ORM reads it: in UTC
        rows.change(s, run, current_step=1)  # written through the record
        assert run.current_step == 1
        made = rows.create(s, Run, workflow="w", text="t", requester="a", platform="p", channel="c")
        assert made.id == 3 and made not in s and not s.dirty
        made_as = stored(made)
    with db.transaction() as s:  # a row the ORM loaded first: load gives the ORM's object
        orm_run = s.get(Run, 2)
        assert orm_run is not None and lock_run(s, 2) is orm_run
    with db.read() as s:
        assert s.get(Run, 1).current_step == 1  # type: ignore[union-attr]
        assert [st.name for st in steps_of(s, 1)] == ["s", "pending"]
        assert stored(s.get(Run, 3)) == made_as  # type: ignore[arg-type]
    db.dispose()


def test_a_run_made_past_the_orm_before_the_process_has_used_the_orm_at_all(
    tmp_path: Path,
) -> None:
    # the ORM configures its mappers on first use: a process whose first use is this one
    made = subprocess.run(
        [sys.executable, "-c", _MADE_FIRST, f"sqlite:///{tmp_path / 'first.db'}"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parent.parent,
    )
    assert made.returncode == 0, made.stderr
    assert made.stdout.split() == ["1", "blog-post"]


_MADE_FIRST = """
import sys
from storage import rows
from storage.db import Database
from storage.models import Run
db = Database(sys.argv[1])
db.upgrade()
with db.transaction() as s:
    run = rows.create(s, Run, workflow="blog-post", text="t", requester="a", platform="p",
                      channel="c")
print(run.id, run.workflow)
"""


def test_a_connection_postgresql_dropped_is_replaced_after_a_row_written_past_the_orm_fails(
    db_url: str,
) -> None:
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite's connection is a file; it cannot be dropped from outside")
    db = fresh(db_url)
    failed: list[DBAPIError] = []
    with contextlib.suppress(DBAPIError), db.transaction() as s:
        pid = rows.connection(s).exec_driver_sql("SELECT pg_backend_pid()").scalar_one()
        with db.engine.connect() as admin:
            admin.exec_driver_sql(f"SELECT pg_terminate_backend({int(pid)}, 5000)")
        try:
            rows.add(s, models.InboundEvent, key="lost")
        except DBAPIError as exc:
            failed.append(exc)
            raise
    assert failed and failed[0].connection_invalidated
    with db.transaction() as s:  # a new connection from the pool
        rows.add(s, models.InboundEvent, key="kept")
    with db.read() as s:
        assert [e.key for e in s.exec(select(models.InboundEvent)).all()] == ["kept"]
    db.dispose()


def test_posting_the_same_key_twice_makes_one_message(db_url: str) -> None:
    db = fresh(db_url)
    add_runs(db, 1)
    for _ in range(2):
        with db.transaction() as s:
            outbox.post(
                s,
                key="run:1:card",
                kind="run_card",
                platform="shell",
                channel="c",
                run_id=1,
                template="notice",
                context={"text": "x"},
            )
    with db.read() as s:
        assert len(s.exec(select(Outbox)).all()) == 1
    db.dispose()


@pytest.mark.empty_database
@pytest.mark.slow
def test_replicas_starting_together_migrate_once(db_url: str) -> None:
    """Several processes upgrading a fresh database at once: all succeed, the schema is right."""
    import os

    env = {**os.environ, "CREWCHIEF_DATABASE_URL": db_url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "bot.cli", "db", "upgrade"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    results = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err for _, err in results]
    db = Database(db_url)
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), SQLModel.metadata) == []
    db.dispose()


@contextlib.contextmanager
def _one_group() -> Iterator[Callable[[], bool]]:
    yield lambda: False  # no job fails


@pytest.mark.parametrize("group", [None, _one_group], ids=["alone", "grouped"])
def test_an_inbound_event_goes_ahead_of_queued_background_work(group: Any) -> None:
    """A command's acknowledgement waits for its transaction: it must not queue behind the
    workers' claims and deliveries already waiting for the database thread, nor, where
    group commit takes the work ready at once into one commit, wait for the work queued
    behind it (after an inbound event's job a group takes only another's)."""
    from storage.threads import DatabaseThreads, Priority

    threads = DatabaseThreads(1, group=group)
    started, release = threading.Event(), threading.Event()
    seen: list[str] = []

    def busy() -> None:
        started.set()
        release.wait(5)

    threads.submit(Priority.BACKGROUND, busy)
    assert started.wait(5)
    queued = [
        threads.submit(Priority.BACKGROUND, lambda i=i: seen.append(f"bg{i}")) for i in range(3)
    ]
    inbound = [threads.submit(Priority.INBOUND, lambda i=i: seen.append(f"ack{i}")) for i in (1, 2)]
    for i, future in enumerate(inbound, 1):
        future.add_done_callback(lambda _, i=i: seen.append(f"ack{i} answered"))
    release.set()
    for future in [*inbound, *queued]:
        future.result(5)
    threads.shutdown()
    acks = ["ack1", "ack1 answered", "ack2", "ack2 answered"]
    if group is not None:  # a burst of inbound events commits together
        acks = ["ack1", "ack2", "ack1 answered", "ack2 answered"]
    assert seen == [*acks, "bg0", "bg1", "bg2"]


async def test_a_failing_job_in_a_group_commit_leaves_the_others_work_stored_once(
    tmp_path: Path,
) -> None:
    """SQLite commits the jobs that are ready at once together. One of them failing rolls
    back only its own work: the others' rows are stored, each once, and each job gets its own
    answer, including one that recovers from its failure with another transaction."""
    db = Database(f"sqlite:///{tmp_path / 'group.db'}")
    db.upgrade()
    started, release = threading.Event(), threading.Event()

    def busy() -> None:  # holds the database thread while the group queues up
        started.set()
        release.wait(5)

    def add(key: str, fail: bool = False) -> str:
        return add_event(db, key, fail=fail)

    def recover(key: str) -> str:
        with contextlib.suppress(ValueError):
            add(f"{key}-first-try", fail=True)
        return add(key)

    blocker = asyncio.ensure_future(db.call(busy))
    assert await asyncio.to_thread(started.wait, 5)
    jobs = [
        asyncio.ensure_future(db.call(add, "a")),
        asyncio.ensure_future(db.call(recover, "c")),
        asyncio.ensure_future(db.call(add, "b", fail=True)),
        asyncio.ensure_future(db.call(add, "d")),
    ]
    await asyncio.sleep(0.05)  # every job queued behind the busy one
    release.set()
    await blocker
    answers = await asyncio.gather(*jobs, return_exceptions=True)
    assert answers[0] == "a" and answers[1] == "c" and answers[3] == "d"
    assert isinstance(answers[2], ValueError)
    with db.read() as session:
        stored = session.exec(select(models.InboundEvent.key)).all()
    db.dispose()
    assert sorted(stored) == ["a", "c", "d"]


def test_a_message_is_remembered_only_once_its_transaction_has_committed(db_url: str) -> None:
    """Edits of a card look it up by key; a lookup of a card whose transaction was rolled
    back must not find it (it would send edits to a message that was never posted)."""
    db = fresh(db_url)
    add_runs(db, 1)

    def card(s: Session, text: str) -> outbox.Posted:
        return outbox.post(
            s,
            key="run:1:card",
            kind=models.MessageKind.RUN_CARD,
            platform="shell",
            channel="c",
            run_id=1,
            template="notice",
            context={"text": text},
        )

    with pytest.raises(RuntimeError), db.transaction() as s:
        lost = card(s, "lost")
        assert outbox.find(s, "run:1:card") == lost  # within its transaction
        raise RuntimeError("the state change failed")
    with db.transaction() as s:
        assert outbox.find(s, "run:1:card") is None
        posted = card(s, "kept")
    with db.transaction() as s:
        assert outbox.find(s, "run:1:card") == posted
    with db.read() as s:
        assert [m.id for m in s.exec(select(models.Message)).all()] == [posted.id]
    db.dispose()


async def test_an_inbound_event_that_fails_in_a_group_commit_is_rolled_back_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Bad input fails an inbound event's transaction: the background work committed with it
    is neither lost nor done again, and the event's own answer is the error."""
    from storage import threads
    from storage.threads import Priority

    monkeypatch.setattr(threads, "GROUP_TIME", 30.0)  # the group's size is the test's
    db = Database(f"sqlite:///{tmp_path / 'group.db'}")
    db.upgrade()
    loop = asyncio.get_running_loop()
    runs: list[str] = []
    inbound: list[concurrent.futures.Future[str]] = []

    def add(key: str, fail: bool = False) -> str:
        runs.append(key)
        return add_event(db, key, fail=fail)

    def background_then_a_bad_command() -> str:
        bad = db.call(add, "bad", fail=True, priority=Priority.INBOUND)
        inbound.append(asyncio.run_coroutine_threadsafe(bad, loop))
        time.sleep(0.2)  # the command arrives while this group still runs
        return add("a")

    first = await db.call(background_then_a_bad_command)
    with pytest.raises(ValueError, match="bad"):
        await asyncio.wrap_future(inbound[0])
    assert first == "a"
    assert runs == ["a", "bad"]  # one group, and nothing in it ran twice
    with db.read() as session:
        stored = session.exec(select(models.InboundEvent.key)).all()
    db.dispose()
    assert stored == ["a"]


def test_an_inbound_events_savepoint_is_sent_and_seen_like_any_statement(db_url: str) -> None:
    """In a group commit each inbound event's transaction is a savepoint of crewchief's own:
    one that fails is rolled back to it alone, on SQLite and PostgreSQL, and the statement
    listeners (metrics, the benchmarks' counts) see every savepoint statement."""
    db = fresh(db_url)
    seen: list[str] = []
    event.listen(db.engine, "before_cursor_execute", lambda *a: seen.append(a[2]))
    with db._grouped() as failed:
        assert db._isolated(lambda: add_event(db, "good")) == "good"
        with pytest.raises(ValueError, match="bad"):
            db._isolated(lambda: add_event(db, "bad", fail=True))
        # an error of the database's: PostgreSQL refuses all but a rollback until the
        # savepoint is rolled back to
        with pytest.raises(IntegrityError):
            db._isolated(lambda: add_event(db, "good"))
        assert add_event(db, "background") == "background"
        assert not failed()
    with db.read() as session:
        stored = session.exec(select(models.InboundEvent.key)).all()
    db.dispose()
    assert sorted(stored) == ["background", "good"]
    savepoints = [sql for sql in seen if "SAVEPOINT" in sql]
    assert savepoints == [
        "SAVEPOINT crewchief_1",
        "RELEASE SAVEPOINT crewchief_1",
        "SAVEPOINT crewchief_2",
        "ROLLBACK TO SAVEPOINT crewchief_2",
        "RELEASE SAVEPOINT crewchief_2",
        "SAVEPOINT crewchief_3",
        "ROLLBACK TO SAVEPOINT crewchief_3",
        "RELEASE SAVEPOINT crewchief_3",
    ]


async def test_a_burst_of_inbound_events_is_answered_as_it_was_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Commands that arrive together commit together. One of them fails with an error after
    which SQLite ends the whole transaction, not only its savepoint (a full disk): the work it
    took with it runs again, each event is stored once, and what each was told is what was
    stored."""
    import sqlite3

    from storage import threads
    from storage.threads import Priority

    monkeypatch.setattr(threads, "GROUP_TIME", 30.0)  # the group's size is the test's
    db = Database(f"sqlite:///{tmp_path / 'burst.db'}")
    db.upgrade()
    ran: list[str] = []
    started, release = threading.Event(), threading.Event()

    def add(key: str) -> str:
        ran.append(key)
        return add_event(db, key)

    def disk_full(key: str) -> str:
        ran.append(key)
        with db.transaction() as session:
            rows.add(session, models.InboundEvent, key=key)
            rows.send(rows.connection(session), "ROLLBACK")  # what SQLite does on SQLITE_FULL
            raise sqlite3.OperationalError("database or disk is full")

    def background() -> str:
        started.set()
        release.wait(5)  # the commands arrive while its group runs
        return add("a")

    first = asyncio.ensure_future(db.call(background))
    assert await asyncio.to_thread(started.wait, 5)
    works = {"ok1": add, "full": disk_full, "ok2": add}
    inbound = Priority.INBOUND
    told = [asyncio.ensure_future(db.call(w, key, priority=inbound)) for key, w in works.items()]
    await asyncio.sleep(0)  # each has queued its job
    release.set()
    answers = await asyncio.gather(first, *told, return_exceptions=True)
    with db.read() as session:
        stored = session.exec(select(models.InboundEvent.key)).all()
    db.dispose()
    assert (answers[0], answers[1], answers[3]) == ("a", "ok1", "ok2")
    assert isinstance(answers[2], sqlite3.OperationalError)
    assert sorted(stored) == ["a", "ok1", "ok2"]
    assert ran[:3] == ["a", "ok1", "full"]  # one group, then each of its jobs again alone
    assert ran[3:] == ["a", "ok1", "full", "ok2"]


@pytest.mark.parametrize("second", ["background", "inbound"])
async def test_two_postgresql_groups_that_deadlock_store_each_jobs_work_once(
    db_url: str, monkeypatch: pytest.MonkeyPatch, second: str
) -> None:
    """Two database threads' groups each lock a run, then want the other's: the server fails
    one of them (a deadlock), the jobs of that group run again one at a time after the other
    has committed, and every job's work is stored once. The job the server fails may be an
    inbound event's, in a savepoint of its own: it runs again too, and is not told of an
    error."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite has one database thread: its groups never wait for each other")
    from storage import threads
    from storage.threads import Priority

    monkeypatch.setattr(threads, "GROUP_TIME", 30.0)  # each group takes both of its jobs
    db = fresh(db_url)
    db.threads = threads.DatabaseThreads(2, group=db._grouped)
    with db.transaction() as s:
        x, y = (
            rows.create(s, Run, workflow="w", text="t", requester="a", platform="p", channel="c")
            for _ in range(2)
        )
    go = {"a1": threading.Event(), "b1": threading.Event()}
    ran: list[str] = []

    def lock(run_id: int, name: str) -> str:
        ran.append(name)
        with db.transaction() as s:
            assert lock_run(s, run_id) is not None
            rows.add(s, models.AuditEntry, actor="test", action=name, run_id=run_id)
        if name in go:
            go[name].wait(10)  # its group holds the run until the test lets it go on
        return name

    first = [asyncio.ensure_future(db.call(lock, run.id, n)) for run, n in ((x, "a1"), (y, "b1"))]
    await asyncio.sleep(0.2)  # each thread's group holds its run
    priority = Priority.INBOUND if second == "inbound" else Priority.BACKGROUND
    then = [
        asyncio.ensure_future(db.call(lock, run.id, n, priority=priority))
        for run, n in ((y, "a2"), (x, "b2"))
    ]
    await asyncio.sleep(0)
    go["a1"].set()  # a1's group takes a2, and waits for y
    await asyncio.sleep(0.2)
    go["b1"].set()  # b1's group takes b2, and waits for x: a deadlock
    answers = await asyncio.gather(*first, *then)
    with db.read() as s:
        stored = sorted(s.exec(select(models.AuditEntry.action)).all())
    db.dispose()
    assert answers == ["a1", "b1", "a2", "b2"]
    assert stored == ["a1", "a2", "b1", "b2"]
    # one group failed and its two jobs ran again, one at a time
    again = sorted(name for name in set(ran) if ran.count(name) == 2)
    assert again in (["a1", "a2"], ["b1", "b2"]) and len(ran) == 6


async def test_a_job_that_swallows_a_database_error_does_not_lose_its_groups_work(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The last job of a group reads, fails and carries on. PostgreSQL has aborted the
    group's transaction, and would answer its COMMIT by rolling back: the group runs again one
    job at a time, and what the others were told was done is stored."""
    from storage import threads

    monkeypatch.setattr(threads, "GROUP_TIME", 30.0)  # the group's size is the test's
    db = fresh(db_url)
    db.threads = threads.DatabaseThreads(1, group=db._grouped)  # all three in one group
    started, release = threading.Event(), threading.Event()

    def first() -> str:
        started.set()
        release.wait(5)  # the others queue meanwhile, and join this group
        return add_event(db, "first")

    def careless() -> str:
        with contextlib.suppress(DBAPIError), db.read() as s:
            s.execute(sa_text("SELECT missing FROM nowhere"))
        return "carried on"

    jobs = [asyncio.ensure_future(db.call(first))]
    assert await asyncio.to_thread(started.wait, 5)
    jobs += [asyncio.ensure_future(db.call(add_event, db, "second"))]
    jobs += [asyncio.ensure_future(db.call(careless))]
    await asyncio.sleep(0)
    release.set()
    answers = await asyncio.gather(*jobs)
    with db.read() as s:
        stored = sorted(s.exec(select(models.InboundEvent.key)).all())
    db.dispose()
    assert answers == ["first", "second", "carried on"]
    assert stored == ["first", "second"]


def test_locking_a_run_on_postgresql_locks_its_steps_too(db_url: str) -> None:
    """A decision locks the run and its steps in one statement: another transaction can
    take neither until it ends."""
    if not db_url.startswith("postgresql"):
        pytest.skip("SQLite locks the whole database for a writer, not rows")
    db = fresh(db_url)
    add_runs(db, 1)
    with db.transaction() as s:
        assert lock_run(s, 1) is not None
        with db.engine.connect() as other:
            for table in ("run", "step"):
                column = "id" if table == "run" else "run_id"
                with pytest.raises(DBAPIError, match="could not obtain lock"):
                    other.exec_driver_sql(
                        f"SELECT id FROM {table} WHERE {column} = 1 FOR UPDATE NOWAIT"
                    )
                other.rollback()
    db.dispose()
