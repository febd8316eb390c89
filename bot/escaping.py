"""Make user- and LLM-written text inert before a platform renders it.

A draft is untrusted input that ends up in front of a whole team: if it could ping
`@channel`, mention a user, forge a link or repaint the operator's terminal, anyone who can
steer an LLM could do the same. Every platform has exactly one escaper here, so adapters and
templates cannot each invent (and forget) their own rules.

Escapers apply to the untrusted fragments only (a draft, a reason typed by a user), never to
text the bot itself composes with markup on purpose.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable

__all__ = ["ESCAPERS", "escape_discord", "escape_shell", "escape_slack", "truncate"]

ZWSP = "\u200b"
"""Zero-width space: invisible, but it splits a token the platform would otherwise parse."""


def escape_slack(text: str) -> str:
    """Escape Slack's mrkdwn control characters so `<...>` can never become markup.

    Slack parses `<!channel>`, `<!here>`, `<@U123>`, `<#C123>` and `<https://x|label>` only
    between angle brackets, and documents `&`, `<` and `>` as the three characters to escape.
    With those escaped, a draft shows exactly what was written, and `&amp;`-style text the
    author typed stays literal too (its `&` is escaped as well).

    Bare `@channel`, `@here` and `@everyone` words are deliberately left alone: Slack only turns
    them into mentions when a message is posted with `link_names=true` (or `parse=full`), and
    changing them would alter what the reader sees. The Slack adapter must therefore never
    send either option; that keeps this function lossless (the three entities decode back to
    the original text).
    """
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# `<@` covers user (<@123>, <@!123>) and role (<@&123>) mentions, `<#` channel mentions;
# `@everyone` / `@here` work anywhere in content. A ZWSP after the trigger breaks all of them.
_DISCORD_MENTION = re.compile(r"<[@#]|@(?=everyone|here)", re.IGNORECASE)
# `[label](url)` needs `](` with nothing in between.
_DISCORD_MASKED_LINK = re.compile(r"\](?=\()")


def escape_discord(text: str) -> str:
    """Break Discord mention and masked-link syntax inside untrusted text.

    The adapter also sends `allowed_mentions=none`, which stops the ping but still renders
    `<@123>` as a name chip and `[Login](https://evil)` as a disguised link. Escaping the text
    itself keeps the draft honest when read and still safe if a code path ever forgets
    allowed_mentions. Only zero-width spaces are inserted, so the visible text is unchanged
    and removing them gives the original back.
    """
    text = _DISCORD_MENTION.sub(lambda m: m.group(0) + ZWSP, text)
    return _DISCORD_MASKED_LINK.sub("]" + ZWSP, text)


# ECMA-48 escape sequences, removed whole so their parameters do not leak into the text:
# strings (OSC, DCS, SOS, PM, APC) up to their terminator, CSI with its parameters, and the
# short two- or three-byte escapes (charset switches, terminal reset...).
_TERMINAL_SEQUENCE = re.compile(
    r"(?:\x1b[\]PX^_]|[\x90\x98\x9d\x9e\x9f])[^\x07\x1b\x9c]*(?:\x07|\x1b\\|\x9c)"
    r"|(?:\x1b\[|\x9b)[\x30-\x3f]*[\x20-\x2f]*[\x40-\x7e]"
    r"|\x1b[\x20-\x2f]*[\x30-\x7e]"
)
# Every C0 and C1 control and DEL, except newline and tab.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


# Every `[` with the backslashes in front of it, and the rest of a tag when rich's markup parser
# would read one there: a lowercase letter, `#`, `/` or `@`, then anything up to the next `]`.
_RICH_BRACKET = re.compile(r"(\\*)\[([a-z#/@][^[]*?\])?")


def _escape_rich_markup(text: str) -> str:
    """Escape text for rich console markup so that it renders exactly as written.

    It follows `rich.markup.escape` (a tag's backslashes are doubled, plus one to escape it)
    and fixes its blind spots: rich turns any `\\[` in plain text into `[`, so a bracket that
    starts no tag gets one extra backslash too; and a trailing run of backslashes, which would
    escape a tag placed right after the text, is doubled whatever its length (rich only
    protects a single one: `a\\\\\\` then `[/b]` leaves the style open).
    """

    def escape(match: re.Match[str]) -> str:
        backslashes, tag = match.group(1), match.group(2)
        if tag is None:
            return backslashes + "\\["
        return backslashes * 2 + "\\[" + tag

    text = _RICH_BRACKET.sub(escape, text)
    body = text.rstrip("\\")
    return body + "\\" * (2 * (len(text) - len(body)))


def escape_shell(text: str) -> str:
    """Make text safe to print in the operator's terminal through rich console markup.

    Terminal escape sequences can recolour or hide text, rewrite the window title, plant
    hyperlinks (OSC 8) or move the cursor to overwrite earlier lines, so a draft could forge
    what the operator believes they approve. Complete sequences are removed, carriage returns
    become newlines (a lone `\\r` would overwrite the line), and any other C0/C1 control is
    dropped. What remains is escaped for rich markup (see `_escape_rich_markup`), so `[bold]` or
    `[link=...]` in a draft prints as written.

    Like rich's, the result is meant to sit inside markup: trailing backslashes are doubled so
    they cannot escape a tag placed right after the text (and print doubled when none is).
    Rich also replaces `:name:` emoji codes, and markup has no escape for those: render with
    `emoji=False` (a Console or print option) so `:x:` in a draft is not shown as ❌.
    """
    text = _TERMINAL_SEQUENCE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    return _escape_rich_markup(text)


ESCAPERS: dict[str, Callable[[str], str]] = {
    "slack": escape_slack,
    "discord": escape_discord,
    "shell": escape_shell,
}
"""The escaper of each platform, keyed by the platform name adapters use."""


# Characters that belong to the character before them: cutting in front of one would leave
# a broken emoji, a lone accent, or (for ZWSP) re-join what escape_discord split apart.
_ZWJ = "\u200d"
_JOINERS = frozenset({ZWSP, _ZWJ, "\u20e3"})  # ZWSP, ZWJ, combining keycap
_PARTIAL_ENTITY = re.compile(r"&#?[A-Za-z0-9]{0,7}\Z")


def _belongs_to_previous(char: str) -> bool:
    code = ord(char)
    return (
        char in _JOINERS
        or unicodedata.combining(char) != 0
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin-tone modifiers
        or 0xE0020 <= code <= 0xE007F  # tag characters (subdivision flags)
        or 0xDC00 <= code <= 0xDFFF  # low surrogate (only in lone-surrogate strings)
    )


def truncate(text: str, limit: int, notice: str) -> str:
    """Cut `text` so that, with `notice` appended, it is at most `limit` characters long.

    Platforms reject or silently clip long messages (Slack section text 3,000, Discord content
    2,000); clipping here lets the reader see that something was cut. It is meant to run
    after escaping, so the cut backs off rather than leave half an entity (`&am`), a lone
    backslash that would escape the notice's first character, a surrogate half, or a
    character separated from the combining mark, joiner or ZWSP that follows it.

    Text that already fits is returned unchanged. `limit` counts code points (`len`). The
    notice is the bot's own text, already in the platform's format; it is not escaped here.
    Raises ValueError when the notice alone does not fit: that is a programming error.
    """
    if len(text) <= limit:
        return text
    if len(notice) > limit:
        raise ValueError(f"notice of {len(notice)} characters does not fit in {limit}")
    cut = limit - len(notice)
    while cut > 0 and _belongs_to_previous(text[cut]):
        cut -= 1
    head = text[:cut]
    while True:
        trimmed = _PARTIAL_ENTITY.sub("", head).rstrip("\\")
        if trimmed.endswith(_ZWJ) or 0xD800 <= ord(trimmed[-1:] or "\0") <= 0xDBFF:
            trimmed = trimmed[:-1]  # a joiner or surrogate half with nothing to join
        if trimmed == head:
            return head + notice
        head = trimmed
