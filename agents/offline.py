"""A stand-in model for demos, tests and CI: useful-looking Markdown with no network and no key.

Everything is derived from the request alone (no randomness, no clock), so a workflow replayed
with the same inputs posts the same text, and every text carries a marker so nobody mistakes it
for real model output.
"""

from __future__ import annotations

import hashlib
import re

from agents.llm import Completion, LLMRequest

__all__ = ["OFFLINE_MARKER", "OfflineProvider"]

OFFLINE_MARKER = "_(offline model: deterministic text, no LLM was called)_"

_STOPWORD_TEXT = (
    "a an and are as at be by for from how in into is it its of on or our over the their this "
    "to vs what when where which who why will with without your about after before between"
)
_STOPWORDS = frozenset(_STOPWORD_TEXT.split())
# Whole words only: "cut" must not fire on "execution", nor "table" on "suitable".
_SHORTER = re.compile(r"\b(shorter|shorten|concise|too long|brief(er)?|trim|cut)\b")
_TABLE = re.compile(r"\btables?\b")
_COST = re.compile(r"\b(costs?|pric(e|es|ing)|budget)\b")
_ANGLES = (
    "**{w}**: where it changes the picture for {t}; look for concrete numbers.",
    "**{w}**: what practitioners report about it in day-to-day work.",
    "**{w}**: the costs and trade-offs it brings, and who pays them.",
    "**{w}**: how it has shifted over the last two years, and why.",
    "**{w}**: common misconceptions about it that are worth correcting.",
    "**{w}**: a worked example would make it tangible for readers.",
)


class OfflineProvider:
    """`LLMProvider` that writes role-shaped Markdown; costs nothing and never fails."""

    name = "offline"

    async def complete(self, request: LLMRequest) -> Completion:
        writers = {"researcher": _research, "writer": _draft, "publisher": _publish}
        body = writers.get(request.role.strip().lower(), _generic)(request)
        text = f"{body.rstrip()}\n\n{OFFLINE_MARKER}\n"
        prompt_side = " ".join([request.system, request.prompt, *request.inputs.values()])
        return Completion(
            text=text,
            provider=self.name,
            model=request.model,
            input_tokens=estimate_tokens(prompt_side),
            output_tokens=estimate_tokens(text),
            cost_usd=0.0,
            latency_ms=0,
        )

    async def aclose(self) -> None:
        return None


def estimate_tokens(text: str) -> int:
    """Roughly 4 tokens per 3 English words: close enough for budgets to bite."""
    words = len(text.split())
    return (words * 4 + 2) // 3


def _topic(request: LLMRequest) -> str:
    topic = " ".join(request.topic.split())
    return topic or " ".join(request.prompt.split()[:8]) or "the task"


def _keywords(text: str) -> list[str]:
    """Distinct content words in order of appearance, keeping the author's casing ("LLM")."""
    seen: dict[str, str] = {}
    for word in re.findall(r"[A-Za-z][A-Za-z0-9+\-]*", text):
        if len(word) > 2 and word.lower() not in _STOPWORDS:
            seen.setdefault(word.lower(), word if word.isupper() else word.lower())
    return list(seen.values()) or ["context", "impact", "adoption", "risks"]


def _revision_block(request: LLMRequest) -> str:
    """Quotes the feedback so reviewers can see their request was picked up."""
    if request.feedback and request.version > 1:
        feedback = " ".join(request.feedback.split())
        return f'> **Revision notes (v{request.version}):** addressing feedback: "{feedback}"\n\n'
    return ""


def _research(request: LLMRequest) -> str:
    topic = _topic(request)
    words = _keywords(topic)
    angles = [words[i % len(words)] for i in range(min(6, max(4, len(words))))]
    bullets = []
    for i, word in enumerate(angles):
        # A stable hash (hash() is salted per process) picks each angle's wording.
        digest = int(hashlib.sha256(f"{word}{i}".encode()).hexdigest(), 16)
        bullets.append(f"- {_ANGLES[digest % len(_ANGLES)].format(w=word, t=topic)}")
    findings = "\n".join(bullets)
    return (
        f"# Research notes: {topic}\n\n{_revision_block(request)}"
        "## Key questions\n"
        f"- What is {topic}, and why does it matter now?\n"
        f"- Who gains and who loses from {topic}?\n"
        f"- What evidence would change our view of {topic}?\n\n"
        f"## Findings and angles\n{findings}\n\n"
        "## Sources to check\n"
        f"- Primary documentation and official announcements on {words[0]}\n"
        f"- Recent surveys or industry reports covering {topic}\n"
        f"- Practitioner case studies mentioning {words[-1]}\n"
        "- Critical or opposing takes, to keep the piece balanced\n\n"
        "## Open questions\n"
        f"- Which figures about {topic} are current, and which need checking?\n"
        f"- What do readers already believe about {words[0]}?\n"
    )


def _findings_from(notes: str) -> list[str]:
    """Reuse the researcher's angles so the draft visibly builds on them."""
    section = notes.split("## Findings", 1)[-1] if "## Findings" in notes else ""
    bullets = re.findall(r"^- \*\*(.+?)\*\*:\s*(.+)$", section, flags=re.MULTILINE)
    return [f"{head}: {rest}" for head, rest in bullets]


def _draft(request: LLMRequest) -> str:
    topic = _topic(request)
    title = _cap(topic)
    feedback = (request.feedback or "").lower() if request.version > 1 else ""
    short = _SHORTER.search(feedback) is not None
    research = request.inputs.get("research") or next(
        (v for k, v in request.inputs.items() if "research" in k.lower()), ""
    )
    findings = _findings_from(research)
    words = _keywords(topic)
    heads = [f.split(":", 1)[0] for f in findings[:3]] or [words[i % len(words)] for i in range(3)]
    headings = [
        f"Why {heads[0]} matters",
        f"What {heads[1]} looks like in practice",
        f"Where {heads[2]} goes next",
    ]

    intro = f"{title} is moving quickly, and the details decide who benefits."
    if not short:
        intro += (
            f" This post walks through {heads[0]}, {heads[1]} and {heads[2]}, with the questions"
            " a careful reader should ask at each step."
        )
    parts = [f"# {title}: what matters and why\n\n{_revision_block(request)}{intro}\n"]
    for i, heading in enumerate(headings):
        point = findings[i].split(":", 1)[1].strip() if i < len(findings) else "It shapes the rest."
        paragraph = f"**{heads[i]}**: {_cap(point)}"
        if not short:
            paragraph += (
                f" Teams that look closely at {heads[i]} tend to avoid surprises later; those that"
                " skip it often pay for it. The evidence is still moving, so the numbers here"
                " deserve a re-check before publishing."
            )
        parts.append(f"## {heading}\n\n{paragraph}\n")
    if _TABLE.search(feedback):
        parts.append(_table(heads, cost=_COST.search(feedback) is not None))
    conclusion = f"{title} rewards attention to {heads[0]}."
    if not short:
        conclusion += f" Start small, measure {heads[1]}, and revisit {heads[2]} as it evolves."
    parts.append(f"## Conclusion\n\n{conclusion}\n")
    return "\n".join(parts)


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _table(heads: list[str], *, cost: bool) -> str:
    if cost:
        rows = "\n".join(
            f"| {h} | low | medium | estimate; verify before publishing |" for h in heads
        )
        return f"| Cost item | Small team | Large team | Notes |\n|---|---|---|---|\n{rows}\n"
    rows = "\n".join(f"| {h} | what it covers | why it matters |" for h in heads)
    return f"| Aspect | Summary | Relevance |\n|---|---|---|\n{rows}\n"


def _publish(request: LLMRequest) -> str:
    topic = _topic(request)
    draft = request.inputs.get("draft") or next(
        (v for k, v in request.inputs.items() if "draft" in k.lower() or "writ" in k.lower()), ""
    )
    # Reviewers' notes and the draft's own offline marker do not belong in the published text.
    drop = ("> **Revision notes", OFFLINE_MARKER)
    lines = [line for line in draft.strip().splitlines() if not line.startswith(drop)]
    title = next((line[2:].strip() for line in lines if line.startswith("# ")), topic)
    body = "\n".join(line for line in lines if not line.startswith("# ")).strip()
    body = re.sub(r"\n{3,}", "\n\n", body) or f"_(no approved draft was provided for {topic})_"
    sections = [line[3:].strip() for line in lines if line.startswith("## ")]
    covered = "; ".join(s for s in sections if s.lower() != "conclusion") or topic
    return f"# {title}\n\n{body}\n\n---\n\n**Summary:** {title} — covering {covered}.\n"


def _generic(request: LLMRequest) -> str:
    topic = _topic(request)
    task = " ".join(request.prompt.split()[:40]) or topic
    words = _keywords(f"{topic} {request.prompt}")[:4]
    points = "\n".join(f"- {w.capitalize()}: what it implies for {topic}." for w in words)
    used = sorted(request.inputs.items())
    inputs = "\n".join(f"- `{k}`: {len(v.split())} words" for k, v in used) or "- none"
    return (
        f"# {_cap(request.role.strip()) or 'Agent'}: {topic}\n\n{_revision_block(request)}"
        f"## Task\n{task}\n\n## Inputs used\n{inputs}\n\n## Answer\n{points}\n\n"
        "## Next steps\n- Check the points above against real sources.\n"
        "- Run again with a real model for production text.\n"
    )
