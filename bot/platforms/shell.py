"""The shell platform: the whole bot in a terminal, typed exactly as in chat.

Every bot message shows its ref (#4), which is its row id and so survives restarts; thread
messages are indented under their run card. The same session object drives the test suite.
"""

from __future__ import annotations

import asyncio
import getpass
import re
import shlex
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console
from rich.padding import Padding
from rich.text import Text
from sqlalchemy.exc import OperationalError

from bot.escaping import escape_shell as escape_markup
from bot.platforms.base import Delivery, handled_once_placed
from bot.render import Renderer
from commands.events import (
    Actor,
    InboundEvent,
    ReactionAdded,
    ReactionRemoved,
    SlashCommand,
    ThreadReply,
)
from commands.refs import message_ref
from commands.spec import Reply

CHANNEL = "shell"
SHELL_HELP = """[bold]shell commands[/bold]
  /crew <command> …        a slash command, as in chat (/crew help lists them)
  react <ref> <emoji>      react to a bot message, e.g. react #4 ✅ (or :white_check_mark:)
  unreact <ref> <emoji>    remove your reaction
  reply <ref> <text>       reply in the thread of message <ref>
  as <name>                act as shell:<name>
  whoami                   who you are acting as
  wait                     wait until no work is pending
  quit                     leave (runs stay in the database)"""


def _markup(text: str) -> Text:
    """Markup made into text here, with `:name:` emoji codes left alone: rich renders a string
    inside Padding later with its defaults, which would turn `:white_check_mark:` in a draft
    into ✅ (print's emoji=False only reaches strings printed directly)."""
    return Text.from_markup(text, emoji=False)


def _mention(who: str) -> str:
    return "@" + who.split(":", 1)[-1]


class ShellPlatform:
    name = "shell"
    state = "connected"  # /healthz: nothing to lose hold of (the terminal is local)

    def __init__(self, console: Console, *, chart_dir: Path | None = None) -> None:
        """`chart_dir`: where a digest's chart is written (default: a folder in the temp
        dir, bot.chart.DEFAULT_DIR)."""
        self.console = console
        self.renderer = Renderer("shell", _mention)
        self.chart_dir = chart_dir

    async def deliver(self, delivery: Delivery) -> str | None:
        template = delivery.template
        if delivery.kind == "update" and self.renderer.has(f"edit_{template}"):
            template = f"edit_{template}"  # the terminal shows what changed, not the whole card
        context = delivery.context
        if template == "digest" and delivery.kind == "post":
            from bot import chart

            context = chart.saved(context, await chart.draw(context), self.chart_dir)
        body = self.renderer.render(template, context)
        ref = f"#{delivery.ref}" if delivery.ref is not None else ""
        if delivery.kind == "notice":
            self.say(f"[dim]only {escape_markup(delivery.recipient or '')} sees:[/dim] {body}")
            return None
        if delivery.kind == "update":
            self._print(f"[dim]{ref} edited[/dim] {body}", threaded=False)
            return None
        threaded = delivery.thread_platform_id is not None
        self._print(f"[bold cyan]{ref}[/bold cyan] {body}", threaded=threaded)
        return str(delivery.ref)

    def _print(self, text: str, *, threaded: bool) -> None:
        if threaded:
            self.console.print(Padding(_markup(text), (0, 0, 0, 4), expand=False))
        else:
            self.console.print(text, emoji=False)

    def say(self, text: str) -> None:
        self.console.print(text, emoji=False)

    def reply(self, reply: Reply) -> None:
        context = reply.context
        if reply.template == "digest":
            from bot import chart

            context = chart.saved(context, chart.draw_now(context), self.chart_dir)
        body = self.renderer.render(reply.template, context)
        self.console.print(
            body if not reply.private else Padding(_markup(body), (0, 0, 0, 2), expand=False),
            emoji=False,
        )


class ShellHost(Protocol):
    """What the shell needs of the bot: the inbound port, plus what a terminal shows."""

    async def handle(
        self, event: InboundEvent, *, private_replies: bool = False
    ) -> list[Reply]: ...

    async def wait_idle(self, timeout: float = 120.0) -> None: ...

    def greeting(self) -> dict[str, Any]: ...

    def message_channel(self, platform: str, ref: int) -> str | None: ...

    def database_problem(self, exc: BaseException) -> str: ...


class ScriptStopped(Exception):
    """A script's line that the database could not take (full disk, locked, read-only): the
    script ends there and crewchief exits with status 2. The message is the problem."""


class ShellSession:
    """Turns typed lines into the same events a chat platform would send."""

    def __init__(self, host: ShellHost, platform: ShellPlatform, user: str | None = None) -> None:
        self.host = host
        self.platform = platform
        self.user = user or _login_name()
        self.scripted = False

    @property
    def actor(self) -> Actor:
        return Actor("shell", self.user)

    def greet(self, shell_approver: str | None) -> None:
        context = {
            **self.host.greeting(),
            "who": self.actor.qualified,
            "shell_approver": shell_approver,
        }
        self.platform.reply(Reply("greeting", context, private=False))

    async def execute(self, line: str) -> bool:
        """Run one line; False when the user asked to quit."""
        try:
            return await self._execute(line)
        except OperationalError as exc:  # the database is unusable (full disk, locked): say so
            self._show([Reply("database_error", {"problem": self.host.database_problem(exc)})])
            return True

    async def _execute(self, line: str) -> bool:
        line = line.strip()
        if not line or line.startswith("# "):
            return True
        verb, _, rest = line.partition(" ")
        verb = verb.lower()
        if verb in ("quit", "exit"):
            return False
        if verb.startswith("/"):
            if verb != "/crew":
                self.platform.say(
                    f"[red]unknown slash command {escape_markup(verb[:40])}[/red]; try /crew help"
                )
            else:
                self._show(
                    await self.host.handle(
                        SlashCommand(self._event_id(), self.actor, CHANNEL, rest)
                    )
                )
        elif verb == "as":
            self._switch(rest)
        elif verb == "whoami":
            self.platform.say(f"you are {escape_markup(self.actor.qualified)}")
        elif verb in ("react", "unreact"):
            await self._react(verb, rest)
        elif verb == "reply":
            await self._reply(rest)
        elif verb == "wait":
            await self.host.wait_idle()
        elif verb in ("help", "?"):
            self.platform.say(SHELL_HELP)
        else:
            self.platform.say(
                f"[red]unknown shell command {escape_markup(verb[:40])}[/red]; type help"
            )
        return True

    async def run_script(self, lines: Iterable[str]) -> None:
        """Run the lines, then wait until no work is pending; a line the database cannot take
        stops the script (ScriptStopped), since the lines after it may depend on it."""
        self.scripted = True
        for line in lines:
            if line.strip():
                self.platform.say(
                    f"[dim]{escape_markup(self.actor.qualified)}>[/dim] "
                    f"{escape_markup(line.rstrip())}"
                )
            if not await self.execute(line):
                break
        await self.host.wait_idle()

    async def interactive(self) -> None:
        while True:
            try:
                line = await asyncio.to_thread(input, f"{self.actor.qualified}> ")
            except (EOFError, KeyboardInterrupt):
                self.platform.say("")
                return
            if not await self.execute(line):
                return
            await asyncio.sleep(0.05)  # let the first outbox messages land before the prompt

    # -- verbs ---------------------------------------------------------------------------

    def _switch(self, name: str) -> None:
        name = name.strip().removeprefix("shell:")
        if not re.fullmatch(r"[\w.-]{1,64}", name):
            self.platform.say("usage: as <name>  (letters, digits, . _ -)")
            return
        self.user = name
        self.platform.say(f"you are now {escape_markup(self.actor.qualified)}")

    def _ref(self, text: str) -> str | None:
        number = message_ref(text)
        return str(number) if number is not None else None

    async def _react(self, verb: str, rest: str) -> None:
        try:
            ref_text, emoji = shlex.split(rest)
        except ValueError:
            ref_text, emoji = "", ""
        ref = self._ref(ref_text)
        if ref is None or not emoji:
            self.platform.say(f"usage: {verb} <ref> <emoji>   e.g. {verb} #4 ✅")
            return
        channel = self._channel_of(ref)
        if channel is None:
            self.platform.say(f"there is no message #{ref}")
            return
        event_type = ReactionAdded if verb == "react" else ReactionRemoved
        # #ref may have been shown by a bot that died before it recorded that (kill -9): it
        # shows the message again, then the reaction can be placed
        event = event_type(self._event_id(), self.actor, channel, ref, emoji)
        replies = await handled_once_placed(self.host.handle, event)
        if replies is None:
            self.platform.say(f"message #{ref} is still being delivered; {verb} again in a moment")
        else:
            self._show(replies)

    async def _reply(self, rest: str) -> None:
        ref_text, _, text = rest.strip().partition(" ")
        ref = self._ref(ref_text)
        if ref is None or not text.strip():
            self.platform.say("usage: reply <ref> <text>   e.g. reply #4 shorter, add a cost table")
            return
        channel = self._channel_of(ref)
        if channel is None:
            self.platform.say(f"there is no message #{ref}")
            return
        event = ThreadReply(self._event_id(), self.actor, channel, ref, text.strip())
        replies = await handled_once_placed(self.host.handle, event)
        if replies is None:
            self.platform.say(f"message #{ref} is still being delivered; reply again in a moment")
            return
        self._show(replies)
        self.platform.say(
            f"[dim]{escape_markup(self.actor.qualified)} replied in the thread of #{ref}[/dim]"
        )

    def _channel_of(self, ref: str) -> str | None:
        """The shell channel message #ref is in (`shell` for runs, e.g. `ops` for alerts)."""
        return self.host.message_channel("shell", int(ref))

    def _show(self, replies: list[Reply]) -> None:
        for reply in replies:
            if reply.template == "database_error" and self.scripted:
                raise ScriptStopped(reply.context["problem"])
            self.platform.reply(reply)

    @staticmethod
    def _event_id() -> str:
        return uuid.uuid4().hex


def _login_name() -> str:
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "me"
    return re.sub(r"[^\w.-]", "", name) or "me"


def default_shell_approvers(app_config: Any, configured: list[str]) -> list[str]:
    """With nothing configured, drafts in the shell are approved by `shell:editor`."""
    if configured:
        return configured
    names_approvers = any(
        s.approval and s.approval.approvers
        for wf in app_config.workflows.values()
        for s in wf.steps
    )
    return [] if names_approvers else ["shell:editor"]
