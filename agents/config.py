"""The shape of crewchief.yml: agents, workflows, approval policies, roles, budgets.

Validated with pydantic so that a mistake is reported with the key path that holds it.
"""

from __future__ import annotations

import re
from datetime import timedelta
from importlib import resources
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError
from jinja2.sandbox import SandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from agents.durations import Duration
from agents.monitoring_config import AlertSettings, DigestSettings, Ops

ID_PATTERN = re.compile(r"^(role:[\w.-]+|(shell|slack|discord):[^\s,]+)$")


def _check_ids(values: list[str]) -> list[str]:
    for value in values:
        if not ID_PATTERN.match(value):
            raise ValueError(
                f"{value!r} is not a user or role: use platform-qualified ids such as "
                "slack:U012AB, discord:81234, shell:bob, or role:editors"
            )
    return values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# What a prompt template may use; a custom prompt is rendered with these at load time, so a
# typo (`{{ topik }}`) stops start-up with the key named instead of failing a run later.
PROMPT_SAMPLE: dict[str, Any] = {
    "topic": "a topic",
    "inputs": {"research": "notes", "draft": "a draft"},
    "version": 2,
    "feedback": "shorter",
    "previous": "an earlier draft",
    "approved": "an approved draft",
    "role": "writer",
    "agent": "writer",
}


def check_prompt(template: str | None) -> str | None:
    if template is None:
        return None
    try:
        SandboxedEnvironment(undefined=StrictUndefined).from_string(template).render(PROMPT_SAMPLE)
    except TemplateSyntaxError as exc:
        raise ValueError(
            f"not a valid Jinja2 template (line {exc.lineno}): {exc.message}"
        ) from None
    except TemplateError as exc:
        raise ValueError(f"{exc}; a prompt may use {', '.join(sorted(PROMPT_SAMPLE))}") from None
    return template


class AgentSpec(Strict):
    role: str
    model: str = "gpt-4o-mini"
    prompt: str | None = None  # a Jinja2 template replacing the role's built-in prompt
    system: str | None = None
    max_output_tokens: int | None = Field(default=None, gt=0)

    _prompt = field_validator("prompt", "system")(check_prompt)


class ApprovalPolicy(Strict):
    approvers: list[str] = Field(default_factory=list)
    quorum: int = Field(default=1, ge=1)
    allow_self_approval: bool = False
    timeout: Duration | None = None
    on_timeout: Literal["reject", "escalate"] = "escalate"

    _ids = field_validator("approvers")(_check_ids)


class PublishTarget(Strict):
    to: Literal["thread", "folder", "webhook"] = "thread"
    path: str | None = None  # folder
    url: str | None = None  # webhook

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        """Only http(s) to a host: `file:`, `gopher:` and the like would reach what a webhook
        must not. The URL itself is never repeated: it often holds credentials."""
        if url is None:
            return None
        try:
            parts = urlsplit(url.strip())
            host = parts.hostname
        except ValueError:
            raise ValueError("not a URL; use http(s)://host/path") from None
        if parts.scheme.lower() not in ("http", "https"):
            scheme = f"a {parts.scheme}: URL" if parts.scheme else "no scheme"
            raise ValueError(f"a webhook URL must be http(s)://…, this one has {scheme}")
        if not host:
            raise ValueError("a webhook URL needs a host: http(s)://host/path")
        return url

    @model_validator(mode="after")
    def _needs_destination(self) -> PublishTarget:
        if self.to == "folder" and not self.path:
            raise ValueError("publish to a folder needs `path`")
        if self.to == "webhook" and not self.url:
            raise ValueError("publish to a webhook needs an http(s) `url`")
        return self


class StepSpec(Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_-]*$")
    agent: str
    approval: ApprovalPolicy | None = None
    publish: PublishTarget | None = None


class WorkflowSpec(Strict):
    description: str = ""
    launchers: list[str] = Field(default_factory=list)  # empty: anyone may launch
    steps: list[StepSpec] = Field(min_length=1)

    _ids = field_validator("launchers")(_check_ids)

    @model_validator(mode="after")
    def _unique_step_names(self) -> WorkflowSpec:
        names = [s.name for s in self.steps]
        if len(names) != len(set(names)):
            raise ValueError(f"step names must be unique, got {names}")
        return self


class Budgets(Strict):
    per_run_usd: float | None = Field(default=None, gt=0)
    per_day_usd: float | None = Field(default=None, gt=0)
    per_run_tokens: int | None = Field(default=None, gt=0)


class Reactions(Strict):
    """Emoji (unicode or Slack/Discord names) that mean each decision."""

    approve: list[str] = ["✅", "white_check_mark", "heavy_check_mark", "✔️"]
    reject: list[str] = ["❌", "x", "no_entry_sign"]
    revise: list[str] = ["🔁", "repeat", "arrows_clockwise"]
    cancel: list[str] = ["🛑", "octagonal_sign", "stop_sign"]

    def shown(self) -> dict[str, list[str]]:
        """Each decision's emoji, for cards to name (each platform picks the form it shows)."""
        return {
            "approve": list(self.approve),
            "reject": list(self.reject),
            "revise": list(self.revise),
            "cancel": list(self.cancel),
        }

    @field_validator("approve", "reject", "revise", "cancel")
    @classmethod
    def _not_empty(cls, names: list[str]) -> list[str]:
        if not names or not all(n.strip() for n in names):
            raise ValueError("list at least one emoji (a character such as ✅ or a name such as x)")
        return names


class Engine(Strict):
    workers: int = Field(default=4, ge=1, le=256)
    llm_concurrency: int = Field(default=4, ge=1, le=256)
    senders: int = Field(default=16, ge=1, le=256)  # concurrent outbox deliveries
    # A worker renews its lease by heartbeat while it works, so the lease only bounds how long
    # a dead worker's step (or delivery) waits before another process takes it up.
    lease: Duration = timedelta(seconds=30)
    max_attempts: int = Field(default=3, ge=1)

    @field_validator("lease")
    @classmethod
    def _lease_floor(cls, lease: timedelta) -> timedelta:
        if lease < timedelta(seconds=1):
            raise ValueError("a lease shorter than 1s cannot be renewed in time; use e.g. 30s")
        return lease


class CrewConfig(Strict):
    agents: dict[str, AgentSpec]
    workflows: dict[str, WorkflowSpec]
    roles: dict[str, list[str]] = Field(default_factory=dict)
    admins: list[str] = Field(default_factory=list)
    budgets: Budgets = Budgets()
    reactions: Reactions = Reactions()
    engine: Engine = Engine()
    max_text_chars: int = Field(default=40_000, gt=0)
    ops: Ops = Ops()
    digest: DigestSettings = DigestSettings()
    alerts: AlertSettings = AlertSettings()

    _admins = field_validator("admins")(_check_ids)

    @field_validator("roles")
    @classmethod
    def _role_members(cls, roles: dict[str, list[str]]) -> dict[str, list[str]]:
        for members in roles.values():
            _check_ids(members)
        return roles

    @model_validator(mode="after")
    def _references(self) -> CrewConfig:
        for wf_name, wf in self.workflows.items():
            for i, step in enumerate(wf.steps):
                where = f"workflows.{wf_name}.steps.{i}"
                if step.agent not in self.agents:
                    raise ValueError(
                        f"{where}.agent: unknown agent {step.agent!r} "
                        f"(defined: {', '.join(sorted(self.agents))})"
                    )
                for who in (step.approval.approvers if step.approval else []) + wf.launchers:
                    if who.startswith("role:") and who[5:] not in self.roles:
                        raise ValueError(f"{where}: unknown role {who!r} (define it under roles)")
        for who in self.alerts.on_call:
            if not ID_PATTERN.match(who):
                raise ValueError(
                    f"alerts.on_call: {who!r} is not a user or role (e.g. role:oncall)"
                )
            if who.startswith("role:") and who[5:] not in self.roles:
                raise ValueError(f"alerts.on_call: unknown role {who!r} (define it under roles)")
        return self

    def members(self, ids: list[str]) -> set[str]:
        """Expand `role:NAME` entries to the role's members."""
        out: set[str] = set()
        for who in ids:
            out.update(self.roles.get(who[5:], []) if who.startswith("role:") else [who])
        return out


# libyaml's loader when PyYAML has it: the built-in defaults are read at every start
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def builtin_defaults() -> dict[str, Any]:
    text = resources.files("agents").joinpath("defaults.yml").read_text(encoding="utf-8")
    data: dict[str, Any] = yaml.load(text, Loader=_SAFE_LOADER)
    return data


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """A user's file extends the defaults: mappings merge key by key, anything else replaces."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "steps":
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
