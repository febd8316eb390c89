"""The HTTP side: Slack's Events API endpoint, and /healthz and /metrics for operators."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from bot.metrics import registry_for, render

if TYPE_CHECKING:
    from bot.app import App
    from bot.platforms.slack import SlackPlatform

log = logging.getLogger(__name__)


def web_app(app: App, slack: SlackPlatform | None) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        platforms = {name: platform.state for name, platform in sorted(app.platforms.items())}
        try:
            await app.db.call(app.pending)
        except Exception:
            return web.json_response(
                {"ok": False, "database": "unreachable", "platforms": platforms}, status=503
            )
        ok = all(state == "connected" for state in platforms.values())
        return web.json_response(
            {
                "ok": ok,
                "database": "ok",
                "scheduler": app.scheduler.state,
                "platforms": platforms,
            },
            status=200 if ok else 503,
        )

    registry = registry_for(app.db)

    @routes.get("/metrics")
    async def metrics(_: web.Request) -> web.Response:
        body = await app.db.call(render, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    if slack is not None:
        from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

        from bot.platforms.slack import malformed

        @routes.post("/slack/events")
        async def slack_events(request: web.Request) -> web.Response:
            refused = unverifiable(request)
            if refused is not None:
                return web.Response(status=401, text=refused)
            try:
                bolt_request = await to_bolt_request(request)
            except (ValueError, TypeError, AttributeError, LookupError):
                # Bolt reads the body as it parses it: not JSON, or not Slack's shape
                problem: str | None = "the body is not a Slack payload"
            else:
                problem = malformed(bolt_request.body)
            if problem is not None:
                log.warning("malformed Slack request refused: %s", problem)
                return web.Response(status=400, text=f"malformed request: {problem}")
            response = await slack.bolt.async_dispatch(bolt_request)
            return await to_aiohttp_response(response)

    web_application = web.Application()
    web_application.add_routes(routes)
    return web_application


def unverifiable(request: web.Request) -> str | None:
    """Signature headers Bolt's check would crash on (a 500) instead of refusing: it reads the
    timestamp with int() and compares the signature with hmac.compare_digest (ASCII only)."""
    stamp = request.headers.get("X-Slack-Request-Timestamp", "0")
    if not re.fullmatch(r"-?[0-9]{1,15}", stamp):
        return "invalid request timestamp"
    if not request.headers.get("X-Slack-Signature", "").isascii():
        return "invalid request signature"
    return None
