"""The `crewchief` command line (Typer).

Each command imports what it uses when it runs: `crewchief --help`, `manifest` or `init` load
neither the database layer nor a chat SDK, and `shell` loads no chat SDK.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from agents.config import CrewConfig
    from bot.app import App
    from bot.settings import Settings

cli = typer.Typer(
    name="crewchief",
    help="Supervise AI agent workflows from Slack, Discord or this terminal.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
db_cli = typer.Typer(help="Database schema.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")


def _error(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(message, markup=True, highlight=False)


def _fail(message: str, code: int = 2) -> typer.Exit:
    _error(f"[red]crewchief:[/red] {message}")
    return typer.Exit(code)


def _settings() -> Settings:
    from bot.settings import Settings

    try:
        return Settings()
    except Exception as exc:  # pydantic reports which variable is wrong
        raise _fail(f"bad environment setting: {exc}") from None


def _config(settings: Settings) -> CrewConfig:
    from bot.config_file import load_config
    from bot.errors import ConfigError

    try:
        return load_config(settings.crewchief_config, approvers=settings.approvers)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


def _build(settings: Settings, config: CrewConfig, approvers: list[str]) -> App:
    from bot.app import build_app
    from bot.errors import ConfigError

    try:
        return build_app(settings, config=config, default_approvers=approvers)
    except ConfigError as exc:
        raise _fail(str(exc)) from None


@cli.command()
def shell(
    script: Annotated[
        str | None,
        typer.Option("--script", help="Run the lines of FILE (or - for stdin), wait, exit."),
    ] = None,
    user: Annotated[str | None, typer.Option("--as", help="Act as shell:NAME.")] = None,
) -> None:
    """The bot in this terminal: type what you would type in chat."""
    settings = _settings()
    config = _config(settings)  # a mistake in it is reported before the engine is loaded
    import asyncio

    from rich.console import Console

    from bot.app import freeze_startup
    from bot.platforms.shell import ShellPlatform, ShellSession, default_shell_approvers

    approvers = default_shell_approvers(config, settings.approvers)
    app = _build(settings, config, approvers)
    console = Console(highlight=False, soft_wrap=False)
    platform = ShellPlatform(console, chart_dir=settings.crewchief_chart_dir)
    app.add_platform(platform)
    session = ShellSession(app, platform, user=user)
    freeze_startup()
    lines: list[str] | None = None
    if script is not None:
        try:
            source = sys.stdin if script == "-" else Path(script).open(encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise _fail(f"cannot read script {script}: {exc.strerror}") from None
        with source:
            lines = source.read().splitlines()

    async def main() -> None:
        async with app.running(schedule=lines is None):
            session.greet("editor" if approvers == ["shell:editor"] else None)
            if lines is None:
                await session.interactive()
            else:
                await session.run_script(lines)
        await app.aclose()

    asyncio.run(main())


@cli.command()
def runs(
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list.")] = False,
    limit: Annotated[int, typer.Option(help="How many recent runs.")] = 50,
) -> None:
    """Recent runs with their steps."""
    import json

    from rich.console import Console

    from agents.cards import run_summary
    from storage.db import Database
    from storage.queries import runs_with_steps

    settings = _settings()
    db = Database(settings.crewchief_database_url)
    db.upgrade()
    with db.read() as session:
        data = [run_summary(run, steps) for run, steps in runs_with_steps(session, limit=limit)]
    db.dispose()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    console = Console(highlight=False)
    if not data:
        console.print("no runs yet · try: crewchief shell")
    for item in data:
        steps = " → ".join(f"{s['name']}:{s['status']}" for s in item["steps"])
        console.print(
            f"{item['id']:>5}  {item['workflow']:<16} {item['status']:<18} {steps}", markup=False
        )


@cli.command()
def start(
    platform: Annotated[
        list[str],
        typer.Option("--platform", "-p", help="slack, discord or shell; repeat to serve several."),
    ],
    host: Annotated[
        str, typer.Option(help="HTTP address (Slack HTTP mode, /healthz).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port.")] = 3000,
) -> None:
    """Run the bot on chat platforms until interrupted."""
    import asyncio

    from bot.errors import ConfigError
    from bot.runner import serve

    unknown = sorted(set(platform) - {"slack", "discord", "shell"})
    if unknown:
        raise _fail(f"unknown platform {unknown[0]!r}: use slack, discord or shell")
    settings = _settings()
    try:
        asyncio.run(serve(settings, platforms=set(platform), host=host, port=port))
    except ConfigError as exc:
        raise _fail(str(exc)) from None
    except OSError as exc:
        raise _fail(f"cannot listen on {host}:{port}: {exc.strerror}") from None


@cli.command("invite-url")
def invite_url(
    application_id: Annotated[
        str | None,
        typer.Argument(help="The application id (Developer Portal → General Information)."),
    ] = None,
) -> None:
    """Print the URL that adds the Discord bot to a server, with exactly the permissions it
    uses. Without an application id it is read from Discord with DISCORD_TOKEN."""
    import asyncio

    from rich.console import Console

    from bot.errors import ConfigError
    from bot.platforms.discord import application_id_of, discord_settings
    from bot.platforms.discord import invite_url as url_for

    if application_id is None:
        try:
            token = discord_settings(_settings()).token
            application_id = asyncio.run(application_id_of(token))
        except ConfigError as exc:
            raise _fail(str(exc)) from None
    if not application_id.isdigit():
        raise _fail(f"an application id is digits, got {application_id!r}")
    Console(highlight=False, soft_wrap=True).print(url_for(application_id), markup=False)


@cli.command("digest")
def digest_command(
    print_only: Annotated[
        bool, typer.Option("--print", help="Print the digest here instead of posting it.")
    ] = False,
    window: Annotated[
        str | None,
        typer.Option(help="The window it covers, e.g. 24h or 7d (default: digest.window)."),
    ] = None,
) -> None:
    """The digest: print it, or post it to the ops channels (ops.channels in crewchief.yml)."""
    from datetime import timedelta

    from agents.durations import parse_duration

    settings = _settings()
    config = _config(settings)
    try:
        span = parse_duration(window) if window else config.digest.window
    except ValueError as exc:
        raise _fail(f"--window: {exc}") from None
    if span < timedelta(minutes=1):
        raise _fail("--window: the window must be at least 1m (e.g. 24h, 7d)")
    if not print_only and not config.ops.channels:
        raise _fail(
            "no ops channels to post to: set ops.channels in crewchief.yml "
            "(e.g. slack:C0OPS), or use --print"
        )
    from rich.console import Console

    from agents import digest
    from bot.platforms.shell import ShellPlatform
    from commands.spec import Reply
    from storage.db import Database
    from storage.models import utcnow

    db = Database(settings.crewchief_database_url)
    db.upgrade()
    now = utcnow()
    try:
        with db.transaction() as session:
            context = digest.build(session, config, now, span)
            if not print_only:
                digest.post(session, config, context, f"cli:{now.isoformat(timespec='seconds')}")
    finally:
        db.dispose()
    if print_only:
        ShellPlatform(
            Console(highlight=False, soft_wrap=True), chart_dir=settings.crewchief_chart_dir
        ).reply(Reply("digest", context, private=False))
        return
    typer.echo(
        f"digest queued for {', '.join(config.ops.channels)}: "
        "the running bot (crewchief start) delivers it"
    )


@cli.command()
def manifest(
    url: Annotated[
        str | None,
        typer.Option(help="Public base URL for HTTP mode, e.g. https://crewchief.example.com"),
    ] = None,
) -> None:
    """Print the Slack app manifest (Socket Mode; with --url, HTTP mode request URLs)."""
    from bot.manifest import render_manifest

    try:
        typer.echo(render_manifest(url), nl=False)
    except ValueError as exc:
        raise _fail(str(exc)) from None


STARTER = """\
# crewchief.yml: extends the built-in defaults (agents researcher/writer/publisher,
# workflows research-brief and blog-post). Mappings merge key by key.
roles:
  editors: [shell:editor]          # e.g. slack:U012AB, discord:81234567890

workflows:
  blog-post:
    description: Research, a draft that people approve, then publishing.
    steps:
      - name: research
        agent: researcher
      - name: draft
        agent: writer
        approval:
          approvers: [role:editors]
          quorum: 1
          allow_self_approval: false
          timeout: 24h
          on_timeout: escalate     # or: reject
      - name: publish
        agent: publisher
        publish:
          to: thread               # or: folder (path: ./published), webhook (url: https://…)

budgets:
  per_run_usd: 0.50
  per_day_usd: 10
"""

ENV_EXAMPLE = """\
# Copy to .env and fill in what you use. Secrets are never logged.
# OPENAI_API_KEY=sk-...
# OPENAI_BASE_URL=http://localhost:11434/v1     # Ollama, vLLM, Azure: any OpenAI-compatible server
# CREWCHIEF_LLM=offline                          # or openai
# CREWCHIEF_DATABASE_URL=sqlite:///crewchief.db  # or postgresql://user@host/db
# CREWCHIEF_APPROVERS=slack:U012AB,discord:81234567890
# SLACK_BOT_TOKEN=xoxb-...
# SLACK_SIGNING_SECRET=...
# SLACK_APP_TOKEN=xapp-...                       # set it for Socket Mode
# DISCORD_TOKEN=...
"""


@cli.command()
def init(
    force: Annotated[bool, typer.Option(help="Overwrite existing files.")] = False,
) -> None:
    """Write a starter crewchief.yml and .env.example here."""
    for name, text in (("crewchief.yml", STARTER), (".env.example", ENV_EXAMPLE)):
        path = Path(name)
        if path.exists() and not force:
            typer.echo(f"{name} exists; left alone (--force overwrites)")
            continue
        path.write_text(text, encoding="utf-8")
        typer.echo(f"wrote {name}")


@db_cli.command("upgrade")
def db_upgrade() -> None:
    """Apply pending migrations (start-up does this too)."""
    from storage.db import Database

    settings = _settings()
    db = Database(settings.crewchief_database_url)
    db.upgrade()
    db.dispose()
    typer.echo(f"database is up to date ({db.url.render_as_string(hide_password=True)})")


def main() -> None:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        cli()
    except Exception as exc:
        from sqlalchemy.exc import ArgumentError, DatabaseError  # only on this path

        from bot.platforms.shell import ScriptStopped

        # DatabaseError: locked, read-only, not a database; ArgumentError: not a database URL
        if isinstance(exc, ScriptStopped):
            reason = str(exc)
        elif isinstance(exc, DatabaseError | ArgumentError):
            reason = _reason(exc)
        else:
            raise
        _error(f"[red]crewchief:[/red] cannot use the database {_database()}: {reason}")
        sys.exit(2)


def _database() -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = os.environ.get("CREWCHIEF_DATABASE_URL", "sqlite:///crewchief.db")
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "(CREWCHIEF_DATABASE_URL is not a database URL)"


def _reason(exc: Exception) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    from storage.problems import describe

    url = os.environ.get("CREWCHIEF_DATABASE_URL", "sqlite:///crewchief.db")
    try:
        return describe(exc, make_url(url))
    except ArgumentError:
        detail = str(exc).strip().splitlines()
        return detail[0] if detail else type(exc).__name__


if __name__ == "__main__":
    main()
