"""Serving an aiohttp application on 127.0.0.1, on a free port, for one block."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

from aiohttp import web


@asynccontextmanager
async def serve_locally(application: web.Application) -> AsyncIterator[str]:
    """Yields the base URL, e.g. `http://127.0.0.1:41234`."""
    runner = web.AppRunner(application)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


def serve_until_interrupted(
    start: Callable[[], Awaitable[None]],
    stop: Callable[[], Awaitable[None]],
    banner: Callable[[], str],
) -> None:
    """`python -m tests.fakes.…`: start a fake, print where it listens, serve until Ctrl-C."""

    async def run() -> None:
        await start()
        print(banner())
        try:
            await asyncio.Event().wait()
        finally:
            await stop()

    with suppress(KeyboardInterrupt):
        asyncio.run(run())
