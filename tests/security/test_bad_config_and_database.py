"""A broken crewchief.yml or an unusable database stops crewchief with exit status 2 and one
message naming the file, the key (or the database) and the problem: never a traceback."""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import cli, main
from storage.db import Database

STEPS = "workflows:\n  blog-post:\n    steps:\n"
DRAFT = "      - {name: draft, agent: writer, approval: {}}\n"


def webhook(url: str) -> str:
    step = f'{{name: publish, agent: publisher, publish: {{to: webhook, url: "{url}"}}}}'
    return f"{STEPS}{DRAFT}      - {step}\n"


def step(fields: str) -> str:
    return f"{STEPS}      - {{{fields}}}\n"


URL_KEY = "workflows.blog-post.steps.1.publish.url"
NOT_HTTP = f"{URL_KEY}: a webhook URL must be http(s)://…, this one has"
CONFIGS = {
    "file: webhook": (webhook("file:///etc/passwd"), f"{NOT_HTTP} a file: URL"),
    "javascript: webhook": (webhook("javascript:alert(1)"), f"{NOT_HTTP} a javascript: URL"),
    "ftp: webhook with credentials": (
        webhook("ftp://bob:hunter2@files.example/drop"),
        f"{NOT_HTTP} a ftp: URL",
    ),
    "webhook without scheme": (webhook("//hooks.example/x"), f"{NOT_HTTP} no scheme"),
    "webhook without host": (webhook("https://"), f"{URL_KEY}: a webhook URL needs a host"),
    "webhook without url": (
        step("name: p, agent: publisher, publish: {to: webhook}"),
        "workflows.blog-post.steps.0.publish: publish to a webhook needs an http(s) `url`",
    ),
    "workflows as a list": ("workflows: []\n", "workflows: Input should be a valid dictionary"),
    "approvers as a string": (
        step("name: d, agent: writer, approval: {approvers: shell:bob}"),
        "workflows.blog-post.steps.0.approval.approvers: Input should be a valid list",
    ),
    "steps as a mapping": (
        f"{STEPS[:-1]} {{}}\n",
        "workflows.blog-post.steps: Input should be a valid list",
    ),
    "a lease that is no duration": ("engine: {lease: soon}\n", "engine.lease: 'soon' is not a"),
    "a negative budget": (
        "budgets: {per_run_usd: -1}\n",
        "budgets.per_run_usd: Input should be greater than 0",
    ),
    "no emoji to approve": ("reactions: {approve: []}\n", "reactions.approve: list at least one"),
    "a misspelt top-level key": ("workflow: {}\n", "workflow: Extra inputs are not permitted"),
    "tabs for indentation": (f"{STEPS}\t- x\n", "crewchief.yml (line 4, column 1): not valid YAML"),
    "not UTF-8": ("\udcff\udcfebad: 1\n", "crewchief.yml: not UTF-8 text (byte 0xff at 0)"),
}


@pytest.mark.parametrize(("yml", "expected"), CONFIGS.values(), ids=CONFIGS.keys())
def test_an_invalid_config_is_named_with_its_key(tmp_path: Path, yml: str, expected: str) -> None:
    config = tmp_path / "crewchief.yml"
    config.write_bytes(yml.encode("utf-8", "surrogateescape"))
    done = CliRunner().invoke(
        cli,
        ["shell", "--script", "-"],
        input="/crew run blog-post heat pumps\n",
        env={
            "CREWCHIEF_CONFIG": str(config),
            "CREWCHIEF_DATABASE_URL": f"sqlite:///{tmp_path / 'crew.db'}",
            "CREWCHIEF_APPROVERS": "",
        },
    )
    assert done.exit_code == 2, done.output
    said = "".join(done.stderr.split())  # rich folds long lines, even inside the file's path
    assert "".join(expected.split()) in said
    assert said.startswith(f"crewchief:{config}")
    assert "Traceback" not in done.output and "hunter2" not in done.output
    assert "run 1" not in done.stdout


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def crewchief(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Callable[..., Done]:
    """`crewchief ARGS` as the console script runs it (main(), which turns database errors
    into exit 2), in this process, in tmp_path, with no crewchief or Slack environment."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("CREWCHIEF_", "OPENAI_", "SLACK_")):
            monkeypatch.delenv(name)

    def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> Done:
        capsys.readouterr()
        with monkeypatch.context() as m:
            m.setattr(sys, "argv", ["crewchief", *args])
            m.setattr(sys, "stdin", io.StringIO(stdin))
            for name, value in (env or {}).items():
                m.setenv(name, value)
            try:
                main()
                code = 0
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        out = capsys.readouterr()
        return Done(code, out.out, out.err)

    return run


def test_a_config_path_that_is_a_directory_is_named(crewchief: Callable[..., Done]) -> None:
    Path("crewchief.yml").mkdir()
    done = crewchief("shell", "--script", "-", stdin="/crew help\n")
    assert done.returncode == 2
    assert "crewchief.yml: cannot read it: Is a directory" in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr


# -- the database -------------------------------------------------------------------------


def shell(crewchief: Callable[..., Done], url: str) -> Done:
    return crewchief(
        "shell",
        "--script",
        "-",
        stdin="/crew run research-brief heat pumps\n",
        env={"CREWCHIEF_DATABASE_URL": url},
    )


def problem(done: Done) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    return " ".join(done.stderr.split())


def migrate(path: Path) -> None:
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    db.dispose()


def test_a_database_path_that_is_a_directory(crewchief: Callable[..., Done]) -> None:
    Path("crew.db").mkdir()
    said = problem(shell(crewchief, "sqlite:///crew.db"))
    assert "cannot use the database sqlite:///crew.db: crew.db is a directory" in said


def test_a_file_that_is_not_a_database(crewchief: Callable[..., Done]) -> None:
    Path("crew.db").write_text("name,topic\n1,heat pumps\n" * 20)
    said = problem(shell(crewchief, "sqlite:///crew.db"))
    assert "cannot use the database sqlite:///crew.db: file is not a database" in said
    assert Path("crew.db").read_text().startswith("name,topic")  # left as it was


@pytest.fixture
def read_only_database(tmp_path: Path) -> Iterator[Path]:
    """A database file nobody may write: immutable for root (who ignores file modes)."""
    path = tmp_path / "crew.db"
    migrate(path)
    if os.geteuid() == 0:
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True)
        if made.returncode != 0:
            pytest.skip(f"root ignores file modes and chattr +i failed: {made.stderr!r}")
        yield path
        subprocess.run(["chattr", "-i", str(path)], check=True)
    else:
        path.chmod(0o444)
        yield path
        path.chmod(0o644)


def test_a_read_only_database(crewchief: Callable[..., Done], read_only_database: Path) -> None:
    said = problem(shell(crewchief, "sqlite:///crew.db"))
    assert "cannot use the database sqlite:///crew.db: attempt to write a readonly database" in said
    listed = crewchief("runs", env={"CREWCHIEF_DATABASE_URL": "sqlite:///crew.db"})
    assert listed.returncode == 0 and "no runs yet" in listed.stdout  # reading still works


def test_a_database_locked_by_another_process(
    crewchief: Callable[..., Done], tmp_path: Path
) -> None:
    url = "sqlite:///crew.db?timeout=0.5"
    migrate(tmp_path / "crew.db")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys\n"
         "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
         "c.execute('BEGIN EXCLUSIVE'); print('locked', flush=True); sys.stdin.read()",
         str(tmp_path / "crew.db")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        said = problem(shell(crewchief, url))
        assert "database is locked: another process holds it" in said
    finally:
        holder.communicate("", timeout=30)
    # the lock is gone: the same command works, and nothing of the refused attempt remains
    again = shell(crewchief, url)
    assert again.returncode == 0, again.stderr
    assert "run 1 (research-brief) started" in again.stdout
    with sqlite3.connect(tmp_path / "crew.db") as db:
        assert db.execute("SELECT count(*) FROM run").fetchone() == (1,)
