"""The run lifecycle: every status change of a run and its steps, in one place.

Each function runs inside the caller's unit of work, after the caller has locked the run
(then the step): it writes the new statuses, the audit entry and the card edits the change
shows. Which statuses count as active, waiting or finished is defined once, in
storage.models (ACTIVE_STEPS, WORKING_STEPS, RunStatus.finished).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlmodel import Session

from agents import cards
from agents.config import CrewConfig, StepSpec
from storage import rows
from storage.audit import audit
from storage.models import (
    ACTIVE_STEPS,
    MessageKind,
    Run,
    RunStatus,
    Step,
    StepStatus,
    utcnow,
)
from storage.queries import lease_step, lock_run, steps_of

Clock = Callable[[], datetime]


class Lifecycle:
    def __init__(self, config: CrewConfig, *, clock: Clock = utcnow, offline: bool = False):
        self.config = config
        self.clock = clock
        self.offline = offline

    def spec_for(self, run: Run, step: Step) -> StepSpec | None:
        """The step's spec, or None when crewchief.yml no longer has it (renamed, removed)."""
        workflow = self.config.workflows.get(run.workflow)
        if workflow is None or step.position >= len(workflow.steps):
            return None
        spec = workflow.steps[step.position]
        return spec if spec.name == step.name else None

    def refresh(self, session: Session, run: Run) -> None:
        cards.refresh_run_card(session, run, self.clock(), offline=self.offline)

    # -- a run's beginning and end ---------------------------------------------------------

    def start_run(
        self,
        session: Session,
        *,
        workflow: str,
        text: str,
        requester: str,
        platform: str,
        channel: str,
    ) -> Run:
        now = self.clock()
        run = rows.create(
            session,
            Run,
            workflow=workflow,
            text=text,
            requester=requester,
            platform=platform,
            channel=channel,
            created_at=now,
            updated_at=now,
        )
        assert run.id is not None
        steps = [
            {
                "run_id": run.id,
                "position": position,
                "name": spec.name,
                "agent": spec.agent,
                "status": StepStatus.PENDING if position == 0 else StepStatus.WAITING,
                "available_at": now,
            }
            for position, spec in enumerate(self.config.workflows[workflow].steps)
        ]
        rows.add_all(session, Step, steps)
        audit(session, requester, "run.started", run.id, workflow=workflow)
        cards.post_run_card(session, run, now, offline=self.offline)
        return run

    def _stop(self, session: Session, run: Run, status: RunStatus, **changes: Any) -> list[Step]:
        """Finish the run (with `changes` written to it as well) and cancel its active steps;
        returns the steps that were awaiting approval (their draft cards are the approvals
        module's to lock)."""
        now = self.clock()
        rows.change(session, run, status=status, finished_at=now, updated_at=now, **changes)
        awaiting = []
        for step in steps_of(session, run.id or 0):
            if step.status in ACTIVE_STEPS:
                if step.status == StepStatus.AWAITING_APPROVAL:
                    awaiting.append(step)
                rows.change(
                    session, step, status=StepStatus.CANCELLED, lease_owner=None, finished_at=now
                )
        return awaiting

    def cancel_run(self, session: Session, run: Run, who: str) -> list[Step]:
        awaiting = self._stop(session, run, RunStatus.CANCELLED, decided_by=who)
        audit(session, who, "run.cancelled", run.id)
        self.refresh(session, run)
        return awaiting

    def abandon_run(self, session: Session, run_id: int, why: str) -> None:
        """The run's card could not be posted (the bot is not in that channel, say): nobody
        could follow or approve the run there, so it stops and the requester is told."""
        run = lock_run(session, run_id)
        if run is None or RunStatus(run.status).finished:
            return
        self._stop(session, run, RunStatus.FAILED, error=f"could not post in this channel ({why})")
        audit(session, "crewchief", "run.abandoned", run_id, reason=why)
        cards.notice(
            session,
            run_id=None,  # its thread was never posted
            platform=run.platform,
            channel=run.channel,
            recipient=run.requester,
            template="notice",
            context={
                "text": f"run {run_id} stopped: I could not post in that channel ({why}). "
                "Invite me there (/invite @crewchief) and run it again.",
                "run_id": run_id,
            },
        )

    def retry(self, session: Session, run: Run, who: str) -> Step | None:
        """Make the failed step runnable again; None when nothing failed."""
        failed = next(
            (s for s in steps_of(session, run.id or 0) if s.status == StepStatus.FAILED),
            None,
        )
        if failed is None:
            return None
        now = self.clock()
        rows.change(
            session,
            failed,
            status=StepStatus.PENDING,
            attempts=0,
            error=None,
            available_at=now,
            lease_owner=None,
        )
        rows.change(
            session, run, status=RunStatus.RUNNING, error=None, finished_at=None, updated_at=now
        )
        audit(session, who, "run.retried", run.id, step=failed.name)
        self.refresh(session, run)
        return failed

    # -- steps -----------------------------------------------------------------------------

    def begin_step(self, session: Session, run: Run, step: Step) -> None:
        """A worker has claimed `step`: the run card shows it at work."""
        rows.change(
            session,
            run,
            current_step=step.position,
            status=RunStatus.RUNNING,
            updated_at=self.clock(),
        )
        self.refresh(session, run)

    def drop_step(self, session: Session, step: Step) -> None:
        """A claimed step of a run that finished meanwhile (cancelled, say): not run."""
        rows.change(session, step, status=StepStatus.CANCELLED, lease_owner=None)

    def fail_step(self, session: Session, run: Run, step: Step, error: str) -> None:
        now = self.clock()
        rows.change(
            session,
            step,
            status=StepStatus.FAILED,
            error=error,
            lease_owner=None,
            finished_at=now,
        )
        rows.change(
            session,
            run,
            status=RunStatus.FAILED,
            error=f"{step.name}: {error}",
            finished_at=now,
            updated_at=now,
        )
        audit(session, "crewchief", "step.failed", run.id, step=step.name, error=error)
        cards.post_in_thread(
            session,
            run,
            key=f"run:{run.id}:step:{step.position}:failed:{uuid.uuid4().hex[:12]}",
            kind=MessageKind.FAILURE,
            step=step,
            context={"step": step.name, "agent": step.agent, "error": error},
        )
        self.refresh(session, run)

    def advance(
        self,
        session: Session,
        run: Run,
        step: Step,
        *,
        output: str | None = None,
        lease: tuple[str, timedelta] | None = None,
        **run_changes: Any,
    ) -> None:
        """Mark `step` done (with its `output`, when it has a new one) and make the next one
        runnable, or finish the run (with `run_changes` written to the run as well). With
        `lease` (an owner and a lease), the next step runs at once for that owner, as if it had
        claimed it."""
        now = self.clock()
        done: dict[str, Any] = {"output": output} if output is not None else {}
        rows.change(
            session, step, status=StepStatus.SUCCEEDED, finished_at=now, lease_owner=None, **done
        )
        nxt = self.next_step(session, run, step)
        if nxt is None:
            run_changes.update(status=RunStatus.SUCCEEDED, finished_at=now)
        elif lease is not None:
            lease_step(session, nxt, owner=lease[0], now=now, lease=lease[1])
            run_changes.update(status=RunStatus.RUNNING, current_step=nxt.position)
        else:
            rows.change(session, nxt, status=StepStatus.PENDING, available_at=now)
            run_changes.update(status=RunStatus.RUNNING, current_step=nxt.position)
        rows.change(session, run, updated_at=now, **run_changes)
        self.refresh(session, run)

    def next_step(self, session: Session, run: Run, step: Step) -> Step | None:
        """The step of `run` after `step`, if any."""
        return next((s for s in steps_of(session, run.id or 0) if s.position > step.position), None)

    def await_approval(
        self, session: Session, run: Run, step: Step, text: str, deadline: datetime | None
    ) -> None:
        """A new draft version is waiting for people, until `deadline` (the approvals module
        posts its card)."""
        now = self.clock()
        rows.change(
            session,
            step,
            lease_owner=None,
            output=text,
            version=step.version + 1,
            status=StepStatus.AWAITING_APPROVAL,
            awaiting_since=now,
            deadline_at=deadline,
            escalated=False,
        )
        rows.change(session, run, status=RunStatus.AWAITING_APPROVAL, updated_at=now)
        self.refresh(session, run)

    def settle(self, session: Session, step: Step, status: StepStatus, who: str) -> bool:
        """First decision wins: one conditional update of the draft version still waiting.
        False when another decision settled it first."""
        if step.status != StepStatus.AWAITING_APPROVAL:
            return False
        return rows.change(
            session, step, unless_changed=("status", "version"), status=status, decided_by=who
        )

    def reject(self, session: Session, run: Run, step: Step, reason: str | None, who: str) -> None:
        now = self.clock()
        rows.change(session, step, status=StepStatus.REJECTED, finished_at=now)
        rows.change(
            session,
            run,
            status=RunStatus.REJECTED,
            error=reason,
            decided_by=who,
            finished_at=now,
            updated_at=now,
        )
        self.refresh(session, run)

    def send_back(self, session: Session, run: Run, step: Step, feedback: str | None) -> None:
        """The draft goes back to its writer with the feedback: a new version is new work,
        not a retry of the old one."""
        now = self.clock()
        rows.change(
            session,
            step,
            status=StepStatus.PENDING,
            feedback=feedback,
            attempts=0,
            available_at=now,
            deadline_at=None,
        )
        rows.change(session, run, status=RunStatus.RUNNING, updated_at=now)
        self.refresh(session, run)
