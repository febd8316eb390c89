"""The benchmarks' entry point: one benchmark's JSON result, and the suite writing its report
(with a crashed benchmark reported, not stopping the others). No timing is asserted."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import bench.__main__ as entry
from bench import catalog, suite

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


@pytest.mark.slow
def test_engine_prints_its_figures_as_json_on_the_last_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bench", "engine", "--runs", "5", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(result) >= ENGINE_KEYS
    assert result["runs"] == result["succeeded"] == 5
    assert result["messages"] > 0


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
