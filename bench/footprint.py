"""What crewchief costs to start and to keep running: `crewchief shell --script FILE` answering
`/crew help` (FILE holds that one line), each run a child process measured alone (wall time,
and peak RSS from wait4), first on a new database (migrations included), then again on the
database that run made; and `crewchief start --platform slack` in HTTP mode, pointed at the
local fake Slack, with its resident memory (VmRSS in /proc/PID/status) read once it has been
ready and idle for a few seconds.

    python -m bench footprint [--idle 5] [--json]

Targets for the second shell run: 0.7 s and 70 MB. The idle figure is reported only.
"""

from __future__ import annotations

import asyncio
import os
import socket
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import aiohttp

from bench import common, process
from tests.fakes.slack_api import BOT_TOKEN, fake_slack
from tests.fakes.slack_signing import SIGNING_SECRET

READY_TIMEOUT_S = 60.0
SHELL_TIMEOUT_S = 120.0


def crewchief() -> list[str]:
    """The installed `crewchief` script beside this Python, else `python -m bot.cli`."""
    script = Path(sys.executable).with_name("crewchief")
    return [str(script)] if script.exists() else [sys.executable, "-m", "bot.cli"]


def clean_env(folder: Path, **extra: str) -> dict[str, str]:
    """This environment without crewchief, model or chat settings, and with Python caching
    bytecode as it does by default; the database in `folder`."""
    prefixes = ("CREWCHIEF_", "OPENAI_", "SLACK_", "DISCORD_")
    dropped = {"PYTHONDONTWRITEBYTECODE"}
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes) and k not in dropped}
    env["CREWCHIEF_DATABASE_URL"] = f"sqlite:///{folder / 'crewchief.db'}"
    env.update(extra)
    return env


def shell_help(folder: Path) -> process.Measured:
    script = folder / "help.crew"
    script.write_text("/crew help\n", encoding="utf-8")
    measured = process.run(
        [*crewchief(), "shell", "--script", str(script)],
        cwd=folder,
        env=clean_env(folder),
        timeout=SHELL_TIMEOUT_S,
    )
    if measured.exit_code != 0 or "/crew" not in measured.stdout:
        raise RuntimeError(
            f"crewchief shell --script exited {measured.exit_code}: {measured.stderr[-2000:]}"
        )
    return measured


async def idle_start(folder: Path, idle_s: float) -> tuple[float, float | None]:
    """Seconds until /healthz answered 200, and VmRSS after `idle_s` more seconds."""
    port = _free_port()
    async with fake_slack() as slack, aiohttp.ClientSession() as http:
        env = clean_env(
            folder,
            SLACK_BOT_TOKEN=BOT_TOKEN,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=slack.api_url,
        )
        began = time.perf_counter()
        child = await asyncio.create_subprocess_exec(
            *crewchief(),
            "start",
            "--platform",
            "slack",
            "--port",
            str(port),
            cwd=folder,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await _until_ready(http, port, child)
            ready = time.perf_counter() - began
            await asyncio.sleep(idle_s)
            rss = process.vm_rss_mb(child.pid)
        finally:
            if child.returncode is None:
                child.terminate()
            await child.communicate()
    return ready, rss


async def _until_ready(
    http: aiohttp.ClientSession, port: int, child: asyncio.subprocess.Process
) -> None:
    deadline = time.perf_counter() + READY_TIMEOUT_S
    while time.perf_counter() < deadline:
        if child.returncode is not None:
            break
        try:
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.05)
    stderr = b""
    if child.returncode is not None and child.stderr is not None:
        stderr = await child.stderr.read()
    raise RuntimeError(f"crewchief start did not become ready: {stderr.decode()[-2000:]}")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def measure(idle_s: float) -> common.Result:
    with common.scratch() as tmp:
        shell_dir, start_dir = tmp / "shell", tmp / "start"
        shell_dir.mkdir()
        start_dir.mkdir()
        first = shell_help(shell_dir)
        again = shell_help(shell_dir)
        ready_s, idle_rss = asyncio.run(idle_start(start_dir, idle_s))
    return {
        "shell_help_s": round(again.wall_s, 3),
        "shell_help_rss_mb": again.peak_rss_mb,
        "shell_help_cpu_s": round(again.cpu_s, 3),
        "shell_help_new_database_s": round(first.wall_s, 3),
        "shell_help_new_database_rss_mb": first.peak_rss_mb,
        "start_ready_s": round(ready_s, 3),
        "start_idle_s": idle_s,
        "start_idle_rss_mb": idle_rss,
    }


def report(result: common.Result) -> list[str]:
    return [
        f"crewchief shell --script (/crew help): {result['shell_help_s']:.2f} s, "
        f"peak RSS {result['shell_help_rss_mb']} MB",
        f"  on a new database: {result['shell_help_new_database_s']:.2f} s, "
        f"peak RSS {result['shell_help_new_database_rss_mb']} MB",
        f"crewchief start --platform slack: ready in {result['start_ready_s']:.2f} s, "
        f"RSS {result['start_idle_rss_mb']} MB after {result['start_idle_s']} s idle",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument(
        "--idle", type=float, default=5.0, help="seconds `crewchief start` idles before its RSS"
    )
    args = parser.parse_args(argv)
    result = measure(args.idle)
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
