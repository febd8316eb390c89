"""The shell in script mode, as a real `crewchief shell --script FILE` process, SIGKILLed again
and again while shell:alice launches runs and shell:editor approves their drafts: nothing
acknowledged is lost and nothing happens twice.

Each process gets the lines not yet done; a `/crew run` whose answer was not printed before
the kill is typed again only when the database has no run with its topic. Every model call
waits 0.3 s at a local OpenAI-compatible server, so kills land mid-step, mid-delivery and
mid-decision. `CREWCHIEF_CRASH_SEED=<n>` replays a failing sequence of kill moments;
`CREWCHIEF_CRASH_RUNS` / `CREWCHIEF_CRASH_KILLS` change its size.
"""

from __future__ import annotations

import asyncio
import math
import os
import random
import time
from collections import Counter
from pathlib import Path

import pytest
from sqlmodel import select

from storage import models
from storage.db import Database
from tests.crash.harness import (
    SHELL_APPROVER,
    ShellHarness,
    bot_env,
    runs_by_text,
    steps_in_flight,
    still_held,
    topic,
    webhook,
    write_config,
)
from tests.fakes.openai_server import running_fake_openai

SEED = int(os.environ.get("CREWCHIEF_CRASH_SEED", "20261203"))
RUNS = int(os.environ.get("CREWCHIEF_CRASH_RUNS", "100"))
KILLS = int(os.environ.get("CREWCHIEF_CRASH_KILLS", "20"))
MODEL_DELAY = 0.3
AIMS = ("up", "line", "message")  # what a kill's moment follows

# minutes on a loaded machine: the default 300 s would fail a slow run, not a broken one
pytestmark = [pytest.mark.crash, pytest.mark.timeout(1200)]


async def test_shell_script_survives_twenty_kill_9s(tmp_path: Path, db_url: str) -> None:
    rng = random.Random(SEED)
    began = time.monotonic()
    print(f"\nshell crash harness: seed {SEED}, {RUNS} runs, {KILLS} kills")
    db = Database(db_url)
    async with running_fake_openai() as llm, webhook() as hook:
        llm.script(*[("delay", MODEL_DELAY)] * (RUNS * 4 + 200))
        write_config(tmp_path, hook["url"], approver=f"shell:{SHELL_APPROVER}")
        harness = ShellHarness(tmp_path, bot_env(db_url, llm, None), db, runs=RUNS)
        loop = asyncio.get_running_loop()
        aimed: Counter[str] = Counter()
        for k in range(KILLS):
            # This round's launches are typed by its first process, which is killed 0.3-2.5 s
            # after it is up, or 0-20 ms after it starts a line of its script (a command is
            # answered in about 15 ms), or 0-20 ms after it prints its n-th message (before
            # it has recorded that, at times); a process that finishes its script before the
            # kill is followed by another, with the ✅s then due.
            launches = math.ceil(len(harness.to_launch) / (KILLS - k))
            aim, pick, n = rng.choice(AIMS), rng.random(), rng.randint(1, 12)
            after_seen, after_up = rng.uniform(0, 0.02), rng.uniform(0.3, 2.5)
            kill_at: float | None = None
            while True:
                shell = await harness.start(harness.script(launches))
                launches = 0
                if kill_at is None:
                    assert await harness.up(), harness.problems()  # it ended before it was up
                    line = int(pick * len(shell.lines))
                    if aim == "line" and shell.lines:
                        ended = await harness.run_until_seen(lambda s, line=line: s.at >= line)
                    elif aim == "message":
                        ended = await harness.run_until_seen(lambda s, n=n: s.messages >= n)
                    else:
                        aim, ended = "up", False
                    if ended:  # it finished first: kill the next one once it is up
                        aim = "up"
                        continue
                    aimed[aim] += 1
                    kill_at = loop.time() + (after_up if aim == "up" else after_seen)
                if not await harness.run_until(kill_at):
                    await harness.kill()
                    break

        # the last start: everything in flight must move again, and finish
        in_flight = steps_in_flight(db)
        restarted = time.monotonic()
        moving_again: float | None = None
        give_up = restarted + 240
        while time.monotonic() < give_up:
            await harness.start(harness.script(len(harness.to_launch), wait=True))
            while not await harness.run_until(loop.time() + 0.1):
                if moving_again is None and not still_held(db, in_flight):
                    moving_again = time.monotonic() - restarted
                if time.monotonic() > give_up:
                    await harness.kill()  # stuck: the assertions below say what is missing
                    break
            runs = [r for rs in runs_by_text(db).values() for r in rs]
            if not harness.left_to_type() and all(
                r.status == models.RunStatus.SUCCEEDED for r in runs
            ):
                break
        if moving_again is None and not still_held(db, in_flight):
            moving_again = time.monotonic() - restarted
        wall = time.monotonic() - began

        grouped = runs_by_text(db)
        runs = [r for rs in grouped.values() for r in rs]
        with db.read() as s:
            votes = s.exec(select(models.ApprovalVote)).all()
            decisions = s.exec(
                select(models.Message).where(models.Message.kind == models.MessageKind.DECISION)
            ).all()
            outbox = Counter(row.status for row in s.exec(select(models.Outbox)).all())
    db.dispose()

    statuses = Counter(r.status for r in runs)
    print(
        f"shell crash harness: {harness.kills} kills survived ({aimed['up']} after the "
        f"bot was up, {aimed['line']} in a line, {aimed['message']} after a message printed, "
        f"{harness.kills_before_ready} while a restart was starting), "
        f"{len(harness.processes)} processes; {len(harness.acked)} of {RUNS} commands "
        f"acknowledged; cut short by a kill: {len(harness.unseen)} had happened, "
        f"{len(harness.undone)} had not and were typed again ({harness.not_reached} more "
        f"never reached); {harness.reactions_acked} ✅ acknowledged, "
        f"{len(harness.reactions_cut)} cut short ({sum(harness.reactions_cut)} had happened); "
        f"runs {dict(statuses)}; {len(in_flight)} steps in flight at the last kill, moving "
        f"again {moving_again if moving_again is not None else -1:.1f}s after the restart; "
        f"webhook POSTs {sum(hook['seen'].values())} for {len(hook['seen'])} keys; "
        f"outbox {dict(outbox)}; {wall:.0f}s"
    )
    assert harness.problems() == []
    assert harness.kills == KILLS
    # every acknowledged command is exactly one run, with the id its answer gave; every topic
    # (acknowledged or found afterwards) has exactly one run
    for i, run_id in harness.acked.items():
        assert [r.id for r in grouped.get(topic(i), [])] == [run_id], (i, run_id)
    assert sorted(grouped) == [topic(i) for i in range(RUNS)]
    assert max(len(rs) for rs in grouped.values()) == 1
    # every run finished: each draft decided once, by the editor's one vote
    assert statuses == {models.RunStatus.SUCCEEDED: RUNS}, statuses
    assert sorted(v.step_id for v in votes) == sorted({v.step_id for v in votes})
    assert len(votes) == RUNS and {(v.approver, v.vote) for v in votes} == {
        (f"shell:{SHELL_APPROVER}", models.Vote.APPROVE)
    }
    assert sorted(d.run_id or 0 for d in decisions) == sorted(r.id or 0 for r in runs)
    # each run published under its own key; every message delivered, none given up on
    assert sorted(hook["seen"]) == sorted(f"{r.id}:publish:1" for r in runs)
    assert set(outbox) <= {models.OutboxStatus.SENT, models.OutboxStatus.SUPERSEDED}, outbox
    assert moving_again is not None and moving_again < 35  # within about one 30 s lease
