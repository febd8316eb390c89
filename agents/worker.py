"""The workers: claim a runnable step, call its agent with no transaction open, record the
result. The claim and lease SQL is in storage.queries, what a result means is in the
lifecycle and approvals modules; this loop only fetches, runs and reports.

A worker claims a step under a short lease and renews it by heartbeat while the agent works;
a process that dies stops renewing, and another worker takes the step up within one lease.
Database work runs in a thread, so a busy database never stalls the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NamedTuple

from jinja2 import TemplateError
from sqlalchemy import bindparam, update
from sqlmodel import Session

from agents import cards
from agents.approvals import ApprovalService
from agents.budgets import BudgetExceeded, check_budget
from agents.config import AgentSpec, CrewConfig, StepSpec
from agents.heartbeat import heartbeat, interval
from agents.lifecycle import Lifecycle
from agents.llm import Completion, LLMError, LLMProvider
from agents.owners import dead_here, process_owner
from agents.prompts import build_request, prompt_version
from agents.publishing import Publication, Publisher, PublishError, record
from agents.wakeup import Wakeup, seconds_until
from storage import rows
from storage.db import Database
from storage.models import LLMCall, MessageKind, Run, RunStatus, Step, StepStatus
from storage.problems import Outage
from storage.queries import (
    claim_step,
    expire_leases,
    lease_holders,
    lock_run,
    lock_step,
    next_step_due,
    release_step,
    renew_lease,
    steps_of,
)

log = logging.getLogger(__name__)


_RUNS = rows.table(Run)
_ADD_SPENDING = (  # a call's cost and tokens, added to its run's
    update(_RUNS)
    .where(_RUNS.c.id == bindparam("run_id"))
    .values(
        cost_usd=_RUNS.c.cost_usd + bindparam("added_cost", type_=_RUNS.c.cost_usd.type),
        tokens=_RUNS.c.tokens + bindparam("added_tokens", type_=_RUNS.c.tokens.type),
    )
)


class Call(NamedTuple):
    """An LLM call to record: what it returned, or why it failed."""

    completion: Completion | None
    error: str | None


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


class Workers:
    def __init__(
        self,
        db: Database,
        config: CrewConfig,
        llm: LLMProvider,
        lifecycle: Lifecycle,
        approvals: ApprovalService,
        *,
        wakeup: Wakeup | None = None,
        publisher: Publisher | None = None,
    ) -> None:
        self.db = db
        self.config = config
        self.llm = llm
        self.lifecycle = lifecycle
        self.approvals = approvals
        self.clock = lifecycle.clock
        self.wakeup = wakeup or Wakeup()
        self.publisher = publisher or Publisher()
        self.owner = process_owner("worker")
        self._llm_slots = asyncio.Semaphore(config.engine.llm_concurrency)

    async def serve(self, stop: asyncio.Event) -> None:
        """Run the workers until `stop` is set; steps in flight are handed back."""
        try:
            await self.db.call(self.recover)
        except Exception:
            log.exception("could not look for the work of exited processes; leases will tell")
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
        outage = Outage(log, f"worker {index}", self.db.url)
        while not stop.is_set():
            try:
                worked = await self.work_once()
                if not worked:
                    due = await self.db.call(self._next_due)
            except Exception as exc:
                await outage.failed(exc, stop)
                continue
            outage.succeeded()
            if not worked:
                await self.wakeup.wait(seconds_until(due, self.clock()), stop)

    def recover(self) -> int:
        """Take up at once the steps and deliveries of processes of this machine that died
        (kill -9, a crash) instead of waiting for their leases to run out."""
        with self.db.transaction() as session:
            dead = dead_here(lease_holders(session))
            taken = expire_leases(session, dead, self.clock())
        if taken:
            log.warning("took up %s leases of %s exited process(es)", taken, len(dead))
        return taken

    def _next_due(self) -> Any:
        with self.db.read() as session:
            return next_step_due(session)

    async def work_once(self) -> bool:
        """Claim one step and take it to its next state, then go on with each next step of its
        run that this worker took at once. False when nothing was runnable."""
        claimed = await self._committed(self._claim)
        if claimed is None:
            return False
        while claimed is not None:
            claimed = await self._run(claimed)
        return True

    async def _committed(self, call: Callable[[], Claimed | None]) -> Claimed | None:
        """`call` (a transaction that may lease a step to this worker) in its thread. Stopped
        while it runs, it may still commit: a step it leased is handed back rather than left
        leased to a worker that is gone."""
        running = asyncio.ensure_future(self.db.call(call))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            await self._hand_back(await running)
            raise

    async def _run(self, claimed: Claimed) -> Claimed | None:
        """Run a leased step, under a heartbeat; the next step, if this worker took it."""
        nxt: Claimed | None = None
        try:
            async with heartbeat(
                lambda: self.db.call(self._renew, claimed.step_id),
                interval(self.config.engine.lease),
                f"step {claimed.step_id} of run {claimed.run_id}",
            ):
                nxt = await self._execute(claimed)
        except asyncio.CancelledError:
            await self._hand_back(claimed, nxt)  # a graceful stop: another worker takes them
            raise
        except Exception as exc:
            log.exception("step %s of run %s failed unexpectedly", claimed.step_id, claimed.run_id)
            await self.db.call(
                self._fail, claimed, f"internal error ({type(exc).__name__}); see the bot's log"
            )
            await self._hand_back(nxt)
            return None
        return nxt

    async def _hand_back(self, *leased: Claimed | None) -> None:
        """Release the steps this worker holds, at once, in one transaction on the database
        threads (the event loop goes on serving meanwhile); a second cancel does not stop it."""
        if any(leased):
            await asyncio.shield(self.db.call(self._release, *leased))

    async def _execute(self, claimed: Claimed) -> Claimed | None:
        try:
            request = build_request(**claimed.request_kwargs)
        except TemplateError as exc:
            error = f"the prompt of agent {claimed.agent!r} failed to render: {exc}"
            await self.db.call(self._fail, claimed, error)
            return None
        try:
            async with self._llm_slots:
                completion = await self.llm.complete(request)
        except LLMError as exc:
            await self.db.call(self._fail, claimed, str(exc), call=Call(None, str(exc)))
            return None
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
                await self.db.call(self._fail, claimed, str(exc), call=Call(completion, None))
                return None
        return await self._committed(
            functools.partial(self._complete, claimed, completion, publication)
        )

    # -- transactions (each runs in a thread) -----------------------------------------------

    def _renew(self, step_id: int) -> bool:
        with self.db.transaction() as session:
            until = self.clock() + self.config.engine.lease
            return renew_lease(session, Step, step_id, self.owner, until)

    def _claim(self) -> Claimed | None:
        with self.db.transaction() as session:
            return self._claim_in(session)

    def _claim_in(self, session: Session) -> Claimed | None:
        step = claim_step(
            session,
            owner=self.owner,
            now=self.clock(),
            lease=self.config.engine.lease,
            skip_locked=self.db.is_postgres,
        )
        if step is None:
            return None
        run = lock_run(session, step.run_id)  # claim_step locked it already on PostgreSQL
        assert run is not None and run.id is not None and step.id is not None
        if RunStatus(run.status).finished:
            self.lifecycle.drop_step(session, step)
            return None
        ready = self._ready(session, run, step)
        if isinstance(ready, str):
            self.lifecycle.fail_step(session, run, step, ready)
            return None
        self.lifecycle.begin_step(session, run, step)
        return self._claimed(session, run, step, *ready)

    def _ready(self, session: Session, run: Run, step: Step) -> tuple[StepSpec, AgentSpec] | str:
        """What running `step` needs (its spec, its agent), or why it may not run: no longer
        configured, out of attempts, over the budget."""
        spec = self.lifecycle.spec_for(run, step)
        agent = self.config.agents.get(step.agent)
        if spec is None or agent is None:
            return (
                f"workflow {run.workflow!r} (step {step.name}, agent {step.agent}) is no longer "
                "configured in crewchief.yml"
            )
        if step.attempts > self.config.engine.max_attempts:
            return f"gave up after {step.attempts - 1} attempts"
        try:
            check_budget(session, self.config.budgets, run, self.clock())
        except BudgetExceeded as exc:
            return str(exc)
        return spec, agent

    def _claimed(
        self, session: Session, run: Run, step: Step, spec: StepSpec, agent: AgentSpec
    ) -> Claimed:
        """What running `step` (leased to this worker) needs, read in its transaction."""
        assert run.id is not None and step.id is not None
        steps = steps_of(session, run.id)
        earlier = [s for s in steps if s.position < step.position]
        approvals = [s for s in earlier if (sp := self.lifecycle.spec_for(run, s)) and sp.approval]
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

    def _release(self, *leased: Claimed | None) -> None:
        with self.db.transaction() as session:
            for claimed in leased:
                if claimed is not None:
                    release_step(session, claimed.step_id, self.owner)

    def _record_call(self, session: Session, claimed: Claimed, call: Call) -> None:
        """The call and its cost, in the transaction of what came of it."""
        done, error = call
        rows.add(
            session,
            LLMCall,
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
            prompt_version=prompt_version(claimed.request_kwargs["spec"]),
            created_at=self.clock(),
        )
        if done is not None:
            spent = {
                "run_id": claimed.run_id,
                "added_cost": done.cost_usd,
                "added_tokens": done.input_tokens + done.output_tokens,
            }
            rows.execute(session, _ADD_SPENDING, [spent])

    @contextlib.contextmanager
    def _recording(self, claimed: Claimed, call: Call | None) -> Iterator[Session]:
        """A transaction that records `call` with its outcome. Should the outcome fail to
        commit, the call is recorded alone: spending is never lost."""
        try:
            with self.db.transaction() as session:
                if call is not None:
                    self._record_call(session, claimed, call)
                yield session
        except Exception:
            if call is not None:
                with self.db.transaction() as session:
                    self._record_call(session, claimed, call)
            raise

    def _own(self, session: Session, claimed: Claimed) -> tuple[Run, Step] | None:
        """The run and step (locked in that order), if this worker still holds the lease."""
        run = lock_run(session, claimed.run_id)
        assert run is not None
        step = lock_step(session, claimed.run_id, claimed.step_id)
        if step is None or step.status != StepStatus.RUNNING or step.lease_owner != self.owner:
            log.info("step %s of run %s: lease lost, result dropped", claimed.step_id, run.id)
            return None
        if RunStatus(run.status).finished:
            self.lifecycle.drop_step(session, step)
            return None
        return run, step

    def _fail(self, claimed: Claimed, error: str, *, call: Call | None = None) -> None:
        with self._recording(claimed, call) as session:
            owned = self._own(session, claimed)
            if owned is not None:
                self.lifecycle.fail_step(session, *owned, error)

    def _complete(
        self, claimed: Claimed, completion: Completion, publication: Publication | None
    ) -> Claimed | None:
        """Record what the step made and take the run on; when the next step can run at once,
        this worker takes it (its lease is in this transaction) and it is returned."""
        spec = claimed.spec
        with self._recording(claimed, Call(completion, None)) as session:
            owned = self._own(session, claimed)
            if owned is None:
                return None
            run, step = owned
            if spec.approval is not None:
                self.approvals.await_approval(
                    session,
                    run,
                    step,
                    spec.approval,
                    completion.text,
                    prompt_version=prompt_version(claimed.request_kwargs["spec"]),
                )
                return None
            offline = self.lifecycle.offline
            if spec.publish is not None and publication is not None:
                record(session, run, step, spec.publish, publication, offline=offline)
            else:
                cards.post_in_thread(
                    session,
                    run,
                    key=f"run:{run.id}:step:{step.position}:output",
                    kind=MessageKind.NOTES,
                    step=step,
                    context={
                        "step": step.name,
                        "agent": step.agent,
                        "content": completion.text,
                        "offline": offline,
                    },
                )
            # This worker goes on with the next step at once when it may run; otherwise the
            # step's claim fails it, saying why.
            nxt = self.lifecycle.next_step(session, run, step)
            ready = self._ready(session, run, nxt) if nxt is not None else None
            lease = (self.owner, self.config.engine.lease) if isinstance(ready, tuple) else None
            self.lifecycle.advance(session, run, step, output=completion.text, lease=lease)
            if nxt is None or not isinstance(ready, tuple):
                return None
            return self._claimed(session, run, nxt, *ready)
