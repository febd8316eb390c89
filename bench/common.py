"""What the benchmark modules share: a fresh database for each measurement, the process's own
resource use, percentiles, and printing a result as lines or as one JSON object."""

from __future__ import annotations

import argparse
import gc
import json
import math
import resource
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bot.settings import Settings

Result = dict[str, Any]


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with `--json`; the description is the docstring's first paragraph."""
    parser = argparse.ArgumentParser(
        description=(doc or "").split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--json", action="store_true", help="print one JSON object on the last line of stdout"
    )
    return parser


def add_database_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--database-url",
        help="a PostgreSQL URL: the benchmark works in a schema of its own, dropped afterwards "
        "(default: a new SQLite file in a temporary folder)",
    )


@contextmanager
def fresh_database(url: str | None, folder: Path) -> Iterator[str]:
    """An empty database for one measurement: a new SQLite file in `folder`, or a new schema
    in the PostgreSQL database `url` (dropped on exit), so earlier rows never count."""
    if url is None:
        yield f"sqlite:///{folder / 'bench.db'}"
        return
    parsed = make_url(url)
    if parsed.get_backend_name() != "postgresql":
        raise SystemExit(f"--database-url takes a PostgreSQL URL, not {parsed.drivername}")
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(parsed.set(drivername="postgresql+psycopg"))
    with admin.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in url else "?"
    try:
        yield f"{url}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@contextmanager
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="crewchief-bench-") as tmp:
        yield Path(tmp)


def settings(database_url: str, folder: Path, **values: Any) -> Settings:
    """Settings from these values and the defaults alone (neither the environment nor a
    `.env` file counts): no crewchief.yml, the offline model unless `values` say otherwise."""
    chosen = {name: field.default for name, field in Settings.model_fields.items()}
    chosen.update(
        crewchief_llm="offline",
        crewchief_database_url=database_url,
        crewchief_config=folder / "absent.yml",
    )
    chosen.update(values)
    return Settings(_env_file=None, **chosen)  # type: ignore[call-arg]


def backend(url: str) -> str:
    return make_url(url).get_backend_name()


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (getrusage ru_maxrss)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


@contextmanager
def gc_pauses() -> Iterator[list[float]]:
    """The garbage collector's pauses while the block runs, in milliseconds: a list filled in
    as they happen (every thread waits while the collector runs)."""
    pauses: list[float] = []
    began = 0.0

    def timed(phase: str, _info: dict[str, int]) -> None:
        nonlocal began
        if phase == "start":
            began = time.perf_counter()
        else:
            pauses.append((time.perf_counter() - began) * 1000)

    gc.callbacks.append(timed)
    try:
        yield pauses
    finally:
        gc.callbacks.remove(timed)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between the closest ranks."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def latency_summary(ms: Sequence[float]) -> Result:
    """p50, p95, p99 and max of latencies in milliseconds (None when there are none)."""
    if not ms:
        return {"p50_ms": None, "p95_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(percentile(ms, 50), 2),
        "p95_ms": round(percentile(ms, 95), 2),
        "p99_ms": round(percentile(ms, 99), 2),
        "max_ms": round(max(ms), 2),
    }


def emit(result: Result, as_json: bool, lines: Sequence[str]) -> None:
    """The result as human-readable lines, or (`--json`) as one JSON object on one line."""
    if as_json:
        print(json.dumps(result), flush=True)
    else:
        print("\n".join(lines), flush=True)
