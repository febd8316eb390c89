"""The durable engine: runs advance step by step, each step a row that a worker claims.

A worker claims a step under a lease in one transaction, calls the agent outside any
transaction, and records the result (with the messages it causes) in another. A process that
dies mid-step leaves a lease that runs out; another worker then takes the step again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jinja2 import TemplateError
from sqlalchemy import event, update
from sqlmodel import Session, col, select

from agents import cards
from agents.budgets import BudgetExceeded, check_budget
from agents.config import ApprovalPolicy, CrewConfig, StepSpec, WorkflowSpec
from agents.heartbeat import heartbeat, interval
from agents.llm import Completion, LLMError, LLMProvider
from agents.prompts import build_request
from agents.publishing import Publication, Publisher, PublishError, record
from agents.wakeup import Wakeup, seconds_until
from storage import outbox
from storage.audit import audit
from storage.db import Database
from storage.models import (
    DraftVersion,
    LLMCall,
    Run,
    RunStatus,
    Step,
    StepStatus,
    utcnow,
)
from storage.queries import claim_step, lock_run, next_step_due, renew_step_lease

log = logging.getLogger(__name__)

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class Claimed:
    """What a worker needs to run a step with no transaction open."""

    step_id: int
    run_id: int
    agent: str
    spec: StepSpec
    approved_version: int
    run: dict[str, Any]
    request_kwargs: dict[str, Any]


class Engine:
    def __init__(
        self,
        db: Database,
        config: CrewConfig,
        llm: LLMProvider,
        *,
        default_approvers: list[str] | None = None,
        clock: Clock = utcnow,
        wakeup: Wakeup | None = None,
        outbox_wakeup: Wakeup | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.llm = llm
        self.default_approvers = list(default_approvers or [])
        self.clock = clock
        self.wakeup = wakeup or Wakeup()
        self.outbox_wakeup = outbox_wakeup or Wakeup()
        self.publisher = publisher or Publisher()
        self.owner = f"worker-{uuid.uuid4().hex[:8]}"
        self._llm_slots = asyncio.Semaphore(config.engine.llm_concurrency)

    @property
    def offline(self) -> bool:
        return self.llm.name == "offline"

    # -- policy lookups -------------------------------------------------------------------

    def workflow(self, name: str) -> WorkflowSpec:
        return self.config.workflows[name]

    def spec_for(self, run: Run, step: Step) -> StepSpec | None:
        """The step's spec, or None when crewchief.yml no longer has it (renamed, removed)."""
        workflow = self.config.workflows.get(run.workflow)
        if workflow is None or step.position >= len(workflow.steps):
            return None
        spec = workflow.steps[step.position]
        return spec if spec.name == step.name else None

    def approvers(self, policy: ApprovalPolicy) -> set[str]:
        return self.config.members(policy.approvers or self.default_approvers)

    def may_launch(self, workflow: str, who: str) -> bool:
        launchers = self.workflow(workflow).launchers
        return not launchers or who in self.config.members(launchers) or self.is_admin(who)

    def is_admin(self, who: str) -> bool:
        return who in self.config.members(self.config.admins)

    def may_manage(self, run: Run, who: str) -> bool:
        """Cancel and retry: the requester, the run's approvers and admins."""
        if who == run.requester or self.is_admin(who):
            return True
        wf = self.config.workflows.get(run.workflow)
        steps = wf.steps if wf else []
        return any(who in self.approvers(s.approval) for s in steps if s.approval)

    # -- starting, cancelling, retrying (called inside the caller's transaction) ---------

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
        run = Run(
            workflow=workflow,
            text=text,
            requester=requester,
            platform=platform,
            channel=channel,
            created_at=now,
            updated_at=now,
        )
        session.add(run)
        session.flush()
        assert run.id is not None
        for position, spec in enumerate(self.workflow(workflow).steps):
            session.add(
                Step(
                    run_id=run.id,
                    position=position,
                    name=spec.name,
                    agent=spec.agent,
                    status=StepStatus.PENDING if position == 0 else StepStatus.WAITING,
                    available_at=now,
                )
            )
        session.flush()
        audit(session, requester, "run.started", run.id, workflow=workflow)
        cards.post_run_card(session, run, now, offline=self.offline)
        self.after_commit(session)
        return run

    def cancel(self, session: Session, run: Run, who: str) -> None:
        now = self.clock()
        run.status = RunStatus.CANCELLED
        run.decided_by = who
        run.finished_at = run.updated_at = now
        session.add(run)
        for step in cards.steps_of(session, run.id or 0):
            if step.status in (
                StepStatus.WAITING,
                StepStatus.PENDING,
                StepStatus.RUNNING,
                StepStatus.AWAITING_APPROVAL,
            ):
                if step.status == StepStatus.AWAITING_APPROVAL:
                    self.lock_draft(session, run, step, "cancelled", who)
                step.status = StepStatus.CANCELLED
                step.lease_owner = None
                step.finished_at = now
                session.add(step)
        audit(session, who, "run.cancelled", run.id)
        cards.refresh_run_card(session, run, now, offline=self.offline)
        self.after_commit(session)

    def abandon_run(self, session: Session, run_id: int, why: str) -> None:
        """The run's card could not be posted (the bot is not in that channel, say): nobody
        could follow or approve the run there, so it stops and the requester is told."""
        run = lock_run(session, run_id)
        if run is None or RunStatus(run.status).finished:
            return
        now = self.clock()
        run.status = RunStatus.FAILED
        run.error = f"could not post in this channel ({why})"
        run.finished_at = run.updated_at = now
        session.add(run)
        for step in cards.steps_of(session, run_id):
            if step.status in (
                StepStatus.WAITING,
                StepStatus.PENDING,
                StepStatus.AWAITING_APPROVAL,
            ):
                step.status = StepStatus.CANCELLED
                step.finished_at = now
                session.add(step)
        audit(session, "crewchief", "run.abandoned", run_id, reason=why)
        outbox.notice(
            session,
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
        self.after_commit(session)

    def retry(self, session: Session, run: Run, who: str) -> Step | None:
        """Make the failed step runnable again; None when nothing failed."""
        failed = next(
            (s for s in cards.steps_of(session, run.id or 0) if s.status == StepStatus.FAILED),
            None,
        )
        if failed is None:
            return None
        now = self.clock()
        failed.status = StepStatus.PENDING
        failed.attempts = 0
        failed.error = None
        failed.available_at = now
        failed.lease_owner = None
        session.add(failed)
        run.status = RunStatus.RUNNING
        run.error = None
        run.finished_at = None
        run.updated_at = now
        session.add(run)
        audit(session, who, "run.retried", run.id, step=failed.name)
        cards.refresh_run_card(session, run, now, offline=self.offline)
        self.after_commit(session)
        return failed

    # -- the workers ----------------------------------------------------------------------

    async def serve(self, stop: asyncio.Event) -> None:
        """Run the workers until `stop` is set; steps in flight are handed back."""
        tasks = [
            asyncio.create_task(self._worker(stop, i), name=f"crewchief-worker-{i}")
            for i in range(self.config.engine.workers)
        ]
        try:
            await stop.wait()
        finally:
            self.wakeup.wake()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _worker(self, stop: asyncio.Event, index: int) -> None:
        while not stop.is_set():
            try:
                worked = await self.work_once()
            except Exception:
                log.exception("worker %s: a step could not be processed; retrying shortly", index)
                worked = False
            if not worked:
                with self.db.read() as session:
                    due = next_step_due(session)
                await self.wakeup.wait(seconds_until(due, self.clock()))

    async def work_once(self) -> bool:
        """Claim one step and take it to its next state. False when nothing was runnable."""
        claimed = self._claim()
        if claimed is None:
            return False
        try:
            async with heartbeat(
                lambda: self._renew(claimed.step_id),
                interval(self.config.engine.lease),
                f"step {claimed.step_id} of run {claimed.run_id}",
            ):
                await self._execute(claimed)
        except asyncio.CancelledError:
            self._release(claimed)  # a graceful stop: another worker takes it at once
            raise
        except Exception as exc:
            log.exception("step %s of run %s failed unexpectedly", claimed.step_id, claimed.run_id)
            self._fail(claimed, f"internal error ({type(exc).__name__}); see the bot's log")
        return True

    def _renew(self, step_id: int) -> bool:
        with self.db.transaction() as session:
            until = self.clock() + self.config.engine.lease
            return renew_step_lease(session, step_id, self.owner, until)

    async def _execute(self, claimed: Claimed) -> None:
        try:
            self._check_budget(claimed.run_id)
            request = build_request(**claimed.request_kwargs)
        except BudgetExceeded as exc:
            self._fail(claimed, str(exc))
            return
        except TemplateError as exc:
            self._fail(claimed, f"the prompt of agent {claimed.agent!r} failed to render: {exc}")
            return
        try:
            async with self._llm_slots:
                completion = await self.llm.complete(request)
        except LLMError as exc:
            self._record_call(claimed, None, str(exc))
            self._fail(claimed, str(exc))
            return
        self._record_call(claimed, completion, None)
        publication: Publication | None = None
        if claimed.spec.publish is not None:
            publication = Publication(
                key=f"{claimed.run_id}:{claimed.spec.name}:{claimed.approved_version}",
                content=claimed.request_kwargs["approved"] or completion.text,
                notes=completion.text,
                version=claimed.approved_version,
            )
            try:
                await self.publisher.perform(claimed.spec.publish, claimed.run, publication)
            except PublishError as exc:
                self._fail(claimed, str(exc))
                return
        self._complete(claimed, completion, publication)

    def _claim(self) -> Claimed | None:
        with self.db.transaction() as session:
            return self._claim_in(session)

    def _claim_in(self, session: Session) -> Claimed | None:
        now = self.clock()
        step = claim_step(
            session,
            owner=self.owner,
            now=now,
            lease=self.config.engine.lease,
            skip_locked=self.db.is_postgres,
        )
        if step is None:
            return None
        run = session.get(Run, step.run_id)  # locked by claim_step on PostgreSQL
        assert run is not None and run.id is not None and step.id is not None
        if RunStatus(run.status).finished:
            step.status = StepStatus.CANCELLED
            step.lease_owner = None
            session.add(step)
            return None
        spec = self.spec_for(run, step)
        agent = self.config.agents.get(step.agent)
        if spec is None or agent is None:
            self._fail_in(
                session,
                run,
                step,
                f"workflow {run.workflow!r} (step {step.name}, agent {step.agent}) is no longer "
                "configured in crewchief.yml",
            )
            return None
        if step.attempts > self.config.engine.max_attempts:
            self._fail_in(session, run, step, f"gave up after {step.attempts - 1} attempts")
            return None
        steps = cards.steps_of(session, run.id)
        earlier = [s for s in steps if s.position < step.position]
        approvals = [s for s in earlier if (sp := self.spec_for(run, s)) and sp.approval]
        run.current_step = step.position
        run.status = RunStatus.RUNNING
        run.updated_at = now
        session.add(run)
        cards.refresh_run_card(session, run, now, offline=self.offline)
        self.after_commit(session, engine=False)
        return Claimed(
            step_id=step.id,
            run_id=run.id,
            agent=step.agent,
            spec=spec,
            approved_version=approvals[-1].version if approvals else 1,
            run={
                "id": run.id,
                "workflow": run.workflow,
                "topic": run.text,
                "requester": run.requester,
                "approved_by": run.decided_by,
            },
            request_kwargs={
                "name": step.agent,
                "spec": agent,
                "topic": run.text,
                "inputs": {s.name: s.output or "" for s in earlier},
                "version": step.version + 1 if spec.approval else 1,
                "feedback": step.feedback,
                "previous": step.output if spec.approval and step.version else None,
                "approved": approvals[-1].output if approvals else None,
            },
        )

    def _release(self, claimed: Claimed) -> None:
        with self.db.transaction() as session:
            session.execute(
                update(Step)
                .where(
                    col(Step.id) == claimed.step_id,
                    col(Step.status) == StepStatus.RUNNING,
                    col(Step.lease_owner) == self.owner,
                )
                .values(
                    status=StepStatus.PENDING,
                    lease_owner=None,
                    lease_until=None,
                    attempts=Step.attempts - 1,
                )
            )
            self.after_commit(session)

    def _check_budget(self, run_id: int) -> None:
        with self.db.read() as session:
            run = session.get(Run, run_id)
            assert run is not None
            check_budget(session, self.config.budgets, run, self.clock())

    def _record_call(self, claimed: Claimed, done: Completion | None, error: str | None) -> None:
        """Every call and its cost, in a transaction of its own: spending is never lost."""
        with self.db.transaction() as session:
            session.add(
                LLMCall(
                    run_id=claimed.run_id,
                    step_id=claimed.step_id,
                    agent=claimed.agent,
                    provider=done.provider if done else self.llm.name,
                    model=done.model if done else claimed.request_kwargs["spec"].model,
                    input_tokens=done.input_tokens if done else 0,
                    output_tokens=done.output_tokens if done else 0,
                    cost_usd=done.cost_usd if done else 0.0,
                    latency_ms=done.latency_ms if done else 0,
                    error=error,
                    created_at=self.clock(),
                )
            )
            if done is not None:
                session.execute(
                    update(Run)
                    .where(col(Run.id) == claimed.run_id)
                    .values(
                        cost_usd=Run.cost_usd + done.cost_usd,
                        tokens=Run.tokens + done.input_tokens + done.output_tokens,
                    )
                )

    def _own(self, session: Session, claimed: Claimed) -> tuple[Run, Step] | None:
        """The run and step (locked in that order), if this worker still holds the lease."""
        run = lock_run(session, claimed.run_id)
        step = session.exec(
            select(Step).where(Step.id == claimed.step_id).with_for_update()
        ).first()
        assert run is not None
        if step is None or step.status != StepStatus.RUNNING or step.lease_owner != self.owner:
            log.info("step %s of run %s: lease lost, result dropped", claimed.step_id, run.id)
            return None
        if RunStatus(run.status).finished:
            step.status = StepStatus.CANCELLED
            step.lease_owner = None
            session.add(step)
            return None
        return run, step

    def _fail(self, claimed: Claimed, error: str) -> None:
        with self.db.transaction() as session:
            owned = self._own(session, claimed)
            if owned is None:
                return
            self._fail_in(session, *owned, error)

    def _fail_in(self, session: Session, run: Run, step: Step, error: str) -> None:
        now = self.clock()
        step.status = StepStatus.FAILED
        step.error = error
        step.lease_owner = None
        step.finished_at = now
        session.add(step)
        run.status = RunStatus.FAILED
        run.error = f"{step.name}: {error}"
        run.finished_at = run.updated_at = now
        session.add(run)
        audit(session, "crewchief", "step.failed", run.id, step=step.name, error=error)
        cards.post_in_thread(
            session,
            run,
            key=f"run:{run.id}:step:{step.position}:failed:{uuid.uuid4().hex[:12]}",
            kind="failure",
            step=step,
            context={"step": step.name, "agent": step.agent, "error": error},
        )
        cards.refresh_run_card(session, run, now, offline=self.offline)
        self.after_commit(session)

    def _complete(
        self, claimed: Claimed, completion: Completion, publication: Publication | None
    ) -> None:
        spec = claimed.spec
        with self.db.transaction() as session:
            owned = self._own(session, claimed)
            if owned is None:
                return
            run, step = owned
            now = self.clock()
            run.updated_at = now
            step.lease_owner = None
            step.output = completion.text
            if spec.approval is not None:
                self._await_approval(session, run, step, spec.approval, completion.text, now)
            else:
                if spec.publish is not None and publication is not None:
                    record(session, run, step, spec.publish, publication, offline=self.offline)
                else:
                    cards.post_in_thread(
                        session,
                        run,
                        key=f"run:{run.id}:step:{step.position}:output",
                        kind="notes",
                        step=step,
                        context={
                            "step": step.name,
                            "agent": step.agent,
                            "content": completion.text,
                            "offline": self.offline,
                        },
                    )
                self.advance(session, run, step, now)
            self.after_commit(session)

    def _await_approval(
        self,
        session: Session,
        run: Run,
        step: Step,
        policy: ApprovalPolicy,
        text: str,
        now: datetime,
    ) -> None:
        assert run.id is not None and step.id is not None
        step.version += 1
        step.status = StepStatus.AWAITING_APPROVAL
        step.awaiting_since = now
        step.deadline_at = now + policy.timeout if policy.timeout else None
        step.escalated = False
        session.add(step)
        session.add(
            DraftVersion(
                run_id=run.id,
                step_id=step.id,
                version=step.version,
                content=text,
                feedback=step.feedback,
                created_at=now,
            )
        )
        run.status = RunStatus.AWAITING_APPROVAL
        session.add(run)
        cards.post_in_thread(
            session,
            run,
            key=cards.draft_key(run.id, step, step.version),
            kind="draft",
            step=step,
            version=step.version,
            context=self.draft_context(run, step, policy, text),
        )
        cards.refresh_run_card(session, run, now, offline=self.offline)

    def draft_context(
        self,
        run: Run,
        step: Step,
        policy: ApprovalPolicy,
        text: str,
        decision: str | None = None,
        decided_by: str | None = None,
    ) -> dict[str, Any]:
        return {
            "step": step.name,
            "agent": step.agent,
            "version": step.version,
            "content": text,
            "feedback": step.feedback,
            "offline": self.offline,
            "approvers": sorted(self.approvers(policy)),
            "quorum": policy.quorum,
            "reactions": self.config.reactions.shown(),
            "decision": decision,
            "decided_by": decided_by,
        }

    def lock_draft(self, session: Session, run: Run, step: Step, decision: str, who: str) -> None:
        """Edit the current draft card to show the decision; it takes no more votes."""
        assert run.id is not None
        message = cards.draft_message(session, run.id, step, step.version)
        spec = self.spec_for(run, step)
        if message is None or spec is None or spec.approval is None:
            return
        outbox.update(
            session,
            message,
            template="draft",
            context={
                "run_id": run.id,
                **self.draft_context(run, step, spec.approval, step.output or "", decision, who),
            },
        )

    def advance(self, session: Session, run: Run, step: Step, now: datetime) -> None:
        """Mark `step` done and make the next one runnable, or finish the run."""
        step.status = StepStatus.SUCCEEDED
        step.finished_at = now
        step.lease_owner = None
        session.add(step)
        nxt = session.exec(
            select(Step).where(Step.run_id == run.id, Step.position == step.position + 1)
        ).first()
        if nxt is None:
            run.status = RunStatus.SUCCEEDED
            run.finished_at = now
        else:
            nxt.status = StepStatus.PENDING
            nxt.available_at = now
            session.add(nxt)
            run.status = RunStatus.RUNNING
            run.current_step = nxt.position
        run.updated_at = now
        session.add(run)
        cards.refresh_run_card(session, run, now, offline=self.offline)

    def after_commit(self, session: Session, *, engine: bool = True) -> None:
        """Wake the outbox sender (and the workers) once this transaction has committed."""
        wake = session.info.setdefault("crewchief_wake", set())
        if not wake:
            outbox_wakeup, engine_wakeup = self.outbox_wakeup, self.wakeup

            def on_commit(_session: Session) -> None:
                outbox_wakeup.wake()
                if "engine" in wake:
                    engine_wakeup.wake()
                wake.clear()

            event.listen(session, "after_commit", on_commit, once=True)
        wake.add("outbox")
        if engine:
            wake.add("engine")
