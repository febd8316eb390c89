"""`crewchief digest` as an operator runs it: a real process, a real SQLite file."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.test_cli import crewchief


@pytest.mark.slow
def test_digest_print_on_a_fresh_database_says_quiet(tmp_path: Path) -> None:
    done = crewchief(tmp_path, "digest", "--print")
    assert done.returncode == 0, done.stderr
    assert "digest · last 24h" in done.stdout
    assert "quiet: no runs, no model calls and no drafts waiting in the last 24h" in done.stdout


@pytest.mark.slow
def test_digest_print_covers_the_window_asked_for(tmp_path: Path) -> None:
    ran = crewchief(
        tmp_path,
        "shell",
        "--as",
        "alice",
        "--script",
        "-",
        stdin="/crew run research-brief solar\n",
    )
    assert ran.returncode == 0, ran.stderr
    done = crewchief(tmp_path, "digest", "--print", "--window", "7d")
    assert done.returncode == 0, done.stderr
    assert "digest · last 7d" in done.stdout
    assert "research-brief: started 1" in done.stdout and "succeeded 1" in done.stdout
    bad = crewchief(tmp_path, "digest", "--print", "--window", "soon")
    assert bad.returncode == 2 and "--window: 'soon' is not a duration" in bad.stderr


@pytest.mark.slow
def test_digest_without_print_queues_it_for_each_ops_channel(tmp_path: Path) -> None:
    refused = crewchief(tmp_path, "digest")
    assert refused.returncode == 2
    assert "no ops channels to post to: set ops.channels in crewchief.yml" in refused.stderr
    (tmp_path / "crewchief.yml").write_text(
        'ops: {channels: ["slack:C0OPS", "shell:ops"]}\n', encoding="utf-8"
    )
    done = crewchief(tmp_path, "digest")
    assert done.returncode == 0, done.stderr
    assert "digest queued for slack:C0OPS, shell:ops" in done.stdout
    with sqlite3.connect(tmp_path / "crewchief.db") as conn:
        rows = conn.execute(
            "SELECT platform, channel, template, status FROM outbox ORDER BY id"
        ).fetchall()
    assert rows == [("slack", "C0OPS", "digest", "pending"), ("shell", "ops", "digest", "pending")]
