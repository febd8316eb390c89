"""The fake OpenAI-compatible server (tests/fakes/openai_server.py) answering every chat
completion after a fixed latency, in a process of its own so it costs the measured process
neither memory nor CPU. Prints its base URL on the first line of stdout, then serves until
interrupted.

    python -m bench.fake_llm [--latency 1.0] [--port 0]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence

from aiohttp import web

from tests.fakes.openai_server import DEFAULT_API_KEY, FakeOpenAIServer

API_KEY = DEFAULT_API_KEY
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class SlowOpenAI(FakeOpenAIServer):
    def __init__(self, latency: float) -> None:
        super().__init__()
        self.latency = latency

    def make_app(self) -> web.Application:
        app = super().make_app()

        @web.middleware
        async def wait_first(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.endswith("/chat/completions"):
                await asyncio.sleep(self.latency)
            return await handler(request)

        app.middlewares.append(wait_first)
        return app


async def serve(latency: float, port: int) -> None:
    server = SlowOpenAI(latency)
    await server.start(port=port)
    print(server.base_url, flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await server.stop()


@contextlib.asynccontextmanager
async def running(latency: float) -> AsyncIterator[str]:
    """The server in a child process for the block; yields its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.fake_llm",
        "--latency",
        str(latency),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=60)
        if not line:
            raise RuntimeError("the fake LLM server did not start")
        yield line.decode().strip()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=1.0, help="seconds before each answer")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.latency, args.port))


if __name__ == "__main__":
    main()
