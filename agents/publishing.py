"""Publishing an approved draft, once per run: to the thread, a folder or a webhook."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlsplit

from sqlmodel import Session

from agents import cards
from agents.config import PublishTarget
from storage import outbox
from storage.audit import audit
from storage.models import Run, Step


def publish(
    session: Session,
    run: Run,
    step: Step,
    target: PublishTarget,
    text: str,
    *,
    version: int,
    offline: bool,
) -> tuple[Path, str] | None:
    """Record the publication and its messages; return the file to write, if any.

    The webhook goes through the outbox under the idempotency key `<run>:<step>:<version>`
    (the approved draft's version). A folder file is written by the caller before the commit:
    the same path and content on a retry, so writing it again is harmless.
    """
    assert run.id is not None
    key = f"{run.id}:{step.name}:{version}"
    location = "this thread"
    file: tuple[Path, str] | None = None
    if target.to == "folder" and target.path:
        path = Path(target.path).expanduser() / f"{run.id:05d}-{slugify(run.text)}.md"
        file = (path, text)
        location = str(path)
    elif target.to == "webhook" and target.url:
        outbox.webhook(
            session,
            key=key,
            url=target.url,
            payload={
                "run_id": run.id,
                "workflow": run.workflow,
                "topic": run.text,
                "content": text,
                "requester": run.requester,
                "approved_by": run.decided_by,
                "version": version,
            },
        )
        location = urlsplit(target.url).netloc  # a webhook URL often holds a secret
    cards.post_in_thread(
        session,
        run,
        key=f"run:{run.id}:published",
        kind="published",
        step=step,
        context={"to": target.to, "location": location, "content": text, "offline": offline},
    )
    audit(session, "crewchief", "run.published", run.id, to=target.to, key=key)
    return file


def slugify(text: str, limit: int = 60) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return slug[:limit].rstrip("-") or "run"


def write_atomically(path: Path, content: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(path)
