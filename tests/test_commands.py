"""The /crew command surface: parsing, help, permissions, and bad input that changes nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commands.handlers import REGISTRY
from commands.spec import Arg, UsageError, tokenize_args
from storage import models
from tests.conftest import Bot


def state(bot: Bot) -> tuple[int, int, int]:
    return (
        len(bot.rows(models.Run)),
        len(bot.rows(models.Outbox)),
        len(bot.rows(models.ApprovalVote)),
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("/crew run", "run needs <workflow>"),
        ("/crew run blog-post", "run needs <text>"),
        ("/crew run blog-post    ", "run needs <text>"),
        ("/crew rnu blog-post heat pumps", "did you mean: /crew run?"),
        ("/crew run blg-post heat pumps", "did you mean: /crew run blog-post …?"),
        (
            "/crew run nope heat pumps",
            "unknown workflow 'nope'; available: blog-post, research-brief",
        ),
        ("/crew status abc", "'abc' is not a run"),
        ("/crew cancel 99", "there is no run 99"),
        ("/crew cancel", "usage: /crew cancel <run>"),
        ("/crew status 1 2", "unexpected extra text"),
        ("/crew status '1", "unclosed quote"),
        ("/crow help", "unknown slash command /crow"),
        ("launch the rockets", "unknown shell command launch"),
        ("react #1", "usage: react <ref> <emoji>"),
        ("react #999 ✅", "there is no message #999"),
        ("reply #1", "usage: reply <ref> <text>"),
        ("/crew status ²", "'²' is not a run"),
        ("/crew status 99999999999999999999999", "is not a run"),
        ("react ² ✅", "usage: react <ref> <emoji>"),
        ("react #99999999999999999999 ✅", "usage: react <ref> <emoji>"),
        ("reply ١ hello", "usage: reply <ref> <text>"),
    ],
)
async def test_bad_input_gets_a_clear_answer_and_changes_nothing(
    bot: Bot, line: str, expected: str
) -> None:
    before = state(bot)
    out = await bot.type(line)
    assert expected in out
    assert "Traceback" not in out
    await bot.wait()
    assert state(bot) == before


async def test_huge_text_is_cut_with_a_notice(bot: Bot) -> None:
    out = await bot.type("/crew run research-brief " + "word " * 10_000)
    assert "your text was cut to 40,000 characters" in out
    assert len(bot.run().text) == 40_000
    await bot.wait()
    assert bot.run().status == models.RunStatus.SUCCEEDED


async def test_text_keeps_apostrophes_and_quotes(bot: Bot) -> None:
    await bot.type("""/crew run research-brief Why "smart" meters don't save money""")
    assert bot.run().text == """Why "smart" meters don't save money"""


async def test_help_lists_only_what_the_asker_may_run(bot: Bot) -> None:
    out = await bot.type("/crew help")
    assert "/crew run <workflow> <text>" in out
    assert "/crew approve" not in out  # alice approves nothing
    bot.act_as("editor")
    out = await bot.type("/crew help")
    assert "/crew approve <run> [reason]" in out and "/crew reject <run> [reason]" in out


async def test_launchers_limit_who_may_run_a_workflow(bot_factory) -> None:
    bot: Bot = bot_factory({"workflows": {"blog-post": {"launchers": ["shell:boss"]}}})
    async with bot.app.running():
        out = await bot.type("/crew run blog-post heat pumps")
        assert "you may not launch blog-post" in out
        assert bot.rows(models.Run) == []
        assert len(bot.audit("command.refused")) == 1
        bot.act_as("boss")
        await bot.type("/crew run blog-post heat pumps")
        assert len(bot.rows(models.Run)) == 1
    await bot.app.aclose()


async def test_status_workflows_agents_digest(bot: Bot) -> None:
    await bot.type("/crew run blog-post heat pumps")
    await bot.wait()
    out = await bot.type("/crew status")
    assert "run 1 · blog-post · awaiting_approval" in out
    out = await bot.type("/crew status #1")
    assert "2. draft: awaiting_approval (draft v1)" in out
    out = await bot.type("/crew workflows")
    assert "blog-post: Research, a draft that people approve" in out
    assert "approvers: shell:editor" in out
    out = await bot.type("/crew agents")
    assert "writer: writer · gpt-4o-mini" in out and "LLM provider: offline" in out
    out = await bot.type("/crew digest")
    assert "runs started: 1" in out and "waiting for approval 1" in out
    assert "approvals waiting: 1" in out


async def test_a_command_delivered_twice_runs_once(bot: Bot) -> None:
    from commands.events import SlashCommand

    event = SlashCommand("same-id", bot.session.actor, "shell", "run research-brief x")
    first = bot.app.dispatcher.handle_now(event)
    again = bot.app.dispatcher.handle_now(event)
    assert first and again == []
    assert len(bot.rows(models.Run)) == 1


# -- parsing properties --------------------------------------------------------------------

words = st.text(
    alphabet=st.characters(blacklist_categories=("Cs", "Zs", "Cc"), blacklist_characters="'\""),
    min_size=1,
    max_size=20,
)


@given(st.text(max_size=300))
def test_parse_never_crashes(text: str) -> None:
    try:
        spec, values = REGISTRY.parse(text)
    except UsageError as exc:
        assert str(exc)
    else:
        assert set(values) <= {a.name for a in spec.args}


@given(words, st.text(max_size=200).filter(lambda t: t.strip() == t and t != ""))
def test_rest_argument_is_kept_verbatim(workflow: str, text: str) -> None:
    args = (Arg("workflow"), Arg("text", rest=True))
    quoted = len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"
    values = tokenize_args(f"{workflow} {text}", args)
    assert values["workflow"] == workflow
    assert values["text"] == (text[1:-1] if quoted else text)


@given(st.lists(st.text(alphabet="abc def-_.", min_size=1, max_size=12), min_size=2, max_size=2))
def test_quoted_words_survive(parts: list[str]) -> None:
    args = (Arg("a"), Arg("b"))
    values = tokenize_args(" ".join(f'"{p}"' for p in parts), args)
    assert [values["a"], values["b"]] == parts
