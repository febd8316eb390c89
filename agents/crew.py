"""The crew: the configuration and the services over it that commands and events work with."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from agents.alerts import AlertService
from agents.approvals import ApprovalService
from agents.config import CrewConfig
from agents.lifecycle import Lifecycle
from agents.permissions import Permissions


@dataclass(frozen=True)
class Crew:
    config: CrewConfig
    permissions: Permissions
    lifecycle: Lifecycle
    approvals: ApprovalService
    provider: str  # the LLM provider's name: "openai" or "offline"
    alerts: AlertService

    def now(self) -> datetime:
        return self.lifecycle.clock()
