"""What the crash and replica tests share: a webhook that counts keys, the crewchief.yml and
environment they run the bot with, and people launching and approving runs while the bot's
processes come and go: through Slack to `crewchief start` (Harness), or typed into
`crewchief shell --script` (ShellHarness)."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import aiohttp
import yaml
from aiohttp import web
from sqlmodel import col, select

from storage import models
from storage.db import Database
from tests.conftest import free_port
from tests.fakes.local_server import serve_locally
from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer
from tests.fakes.slack_api import BOT_TOKEN, FakeSlack
from tests.fakes.slack_signing import (
    SIGNING_SECRET,
    reaction_added,
    signed_form,
    signed_json,
    slash_command,
)

CHANNEL = "C0CONTENT1"
OPS = "C0OPS00001"
EDITH = "U0EDITH001"


@asynccontextmanager
async def webhook() -> AsyncIterator[dict[str, Any]]:
    """A publishing target that processes each Idempotency-Key once and counts every POST."""
    seen: Counter[str] = Counter()

    async def hook(request: web.Request) -> web.Response:
        seen[request.headers.get("Idempotency-Key", "")] += 1
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_post("/hook", hook)
    async with serve_locally(app) as base:
        yield {"url": f"{base}/hook", "seen": seen}


def write_config(
    tmp_path: Path,
    webhook_url: str,
    *,
    ops: str | None = None,
    approver: str = f"slack:{EDITH}",
) -> None:
    """blog-post: research, a draft `approver` (Edith on Slack) approves, publication to the
    webhook; with `ops`, a digest posted there every minute."""
    config: dict[str, Any] = {
        "workflows": {
            "blog-post": {
                "steps": [
                    {"name": "research", "agent": "researcher"},
                    {
                        "name": "draft",
                        "agent": "writer",
                        "approval": {"approvers": [approver]},
                    },
                    {
                        "name": "publish",
                        "agent": "publisher",
                        "publish": {"to": "webhook", "url": webhook_url},
                    },
                ]
            }
        }
    }
    if ops is not None:
        config["ops"] = {"channels": [f"slack:{ops}"]}
        config["digest"] = {"schedule": "* * * * *", "window": "1h"}
    (tmp_path / "crewchief.yml").write_text(yaml.safe_dump(config))


def bot_env(db_url: str, llm: FakeOpenAIServer, slack: FakeSlack | None) -> dict[str, str]:
    """The bot's environment: the test's database and model server, and the fake Slack when
    there is one."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "CREWCHIEF_"))},
        "CREWCHIEF_DATABASE_URL": db_url,
        "CREWCHIEF_LLM": "openai",
        "OPENAI_API_KEY": DEFAULT_API_KEY,
        "OPENAI_BASE_URL": llm.base_url,
    }
    if slack is not None:
        env |= {
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_API_URL": slack.api_url,
        }
    return env


class Harness:
    """`runs` blog-post runs launched and approved through Slack, one request at a time, to
    whichever of the bot's processes (replicas) is up, as a load balancer would send them."""

    def __init__(
        self,
        tmp_path: Path,
        slack: FakeSlack,
        env: dict[str, str],
        http: aiohttp.ClientSession,
        *,
        runs: int,
        replicas: int = 1,
    ) -> None:
        self.tmp_path = tmp_path
        self.slack = slack
        self.env = env
        self.http = http
        self.runs = runs
        self.ports = [free_port() for _ in range(replicas)]
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._turn = 0
        self.acked: set[int] = set()  # commands Slack got a 200 for
        self.sent: set[int] = set()
        self.approved: set[str] = set()  # draft ts whose ✅ was acknowledged
        self.next_run = 0

    async def start(self, replica: int = 0) -> None:
        port = self.ports[replica]
        with self.log(replica).open("ab") as log:  # the child holds its own copy
            self.procs[replica] = await self._spawn(port, log)
        for _ in range(600):
            try:
                async with self.http.get(f"http://127.0.0.1:{port}/healthz") as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise AssertionError(f"crewchief start did not come up\n{self.log_tails()}")

    async def _spawn(self, port: int, log: BinaryIO) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bot.cli",
            "start",
            "--platform",
            "slack",
            "--port",
            str(port),
            cwd=self.tmp_path,
            env=self.env,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=log,
        )

    def log(self, replica: int) -> Path:
        """Where a replica's log goes, across its restarts."""
        return self.tmp_path / f"replica-{replica}.log"

    def log_tails(self, lines: int = 40) -> str:
        """The end of every replica's log, for a failure's message."""
        tails = []
        for replica in range(len(self.ports)):
            path = self.log(replica)
            if path.exists():
                text = path.read_text(encoding="utf-8", errors="replace").splitlines()
                tails.append(f"--- replica {replica}\n" + "\n".join(text[-lines:]))
        return "\n".join(tails)

    async def kill(self, replica: int = 0) -> None:
        proc = self.procs.pop(replica)
        proc.send_signal(signal.SIGKILL)
        await proc.wait()

    async def stop(self) -> None:
        for proc in self.procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs.values():
            await asyncio.wait_for(proc.wait(), 30)
        self.procs.clear()

    async def post(self, body: str, headers: dict[str, str]) -> bool:
        """To the next live replica; True when it acknowledged (HTTP 200)."""
        live = sorted(self.procs)
        if not live:
            return False
        self._turn += 1
        port = self.ports[live[self._turn % len(live)]]
        url = f"http://127.0.0.1:{port}/slack/events"
        try:
            async with self.http.post(url, data=body, headers=headers) as r:
                return r.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def launch(self) -> None:
        """One `/crew run`, as a person types it: once (Slack never retries a command)."""
        if self.next_run >= self.runs:
            return
        i = self.next_run
        self.next_run += 1
        self.sent.add(i)
        command = slash_command(
            f"run blog-post topic-{i:03d}", user_id="U0ALICE001", channel_id=CHANNEL
        )
        if await self.post(*signed_form(command)):
            self.acked.add(i)

    def drafts(self) -> list[str]:
        found = []
        for card in self.slack.top_level(CHANNEL):
            found += [m.ts for m in self.slack.thread(CHANNEL, card.ts) if "draft v1" in m.text]
        return found

    async def approve(self) -> None:
        """✅ on each draft not yet acknowledged; like Slack, a delivery that was not
        acknowledged is sent again with the same event id."""
        for ts in self.drafts():
            if ts in self.approved:
                continue
            event = reaction_added(
                user=EDITH,
                reaction="white_check_mark",
                channel=CHANNEL,
                ts=ts,
                event_id=f"Ev{ts.replace('.', '')}",
            )
            if await self.post(*signed_json(event)):
                self.approved.add(ts)

    async def drive(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        until = loop.time() + seconds
        while loop.time() < until:
            await self.launch()
            await self.approve()
            await asyncio.sleep(0.02)


def runs_by_text(db: Database) -> dict[str, list[models.Run]]:
    with db.read() as s:
        runs = s.exec(select(models.Run)).all()
    grouped: dict[str, list[models.Run]] = {}
    for run in runs:
        grouped.setdefault(run.text, []).append(run)
    return grouped


def steps_in_flight(db: Database) -> dict[int, str | None]:
    """The running steps and the workers holding them: at a kill, what the dead process had."""
    with db.read() as s:
        running = s.exec(
            select(models.Step).where(models.Step.status == models.StepStatus.RUNNING)
        ).all()
    return {step.id: step.lease_owner for step in running if step.id is not None}


def still_held(db: Database, in_flight: dict[int, str | None]) -> list[int]:
    """Those of `in_flight` still running under the same holder: not moving again yet."""
    with db.read() as s:
        return [
            step_id
            for step_id, owner in in_flight.items()
            if (step := s.get(models.Step, step_id)) is not None
            and step.status == models.StepStatus.RUNNING
            and step.lease_owner == owner
        ]


SHELL_APPROVER = "editor"
SHELL_REQUESTER = "alice"
_ECHO = re.compile(r"^shell:[\w.-]+> (.*)$")  # the shell echoes each line of a script
_STARTED = re.compile(r"^\s*run (\d+) \(blog-post\) started")
_DRAFT = re.compile(r"#(\d+) writer · draft v1\b")
_MESSAGE = re.compile(r"^\s*#\d+ ")  # a bot message, a run card or in a thread


def topic(i: int) -> str:
    return f"topic-{i:03d}"


@dataclass
class ScriptLine:
    text: str
    launch: int | None = None  # the topic number a `/crew run` line launches
    draft: int | None = None  # the ref of the draft a `react` line approves


@dataclass
class ShellProcess:
    """One `crewchief shell --script` process and what it printed so far."""

    proc: asyncio.subprocess.Process
    lines: list[ScriptLine]
    stdout: Path
    stderr: Path
    reader: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    output: asyncio.Event = field(default_factory=asyncio.Event)  # set at each line read
    at: int = -1  # the script line echoed last: being run, or done once the next is echoed
    messages: int = 0  # bot messages printed (#ref …)
    done: set[int] = field(default_factory=set)  # lines whose answer (or successor) was seen
    killed: bool = False


class ShellHarness:
    """`runs` blog-post runs launched by shell:alice and approved by shell:editor, typed into
    one `crewchief shell --script FILE` process after another.

    A script runs its lines, waits until no work is pending and exits, unless it is killed
    first. The next process gets the lines not yet acknowledged: a `/crew run` counts as
    acknowledged once its answer ("run N (blog-post) started") was printed; one whose answer
    was not seen may or may not have happened, and is typed again only if no run has its
    topic. The shell has no event ids that last across processes, so that look-up is what
    keeps each command to one run. A draft's ✅ is typed (again) while its draft has no vote.
    """

    def __init__(self, tmp_path: Path, env: dict[str, str], db: Database, *, runs: int) -> None:
        self.tmp_path = tmp_path
        self.env = {**env, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
        self.db = db
        self.runs = runs
        self.to_launch: list[int] = list(range(runs))
        self.acked: dict[int, int] = {}  # topic number -> the run id its answer printed
        # `/crew run` lines a kill cut short (started, answer not seen): those that had
        # happened (their run exists) and those that had not (typed again)
        self.unseen: set[int] = set()
        self.undone: set[int] = set()
        self.not_reached = 0  # `/crew run` lines a kill came before: typed again
        self.reactions_cut: list[bool] = []  # for each ✅ cut short: whether it had happened
        self.drafts: set[int] = set()  # refs of drafts the shell printed
        self.reactions_acked = 0
        self.processes: list[ShellProcess] = []
        self.current: ShellProcess | None = None
        self.kills = 0
        self.kills_before_ready = 0

    # -- what to type ---------------------------------------------------------------------

    def voted(self) -> set[int]:
        """Refs of the printed drafts that have a vote (their ✅ happened)."""
        with self.db.read() as s:
            rows = s.exec(
                select(models.Message.id)
                .join(
                    models.ApprovalVote,
                    (models.ApprovalVote.step_id == models.Message.step_id)
                    & (models.ApprovalVote.version == models.Message.version),
                )
                .where(col(models.Message.id).in_(self.drafts))
            ).all()
        return {ref for ref in rows if ref is not None}

    def script(self, launches: int, *, wait: bool = False) -> list[ScriptLine]:
        """A ✅ on each printed draft with no vote yet, then the next `launches` runs."""
        lines: list[ScriptLine] = []
        undecided = sorted(self.drafts - self.voted())
        if undecided:
            lines.append(ScriptLine(f"as {SHELL_APPROVER}"))
            lines += [ScriptLine(f"react #{ref} ✅", draft=ref) for ref in undecided]
            lines.append(ScriptLine(f"as {SHELL_REQUESTER}"))
        batch, self.to_launch = self.to_launch[:launches], self.to_launch[launches:]
        lines += [ScriptLine(f"/crew run blog-post {topic(i)}", launch=i) for i in batch]
        if wait:
            lines.append(ScriptLine("wait"))
        return lines

    def left_to_type(self) -> bool:
        return bool(self.to_launch) or bool(self.drafts - self.voted())

    # -- processes ------------------------------------------------------------------------

    async def start(self, lines: list[ScriptLine]) -> ShellProcess:
        n = len(self.processes)
        path = self.tmp_path / f"script-{n:03d}.txt"
        path.write_text("".join(f"{line.text}\n" for line in lines), encoding="utf-8")
        stderr = self.tmp_path / f"stderr-{n:03d}.log"
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot.cli",
                "shell",
                "--script",
                str(path),
                "--as",
                SHELL_REQUESTER,
                cwd=self.tmp_path,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=err,
            )
        shell = ShellProcess(proc, lines, self.tmp_path / f"stdout-{n:03d}.log", stderr)
        shell.reader = asyncio.create_task(self._read(shell))
        self.processes.append(shell)
        self.current = shell
        return shell

    async def _read(self, shell: ShellProcess) -> None:
        assert shell.proc.stdout is not None
        async for raw in shell.proc.stdout:
            with shell.stdout.open("ab") as out:  # kept beside the script, to replay by hand
                out.write(raw)
            line = raw.decode("utf-8", "replace").rstrip("\n")
            if line.startswith("try: "):  # the last line of the greeting: the bot is up
                shell.ready.set()
            elif (echo := _ECHO.match(line)) is not None:
                if shell.at >= 0 and shell.lines[shell.at].launch is None:
                    shell.done.add(shell.at)  # the next line started: this one was answered
                shell.at += 1
                assert shell.lines[shell.at].text == echo[1], (shell.lines[shell.at], line)
            elif (started := _STARTED.match(line)) is not None:
                launched = shell.lines[shell.at].launch
                assert launched is not None, line
                self.acked[launched] = int(started[1])
                shell.done.add(shell.at)
            elif _MESSAGE.match(line) is not None:
                shell.messages += 1
            if (draft := _DRAFT.search(line)) is not None:
                self.drafts.add(int(draft[1]))
            shell.output.set()
            shell.output.clear()

    async def run_until(self, moment: float) -> bool:
        """Until the loop's time `moment`; True when the process ended by itself before."""
        shell = self.current
        assert shell is not None
        delay = max(0.0, moment - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(asyncio.shield(shell.proc.wait()), delay)
        except TimeoutError:
            return False
        await self._ended(shell)
        return True

    async def up(self, timeout: float = 120) -> bool:
        """Until the bot has greeted (it is up); False when the process ended before."""
        shell = self.current
        assert shell is not None
        ready = asyncio.ensure_future(shell.ready.wait())
        exited = asyncio.ensure_future(asyncio.shield(shell.proc.wait()))
        await asyncio.wait({ready, exited}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        exited.cancel()
        if shell.ready.is_set():
            return True
        if shell.proc.returncode is None:
            raise AssertionError(f"crewchief shell did not come up in {timeout:.0f}s")
        await self._ended(shell)
        return False

    async def run_until_seen(self, seen: Callable[[ShellProcess], bool]) -> bool:
        """Until what the process printed satisfies `seen` (e.g. it echoed line 3: it is
        running it); True when the process ended by itself before."""
        shell = self.current
        assert shell is not None
        exited = asyncio.ensure_future(asyncio.shield(shell.proc.wait()))
        try:
            while not seen(shell) and not exited.done():
                output = asyncio.ensure_future(shell.output.wait())
                await asyncio.wait({output, exited}, return_when=asyncio.FIRST_COMPLETED)
                output.cancel()
        finally:
            exited.cancel()
        if seen(shell):
            return False
        await shell.proc.wait()
        await self._ended(shell)
        return True

    async def kill(self) -> None:
        shell = self.current
        assert shell is not None
        if not shell.ready.is_set():
            self.kills_before_ready += 1
        shell.proc.send_signal(signal.SIGKILL)
        await shell.proc.wait()
        shell.killed = True
        self.kills += 1
        await self._ended(shell)

    async def _ended(self, shell: ShellProcess) -> None:
        assert shell.reader is not None
        await shell.reader  # what it printed before it died is still in the pipe
        if shell.proc.returncode == 0 and shell.at >= 0:
            shell.done.add(shell.at)
        self.current = None
        voted, again = self.voted(), []
        for i, line in enumerate(shell.lines):
            if i in shell.done:
                self.reactions_acked += line.draft is not None
            elif line.draft is not None and i == shell.at:
                self.reactions_cut.append(line.draft in voted)
            elif line.launch is not None:
                # not acknowledged: typed again only if it did not happen
                happened = bool(runs_by_text(self.db).get(topic(line.launch)))
                if i == shell.at:
                    (self.unseen if happened else self.undone).add(line.launch)
                elif not happened:
                    self.not_reached += 1
                if not happened:
                    again.append(line.launch)
            # a ✅ not acknowledged is typed again while its draft has no vote (script())
        self.to_launch[:0] = again

    def problems(self) -> list[str]:
        """Processes that ended by themselves with an error, and tracebacks in any."""
        found = []
        for n, shell in enumerate(self.processes):
            err = shell.stderr.read_text(encoding="utf-8", errors="replace")
            if not shell.killed and shell.proc.returncode != 0:
                found.append(f"script {n} exited {shell.proc.returncode}: {err[-2000:]}")
            elif "Traceback" in err:
                found.append(f"script {n}: {err[-2000:]}")
        return found
