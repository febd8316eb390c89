"""Who may do what: launch a workflow, decide on a draft, manage a run. One policy object, so
commands, reactions and help all ask the same questions and get the same answers."""

from __future__ import annotations

from agents.config import ApprovalPolicy, CrewConfig
from storage.models import Run


class Permissions:
    def __init__(self, config: CrewConfig, default_approvers: list[str] | None = None) -> None:
        self.config = config
        self.default_approvers = list(default_approvers or [])

    def approvers(self, policy: ApprovalPolicy) -> set[str]:
        """The step's approvers, roles expanded; CREWCHIEF_APPROVERS when it names none."""
        return self.config.members(policy.approvers or self.default_approvers)

    def workflow_approvers(self, workflow: str) -> set[str]:
        wf = self.config.workflows.get(workflow)
        steps = wf.steps if wf else []
        return {a for s in steps if s.approval for a in self.approvers(s.approval)}

    def is_admin(self, who: str) -> bool:
        return who in self.config.members(self.config.admins)

    def may_launch(self, workflow: str, who: str) -> bool:
        launchers = self.config.workflows[workflow].launchers
        return not launchers or who in self.config.members(launchers) or self.is_admin(who)

    def may_launch_any(self, who: str) -> bool:
        return any(self.may_launch(name, who) for name in self.config.workflows)

    def is_any_approver(self, who: str) -> bool:
        return self.is_admin(who) or any(
            who in self.workflow_approvers(name) for name in self.config.workflows
        )

    def may_manage(self, run: Run, who: str) -> bool:
        """Cancel and retry: the requester, the run's approvers and admins."""
        return (
            who == run.requester
            or self.is_admin(who)
            or who in self.workflow_approvers(run.workflow)
        )

    def may_manage_any(self, who: str) -> bool:
        return self.may_launch_any(who) or self.is_any_approver(who)

    def vote_refusal(self, run: Run, policy: ApprovalPolicy, who: str) -> str | None:
        """Why `who` may not decide on this step's draft, or None when they may."""
        approvers = self.approvers(policy)
        if who not in approvers:
            return "only the approvers of this step can decide: " + (
                ", ".join(sorted(approvers))
                if approvers
                else "none are configured (set approvers in crewchief.yml or CREWCHIEF_APPROVERS)"
            )
        if who == run.requester and not policy.allow_self_approval:
            return "you requested this run, and this workflow does not allow self-approval"
        return None
