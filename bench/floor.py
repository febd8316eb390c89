"""The storage floor of the engine's workload: the rows `bench engine` stores for each run,
written to crewchief's schema on SQLite (WAL, synchronous=FULL, as the engine) by the sqlite3
module alone, set-wise: each statement one executemany over a batch of runs, each of a run's
transactions one commit for the whole batch. No ORM, no templates, no event loop, no model,
no platform: what any engine that stores these rows, this durably, pays at the least.

    python -m bench floor [--runs 1000] [--batch 64] [--per-run] [--json]

With --per-run, each row is written and each run read by a statement of its own (executemany
gives way to one execute per row), the commits staying one per batch: what an engine that
works one run at a time, with group commit, pays at the least.

Per run, as the engine writes them: the command's and the approval's inbound event ids; the
run; its 3 steps; 4 audit entries; 3 model calls and their spending added to the run; the draft
version and the vote; 5 messages and each one's platform id once posted; 12 outbox rows (5
posts, 7 card and draft edits), 9 of them claimed under a lease and marked sent and the other
3 superseded (in the engine, how many edits are superseded depends on how far its sender
lags: about 3.3 a run at 1,000); each step leased, finished, sent to approval or decided, and
the run's status changed with each. And what the engine reads: each transaction its runs and
their steps, each claim the steps or outbox rows it takes (the floor's claims ask less of
their rows than the engine's, which look for earlier rows still waiting).
runs_per_s is runs / (launch_to_draft_s + approve_to_published_s), as in `bench engine`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import common
from storage.db import Database

Rows = list[tuple[Any, ...]]

# the context of a card or post as the engine stores it (a JSON object of about 600 bytes)
_CONTEXT = {
    "run_id": 0,
    "workflow": "blog-post",
    "text": "Why heat pumps beat gas boilers",
    "status": "running",
    "requester": "bench:requester",
    "step_index": 1,
    "step_count": 3,
    "current_step": "research",
    "current_agent": "researcher",
    "current_status": "running",
    "version": 0,
    "elapsed_s": 0,
    "decided_by": None,
    "error": None,
    "cost_usd": 0.0,
    "steps": [
        {"name": "research", "agent": "researcher", "status": "running"},
        {"name": "draft", "agent": "writer", "status": "waiting"},
        {"name": "publish", "agent": "publisher", "status": "waiting"},
    ],
    "offline": True,
}
_TEXT = "An offline draft about heat pumps. " * 20  # what a step stores as its output

_SQL = {
    "event": "INSERT INTO inboundevent (key, received_at) VALUES (?, ?) ON CONFLICT DO NOTHING",
    "run": "INSERT INTO run (id, workflow, text, requester, platform, channel, status, "
    "current_step, cost_usd, tokens, created_at, updated_at) "
    "VALUES (?, 'blog-post', ?, 'bench:requester', 'bench', 'C1', 'running', 0, 0, 0, ?, ?)",
    "step": "INSERT INTO step (id, run_id, position, name, agent, status, attempts, version, "
    "available_at, escalated) VALUES (?, ?, ?, ?, ?, ?, 0, 0, ?, 0)",
    "audit": "INSERT INTO auditentry (at, actor, action, run_id, detail) VALUES (?, ?, ?, ?, '{}')",
    "message": "INSERT INTO message (id, key, kind, platform, channel, run_id, step_id, "
    "created_at) VALUES (?, ?, ?, 'bench', 'C1', ?, ?, ?)",
    "outbox": "INSERT INTO outbox (id, key, kind, platform, channel, order_key, rank, "
    "message_id, template, context, status, attempts, created_at) "
    "VALUES (?, ?, ?, 'bench', 'C1', ?, ?, ?, 'run_card', ?, 'pending', 0, ?)",
    "lease_step": "UPDATE step SET status = 'running', attempts = attempts + 1, "
    "lease_owner = 'bench', lease_until = ?, started_at = ? WHERE id = ?",
    "finish_step": "UPDATE step SET status = 'succeeded', lease_owner = NULL, output = ?, "
    "finished_at = ? WHERE id = ?",
    "await_step": "UPDATE step SET status = 'awaiting_approval', version = 1, lease_owner = NULL, "
    "output = ?, awaiting_since = ? WHERE id = ?",
    "decide_step": "UPDATE step SET status = 'succeeded', decided_by = 'bench:editor' "
    "WHERE id = ? AND status = 'awaiting_approval' AND version = 1",
    "runnable_step": "UPDATE step SET status = 'pending', available_at = ? WHERE id = ?",
    "run_status": "UPDATE run SET status = ?, current_step = ?, updated_at = ? WHERE id = ?",
    "llmcall": "INSERT INTO llmcall (run_id, step_id, agent, provider, model, input_tokens, "
    "output_tokens, cost_usd, latency_ms, created_at) "
    "VALUES (?, ?, ?, 'offline', 'offline', 100, 200, 0, 0, ?)",
    "spend": "UPDATE run SET cost_usd = cost_usd + 0, tokens = tokens + 300 WHERE id = ?",
    "draft": "INSERT INTO draftversion (run_id, step_id, version, content, created_at) "
    "VALUES (?, ?, 1, ?, ?)",
    "vote": "INSERT INTO approvalvote (run_id, step_id, version, approver, vote, created_at) "
    "VALUES (?, ?, 1, 'bench:editor', 'approve', ?) ON CONFLICT DO NOTHING",
    "claim": "UPDATE outbox SET attempts = 1, lease_owner = 'bench', lease_until = ? WHERE id = ?",
    "sent": "UPDATE outbox SET status = 'sent', lease_owner = NULL, sent_at = ? WHERE id = ?",
    "superseded": "UPDATE outbox SET status = 'superseded' WHERE id = ?",
    "posted": "UPDATE message SET platform_id = ? WHERE id = ?",
    # what the engine reads: each transaction its batch's runs and their steps (locked, on
    # PostgreSQL), a claim the steps or outbox rows it takes
    "runs": "SELECT * FROM run WHERE id BETWEEN ? AND ?",
    "steps": "SELECT * FROM step WHERE run_id BETWEEN ? AND ? ORDER BY run_id, position",
    "claim_steps": "SELECT id, run_id FROM step WHERE status = 'pending' AND available_at <= ? "
    "ORDER BY run_id, id LIMIT ?",
    "claim_outbox": "SELECT * FROM outbox WHERE status = 'pending' "
    "AND (lease_until IS NULL OR lease_until < ?) ORDER BY rank, id LIMIT ?",
}
_READS = {"runs", "steps", "claim_steps", "claim_outbox"}

# Of a run's 12 outbox rows, by position: (kind, its message's position among the run's 5,
# what becomes of it). Posts: the card, the research notes, the draft, the approval, the
# published post; the rest are card and draft edits, 3 of them superseded by a later one.
_OUTBOX = (
    ("post", 0, "sent"),
    ("update", 0, "superseded"),
    ("post", 1, "sent"),
    ("update", 0, "sent"),
    ("post", 2, "sent"),
    ("update", 0, "superseded"),
    ("update", 0, "sent"),
    ("update", 2, "sent"),
    ("post", 3, "sent"),
    ("update", 0, "superseded"),
    ("post", 4, "sent"),
    ("update", 0, "sent"),
)
_LAUNCH_ROWS = 8  # the outbox rows written before the draft waits for approval


# the tables a run writes to
STORED = (
    "run",
    "step",
    "message",
    "outbox",
    "auditentry",
    "llmcall",
    "draftversion",
    "approvalvote",
    "inboundevent",
)


def _count(conn: sqlite3.Connection, table: str) -> int:
    found: int = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    return found


class Batch:
    """The ids of a batch of runs and of their rows, allotted up front."""

    def __init__(self, first_run: int, size: int) -> None:
        self.runs = range(first_run, first_run + size)

    def step(self, run: int, position: int) -> int:
        return run * 3 + position

    def message(self, run: int, position: int) -> int:
        return run * 5 + position

    def outbox(self, run: int, position: int) -> int:
        return run * len(_OUTBOX) + position


def measure(runs: int, batch: int, singly: bool = False) -> common.Result:
    with common.scratch() as tmp:
        path = tmp / "floor.db"
        schema = Database(f"sqlite:///{path}")
        schema.upgrade()  # crewchief's tables and indexes
        schema.dispose()
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("PRAGMA foreign_keys=ON")
        counts = {"statements": 0, "rows": 0}
        batches = [
            Batch(first, min(batch, runs - first + 1)) for first in range(1, runs + 1, batch)
        ]
        phases = []
        for phase in (_launch_to_draft, _approve_to_published):
            cpu, began = time.process_time(), time.perf_counter()
            for b in batches:
                for transaction in phase(b):
                    _commit(conn, transaction, counts, b, singly)
            phases.append((time.perf_counter() - began, time.process_time() - cpu))
        stored = conn.execute("SELECT count(*) FROM run WHERE status = 'succeeded'").fetchone()[0]
        per_run = {table: _count(conn, table) / runs for table in STORED}
        conn.close()
    total = sum(wall for wall, _ in phases)
    return {
        "runs": runs,
        "batch": batch,
        "set_wise": not singly,
        "succeeded": stored,
        "launch_to_draft_s": round(phases[0][0], 3),
        "approve_to_published_s": round(phases[1][0], 3),
        "runs_per_s": round(runs / total, 2) if total else 0.0,
        "cpu_ms_per_run": round(sum(cpu for _, cpu in phases) * 1000 / runs, 3),
        "sql_rows_per_run": round(counts["rows"] / runs, 1),
        "statements_per_batch": round(counts["statements"] / len(batches), 1),
        "stored_per_run": per_run,
        "peak_rss_mb": common.peak_rss_mb(),
    }


def _commit(
    conn: sqlite3.Connection,
    writes: list[tuple[str, Rows]],
    counts: dict[str, int],
    b: Batch,
    singly: bool,
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    for name, rows in writes:
        if name in _READS:
            for params in _singly(name, rows[0], b) if singly else rows:
                conn.execute(_SQL[name], params).fetchall()
                counts["statements"] += 1
        elif rows and singly:
            for row in rows:
                conn.execute(_SQL[name], row)
            counts["statements"] += len(rows)
            counts["rows"] += len(rows)
        elif rows:
            conn.executemany(_SQL[name], rows)
            counts["statements"] += 1
            counts["rows"] += len(rows)
    conn.execute("COMMIT")


def _singly(name: str, params: tuple[Any, ...], b: Batch) -> Rows:
    """A read of the batch as a per-run engine sends it: one statement for each run (its run,
    its steps, the one step a claim takes; the claims all come before the leases, which costs
    the same); the sender's claim stays one for the batch."""
    if name == "claim_outbox":
        return [params]
    if name == "claim_steps":
        return [(params[0], 1) for _ in b.runs]
    return [(run, run) for run in b.runs]


def _now() -> datetime:
    return datetime.now(UTC)


def _context(run: int, position: int) -> str:
    return json.dumps({**_CONTEXT, "run_id": run, "step_index": position})


def _outbox_rows(b: Batch, positions: range) -> Rows:
    now = _now().isoformat()
    return [
        (
            b.outbox(run, i),
            f"{_OUTBOX[i][0]}:run:{run}:{i}",
            _OUTBOX[i][0],
            f"run:{run}" if _OUTBOX[i][0] == "post" else f"edit:{b.message(run, _OUTBOX[i][1])}",
            run,
            b.message(run, _OUTBOX[i][1]),
            _context(run, i),
            now,
        )
        for run in b.runs
        for i in positions
    ]


def _read(b: Batch) -> list[tuple[str, Rows]]:
    """The batch's runs and their steps, as each of the engine's transactions reads its run."""
    span = [(b.runs[0], b.runs[-1])]
    return [("runs", span), ("steps", span)]


def _message(b: Batch, position: int, name: str, kind: str, step: int, t: str) -> tuple[str, Rows]:
    """Each run's message at `position` among its 5, posted about its step at `step`."""
    return (
        "message",
        [
            (b.message(run, position), f"run:{run}:{name}", kind, run, b.step(run, step), t)
            for run in b.runs
        ],
    )


def _model_call(b: Batch, step: int, agent: str, t: str) -> list[tuple[str, Rows]]:
    """Each run's model call for its step at `step`, and its spending added to the run."""
    return [
        ("llmcall", [(run, b.step(run, step), agent, t) for run in b.runs]),
        ("spend", [(run,) for run in b.runs]),
    ]


def _deliveries(b: Batch, positions: range) -> Iterator[list[tuple[str, Rows]]]:
    """The sender: the rows claimed under a lease, then marked sent (each post's message
    learning its platform id), or superseded."""
    now = _now()
    until = (now + timedelta(seconds=30)).isoformat()
    done = [(b.outbox(run, i), _OUTBOX[i]) for run in b.runs for i in positions]
    sent = [row for row, (_, _, fate) in done if fate == "sent"]
    yield [("claim_outbox", [(now.isoformat(), len(done))]), ("claim", [(until, r) for r in sent])]
    yield [
        ("sent", [(now.isoformat(), row) for row in sent]),
        ("superseded", [(row,) for row, (_, _, fate) in done if fate == "superseded"]),
        (
            "posted",
            [
                (f"ts-{row}", b.message(run, message))
                for run in b.runs
                for i in positions
                for row, (kind, message, _) in [(b.outbox(run, i), _OUTBOX[i])]
                if kind == "post"
            ],
        ),
    ]


def _launch_to_draft(b: Batch) -> Iterator[list[tuple[str, Rows]]]:
    t = _now().isoformat()
    until = (_now() + timedelta(seconds=30)).isoformat()
    steps = (("research", "researcher"), ("draft", "writer"), ("publish", "publisher"))
    yield [  # the command: the run, its steps, its card
        ("event", [(f"bench:launch:{run}", t) for run in b.runs]),
        ("run", [(run, f"topic {run}", t, t) for run in b.runs]),
        (
            "step",
            [
                (b.step(run, p), run, p, name, agent, "pending" if p == 0 else "waiting", t)
                for run in b.runs
                for p, (name, agent) in enumerate(steps)
            ],
        ),
        ("audit", [(t, "bench:requester", "run.started", run) for run in b.runs]),
        (
            "message",
            [(b.message(run, 0), f"run:{run}:card", "run_card", run, None, t) for run in b.runs],
        ),
        ("outbox", _outbox_rows(b, range(0, 1))),
    ]
    yield [  # research claimed
        ("claim_steps", [(t, len(b.runs))]),
        *_read(b),
        ("lease_step", [(until, t, b.step(run, 0)) for run in b.runs]),
        ("run_status", [("running", 0, t, run) for run in b.runs]),
        ("outbox", _outbox_rows(b, range(1, 2))),
    ]
    yield [  # research done, draft taken at once
        *_read(b),
        *_model_call(b, 0, "researcher", t),
        _message(b, 1, "notes", "notes", 0, t),
        ("finish_step", [(_TEXT, t, b.step(run, 0)) for run in b.runs]),
        ("lease_step", [(until, t, b.step(run, 1)) for run in b.runs]),
        ("run_status", [("running", 1, t, run) for run in b.runs]),
        ("outbox", _outbox_rows(b, range(2, 4))),
    ]
    yield [  # the draft waits for approval
        *_read(b),
        *_model_call(b, 1, "writer", t),
        ("draft", [(run, b.step(run, 1), _TEXT, t) for run in b.runs]),
        ("await_step", [(_TEXT, t, b.step(run, 1)) for run in b.runs]),
        ("run_status", [("awaiting_approval", 1, t, run) for run in b.runs]),
        _message(b, 2, "draft", "draft", 1, t),
        ("audit", [(t, "crewchief", "draft.awaiting", run) for run in b.runs]),
        ("outbox", _outbox_rows(b, range(4, _LAUNCH_ROWS))),
    ]
    yield from _deliveries(b, range(0, _LAUNCH_ROWS))


def _approve_to_published(b: Batch) -> Iterator[list[tuple[str, Rows]]]:
    t = _now().isoformat()
    until = (_now() + timedelta(seconds=30)).isoformat()
    yield [  # the ✅: the vote, the decision, the publish step runnable
        ("event", [(f"bench:approve:{run}", t) for run in b.runs]),
        ("vote", [(run, b.step(run, 1), t) for run in b.runs]),
        *_read(b),
        ("decide_step", [(b.step(run, 1),) for run in b.runs]),
        ("finish_step", [(_TEXT, t, b.step(run, 1)) for run in b.runs]),
        ("runnable_step", [(t, b.step(run, 2)) for run in b.runs]),
        ("run_status", [("running", 2, t, run) for run in b.runs]),
        ("audit", [(t, "bench:editor", "draft.approved", run) for run in b.runs]),
        _message(b, 3, "approved", "decision", 1, t),
        ("outbox", _outbox_rows(b, range(_LAUNCH_ROWS, 10))),
    ]
    yield [  # publish claimed
        ("claim_steps", [(t, len(b.runs))]),
        *_read(b),
        ("lease_step", [(until, t, b.step(run, 2)) for run in b.runs]),
        ("run_status", [("running", 2, t, run) for run in b.runs]),
    ]
    yield [  # published: the run is done
        *_read(b),
        *_model_call(b, 2, "publisher", t),
        _message(b, 4, "published", "published", 2, t),
        ("finish_step", [(_TEXT, t, b.step(run, 2)) for run in b.runs]),
        ("run_status", [("succeeded", 2, t, run) for run in b.runs]),
        ("audit", [(t, "crewchief", "run.succeeded", run) for run in b.runs]),
        ("outbox", _outbox_rows(b, range(10, len(_OUTBOX)))),
    ]
    yield from _deliveries(b, range(_LAUNCH_ROWS, len(_OUTBOX)))


def report(result: common.Result) -> list[str]:
    return [
        f"runs: {result['runs']} in batches of {result['batch']}"
        f"{'' if result['set_wise'] else ', a statement per row'}"
        f"  succeeded: {result['succeeded']}",
        f"launch -> draft awaiting approval: {result['launch_to_draft_s']:.2f} s",
        f"approve -> published:              {result['approve_to_published_s']:.2f} s",
        f"runs per second (both phases):     {result['runs_per_s']:.1f}",
        f"rows written per run: {result['sql_rows_per_run']}   CPU per run: "
        f"{result['cpu_ms_per_run']:.2f} ms",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="runs stored")
    parser.add_argument("--batch", type=int, default=64, help="runs per statement and commit")
    parser.add_argument(
        "--per-run",
        action="store_true",
        help="one statement per run and row (as an engine that works one run at a time "
        "sends them), still one commit per batch",
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.batch < 1:
        parser.error("--runs and --batch must be at least 1")
    result = measure(args.runs, args.batch, args.per_run)
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
