"""The Slack bot of tests/test_slack.py (real Bolt app, signed requests, fake Web API), and a
capture of every log record at DEBUG, for the threat and bad-input tests."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from bot.platforms.slack import SCOPES
from tests.fakes.slack_api import FakeSlack, fake_slack
from tests.test_slack import CHANNEL, SlackBot, serving


class LogCapture(logging.Handler):
    """Every record of every logger, formatted with its traceback, from DEBUG up."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    @property
    def text(self) -> str:
        return "\n".join(self.format(r) for r in self.records)

    def at_error(self) -> list[str]:
        return [self.format(r) for r in self.records if r.levelno >= logging.ERROR]


@pytest.fixture
def logs() -> Iterator[LogCapture]:
    root = logging.getLogger()
    capture = LogCapture()
    level = root.level
    root.addHandler(capture)
    root.setLevel(logging.DEBUG)
    try:
        yield capture
    finally:
        root.removeHandler(capture)
        root.setLevel(level)


@pytest.fixture
async def slack() -> AsyncIterator[FakeSlack]:
    async with fake_slack(channels=[CHANNEL], scopes=SCOPES) as fake:
        yield fake


@pytest.fixture
async def slack_bot(
    request: pytest.FixtureRequest, db_url: str, tmp_path: Path, slack: FakeSlack
) -> AsyncIterator[SlackBot]:
    """The Slack bot in HTTP mode; `@pytest.mark.crew_config({...})` extends its config."""
    async with serving(request, db_url, tmp_path, slack) as bot:
        yield bot
