"""Cutting long messages to a platform's limits: at paragraph, then line, then word
boundaries, never inside an escape entity, with a preview for what is too long to post."""

from __future__ import annotations


def split_text(text: str, limit: int) -> list[str]:
    """Pieces of at most `limit` characters, cut at line boundaries where a line fits, else
    at a space in the second half of the piece, else hard; empty pieces are dropped."""
    chunks: list[str] = []
    current = ""
    for paragraph in text.split("\n"):
        candidate = f"{current}\n{paragraph}" if current else paragraph
        if len(candidate) <= limit:
            current = candidate
            continue
        if current:
            chunks.append(current)
        while len(paragraph) > limit:
            cut = paragraph.rfind(" ", 0, limit)
            cut = cut if cut > limit // 2 else limit
            # never split an escape entity such as &amp; in two
            amp = paragraph.rfind("&", max(0, cut - 6), cut)
            if amp != -1 and ";" not in paragraph[amp:cut]:
                cut = amp
            chunks.append(paragraph[:cut])
            paragraph = paragraph[cut:].lstrip(" ")
        current = paragraph
    if current.strip():
        chunks.append(current)
    return [c for c in chunks if c.strip()]


def preview(text: str, *, head: int, tail: int, notice: str) -> str:
    """The start of a long message and its last lines (a draft's reaction hint and approvers),
    with `notice` between them saying where the full text is."""
    start = text[:head].rsplit("\n", 1)[0]
    end = "\n".join(text[-tail:].splitlines()[1:])
    return f"{start}\n\n{notice}\n\n{end}"


def headline(text: str, limit: int, default: str = "crewchief") -> str:
    """The first non-empty line, for notifications."""
    first = next((line for line in text.splitlines() if line.strip()), default)
    return first[:limit]
