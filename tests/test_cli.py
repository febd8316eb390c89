"""The `crewchief` command as a new user runs it: a real process, a real SQLite file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

WALK = """\
/crew run blog-post Why heat pumps beat gas boilers
wait
as editor
reply #3 shorter, add a cost table
react #3 🔁
wait
react #5 ✅
wait
"""


def crewchief(
    tmp_path: Path, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CREWCHIEF_", "OPENAI_", "SLACK_", "DISCORD_"))
    }
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=tmp_path,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env={**clean, "COLUMNS": "200", **(env or {})},
    )


@pytest.mark.slow
def test_shell_script_walkthrough_with_no_config_then_runs_json(tmp_path: Path) -> None:
    done = crewchief(tmp_path, "shell", "--as", "alice", "--script", "-", stdin=WALK)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "you are shell:alice" in out
    assert "drafts of blog-post are approved by shell:editor" in out
    assert "LLM: offline" in out
    assert "#3 writer · draft v1" in out and "#5 writer · draft v2" in out
    assert "published to this thread" in out

    listed = crewchief(tmp_path, "runs", "--json")
    runs = json.loads(listed.stdout)
    assert runs == [
        {
            **runs[0],
            "id": 1,
            "workflow": "blog-post",
            "status": "succeeded",
            "steps": [
                {"name": "research", "status": "succeeded", "version": 0},
                {"name": "draft", "status": "succeeded", "version": 2},
                {"name": "publish", "status": "succeeded", "version": 0},
            ],
        }
    ]
    # refs are kept across shell sessions on the same database
    again = crewchief(tmp_path, "shell", "--script", "-", stdin="/crew status #5\n")
    assert "run 1 · blog-post · succeeded" in again.stdout


@pytest.mark.slow
def test_script_file_and_wait_inside_it(tmp_path: Path) -> None:
    script = tmp_path / "walk.txt"
    script.write_text("/crew run research-brief heat pumps\nwait\n/crew status 1\n")
    done = crewchief(tmp_path, "shell", "--script", str(script))
    assert done.returncode == 0, done.stderr
    assert "run 1 · research-brief · succeeded" in done.stdout


@pytest.mark.slow
def test_missing_script_file_is_a_clear_error(tmp_path: Path) -> None:
    done = crewchief(tmp_path, "shell", "--script", "nope.txt")
    assert done.returncode == 2
    assert "cannot read script nope.txt" in done.stderr


@pytest.mark.parametrize(
    ("yml", "expected"),
    [
        (
            "workflows:\n  blog-post:\n    steps:\n      - {name: draft, agent: writer, "
            "approval: {quorum: 0}}\n",
            "crewchief.yml: workflows.blog-post.steps.0.approval.quorum: "
            "Input should be greater than or equal to 1",
        ),
        (
            "workflows:\n  x:\n    steps:\n      - {name: a, agent: ghost}\n",
            "workflows.x.steps.0.agent: unknown agent 'ghost'",
        ),
        ("agents: [1, 2\n", "crewchief.yml (line 2, column 1): not valid YAML"),
        ("- just a list\n", "crewchief.yml: the top level must be a mapping"),
        ("engine:\n  worker: 3\n", "engine.worker: Extra inputs are not permitted"),
        (
            "agents:\n  writer: {role: writer, prompt: 'Write about {{ topik }}'}\n",
            "agents.writer.prompt: 'topik' is undefined; a prompt may use",
        ),
        (
            "agents:\n  writer: {role: writer, prompt: 'Write {% if x %}'}\n",
            "agents.writer.prompt: not a valid Jinja2 template (line 1)",
        ),
        (
            "workflows:\n  blog-post:\n    launchers: [bob]\n",
            "workflows.blog-post.launchers: 'bob' is not a user or role",
        ),
    ],
)
def test_invalid_config_names_file_key_and_problem(tmp_path: Path, yml: str, expected: str) -> None:
    (tmp_path / "crewchief.yml").write_text(yml)
    done = crewchief(tmp_path, "shell", "--script", "-", stdin="/crew help\n")
    assert done.returncode == 2
    assert expected in " ".join(done.stderr.split())
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "crewchief.db").exists() or "run" not in done.stdout


def test_bad_approvers_variable_is_named(tmp_path: Path) -> None:
    done = crewchief(
        tmp_path, "shell", "--script", "-", stdin="", env={"CREWCHIEF_APPROVERS": "bob"}
    )
    assert done.returncode == 2
    assert "CREWCHIEF_APPROVERS: 'bob' is not a platform-qualified id" in done.stderr


@pytest.mark.slow
def test_init_writes_a_config_that_loads(tmp_path: Path) -> None:
    done = crewchief(tmp_path, "init")
    assert done.returncode == 0
    assert (tmp_path / "crewchief.yml").exists() and (tmp_path / ".env.example").exists()
    again = crewchief(tmp_path, "init")
    assert "crewchief.yml exists; left alone" in again.stdout
    started = crewchief(tmp_path, "shell", "--script", "-", stdin="/crew workflows\n")
    assert started.returncode == 0, started.stderr
    assert "approvers: shell:editor" in started.stdout


@pytest.mark.slow
def test_db_upgrade_is_idempotent(tmp_path: Path) -> None:
    for _ in range(2):
        done = crewchief(tmp_path, "db", "upgrade")
        assert done.returncode == 0, done.stderr
        assert "database is up to date" in done.stdout
    assert (tmp_path / "crewchief.db").exists()


def test_manifest_command_prints_socket_and_http_manifests(tmp_path: Path) -> None:
    import yaml

    from bot.manifest import build_manifest

    socket = crewchief(tmp_path, "manifest")
    assert yaml.safe_load(socket.stdout) == build_manifest()
    http = crewchief(tmp_path, "manifest", "--url", "https://bot.example.com")
    data = yaml.safe_load(http.stdout)
    assert data["settings"]["event_subscriptions"]["request_url"] == (
        "https://bot.example.com/slack/events"
    )
    bad = crewchief(tmp_path, "manifest", "--url", "bot.example.com")
    assert bad.returncode == 2 and "https://" in bad.stderr


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "SLACK_BOT_TOKEN is not set"),
        ({"SLACK_BOT_TOKEN": "xoxb-1"}, "SLACK_SIGNING_SECRET is not set"),
        (
            {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xoxb-2"},
            "SLACK_APP_TOKEN does not look",
        ),
    ],
)
def test_start_names_a_missing_or_malformed_slack_setting(
    tmp_path: Path, env: dict[str, str], expected: str
) -> None:
    done = crewchief(tmp_path, "start", "--platform", "slack", env=env)
    assert done.returncode == 2
    assert expected in done.stderr
    assert "xoxb-2" not in done.stderr  # a token is named, never printed


def test_start_rejects_unknown_platforms(tmp_path: Path) -> None:
    done = crewchief(tmp_path, "start", "--platform", "irc")
    assert done.returncode == 2 and "unknown platform 'irc'" in done.stderr


def test_an_unreachable_database_is_a_clear_error_without_the_password(tmp_path: Path) -> None:
    url = "postgresql://bob:secretpw@127.0.0.1:1/crew"
    done = crewchief(tmp_path, "runs", env={"CREWCHIEF_DATABASE_URL": url})
    assert done.returncode == 2
    assert "cannot use the database postgresql://bob:***@127.0.0.1:1/crew" in done.stderr
    assert "secretpw" not in done.stderr and "Traceback" not in done.stderr
