"""Untrusted text (drafts, reasons, LLM output) must show up literally and never act."""

from __future__ import annotations

import re
import unicodedata

import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from rich.text import Text

from bot.escaping import ESCAPERS, escape_discord, escape_shell, escape_slack, truncate

ZWSP = "\u200b"

# Fragments that mean something to one platform or another, mixed into arbitrary text so the
# properties are exercised on hostile input, not only on random noise.
HOSTILE = [
    "<!channel>", "<!here>", "<!everyone>", "<@U123>", "<#C1|general>", "<https://x|forged>",
    "@everyone", "@here", "@channel", "<@123456789012345678>", "<@!1>", "<@&42>", "<#7>",
    "[click](https://evil.example)", "](", "[", "]", "(", ")", "<", ">", "&", "&amp;", "&lt;",
    "@", "#", "!", "&#62;", "\\", "\\\\", "[bold]", "[/]", "[/bold]", "[link=https://x]",
    "[@click]", "[#ff0000]", ":x:", "\x1b[31m", "\x1b]0;title\x07", "\x1b]8;;https://e\x1b\\",
    "\x1b[2J", "\x9b1m", "\x1bc", "\r", "\r\n", "\n", "\t", "\x00", "\x07", "\x08", "\x7f",
    "\x85", "e\u0301", "👩\u200d💻", "👍🏽", "\ud83d", ZWSP,
]  # fmt: skip
hostile_text = st.lists(st.sampled_from(HOSTILE) | st.text(max_size=8), max_size=25).map("".join)


# ---------------------------------------------------------------- Slack


def unescape_slack(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


@given(st.text() | hostile_text)
def test_slack_output_has_no_brackets_and_decodes_to_the_input(text: str) -> None:
    escaped = escape_slack(text)
    assert "<" not in escaped
    assert ">" not in escaped
    assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt);)*", escaped, re.DOTALL)
    assert unescape_slack(escaped) == text


def test_a_draft_posted_to_slack_shows_the_literal_text() -> None:
    draft = "<!channel> please read <@U123> and <https://evil.example|the docs> & reply"
    assert escape_slack(draft) == (
        "&lt;!channel&gt; please read &lt;@U123&gt; and "
        "&lt;https://evil.example|the docs&gt; &amp; reply"
    )


def test_slack_leaves_bare_at_words_readable() -> None:
    # Bare words only ping with link_names=true, which the adapter never sends.
    assert escape_slack("ping @channel and @here") == "ping @channel and @here"


# ---------------------------------------------------------------- Discord

WORKING_DISCORD_SYNTAX = [
    re.compile(r"@(?:everyone|here)", re.IGNORECASE),
    re.compile(r"<@[!&]?\d+>"),
    re.compile(r"<#\d+>"),
    re.compile(r"\[[^\]]*\]\("),  # a masked link
]


@given(st.text() | hostile_text)
def test_discord_output_has_no_working_mention_or_masked_link(text: str) -> None:
    escaped = escape_discord(text)
    for pattern in WORKING_DISCORD_SYNTAX:
        assert not pattern.search(escaped), (pattern.pattern, escaped)


@given((st.text() | hostile_text).filter(lambda t: ZWSP not in t))
def test_discord_only_inserts_invisible_characters(text: str) -> None:
    assert escape_discord(text).replace(ZWSP, "") == text


@pytest.mark.parametrize(
    ("draft", "shown"),
    [
        ("hey @everyone", f"hey @{ZWSP}everyone"),
        ("@here look", f"@{ZWSP}here look"),
        ("ask <@81234567890123456>", f"ask <@{ZWSP}81234567890123456>"),
        ("ask <@!8>", f"ask <@{ZWSP}!8>"),
        ("editors <@&42>", f"editors <@{ZWSP}&42>"),
        ("see <#1234>", f"see <#{ZWSP}1234>"),
        ("[docs](https://evil.example)", f"[docs]{ZWSP}(https://evil.example)"),
        ("mail me: bob@example.com", "mail me: bob@example.com"),
    ],
)
def test_discord_examples(draft: str, shown: str) -> None:
    assert escape_discord(draft) == shown


# ---------------------------------------------------------------- shell


def is_forbidden_control(char: str) -> bool:
    return unicodedata.category(char) == "Cc" and char not in "\n\t"


@given(st.text() | hostile_text)
def test_shell_output_has_no_controls_and_is_valid_markup(text: str) -> None:
    escaped = escape_shell(text)
    assert "\x1b" not in escaped
    assert not any(is_forbidden_control(c) for c in escaped)
    rendered = Text.from_markup(f"[bold]{escaped}[/bold]", emoji=False)  # must not raise
    assert rendered.spans == [] or {s.style for s in rendered.spans} == {"bold"}


# Printable text plus markup-looking fragments, and lone controls that start no sequence.
PRINTABLE_HOSTILE = [f for f in HOSTILE if not any(is_forbidden_control(c) for c in f)]
printable_text = st.lists(
    st.sampled_from(PRINTABLE_HOSTILE)
    | st.text(st.characters(exclude_categories=["Cc", "Cs"]), max_size=8),
    max_size=25,
).map("".join)
LONE_CONTROLS = [
    c
    for c in map(chr, [*range(0x20), *range(0x7F, 0xA0)])
    if c not in "\n\t\r\x1b\x90\x98\x9b\x9d\x9e\x9f"
]


@given(printable_text, st.lists(st.tuples(st.integers(0, 500), st.sampled_from(LONE_CONTROLS))))
@example("a\\\\\\", [])
@example("[/]\\", [])
@example("\\[ not a tag \\\\[x", [])
def test_shell_renders_printable_text_literally(text: str, controls: list[tuple[int, str]]) -> None:
    noisy = text
    for position, char in controls:
        noisy = noisy[:position] + char + noisy[position:]
    escaped = escape_shell(noisy)
    # The rendered text is meant to sit inside markup: the next tag must not be escaped.
    inside = Text.from_markup(f"[bold]{escaped}[/bold]", emoji=False)
    assert inside.plain == text
    assert all((s.start, s.end, s.style) == (0, len(text), "bold") for s in inside.spans)
    if not text.endswith("\\"):
        assert Text.from_markup(escaped, emoji=False).plain == text


@pytest.mark.parametrize(
    ("draft", "shown"),
    [
        ("\x1b[31mred\x1b[0m alert", "red alert"),
        ("\x1b]0;pwned\x07title", "title"),
        ("\x1b]8;;https://evil.example\x1b\\click\x1b]8;;\x1b\\", "click"),
        ("\x9b2Jcleared", "cleared"),
        ("approve\rREJECT", "approve\nREJECT"),
        ("line\r\nnext", "line\nnext"),
        ("bell\x07 and nul\x00", "bell and nul"),
        ("[bold red]loud[/bold red]", "[bold red]loud[/bold red]"),
        ("[link=https://evil.example]docs[/link]", "[link=https://evil.example]docs[/link]"),
        ("C:\\[drafts]\\[1]", "C:\\[drafts]\\[1]"),
    ],
)
def test_shell_examples(draft: str, shown: str) -> None:
    rendered = Text.from_markup(escape_shell(draft), emoji=False)
    assert rendered.plain == shown
    assert rendered.spans == []


# ---------------------------------------------------------------- truncate

NOTICE = "… (truncated)"


@given(st.text() | hostile_text, st.integers(len(NOTICE), 300), st.sampled_from(sorted(ESCAPERS)))
def test_truncate_never_exceeds_the_limit(text: str, limit: int, platform: str) -> None:
    escaped = ESCAPERS[platform](text)
    cut = truncate(escaped, limit, NOTICE)
    assert len(cut) <= limit
    if len(escaped) <= limit:
        assert cut == escaped
    else:
        assert cut.endswith(NOTICE)
        assert escaped.startswith(cut.removesuffix(NOTICE))


@given(hostile_text, st.integers(len(NOTICE), 120))
def test_truncated_slack_text_still_decodes_cleanly(text: str, limit: int) -> None:
    head = truncate(escape_slack(text), limit, NOTICE).removesuffix(NOTICE)
    assert re.fullmatch(r"(?:[^&]|&(?:amp|lt|gt);)*", head, re.DOTALL)
    assert text.startswith(unescape_slack(head))


@given(hostile_text, st.integers(len(NOTICE), 120))
def test_truncated_discord_text_keeps_mentions_broken(text: str, limit: int) -> None:
    cut = truncate(escape_discord(text), limit, NOTICE)
    for pattern in WORKING_DISCORD_SYNTAX:
        assert not pattern.search(cut)


@given(hostile_text, st.integers(len(NOTICE), 120))
def test_truncated_shell_text_cannot_escape_the_following_tag(text: str, limit: int) -> None:
    cut = truncate(escape_shell(text), limit, "")
    rendered = Text.from_markup(f"[bold]{cut}[/bold]", emoji=False)
    assert all(s.style == "bold" for s in rendered.spans)


@pytest.mark.parametrize(
    ("text", "limit", "expected"),
    [
        ("short", 10, "short"),
        ("a&amp;b&amp;c", 8, "a&amp;b…"),
        ("a&amp;b&amp;c", 6, "a…"),
        ("x&lt;!channel&gt;", 4, "x…"),
        ("ok 👍🏽 fine", 5, "ok …"),
        ("cafe\u0301 au lait", 5, "caf…"),
        (f"hi <@{ZWSP}42>", 6, "hi <…"),
        ("\\\\\\[bold]", 3, "…"),
        ("ab\ud83d\ude00cd", 4, "ab…"),
    ],
)
def test_truncate_examples(text: str, limit: int, expected: str) -> None:
    assert truncate(text, limit, "…") == expected


def test_truncate_refuses_a_notice_longer_than_the_limit() -> None:
    with pytest.raises(ValueError, match="does not fit"):
        truncate("some long text", 3, "(truncated)")
