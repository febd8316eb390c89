"""Running the suite: every sample K times, in K rounds, each time in a fresh `python -m
bench.<name> ... --json` process whose last stdout line is its result; a crash, a timeout or
an unreadable result is recorded and the suite goes on. The figures' medians, minima and
maxima, and whether each met its target, are then worked out from the results."""

from __future__ import annotations

import json
import os
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text

from bench import process
from bench.catalog import FIGURES, Figure, Sample

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Attempt:
    exit_code: int
    wall_s: float
    peak_rss_mb: float  # of the benchmark's process, from wait4
    cpu_s: float
    result: dict[str, Any] | None = None
    error: str | None = None
    problem: str | None = None  # the result came back, but something in it is wrong

    def as_json(self) -> dict[str, Any]:
        return {
            "exit_code": self.exit_code,
            "wall_s": round(self.wall_s, 3),
            "peak_rss_mb": self.peak_rss_mb,
            "cpu_s": round(self.cpu_s, 3),
            "error": self.error,
            "problem": self.problem,
            "result": self.result,
        }


@dataclass
class Outcome:
    sample: Sample
    label: str
    command: list[str]
    attempts: list[Attempt] = field(default_factory=list)
    skipped: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.sample.id,
            "label": self.label,
            "command": " ".join(self.command),
            "skipped": self.skipped,
            "attempts": [a.as_json() for a in self.attempts],
        }


@dataclass(frozen=True)
class Row:
    figure: Figure
    label: str
    values: list[float]
    repeats: int
    target: str
    met: bool | None
    status: str | None = None  # "skipped: …" or "failed: …" instead of figures

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.figure.id,
            "figure": self.label,
            "target": self.target or None,
            "median": self.median,
            "min": min(self.values) if self.values else None,
            "max": max(self.values) if self.values else None,
            "values": self.values,
            "met": self.met,
            "status": self.status,
        }


def command(sample: Sample, quick: bool, postgres_url: str) -> list[str]:
    return [sys.executable, "-m", f"bench.{sample.bench}", *sample.args(quick, postgres_url)]


def attempt(cmd: list[str], sample: Sample, timeout: float) -> Attempt:
    measured = process.run(cmd, cwd=REPO, env=os.environ, timeout=timeout)
    done = Attempt(measured.exit_code, measured.wall_s, measured.peak_rss_mb, measured.cpu_s)
    if measured.timed_out:
        done.error = f"timed out after {timeout:.0f} s"
    elif measured.exit_code != 0:
        done.error = f"exit {measured.exit_code}: {_tail(measured.stderr)}"
    else:
        done.result = _last_json(measured.stdout)
        if done.result is None:
            done.error = f"no JSON object on the last line of stdout: {_tail(measured.stdout)}"
        elif "skipped" not in done.result and sample.check is not None:
            done.problem = sample.check(done.result)
    return done


def _last_json(stdout: str) -> dict[str, Any] | None:
    lines = [line for line in stdout.splitlines() if line.strip()]
    if not lines:
        return None
    try:
        parsed = json.loads(lines[-1])
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) else None


def _tail(text: str, lines: int = 3) -> str:
    kept = [line.strip() for line in text.strip().splitlines()[-lines:]]
    return " | ".join(kept) or "(no output)"


def rows(outcomes: Sequence[Outcome]) -> list[Row]:
    """One row per figure of the samples that were run, targets judged on the medians."""
    by_id = {o.sample.id: o for o in outcomes}
    values = {f.id: _values(by_id[f.sample], f.key) for f in FIGURES if f.sample in by_id}
    medians = {k: statistics.median(v) for k, v in values.items() if v}
    table = []
    for figure in FIGURES:
        outcome = by_id.get(figure.sample)
        if outcome is None:
            continue
        found = values[figure.id]
        median = medians.get(figure.id)
        target = figure.target
        table.append(
            Row(
                figure=figure,
                label=f"{outcome.label}: {figure.what}",
                values=found,
                repeats=len(outcome.attempts),
                target="" if target is None else target.text(medians),
                met=None if target is None or median is None else target.met(median, medians),
                status=None if found else _status(outcome),
            )
        )
    return table


def _values(outcome: Outcome, key: str) -> list[float]:
    found = []
    for done in outcome.attempts:
        value = (done.result or {}).get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            found.append(value)
    return found


def _status(outcome: Outcome) -> str:
    if outcome.skipped:
        return f"skipped: {outcome.skipped}"
    errors = [a.error for a in outcome.attempts if a.error]
    return f"failed: {errors[0]}" if errors else "no figure in the result"


def postgres_problem(url: str) -> str | None:
    """Why the PostgreSQL samples cannot run, or None when `url` answers."""
    try:
        import psycopg
    except ImportError:
        return "no PostgreSQL (psycopg is not installed)"
    try:
        psycopg.connect(url, connect_timeout=3).close()
    except (psycopg.Error, OSError):
        return "no PostgreSQL answering"
    return None


def run(
    samples: Sequence[Sample],
    *,
    repeat: int,
    quick: bool,
    postgres_url: str,
    timeout: float,
    console: Console,
) -> list[Outcome]:
    """Each sample `repeat` times, with a progress display on `console`."""
    outcomes = [Outcome(s, s.label(quick), command(s, quick, postgres_url)) for s in samples]
    no_postgres = None
    if any(s.needs_postgres for s in samples):
        no_postgres = postgres_problem(postgres_url)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("benchmarks", total=len(samples) * repeat)
        for outcome in outcomes:
            if outcome.sample.needs_postgres and no_postgres:
                outcome.skipped = no_postgres
                _say(progress.console, "–", f"{outcome.label}: skipped: {no_postgres}", "yellow")
                progress.advance(task, repeat)
        # In rounds, each sample once per round: a machine whose speed drifts during the suite
        # weighs on every figure alike, and a target relative to another figure compares
        # runs spread over the same minutes.
        for k in range(repeat):
            for outcome in outcomes:
                if outcome.skipped:
                    continue
                progress.update(task, description=f"{outcome.label} ({k + 1}/{repeat})")
                done = attempt(outcome.command, outcome.sample, timeout)
                outcome.attempts.append(done)
                progress.advance(task)
                name = f"{outcome.label} #{k + 1}"
                if done.result is not None and "skipped" in done.result:
                    outcome.skipped = str(done.result["skipped"])
                    _say(progress.console, "–", f"{name}: skipped: {outcome.skipped}", "yellow")
                    progress.advance(task, repeat - k - 1)
                elif done.error:
                    _say(progress.console, "✗", f"{name} failed: {done.error}", "red")
                elif done.problem:
                    _say(progress.console, "!", f"{name}: {done.problem}", "yellow")
                else:
                    _say(
                        progress.console,
                        "✓",
                        f"{name}: {done.wall_s:.1f} s, peak RSS {done.peak_rss_mb} MB",
                    )
    return outcomes


def _say(console: Console, mark: str, text: str, style: str = "") -> None:
    console.print(Text(mark, style=style or "green"), Text(text))
