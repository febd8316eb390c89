"""The disk that holds the database fills up: at start-up crewchief stops with the problem
named; while it runs, a command is told it was not done and changes nothing, the bot stays
up, and the work goes on by itself once there is space again. Nothing is corrupted.

The full disk is a real one: a 4 MiB tmpfs filled to the last byte (mounting it needs root,
which CI has)."""

from __future__ import annotations

import errno
import os
import queue
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

FULL = "database or disk is full: no space is left on the disk that holds crew.db"
NOT_DONE = "not done: the database cannot be used"
STARTED = "(research-brief) started"


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A small disk of its own, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("a disk that fills up is a small tmpfs, and mounting one needs root")
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if made.returncode != 0:
        pytest.skip(f"mounting a tmpfs was refused here: {made.stderr.strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(disk: Path) -> Path:
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    return filler


def env() -> dict[str, str]:
    clean = {
        k: v for k, v in os.environ.items() if not k.startswith(("CREWCHIEF_", "OPENAI_", "SLACK_"))
    }
    return {**clean, "CREWCHIEF_DATABASE_URL": "sqlite:///crew.db", "PYTHONUNBUFFERED": "1"}


def crewchief(*args: str) -> list[str]:
    return [sys.executable, "-c", "from bot.cli import main; main()", *args]


class Shell:
    """`crewchief shell` typed into line by line, its output read as it comes."""

    def __init__(self, cwd: Path) -> None:
        self.proc = subprocess.Popen(
            crewchief("shell"),
            cwd=cwd,
            env=env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def expect(self, *texts: str, timeout: float = 60.0) -> str:
        """The output up to the first line holding one of `texts`, its lines joined into one
        (the terminal wraps long lines)."""
        read: list[str] = []
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError(f"none of {texts} within {timeout} s: {self.seen}") from None
            self.seen.append(line)
            read.append(line)
            if any(text in line for text in texts):
                return " ".join(" ".join(read).split())

    def quit(self) -> int:
        self.type("quit")
        return self.proc.wait(timeout=60)


@pytest.mark.slow
def test_a_full_disk_at_start_is_named_and_a_freed_one_works(disk: Path) -> None:
    filler = fill(disk)
    run = ["shell", "--script", "-"]
    full = subprocess.run(
        crewchief(*run), cwd=disk, env=env(), input="/crew run research-brief x\n",
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert full.returncode == 2 and "Traceback" not in full.stderr
    assert f"cannot use the database sqlite:///crew.db: {FULL}" in " ".join(full.stderr.split())
    filler.unlink()
    freed = subprocess.run(
        crewchief(*run), cwd=disk, env=env(), input="/crew run research-brief x\n",
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert freed.returncode == 0, freed.stderr
    assert f"run 1 {STARTED}" in freed.stdout


@pytest.mark.slow
def test_a_disk_filling_up_while_the_bot_runs(disk: Path) -> None:
    shell = Shell(disk)
    try:
        shell.type("/crew run research-brief before")
        shell.expect(f"run 1 {STARTED}")
        shell.type("wait")
        shell.type("whoami")
        shell.expect("you are")  # the wait is over
        filler = fill(disk)
        # commands go on until the database needs a byte the disk does not have
        started = 1
        for i in range(500):
            shell.type(f"/crew run research-brief topic {i}")
            said = shell.expect(STARTED, NOT_DONE)
            if NOT_DONE in said:
                break
            started += 1
        else:
            raise AssertionError("500 runs started on a full disk")
        assert FULL in said + " " + shell.expect("nothing was changed")
        print(f"the disk was full after {started} runs; the next command was refused")
        shell.type("whoami")
        shell.expect("you are")  # still up

        filler.unlink()
        shell.type("/crew run research-brief after")
        shell.expect(f"run {started + 1} {STARTED}")
        shell.type("wait")  # every run, including those whose steps met the full disk
        assert shell.quit() == 0
    finally:
        shell.proc.kill()
    output = "".join(shell.seen) + "".join(iter_queue(shell.lines))
    assert "Traceback" not in output

    with sqlite3.connect(disk / "crew.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        # each "started" answer is one run, the refused command none; all of them finished
        statuses = [s for (s,) in db.execute("SELECT status FROM run ORDER BY id")]
    assert statuses == ["succeeded"] * (started + 1)


def iter_queue(lines: queue.Queue[str]) -> Iterator[str]:
    while True:
        try:
            yield lines.get_nowait()
        except queue.Empty:
            return
