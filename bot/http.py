"""The HTTP side: Slack's Events API endpoint, and /healthz and /metrics for operators."""

from __future__ import annotations

import logging
import re

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

from bot.app import App
from bot.platforms.slack import SlackPlatform, malformed
from storage.queries import health_figures

log = logging.getLogger(__name__)


def web_app(app: App, slack: SlackPlatform | None) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        platforms = {
            name: str(getattr(platform, "state", "connected"))
            for name, platform in sorted(app.platforms.items())
        }
        try:
            await app.db.call(app.pending)
        except Exception:
            return web.json_response(
                {"ok": False, "database": "unreachable", "platforms": platforms}, status=503
            )
        ok = all(state == "connected" for state in platforms.values())
        return web.json_response(
            {"ok": ok, "database": "ok", "platforms": platforms}, status=200 if ok else 503
        )

    @routes.get("/metrics")
    async def metrics(_: web.Request) -> web.Response:
        return web.Response(text=render_metrics(app), content_type="text/plain")

    if slack is not None:

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


def render_metrics(app: App) -> str:
    """Prometheus text format: gauges read from the database, so every replica agrees."""
    with app.db.read() as session:
        figures = health_figures(session)
    lines = [
        "# HELP crewchief_runs Runs by status.",
        "# TYPE crewchief_runs gauge",
        *(f'crewchief_runs{{status="{st}"}} {n}' for st, n in sorted(figures["runs"].items())),
        "# HELP crewchief_steps_runnable Steps waiting for a worker.",
        "# TYPE crewchief_steps_runnable gauge",
        f"crewchief_steps_runnable {figures['steps_runnable']}",
        "# HELP crewchief_outbox_pending Messages not yet delivered.",
        "# TYPE crewchief_outbox_pending gauge",
        f"crewchief_outbox_pending {figures['outbox_pending']}",
        "# HELP crewchief_outbox_failed Messages given up on (a platform refused them for good).",
        "# TYPE crewchief_outbox_failed gauge",
        f"crewchief_outbox_failed {figures['outbox_failed']}",
    ]
    return "\n".join(lines) + "\n"
