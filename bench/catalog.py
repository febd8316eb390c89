"""The suite `python -m bench` runs: each sample is one benchmark module with its arguments at
full size and with `--quick`, and each figure is one key of a sample's JSON result, with its
target. A target may be relative to another figure (its median times a factor)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

POSTGRES = "{postgres}"  # in a sample's arguments: the PostgreSQL URL of the sitting

BENCHMARKS: dict[str, str] = {
    "engine": "blog-post runs launched at once through the dispatcher (offline model, a "
    "platform that takes every delivery at once) to their drafts, then all approved and "
    "published; runs/s = runs / (launch→drafts + approve→published)",
    "langgraph": "the same four-node human-in-the-loop graph in LangGraph with its "
    "SqliteSaver (crewchief's prompts and offline model in the nodes), runs one after "
    "another to the interrupt, then each resumed to the end",
    "floor": "the rows the engine stores per run (its 9 tables, as many rows in each), and "
    "the reads of its transactions and claims, on crewchief's schema on SQLite (WAL, "
    "synchronous=FULL) through the sqlite3 module alone, each statement one executemany over "
    "a batch of runs and each of a run's transactions one commit for the batch: what storing "
    "them costs at the least. A statement per row: the same rows and commits, each row "
    "written and each run read by a statement of its own, as an engine that works one run at "
    "a time sends them",
    "ack": "really signed `/crew run` commands from 4 concurrent senders into Slack HTTP "
    "mode while the engine works them off; latency from sending to the whole answer",
    "reaction": "per run, from sending a signed ✅ `reaction_added` on its draft to the fake "
    "Slack receiving the run's *published* post. In flight: blog-post runs launched by "
    "signed commands and kept at that many (a new launch for each run published, 3 rounds), "
    "each draft approved 100 ms after it reached Slack. At once: that many runs taken to "
    "their drafts, then a ✅ on every draft at the same moment",
    "concurrency": "blog-post runs against a fake OpenAI-compatible server answering every "
    "call after 1 s, engine.workers = engine.llm_concurrency = 100; critical path = 3 "
    "steps × ceil(runs / 100) × 1 s",
    "footprint": "`crewchief shell --script` answering `/crew help` as a child process "
    "(wall time, peak RSS), and `crewchief start --platform slack` (HTTP mode, fake Slack) "
    "resident memory after idling",
    "digest": "the 24-hour digest built over a database seeded with that many step rows "
    "spread over 90 days (median of 5 builds)",
}

# What bounds each benchmark's figures where they miss their targets: from profiles
# (py-spy record -f raw -- python -m bench.engine --runs 1000), the engine's
# statement count (its `sql_per_run`) and the storage floor. Printed under the table for a
# missed figure.
BOUNDS: dict[str, str] = {
    "engine": "CPython running the engine's own code, not SQLite: `floor` above stores the "
    "same rows per run (the same 9 tables, as many rows in each), with the same reads, "
    "through the sqlite3 module alone at well under 1 ms of CPU a run when a commit holds 64 "
    "runs' work (the engine's group commit holds up to 64 jobs or 10 ms of them), against the "
    "engine's CPU ms per run above. Three quarters of the engine's samples are its database "
    "thread's (py-spy record -f raw -- python -m bench.engine --runs 1000, at e1af151, each "
    "sample counted in the function it was in); of those, SQLite's own work (statements 25 %, "
    "commits 12 %) is over a third, the rest Python around each of some 70 statements a run: "
    "crewchief's storage layer 19 % (binding parameters, reading rows into records, the "
    "group's jobs), SQLAlchemy 21 % (type conversions, a session per transaction, a "
    "connection per group), the engine's logic 6 %, JSON 5 %, threads and wake-ups 6 %. "
    "5× LangGraph, about 1.7 ms a run, "
    "is above the floor even with a statement per row (the floor's row that says so): set-wise "
    "statements are worth about a tenth there, group commit much more (one commit a run: the "
    'row "1 a commit"). So 5× is open to an engine that works one run at a time, with its '
    "commits grouped as now, if its Python around each statement costs about what sqlite3's "
    "does (some 10 µs) rather than the engine's over 100 µs through sessions, objects and "
    "type conversions. On PostgreSQL each statement is also a round trip to a server on the "
    "same two cores",
    "ack": "the same database thread: an acknowledgement waits for the job it finds "
    "running and for its own group's commit, which holds the other inbound events that "
    "arrived with it",
    "reaction": "with runs in flight, the ✅ waits for the work already under way on the "
    "one interpreter (the database thread's group, the 16 deliveries in flight); steps and "
    "deliveries of older runs go first, so an approved draft does not queue behind the runs "
    "launched after it. At once is throughput, not latency: 100 approvals' work (the vote, "
    "the publish step's claim and completion, the posts and card edits) queues on the "
    "database thread, so the last published post comes after about 100 runs' publishing "
    "work; the signed requests, Bolt and the fake Slack share the process's interpreter "
    "with it",
    "concurrency": "the database thread again: 100 workers each claim and complete their "
    "steps through it, so the model's 1 s is not the only wait; 1,000 runs cost about 7 s "
    "of CPU (`cpu_ms_per_run` above) against a 30 s critical path",
    "footprint": "imports, most of them of the database layer `/crew help` goes through "
    "(its de-duplication and who may see what): `python -X importtime` of the answer, at "
    "38445c4, counts sqlalchemy 0.12 s, sqlmodel with crewchief's tables 0.11 s, typer and "
    "pydantic 0.09 s. The figure is with the bytecode Python caches by default (this "
    "machine's environment sets PYTHONDONTWRITEBYTECODE, which the benchmark drops: "
    "compiling crewchief's modules on every start costs 0.10–0.12 s of CPU); and the "
    "machine's speed swings: one suite's rounds took 0.69 s and 1.15 s of CPU for the same "
    "start",
}

Result = Mapping[str, Any]


def all_succeeded(result: Result) -> str | None:
    if result.get("succeeded") != result.get("runs"):
        return f"{result.get('succeeded')} of {result.get('runs')} runs succeeded"
    return None


def all_published(result: Result) -> str | None:
    if result.get("published") != result.get("runs"):
        return f"{result.get('published')} of {result.get('runs')} runs were published"
    return None


@dataclass(frozen=True)
class Sample:
    id: str
    bench: str  # runs as `python -m bench.<bench> ... --json`
    title: str  # "{n}" is replaced by the size
    size_flag: str | None = None
    full: float | None = None
    quick: float | None = None
    extra: tuple[str, ...] = ()
    needs_postgres: bool = False
    check: Callable[[Result], str | None] | None = None  # a problem with a result, if any

    def size(self, quick: bool) -> float | None:
        return self.quick if quick else self.full

    def args(self, quick: bool, postgres_url: str) -> list[str]:
        size = self.size(quick)
        sized = [] if self.size_flag is None or size is None else [self.size_flag, _num(size)]
        return [*sized, *(postgres_url if a == POSTGRES else a for a in self.extra), "--json"]

    def label(self, quick: bool) -> str:
        size = self.size(quick)
        return self.title.format(n="" if size is None else f"{size:,.0f}")


@dataclass(frozen=True)
class Target:
    op: str  # "<", "<=", ">=" or "=="
    value: float
    of: str | None = None  # a figure id: the bound is `value` times that figure's median
    shown: str = ""  # how the row reads when `of` is set, e.g. "≥ 5× LangGraph"

    def bound(self, medians: Mapping[str, float]) -> float | None:
        if self.of is None:
            return self.value
        reference = medians.get(self.of)
        return None if reference is None else self.value * reference

    def met(self, median: float, medians: Mapping[str, float]) -> bool | None:
        bound = self.bound(medians)
        return None if bound is None else bool(_OPS[self.op](median, bound))

    def text(self, medians: Mapping[str, float]) -> str:
        if self.of is None:
            return f"{_SYMBOLS[self.op]} {_num(self.value)}"
        bound = self.bound(medians)
        return self.shown + ("" if bound is None else f" ({_SYMBOLS[self.op]} {bound:.3g})")


_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
}
_SYMBOLS = {"<": "<", "<=": "≤", ">=": "≥", "==": "="}


@dataclass(frozen=True)
class Figure:
    sample: str
    key: str
    what: str  # e.g. "runs/s", "p99 ms"
    target: Target | None = None

    @property
    def id(self) -> str:
        return f"{self.sample}.{self.key}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


SAMPLES: tuple[Sample, ...] = (
    Sample(
        "engine-sqlite-small",
        "engine",
        "engine · SQLite · {n} runs",
        "--runs",
        200,
        50,
        check=all_succeeded,
    ),
    Sample(
        "engine-sqlite-medium",
        "engine",
        "engine · SQLite · {n} runs",
        "--runs",
        1000,
        100,
        check=all_succeeded,
    ),
    Sample(
        "engine-sqlite-large",
        "engine",
        "engine · SQLite · {n} runs",
        "--runs",
        5000,
        250,
        check=all_succeeded,
    ),
    Sample(
        "engine-postgres-medium",
        "engine",
        "engine · PostgreSQL · {n} runs",
        "--runs",
        1000,
        100,
        extra=("--database-url", POSTGRES),
        needs_postgres=True,
        check=all_succeeded,
    ),
    Sample(
        "langgraph-medium",
        "langgraph",
        "LangGraph · SqliteSaver · {n} runs",
        "--runs",
        1000,
        100,
        check=all_succeeded,
    ),
    Sample(
        "floor-batched",
        "floor",
        "storage floor · {n} runs, 64 a commit",
        "--runs",
        1000,
        100,
        extra=("--batch", "64"),
        check=all_succeeded,
    ),
    Sample(
        "floor-per-run",
        "floor",
        "storage floor · {n} runs, 64 a commit, a statement per row",
        "--runs",
        1000,
        100,
        extra=("--batch", "64", "--per-run"),
        check=all_succeeded,
    ),
    Sample(
        "floor-single",
        "floor",
        "storage floor · {n} runs, 1 a commit",
        "--runs",
        300,
        100,
        extra=("--batch", "1"),
        check=all_succeeded,
    ),
    Sample("ack", "ack", "ack · {n} signed /crew run", "--requests", 1000, 100),
    Sample(
        "reaction",
        "reaction",
        "reaction → published · {n} runs in flight",
        "--runs",
        100,
        20,
        check=all_published,
    ),
    Sample(
        "reaction-burst",
        "reaction",
        "reaction → published · ✅ on {n} drafts at once",
        "--runs",
        100,
        20,
        extra=("--burst",),
        check=all_published,
    ),
    Sample(
        "concurrency",
        "concurrency",
        "concurrency · {n} runs · 1 s model",
        "--runs",
        1000,
        50,
        check=all_succeeded,
    ),
    Sample("footprint", "footprint", "footprint", "--idle", 5, 2),
    Sample("digest", "digest", "digest · {n} steps", "--steps", 1_000_000, 100_000),
)

FIGURES: tuple[Figure, ...] = (
    Figure("engine-sqlite-small", "runs_per_s", "runs/s"),
    Figure(
        "engine-sqlite-medium",
        "runs_per_s",
        "runs/s",
        Target(">=", 5, of="langgraph-medium.runs_per_s", shown="≥ 5× LangGraph, same size"),
    ),
    Figure("engine-sqlite-medium", "cpu_ms_per_run", "CPU ms per run"),
    Figure("engine-sqlite-medium", "sql_per_run", "SQL statements per run"),
    Figure("engine-sqlite-medium", "peak_rss_mb", "peak RSS MB"),
    Figure("engine-sqlite-medium", "gc_pause_max_ms", "longest GC pause ms"),
    Figure(
        "engine-sqlite-large",
        "runs_per_s",
        "runs/s",
        Target(">=", 0.8, of="engine-sqlite-small.runs_per_s", shown="≥ 80% of the smallest size"),
    ),
    Figure(
        "engine-postgres-medium",
        "runs_per_s",
        "runs/s",
        Target(">=", 0.4, of="engine-sqlite-medium.runs_per_s", shown="≥ 40% of SQLite, same size"),
    ),
    Figure("langgraph-medium", "runs_per_s", "runs/s"),
    Figure("floor-batched", "runs_per_s", "runs/s"),
    Figure("floor-batched", "cpu_ms_per_run", "CPU ms per run"),
    Figure("floor-per-run", "runs_per_s", "runs/s"),
    Figure("floor-per-run", "cpu_ms_per_run", "CPU ms per run"),
    Figure("floor-single", "runs_per_s", "runs/s"),
    Figure("ack", "non_200", "answers not 200", Target("==", 0)),
    Figure("ack", "p50_ms", "p50 ms"),
    Figure("ack", "p95_ms", "p95 ms"),
    Figure("ack", "p99_ms", "p99 ms", Target("<", 50)),
    Figure("ack", "max_ms", "max ms"),
    Figure("reaction", "p50_ms", "p50 ms"),
    Figure("reaction", "p95_ms", "p95 ms", Target("<", 200)),
    Figure("reaction", "max_ms", "max ms"),
    Figure("reaction-burst", "p50_ms", "p50 ms"),
    Figure("reaction-burst", "p95_ms", "p95 ms"),
    Figure("reaction-burst", "max_ms", "max ms"),
    Figure("concurrency", "wall_s", "wall s"),
    Figure("concurrency", "critical_path_s", "critical path s"),
    Figure("concurrency", "wall_over_critical", "wall / critical path", Target("<=", 1.5)),
    Figure("concurrency", "peak_rss_mb", "peak RSS MB", Target("<", 400)),
    Figure("footprint", "shell_help_s", "`crewchief shell` /crew help s", Target("<=", 0.7)),
    Figure("footprint", "shell_help_rss_mb", "`crewchief shell` peak RSS MB", Target("<=", 70)),
    Figure("footprint", "shell_help_new_database_s", "`crewchief shell`, new database, s"),
    Figure("footprint", "start_idle_rss_mb", "`crewchief start` idle RSS MB"),
    Figure("digest", "digest_build_s_median", "24-hour digest s", Target("<", 1)),
)


def selected(names: list[str]) -> list[Sample]:
    """The samples of the named benchmarks (all when none is named), in suite order."""
    return [s for s in SAMPLES if not names or s.bench in names]
