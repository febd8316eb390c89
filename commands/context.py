"""What a command handler works with: the crew, the event's unit of work and its asker."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session

from agents.crew import Crew
from commands.events import Actor


@dataclass
class Context:
    crew: Crew
    session: Session
    actor: Actor
    channel: str

    @property
    def who(self) -> str:
        return self.actor.qualified

    @property
    def roles(self) -> tuple[str, ...]:
        return self.actor.roles
