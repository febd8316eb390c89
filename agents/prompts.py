"""Agent prompts: one Jinja2 template per role, which crewchief.yml may replace per agent."""

from __future__ import annotations

import functools
import hashlib

from jinja2 import Environment, PackageLoader, StrictUndefined, Template, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment

from agents.config import AgentSpec
from agents.llm import LLMRequest

_builtin = Environment(
    loader=PackageLoader("agents", "prompts"),
    keep_trailing_newline=True,
    autoescape=False,  # prompts are plain text for a model, not markup
    auto_reload=False,  # the package's files do not change: no stat of them per step
)
# Prompts written in crewchief.yml run sandboxed: a config file must not reach Python objects.
_custom = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)


def prompt_version(spec: AgentSpec) -> str:
    """A short hash of what shapes an agent's output: its prompt and system templates (its
    own or its role's built-in ones) and its model. A change to any of them is a new version,
    so the digest can compare versions."""
    parts = [
        spec.prompt if spec.prompt is not None else _builtin_source(f"{spec.role}.j2"),
        spec.system if spec.system is not None else _builtin_source("system.j2"),
        spec.model,
    ]
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:8]


@functools.lru_cache(maxsize=256)
def _custom_template(source: str) -> Template:
    """A prompt from crewchief.yml, compiled once rather than on every step."""
    return _custom.from_string(source)


@functools.cache
def _builtin_source(name: str) -> str:
    """A built-in template's text (read once: the package's files do not change)."""
    loader = _builtin.loader
    assert loader is not None
    try:
        return loader.get_source(_builtin, name)[0]
    except TemplateNotFound:
        return ""


def build_request(
    name: str,
    spec: AgentSpec,
    *,
    topic: str,
    inputs: dict[str, str],
    version: int = 1,
    feedback: str | None = None,
    previous: str | None = None,
    approved: str | None = None,
) -> LLMRequest:
    values = {
        "topic": topic,
        "inputs": inputs,
        "version": version,
        "feedback": feedback,
        "previous": previous,
        "approved": approved,
        "role": spec.role,
        "agent": name,
    }
    if spec.prompt:
        prompt = _custom_template(spec.prompt).render(values)
    else:
        try:
            prompt = _builtin.get_template(f"{spec.role}.j2").render(values)
        except TemplateNotFound:
            prompt = f"Task for the {spec.role} agent.\n\nTopic: {topic}\n"
    if spec.system:
        system = _custom_template(spec.system).render(values)
    else:
        system = _builtin.get_template("system.j2").render(values)
    return LLMRequest(
        agent=name,
        role=spec.role,
        model=spec.model,
        system=system.strip(),
        prompt=prompt.strip(),
        topic=topic,
        feedback=feedback,
        version=version,
        inputs=dict(inputs),
        max_output_tokens=spec.max_output_tokens,
    )
