"""`python -m bench`: the benchmark suite, or one benchmark.

    python -m bench [NAME ...] [--json] [--repeat K] [--quick] [--out DIR]
    python -m bench NAME OPTION ...      e.g. python -m bench engine --runs 1000 --json

The first form runs every benchmark (or the named ones), each K times (default 3; --quick:
once, at small sizes), each time in a fresh `python -m bench.NAME ... --json` process, and
writes DIR/PERFORMANCE.md and DIR/performance.json (DIR defaults to docs/). The second form,
a single benchmark name followed by an option of that benchmark's own, runs that benchmark
once in this process, as `python -m bench.NAME OPTION ...` does.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.catalog import BENCHMARKS, selected

DEFAULT_REPEAT = 3
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/test"
SUITE_OPTIONS = frozenset(
    {"--json", "--repeat", "--quick", "--out", "--timeout", "--postgres-url", "-h", "--help"}
)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="benchmarks: " + ", ".join(BENCHMARKS),
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help="benchmarks to run (all)")
    parser.add_argument(
        "--json", action="store_true", help="print the results as one JSON object at the end"
    )
    parser.add_argument(
        "--repeat",
        type=int,
        metavar="K",
        help=f"runs of each benchmark (default {DEFAULT_REPEAT}; 1 with --quick)",
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each")
    parser.add_argument(
        "--out",
        type=Path,
        default=Path(__file__).resolve().parent.parent / "docs",
        metavar="DIR",
        help="where PERFORMANCE.md and performance.json go (default: docs/)",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="a benchmark run taking longer is killed and reported (default 3600)",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("CREWCHIEF_TEST_POSTGRES_URL", DEFAULT_POSTGRES),
        metavar="URL",
        help="PostgreSQL for the PostgreSQL figures, skipped when it does not answer "
        f"(default: CREWCHIEF_TEST_POSTGRES_URL, else {DEFAULT_POSTGRES})",
    )
    return parser


def single(argv: Sequence[str]) -> str | None:
    """The benchmark to run in this process: a name, then an option the suite does not have."""
    if not argv or argv[0] not in BENCHMARKS:
        return None
    options = {arg.split("=", 1)[0] for arg in argv[1:] if arg.startswith("-")}
    return argv[0] if options - SUITE_OPTIONS else None


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = single(argv)
    if name is not None:
        importlib.import_module(f"bench.{name}").main(argv[1:])
        return
    args = parser().parse_args(argv)
    unknown = [n for n in args.names if n not in BENCHMARKS]
    if unknown:
        parser().error(f"unknown benchmark {unknown[0]!r}; choose from {', '.join(BENCHMARKS)}")
    repeat = args.repeat if args.repeat is not None else 1 if args.quick else DEFAULT_REPEAT
    if repeat < 1:
        parser().error("--repeat must be at least 1")
    run_suite(args, repeat, "python -m bench " + shlex.join(argv) if argv else "python -m bench")


def run_suite(args: argparse.Namespace, repeat: int, invocation: str) -> None:
    from rich.console import Console

    from bench import report, suite

    console = Console(stderr=True, highlight=False)
    outcomes = suite.run(
        selected(args.names),
        repeat=repeat,
        quick=args.quick,
        postgres_url=args.postgres_url,
        timeout=args.timeout,
        console=console,
    )
    table = suite.rows(outcomes)
    info = report.machine()
    options = {"invocation": invocation.strip(), "repeat": repeat, "quick": args.quick}
    text = report.markdown(table, outcomes, info, **options)
    data = report.as_json(table, outcomes, info, **options)
    md, js = report.write(args.out, text, data)
    console.print(f"wrote {md} and {js}")
    print(json.dumps(data) if args.json else text, flush=True)


if __name__ == "__main__":
    main()
