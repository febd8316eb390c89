"""The benchmarks' entry point: one benchmark's JSON result, and the suite writing its report
(with a crashed benchmark reported, not stopping the others). No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from rich.console import Console

import bench.__main__ as entry
from agents import digest
from bench import catalog, common, floor, suite
from bench.digest import seed
from bench.workload import EDITOR, NullPlatform, launch_and_publish
from bot.app import build_app
from storage.db import Database
from storage.models import AuditEntry, DraftVersion, LLMCall, Run, Step
from tests.conftest import make_config

REPO = Path(__file__).resolve().parent.parent
ENGINE_KEYS = {
    "runs",
    "succeeded",
    "launch_to_draft_s",
    "approve_to_published_s",
    "runs_per_s",
    "messages",
    "cpu_ms_per_run",
    "peak_rss_mb",
}


def _last_line_json(*args: str) -> dict[str, Any]:
    """`python -m bench ARGS --json` run as a user would: its result, the last line."""
    done = subprocess.run(
        [sys.executable, "-m", "bench", *args, "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
def test_engine_prints_its_figures_as_json_on_the_last_line() -> None:
    result = _last_line_json("engine", "--runs", "5")
    assert set(result) >= ENGINE_KEYS
    assert result["runs"] == result["succeeded"] == 5
    assert result["messages"] > 0


@pytest.mark.slow
def test_the_reaction_benchmark_keeps_its_runs_in_flight_and_times_every_approval() -> None:
    result = _last_line_json("reaction", "--runs", "4", "--rounds", "3")
    # a new run launched for each one published, until 3 rounds of 4 were
    assert result["mode"] == "steady"
    assert result["launched"] == result["drafts"] == result["published"] == 12
    assert result["reactions_not_200"] == 0
    assert result["in_flight_median"] >= 3
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["max_ms"]


async def test_the_storage_floor_writes_per_run_the_rows_the_engine_stores(
    tmp_path: Path,
) -> None:
    """`bench floor` stands for the engine's storage work: per run, as many rows in each table
    as the engine stores taking runs from launch to published."""
    runs = 3
    app = build_app(
        common.settings(f"sqlite:///{tmp_path / 'engine.db'}", tmp_path),
        default_approvers=[EDITOR.qualified],
    )
    app.add_platform(NullPlatform())
    try:
        async with app.running():
            phases = await launch_and_publish(app, runs)
        with app.db.engine.connect() as conn:
            engine = {
                table: conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one() / runs
                for table in floor.STORED
            }
    finally:
        await app.aclose()
    assert phases.succeeded == runs
    for singly in (False, True):  # set-wise, or a statement per run
        result = floor.measure(runs=5, batch=2, singly=singly)
        assert result["succeeded"] == 5
        assert result["stored_per_run"] == engine


def test_a_name_with_its_own_options_runs_that_benchmark_alone() -> None:
    assert entry.single(["engine", "--runs", "5", "--json"]) == "engine"
    assert entry.single(["engine", "--database-url=postgresql://x/y"]) == "engine"
    assert entry.single(["engine", "--json", "--quick"]) is None
    assert entry.single(["engine", "ack"]) is None
    assert entry.single([]) is None


@pytest.mark.slow
def test_the_suite_writes_the_report_and_goes_on_after_a_crash(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    tiny = catalog.Sample(
        "engine-tiny",
        "engine",
        "engine · SQLite · {n} runs",
        "--runs",
        200,
        3,
        check=catalog.all_succeeded,
    )
    broken = catalog.Sample("engine-broken", "engine", "engine, broken", "--runs", 1, 1, ("-x",))
    monkeypatch.setattr(catalog, "SAMPLES", (broken, tiny))
    monkeypatch.setattr(
        suite,
        "FIGURES",
        (
            catalog.Figure("engine-broken", "runs_per_s", "runs/s"),
            catalog.Figure("engine-tiny", "runs_per_s", "runs/s", catalog.Target(">=", 0)),
            catalog.Figure("engine-tiny", "succeeded", "succeeded", catalog.Target("==", 3)),
        ),
    )

    entry.main(["engine", "--quick", "--json", "--out", str(tmp_path)])

    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    written = json.loads((tmp_path / "performance.json").read_text())
    assert printed == written
    assert written["quick"] is True and written["repeat"] == 1
    assert {"cpu", "cores", "ram_gib", "python", "date"} <= set(written["machine"])
    figures = {f["id"]: f for f in written["figures"]}
    assert figures["engine-broken.runs_per_s"]["status"].startswith("failed: exit 2")
    assert figures["engine-tiny.succeeded"]["median"] == 3
    assert figures["engine-tiny.succeeded"]["met"] is True
    assert len(figures["engine-tiny.runs_per_s"]["values"]) == 1

    report = (tmp_path / "PERFORMANCE.md").read_text()
    assert "| figure | target | median | min | max | met |" in report
    assert "| engine · SQLite · 3 runs: succeeded | = 3 | 3 | 3 | 3 | yes |" in report
    assert "| engine, broken: runs/s | — | failed: exit 2" in report
    assert "Machine: " in report and "cores" in report and "Python" in report
    assert "Quick run" in report


def test_the_digest_benchmark_seeds_the_history_it_says_and_the_digest_reads_it(
    db_url: str,
) -> None:
    db = Database(db_url)
    now = datetime.now(UTC)
    seed(db, 9_000, now)
    with db.read() as session:
        counted = {
            table.__name__: session.scalar(sa.select(sa.func.count()).select_from(table))
            for table in (Run, Step, LLMCall, DraftVersion, AuditEntry)
        }
        first, last = session.execute(
            sa.select(sa.func.min(Run.created_at), sa.func.max(Run.created_at))
        ).one()
        built = digest.build(session, make_config(), now, timedelta(hours=24))
    db.dispose()
    assert counted == {
        "Run": 3_000,
        "Step": 9_000,
        "LLMCall": 9_000,
        "DraftVersion": 3_000,
        "AuditEntry": 3_000,
    }
    assert timedelta(days=89) < last - first <= timedelta(days=90)
    assert abs(last - now) < timedelta(minutes=1)
    # one day of 90: about 33 runs, some of each outcome, 3 model calls each, decisions
    window = built["totals"]["now"]
    assert 30 <= window["started"] <= 36
    assert window["succeeded"] > window["failed"] > 0
    assert abs(built["llm"]["calls"] - 3 * window["started"]) <= 3  # calls at the window's edge
    assert built["approvals"]["decided"] > 0


def test_the_suite_runs_every_benchmark_once_per_round(monkeypatch: pytest.MonkeyPatch) -> None:
    """Three runs of each in three rounds, not three in a row: a machine whose speed drifts
    during the suite weighs on every figure alike."""
    order: list[str] = []

    def measured(cmd: list[str], sample: catalog.Sample, timeout: float) -> suite.Attempt:
        order.append(sample.id)
        return suite.Attempt(0, 0.1, 50.0, 0.1, result={"runs_per_s": 1.0})

    monkeypatch.setattr(suite, "attempt", measured)
    samples = [catalog.Sample(n, "engine", n, "--runs", 2, 1) for n in ("small", "large")]
    outcomes = suite.run(
        samples, repeat=3, quick=True, postgres_url="", timeout=60, console=Console(quiet=True)
    )
    assert order == ["small", "large"] * 3
    assert [len(o.attempts) for o in outcomes] == [3, 3]
