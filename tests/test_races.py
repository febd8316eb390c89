"""Races: people deciding on one draft at the same moment get exactly one decision, on SQLite
and PostgreSQL. Each reaction is handled on a thread of its own, as concurrent requests to
several bot processes would be, all meeting at a barrier first."""

from __future__ import annotations

import asyncio
import os
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from commands.events import Actor, ReactionAdded
from storage import models
from tests.conftest import Bot, blog_post

APPROVERS = [f"shell:ed{i}" for i in range(50)]


def editors(**approval: Any) -> dict[str, Any]:
    return {"roles": {"editors": APPROVERS}, **blog_post(["role:editors"], **approval)}


async def draft_of(bot: Bot) -> models.Message:
    await bot.type("/crew run blog-post heat pumps")
    await bot.wait()
    return bot.latest_draft()


async def at_once(*reactions: Callable[[], object]) -> None:
    """Each reaction on a thread of its own (not the loop's small default pool, which would
    never let all of them reach the barrier), released together."""
    barrier = threading.Barrier(len(reactions))

    def together(react: Callable[[], object]) -> None:
        barrier.wait(timeout=30)
        react()

    loop = asyncio.get_running_loop()
    with ThreadPoolExecutor(max_workers=len(reactions)) as pool:
        await asyncio.gather(*(loop.run_in_executor(pool, together, r) for r in reactions))


def reaction(bot: Bot, who: str, message: models.Message, emoji: str) -> Callable[[], object]:
    event = ReactionAdded(
        f"race-{who}-{emoji}",
        Actor("shell", who.removeprefix("shell:")),
        "shell",
        str(message.id),
        emoji,
    )
    return lambda: bot.app.dispatcher.handle_now(event)


def audited(bot: Bot, action: str) -> list[str]:
    return sorted(a.actor for a in bot.audit(action))


async def test_fifty_approvers_at_once_with_quorum_one_make_one_decision(bot_factory) -> None:
    bot: Bot = bot_factory(editors(quorum=1))
    async with bot.app.running():
        draft = await draft_of(bot)
        await at_once(*(reaction(bot, who, draft, "✅") for who in APPROVERS))
        await bot.wait()
        assert bot.run().status == models.RunStatus.SUCCEEDED
        assert len(bot.messages("decision")) == 1
        assert len(bot.messages("published")) == 1
        assert len(bot.audit("draft.approved")) == 1
        # every one of the 50 is on record: one vote that decided, 49 that came too late
        assert len(audited(bot, "vote.cast")) + len(audited(bot, "vote.too_late")) == 50
        assert len(bot.rows(models.ApprovalVote)) == len(audited(bot, "vote.cast")) == 1
    await bot.app.aclose()


async def test_approve_and_reject_racing_have_one_outcome_and_both_are_audited(
    bot_factory,
) -> None:
    bot: Bot = bot_factory(editors(quorum=1))
    async with bot.app.running():
        draft = await draft_of(bot)
        await at_once(reaction(bot, "ed1", draft, "✅"), reaction(bot, "ed2", draft, "❌"))
        await bot.wait()
        run = bot.run()
        assert run.status in (models.RunStatus.SUCCEEDED, models.RunStatus.REJECTED)
        assert len(bot.messages("decision")) == 1
        assert len(bot.messages("published")) == (run.status == models.RunStatus.SUCCEEDED)
        winner = "shell:ed1" if run.status == models.RunStatus.SUCCEEDED else "shell:ed2"
        assert run.decided_by == winner
        assert audited(bot, "vote.cast") + audited(bot, "vote.too_late") in (
            ["shell:ed1", "shell:ed2"],
            ["shell:ed2", "shell:ed1"],
        )
    await bot.app.aclose()


async def test_a_reaction_racing_a_send_back_never_lands_on_another_version(
    bot_factory,
) -> None:
    bot: Bot = bot_factory(editors(quorum=1))
    async with bot.app.running():
        draft = await draft_of(bot)
        await at_once(reaction(bot, "ed1", draft, "🔁"), reaction(bot, "ed2", draft, "✅"))
        await bot.wait()
        votes = bot.rows(models.ApprovalVote)
        assert len(votes) == 1 and votes[0].version == 1  # counted against v1, or not at all
        assert len(bot.messages("decision")) == 1
        run = bot.run()
        if votes[0].vote == models.Vote.REVISE:
            assert run.status == models.RunStatus.AWAITING_APPROVAL
            assert bot.latest_draft().version == 2 and bot.messages("published") == []
        else:
            assert run.status == models.RunStatus.SUCCEEDED
            assert [d.version for d in bot.messages("draft")] == [1]
        # a ✅ on v1 now, after the fact, changes nothing
        before = (bot.run().status, len(bot.messages("decision")))
        bot.app.dispatcher.handle_now(
            ReactionAdded("late", Actor("shell", "ed3"), "shell", str(draft.id), "✅")
        )
        await bot.wait()
        assert (bot.run().status, len(bot.messages("decision"))) == before
        assert "shell:ed3" in audited(bot, "vote.too_late")
    await bot.app.aclose()


async def shell(tmp_path: Path, db_url: str, script: str) -> tuple[int, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot.cli",
        "shell",
        "--script",
        "-",
        cwd=tmp_path,
        env={
            **os.environ,
            "CREWCHIEF_DATABASE_URL": db_url,
            "CREWCHIEF_LLM": "offline",
            "CREWCHIEF_APPROVERS": "shell:ed1,shell:ed2",
            "COLUMNS": "200",
        },
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(script.encode()), timeout=60)
    assert proc.returncode == 0, err.decode()
    return proc.returncode, out.decode()


@pytest.mark.slow
async def test_two_shell_processes_reacting_at_once_decide_once(
    tmp_path: Path, db_url: str
) -> None:
    _, out = await shell(tmp_path, db_url, "/crew run blog-post heat pumps\nwait\n")
    assert "#3 writer · draft v1" in out
    await asyncio.gather(
        shell(tmp_path, db_url, "as ed1\nreact #3 ✅\nwait\n"),
        shell(tmp_path, db_url, "as ed2\nreact #3 ❌\nwait\n"),
    )
    from sqlmodel import select

    from storage.db import Database

    db = Database(db_url)
    with db.read() as s:
        run = s.exec(select(models.Run)).one()
        decisions = s.exec(select(models.Message).where(models.Message.kind == "decision")).all()
        actions = [a.action for a in s.exec(select(models.AuditEntry)).all()]
    db.dispose()
    assert run.status in (models.RunStatus.SUCCEEDED, models.RunStatus.REJECTED)
    assert len(decisions) == 1
    assert actions.count("vote.cast") + actions.count("vote.too_late") == 2
