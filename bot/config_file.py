"""Loading crewchief.yml over the built-in defaults, with errors that name file, key, problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from agents.config import ID_PATTERN, CrewConfig, builtin_defaults, merge
from bot.errors import ConfigError

__all__ = ["ConfigError", "load_config"]


def load_config(path: Path, *, approvers: list[str] | None = None) -> CrewConfig:
    data = builtin_defaults()
    source = "built-in defaults"
    if path.exists():
        source = str(path)
        try:
            loaded: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise ConfigError(
                f"{path}: not UTF-8 text (byte {exc.object[exc.start]:#04x} at {exc.start})"
            ) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
            raise ConfigError(f"{path}{where}: not valid YAML: {exc}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping (agents:, workflows:, …)")
        data = merge(data, loaded)
    for value in approvers or []:
        if not ID_PATTERN.match(value):
            raise ConfigError(
                f"CREWCHIEF_APPROVERS: {value!r} is not a platform-qualified id "
                "(e.g. slack:U012AB, shell:bob, role:editors)"
            )
    try:
        return CrewConfig.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = err["msg"].removeprefix("Value error, ")
            problems.append(f"{source}: {key}: {msg}")
        raise ConfigError("\n".join(problems)) from None
