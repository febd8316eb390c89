"""The digest's chart: runs started per day (bars) above spend per day (bars), as a small PNG.

Drawn with matplotlib's Agg canvas, imported only when a chart is drawn (it takes a moment to
load), off the event loop. The same data gives the same bytes: the style is matplotlib's
default whatever the local matplotlibrc says, the font is the one matplotlib ships, and the
PNG carries no software version or date.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import logging
import math
import tempfile
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

from bot.platforms.base import Delivery

log = logging.getLogger(__name__)

WIDTH_IN, HEIGHT_IN, DPI = 8.0, 4.5, 100  # 800 x 450 pixels
RUNS_COLOUR = "#1d9bd1"
SPEND_COLOUR = "#ecb22e"
MAX_LABELS = 10  # date labels under the bars; more days label every n-th
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TITLE = "Runs and spend per day"  # the file's title in Slack, its description in Discord
DEFAULT_DIR = Path(tempfile.gettempdir()) / "crewchief-charts"  # the shell's, by default
# matplotlib's style switching changes process-wide settings: one chart at a time
_drawing = threading.Lock()


@dataclass(frozen=True)
class Chart:
    """A drawn chart (`png`), or why there is none (`error`); both None: nothing to draw."""

    png: bytes | None = None
    filename: str = "digest.png"
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


def filename(data: Mapping[str, Any]) -> str:
    """`digest-<last day>.png`: letters, digits and dashes, as Discord's attachment:// wants."""
    days = list(data.get("days") or [])
    return f"digest-{days[-1]}.png" if days else "digest.png"


def render_png(data: Mapping[str, Any]) -> bytes:
    """The PNG of a digest context's `chart`: {"days": [ISO dates], "runs": [int],
    "spend_usd": [float]}."""
    days = [date.fromisoformat(str(d)) for d in data["days"]]
    runs = [int(n) for n in data["runs"]]
    spend = [float(x) for x in data["spend_usd"]]
    if not days or not len(days) == len(runs) == len(spend):
        raise ValueError("a chart needs as many runs and spend figures as days")

    import matplotlib.style
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    with _drawing, matplotlib.style.context("default"):
        figure = Figure(figsize=(WIDTH_IN, HEIGHT_IN), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        top, bottom = figure.subplots(2, 1, sharex=True)
        positions = list(range(len(days)))
        figure.suptitle(
            f"Runs and spend per day (UTC), {days[0].isoformat()} to {days[-1].isoformat()}",
            fontsize=11,
        )

        top.bar(positions, runs, color=RUNS_COLOUR, width=0.7)
        top.set_ylabel("runs started")
        top.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        top.set_ylim(bottom=0, top=max(1, max(runs)) * 1.15)

        bottom.bar(positions, spend, color=SPEND_COLOUR, width=0.7)
        bottom.set_ylabel("spend (USD)")
        bottom.yaxis.set_major_locator(MaxNLocator(nbins=5, steps=[1, 2, 5, 10]))
        bottom.set_ylim(bottom=0, top=(max(spend) or 0.01) * 1.15)
        ticks = list(bottom.get_yticks())
        step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
        decimals = max(2, math.ceil(-math.log10(step))) if step > 0 else 2
        bottom.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"${v:,.{decimals}f}"))

        step = max(1, math.ceil(len(days) / MAX_LABELS))
        bottom.set_xticks(positions[::step], [_day_label(d) for d in days[::step]])
        bottom.set_xlim(-0.6, len(days) - 0.4)
        for axes in (top, bottom):
            axes.grid(axis="y", alpha=0.3)
            axes.set_axisbelow(True)
            axes.spines[["top", "right"]].set_visible(False)

        out = io.BytesIO()
        figure.savefig(out, format="png", metadata={"Software": None})
    return out.getvalue()


async def draw(context: Mapping[str, Any]) -> Chart:
    """The chart of a digest context, drawn in a thread (see `draw_now`)."""
    if not context.get("chart"):
        return Chart()
    return await asyncio.to_thread(draw_now, context)


def draw_now(context: Mapping[str, Any]) -> Chart:
    """The chart of a digest context. A failure is logged and returned, never raised: the
    digest's text goes out without its chart."""
    data = context.get("chart")
    if not data:
        return Chart()
    try:
        png = render_png(data)
    except Exception as exc:
        log.warning("the digest's chart could not be drawn: %s: %s", type(exc).__name__, exc)
        return Chart(filename=filename(data), error=f"{type(exc).__name__}: {exc}")
    return Chart(png=png, filename=filename(data))


async def for_post(delivery: Delivery) -> tuple[dict[str, Any], Chart | None]:
    """For a platform that attaches the chart to the digest: the context to render (saying
    when the chart could not be drawn) and the chart to attach. Drawn before the text is
    rendered, so the text can say so; deliveries other than a digest's post have none."""
    if delivery.template != "digest" or delivery.kind != "post":
        return delivery.context, None
    chart = await draw(delivery.context)
    if chart.failed:
        return {**delivery.context, "chart_failed": True}, None
    return delivery.context, chart if chart.png is not None else None


def saved(context: dict[str, Any], chart: Chart, directory: Path | None) -> dict[str, Any]:
    """A digest's context for a platform without uploads (the terminal): the chart written
    to `directory` and its path as `chart_path`, or `chart_failed` when it could not be drawn
    or written. The file is named by its content, so the same chart is one file."""
    if chart.png is None:
        return {**context, "chart_failed": chart.failed}
    folder = directory or DEFAULT_DIR
    digest = hashlib.sha256(chart.png).hexdigest()[:10]
    path = folder / f"{chart.filename.removesuffix('.png')}-{digest}.png"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}")
            partial.write_bytes(chart.png)
            partial.replace(path)
    except OSError as exc:
        log.warning("the digest's chart could not be written to %s: %s", path, exc)
        return {**context, "chart_failed": True}
    return {**context, "chart_path": str(path)}


def _day_label(day: date) -> str:
    return f"{day:%b} {day.day}"
