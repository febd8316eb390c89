"""manifest.yml is what a workspace admin installs: it must be a manifest Slack accepts, and
ask for exactly the command, events and scopes the bot uses."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bot.manifest import USAGE_HINT, build_manifest
from bot.platforms.slack import EVENTS, SCOPES

SCHEMA_ENV = "SLACK_MANIFEST_SCHEMA"
MANIFEST = Path(__file__).parents[1] / "manifest.yml"
SHARED_SCHEMA = Path(__file__).parents[2] / "shared/slack/manifest.schema.1.0.0.json"
# Slack's schema (MIT, see data/slack/LICENSE), kept here so the check runs on any clone.
VENDORED_SCHEMA = Path(__file__).parent / "data/slack/manifest.schema.1.0.0.json"


@pytest.fixture(scope="module")
def manifest() -> dict[str, Any]:
    data = yaml.safe_load(MANIFEST.read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    given = os.environ.get(SCHEMA_ENV)
    path = Path(given) if given else SHARED_SCHEMA if SHARED_SCHEMA.is_file() else VENDORED_SCHEMA
    assert path.is_file(), f"Slack manifest schema not found at {path} ({SCHEMA_ENV})"
    schema = json.loads(path.read_text(encoding="utf-8"))
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    return cls(schema, format_checker=cls.FORMAT_CHECKER)


def problems(validator: jsonschema.protocols.Validator, manifest: dict[str, Any]) -> list[str]:
    errors = sorted(validator.iter_errors(manifest), key=lambda e: list(e.absolute_path))
    return [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}" for e in errors]


def in_http_mode(manifest: dict[str, Any], url: str) -> dict[str, Any]:
    """The manifest with the three Request URLs HTTP mode needs filled in."""
    http = copy.deepcopy(manifest)
    http["settings"]["socket_mode_enabled"] = False
    http["features"]["slash_commands"][0]["url"] = url
    http["settings"]["event_subscriptions"]["request_url"] = url
    http["settings"]["interactivity"]["request_url"] = url
    return http


def test_manifest_is_valid_for_slack(
    validator: jsonschema.protocols.Validator, manifest: dict[str, Any]
) -> None:
    assert problems(validator, manifest) == []


def test_http_mode_only_needs_the_request_urls(
    validator: jsonschema.protocols.Validator, manifest: dict[str, Any]
) -> None:
    assert problems(validator, in_http_mode(manifest, "https://bot.example.com/slack/events")) == []
    # The schema really looks at those fields: a URL Slack cannot call is refused.
    assert len(problems(validator, in_http_mode(manifest, "bot.example.com/slack/events"))) == 3


def test_the_schema_is_really_applied(
    validator: jsonschema.protocols.Validator, manifest: dict[str, Any]
) -> None:
    broken = copy.deepcopy(manifest)
    broken["features"]["slash_commands"][0]["command"] = "crew"  # commands start with "/"
    broken["settings"]["socket_mode"] = True  # not a manifest key
    assert len(problems(validator, broken)) == 2


def test_one_slash_command_crew(manifest: dict[str, Any]) -> None:
    [command] = manifest["features"]["slash_commands"]
    assert command["command"] == "/crew"
    assert command["usage_hint"] == USAGE_HINT
    assert command["description"]


def test_scopes_and_events_are_exactly_what_the_bot_uses(manifest: dict[str, Any]) -> None:
    scopes = manifest["oauth_config"]["scopes"]["bot"]
    events = manifest["settings"]["event_subscriptions"]["bot_events"]
    assert sorted(scopes) == sorted(SCOPES)  # sorted lists: a duplicate would show too
    assert sorted(events) == sorted(EVENTS)
    assert set(manifest["oauth_config"]["scopes"]) == {"bot"}  # no user-token scopes


def test_socket_mode_bot_that_is_always_online(manifest: dict[str, Any]) -> None:
    settings = manifest["settings"]
    assert settings["socket_mode_enabled"] is True
    assert settings["org_deploy_enabled"] is False
    assert settings["interactivity"]["is_enabled"] is True
    assert manifest["features"]["bot_user"] == {"display_name": "crewchief", "always_online": True}
    assert manifest["display_information"]["name"] == "crewchief"


def test_the_file_is_what_the_code_generates(manifest: dict[str, Any]) -> None:
    assert manifest == build_manifest()


def test_generated_http_manifest_is_valid(validator: jsonschema.protocols.Validator) -> None:
    http = build_manifest("https://crewchief.example.com/")
    assert problems(validator, http) == []
    assert http["settings"]["event_subscriptions"]["request_url"] == (
        "https://crewchief.example.com/slack/events"
    )
    assert http["settings"]["socket_mode_enabled"] is False
    with pytest.raises(ValueError, match="https://"):
        build_manifest("http://insecure.example.com")
