"""Who may do what: launch a workflow, decide on a draft, manage a run. One policy object, so
commands, reactions and help all ask the same questions and get the same answers.

A person is their platform-qualified id (`slack:U012AB`) plus, where the platform tells us,
the roles they hold there: someone holding Discord role 42 is also `discord:role:42`, so
`approvers: [discord:role:42]` works without the bot reading the member list.
"""

from __future__ import annotations

from collections.abc import Iterable

from agents.config import ApprovalPolicy, CrewConfig
from storage.models import Run


def identities(who: str, roles: Iterable[str] = ()) -> set[str]:
    """Every id `who` answers to: their own, and `<platform>:role:<id>` for each role."""
    platform = who.split(":", 1)[0]
    return {who, *(f"{platform}:role:{role}" for role in roles)}


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

    def is_admin(self, who: str, roles: Iterable[str] = ()) -> bool:
        return not identities(who, roles).isdisjoint(self.config.members(self.config.admins))

    def may_launch(self, workflow: str, who: str, roles: Iterable[str] = ()) -> bool:
        launchers = self.config.workflows[workflow].launchers
        return (
            not launchers
            or not identities(who, roles).isdisjoint(self.config.members(launchers))
            or self.is_admin(who, roles)
        )

    def may_launch_any(self, who: str, roles: Iterable[str] = ()) -> bool:
        return any(self.may_launch(name, who, roles) for name in self.config.workflows)

    def is_any_approver(self, who: str, roles: Iterable[str] = ()) -> bool:
        ids = identities(who, roles)
        return self.is_admin(who, roles) or any(
            not ids.isdisjoint(self.workflow_approvers(name)) for name in self.config.workflows
        )

    def may_manage(self, run: Run, who: str, roles: Iterable[str] = ()) -> bool:
        """Cancel and retry: the requester, the run's approvers and admins."""
        return (
            who == run.requester
            or self.is_admin(who, roles)
            or not identities(who, roles).isdisjoint(self.workflow_approvers(run.workflow))
        )

    def may_manage_any(self, who: str, roles: Iterable[str] = ()) -> bool:
        return self.may_launch_any(who, roles) or self.is_any_approver(who, roles)

    def vote_refusal(
        self, run: Run, policy: ApprovalPolicy, who: str, roles: Iterable[str] = ()
    ) -> str | None:
        """Why `who` may not decide on this step's draft, or None when they may."""
        approvers = self.approvers(policy)
        if identities(who, roles).isdisjoint(approvers):
            return "only the approvers of this step can decide: " + (
                ", ".join(sorted(approvers))
                if approvers
                else "none are configured (set approvers in crewchief.yml or CREWCHIEF_APPROVERS)"
            )
        if who == run.requester and not policy.allow_self_approval:
            return "you requested this run, and this workflow does not allow self-approval"
        return None
