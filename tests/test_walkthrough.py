"""DESIGN.md's walk-through, steps 1-5, typed into the shell platform."""

from __future__ import annotations

from sqlmodel import select

from storage import models
from tests.conftest import Bot


async def test_blog_post_from_command_to_published(bot: Bot) -> None:
    # 1-2. the requester launches; the bot answers at once and a thread fills in.
    answer = await bot.type("/crew run blog-post Why heat pumps beat gas boilers")
    assert "run 1 (blog-post) started" in answer
    await bot.wait()
    notes = bot.messages("notes")
    assert len(notes) == 1 and notes[0].thread_of == bot.messages("run_card")[0].id
    draft1 = bot.latest_draft()
    assert draft1.version == 1
    assert "✅ approve · ❌ reject · 🔁 send back (reply with notes)" in bot.transcript
    assert "approvers: shell:editor" in bot.transcript
    assert bot.run().status == models.RunStatus.AWAITING_APPROVAL

    # 3. an editor replies with notes and sends the draft back: the writer posts v2.
    bot.act_as("editor")
    await bot.type(f"reply #{draft1.id} shorter, add a cost table", f"react #{draft1.id} 🔁")
    await bot.wait()
    draft2 = bot.latest_draft()
    assert draft2.version == 2
    with bot.app.db.read() as s:
        v2 = s.get(models.DraftVersion, 2)
        assert v2 is not None
        assert v2.feedback == "shorter, add a cost table"
        assert "| Cost item" in v2.content  # the (offline) writer addressed the notes
    assert f"#{draft1.id} edited" in bot.transcript  # v1's card is locked
    assert "sent back by shell:editor" in bot.transcript

    # 4. another approver reacts ✅ on v2: the run card shows who decided.
    await bot.type(f"react #{draft2.id} ✅")
    await bot.wait()
    run = bot.run()
    assert run.status == models.RunStatus.SUCCEEDED
    assert run.decided_by == "shell:editor"

    # 5. published exactly once, in the thread; the card turns green (succeeded).
    published = bot.messages("published")
    assert len(published) == 1
    with bot.app.db.read() as s:
        outbox_row = s.exec(
            select(models.Outbox).where(models.Outbox.message_id == published[0].id)
        ).one()
        assert outbox_row.context["content"] == v2.content  # what was approved, word for word
    assert "published to this thread" in bot.transcript
    assert [s.status for s in bot.steps()] == ["succeeded"] * 3
    card_edits = [line for line in bot.transcript.splitlines() if "edited run 1" in line]
    assert "succeeded" in card_edits[-1]
    # the v1 card no longer takes votes
    await bot.type(f"react #{draft1.id} ✅")
    assert len(bot.messages("published")) == 1


async def test_research_brief_has_no_approval(bot: Bot) -> None:
    await bot.type("/crew run research-brief solid-state batteries")
    await bot.wait()
    assert bot.run().status == models.RunStatus.SUCCEEDED
    assert len(bot.messages("notes")) == 1
    assert bot.messages("draft") == []


async def test_concurrent_runs_progress_independently(bot: Bot) -> None:
    for topic in ("heat pumps", "solar roofs", "e-bikes", "district heating"):
        await bot.type(f"/crew run blog-post {topic}")
    await bot.wait()
    with bot.app.db.read() as s:
        runs = s.exec(models.Run.__table__.select()).all()  # type: ignore[attr-defined]
    assert len(runs) == 4
    assert all(r.status == models.RunStatus.AWAITING_APPROVAL for r in runs)
    assert len(bot.messages("draft")) == 4


async def test_user_text_cannot_drive_the_terminal(bot: Bot) -> None:
    hostile = "\x1b[2J\x1b]0;pwned\x07[bold red]boom[/bold red] <!channel>"
    await bot.type(f"/crew run research-brief {hostile}")
    await bot.wait()
    assert "\x1b" not in bot.transcript and "\x07" not in bot.transcript
    assert "[bold red]boom[/bold red] <!channel>" in bot.transcript  # shown literally
