"""Running a child process and measuring it alone: wall time, and from wait4 its peak resident
set size and CPU time (the child's own resource usage, not that of its siblings)."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    exit_code: int  # negative: killed by that signal
    wall_s: float
    peak_rss_mb: float
    cpu_s: float
    stdout: str
    stderr: str
    timed_out: bool = False


def rss_mb(maxrss: int) -> float:
    """ru_maxrss in MB (Linux reports kilobytes, macOS bytes)."""
    return round(maxrss / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)


def run(
    args: Sequence[str],
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> Measured:
    """Run `args` to completion in a session of its own. Whatever it leaves running in that
    session is killed when it exits; on timeout or interruption, the whole session is."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        began = time.perf_counter()
        process = subprocess.Popen(
            list(args),
            cwd=cwd,
            env=None if env is None else dict(env),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        try:
            status, usage, timed_out = _wait(process.pid, began, timeout)
        except BaseException:
            _kill_session(process.pid)
            process.wait()
            raise
        _kill_session(process.pid)
        wall = time.perf_counter() - began
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return Measured(
            exit_code=process.returncode,
            wall_s=wall,
            peak_rss_mb=rss_mb(usage.ru_maxrss),
            cpu_s=usage.ru_utime + usage.ru_stime,
            stdout=out.read().decode(errors="replace"),
            stderr=err.read().decode(errors="replace"),
            timed_out=timed_out,
        )


def _wait(
    pid: int, began: float, timeout: float | None
) -> tuple[int, resource.struct_rusage, bool]:
    """The child's wait status and resource usage (wait4), and whether it was killed for
    running longer than `timeout` seconds."""
    while True:
        found, status, usage = os.wait4(pid, os.WNOHANG)
        if found:
            return status, usage, False
        if timeout is not None and time.perf_counter() - began > timeout:
            _kill_session(pid)
            _, status, usage = os.wait4(pid, 0)
            return status, usage, True
        time.sleep(0.02)


def _kill_session(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def vm_rss_mb(pid: int) -> float | None:
    """A running process's resident set size now (VmRSS in /proc/PID/status); None where
    there is no /proc."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return None
