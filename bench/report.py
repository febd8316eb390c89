"""What the suite writes: docs/PERFORMANCE.md (a table of the figures with the machine they
were measured on) and docs/performance.json (the same figures, plus every sample's results)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.catalog import BENCHMARKS, BOUNDS
from bench.suite import REPO, Outcome, Row


def machine() -> dict[str, Any]:
    """CPU model, cores, RAM, Python, system, date, load and commit of this sitting."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "ram_gib": _ram_gib(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "system": f"{platform.system()} {platform.release()}",
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "load_average": None if load is None else round(load[0], 2),
        "commit": _commit(),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _ram_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 1024**2, 1)
    except OSError:
        pass
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3, 1)
    except (ValueError, OSError, AttributeError):
        return None


def _git(*args: str) -> str:
    done = subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True)
    return done.stdout.strip()


def _commit() -> str | None:
    try:
        head = _git("rev-parse", "--short", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return f"{head}{' (with uncommitted changes)' if dirty else ''}"


def machine_line(info: dict[str, Any]) -> str:
    parts = [
        info["cpu"],
        f"{info['cores']} cores",
        f"{info['ram_gib']} GiB RAM" if info["ram_gib"] is not None else "RAM unknown",
        f"Python {info['python']}",
        info["system"],
        info["date"],
    ]
    if info["load_average"] is not None:
        parts.append(f"load average {info['load_average']} at the start")
    if info["commit"]:
        parts.append(f"commit {info['commit']}")
    return " · ".join(parts)


def number(value: float | None) -> str:
    if value is None:
        return "—"
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    magnitude = abs(value)
    digits = 0 if magnitude >= 100 else 1 if magnitude >= 10 else 2 if magnitude >= 1 else 3
    return f"{value:,.{digits}f}"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown(
    table: Sequence[Row],
    outcomes: Sequence[Outcome],
    info: dict[str, Any],
    *,
    invocation: str,
    repeat: int,
    quick: bool,
) -> str:
    runs = "one run" if repeat == 1 else f"the median of {repeat} runs"
    lines = ["# Performance", ""]
    lines.append(f"Written by `{invocation}`. Each figure is {runs} of its benchmark,")
    lines.append(
        "each run in a fresh process."
        if repeat == 1
        else f"each run in a fresh process, in {repeat} rounds of every benchmark."
    )
    if quick:
        lines += [
            "",
            "**Quick run (`--quick`): small sizes, to check that the benchmarks work. These are",
            "not the figures to compare with the targets.**",
        ]
    lines += ["", f"Machine: {machine_line(info)}.", ""]
    lines += ["| figure | target | median | min | max | met |", "|---|---|---|---|---|---|"]
    for row in table:
        label = row.label
        if row.values and len(row.values) < row.repeats:
            label += f" ({len(row.values)} of {row.repeats} runs)"
        if row.status:
            cells = [label, row.target or "—", row.status, "—", "—", "—"]
        else:
            met = "—" if row.met is None else "yes" if row.met else "**no**"
            low, high = min(row.values), max(row.values)
            cells = [label, row.target or "—", number(row.median), number(low), number(high), met]
        lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    problems = [
        f"- {o.label} #{i}: {a.error or a.problem}"
        for o in outcomes
        for i, a in enumerate(o.attempts, 1)
        if a.error or a.problem
    ]
    if problems:
        lines += ["", "Problems:", "", *problems]
    benches = {o.sample.id: o.sample.bench for o in outcomes}
    missed = {benches.get(row.figure.sample) for row in table if row.met is False}
    bounds = [f"- **{name}**: {text}." for name, text in BOUNDS.items() if name in missed]
    if bounds and not quick:
        lines += ["", "What bounds the figures that miss their targets:", "", *bounds]
    lines += ["", "What each benchmark does (in detail: the docstring of `bench/NAME.py`):", ""]
    ran = {o.sample.bench for o in outcomes}
    lines += [f"- **{name}**: {text}." for name, text in BENCHMARKS.items() if name in ran]
    lines += [
        "",
        "Every benchmark's own results, and the peak RSS and CPU time of each run's process,",
        "are in `performance.json` beside this file.",
        "",
    ]
    return "\n".join(lines)


def as_json(
    table: Sequence[Row],
    outcomes: Sequence[Outcome],
    info: dict[str, Any],
    *,
    invocation: str,
    repeat: int,
    quick: bool,
) -> dict[str, Any]:
    return {
        "invocation": invocation,
        "quick": quick,
        "repeat": repeat,
        "machine": info,
        "figures": [row.as_json() for row in table],
        "samples": [outcome.as_json() for outcome in outcomes],
    }


def write(folder: Path, text: str, data: dict[str, Any]) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    md, js = folder / "PERFORMANCE.md", folder / "performance.json"
    md.write_text(text, encoding="utf-8")
    js.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return md, js
