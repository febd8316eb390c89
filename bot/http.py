"""The HTTP side: Slack's Events API endpoint, and /healthz and /metrics for operators."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST
from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request

from bot.app import App
from bot.metrics import registry_for, render
from bot.platforms.slack import SlackPlatform


def web_app(app: App, slack: SlackPlatform | None) -> web.Application:
    routes = web.RouteTableDef()

    @routes.get("/healthz")
    async def healthz(_: web.Request) -> web.Response:
        try:
            app.pending()
        except Exception:
            return web.json_response({"ok": False, "database": "unreachable"}, status=503)
        return web.json_response(
            {
                "ok": True,
                "database": "ok",
                "scheduler": app.scheduler.state,
                "platforms": sorted(app.platforms),
            }
        )

    registry = registry_for(app.db)

    @routes.get("/metrics")
    async def metrics(_: web.Request) -> web.Response:
        body = await app.db.call(render, registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    if slack is not None:

        @routes.post("/slack/events")
        async def slack_events(request: web.Request) -> web.Response:
            response = await slack.bolt.async_dispatch(await to_bolt_request(request))
            return await to_aiohttp_response(response)

    web_application = web.Application()
    web_application.add_routes(routes)
    return web_application
