"""The engine's workload in LangGraph, for comparison: the same human-in-the-loop shape
(research, draft, an `interrupt()` for approval, publish) checkpointed by LangGraph's
SqliteSaver in a SQLite file, N runs (threads) taken to the interrupt, then every one resumed
with an approval and taken to the end. The nodes render crewchief's built-in prompts and call
crewchief's offline model, so both sides do the same model work.

    python -m bench langgraph [--runs 1000] [--json]

runs_per_s is runs / (launch_to_draft_s + approve_to_published_s), as in `bench engine`.
LangGraph is not a dependency of crewchief; without it the result says it was skipped
(pip install langgraph langgraph-checkpoint-sqlite).
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Coroutine, Sequence
from importlib.metadata import version
from typing import TYPE_CHECKING, Any, TypedDict

from agents.config import CrewConfig, builtin_defaults
from agents.llm import Completion, LLMRequest
from agents.offline import OfflineProvider
from agents.prompts import build_request
from bench import common

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

REQUIRED = ("langgraph", "langgraph.checkpoint.sqlite")


class State(TypedDict, total=False):
    topic: str
    research: str
    draft: str
    decision: str
    published: str


def installed() -> bool:
    try:
        return all(importlib.util.find_spec(name) is not None for name in REQUIRED)
    except ImportError:
        return False


def _now(coroutine: Coroutine[Any, Any, Completion]) -> Completion:
    """The offline model's answer: its coroutine finishes without waiting for anything."""
    try:
        coroutine.send(None)
    except StopIteration as done:
        result: Completion = done.value
        return result
    coroutine.close()
    raise RuntimeError("the offline model awaited something")


class Agents:
    """crewchief's built-in agents (prompt templates and offline model) as graph nodes."""

    def __init__(self) -> None:
        self.config = CrewConfig.model_validate(builtin_defaults())
        self.model = OfflineProvider()

    def _ask(self, agent: str, topic: str, inputs: dict[str, str]) -> str:
        request: LLMRequest = build_request(
            agent, self.config.agents[agent], topic=topic, inputs=inputs
        )
        return _now(self.model.complete(request)).text

    def research(self, state: State) -> State:
        return {"research": self._ask("researcher", state["topic"], {})}

    def draft(self, state: State) -> State:
        inputs = {"research": state["research"]}
        return {"draft": self._ask("writer", state["topic"], inputs)}

    def approval(self, state: State) -> State:
        from langgraph.types import interrupt

        return {"decision": str(interrupt({"draft": state["draft"]}))}

    def publish(self, state: State) -> State:
        inputs = {"research": state["research"], "draft": state["draft"]}
        return {"published": self._ask("publisher", state["topic"], inputs)}


def measure(runs: int) -> common.Result:
    from langgraph.checkpoint.sqlite import SqliteSaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import Command

    agents = Agents()
    builder = StateGraph(State)
    builder.add_node("research", agents.research)
    builder.add_node("draft", agents.draft)
    builder.add_node("approval", agents.approval)
    builder.add_node("publish", agents.publish)
    builder.add_edge(START, "research")
    builder.add_edge("research", "draft")
    builder.add_edge("draft", "approval")
    builder.add_edge("approval", "publish")
    builder.add_edge("publish", END)
    threads: list[RunnableConfig] = [
        {"configurable": {"thread_id": f"run-{i}"}} for i in range(runs)
    ]

    with common.scratch() as tmp, SqliteSaver.from_conn_string(str(tmp / "lg.db")) as saver:
        graph = builder.compile(checkpointer=saver)
        cpu, began = time.process_time(), time.perf_counter()
        interrupted = 0
        for i, thread in enumerate(threads):
            state = graph.invoke({"topic": f"topic {i}"}, thread)
            interrupted += "__interrupt__" in state
        drafted = time.perf_counter() - began
        cpu_drafting = time.process_time() - cpu

        cpu, began = time.process_time(), time.perf_counter()
        succeeded = 0
        for thread in threads:
            state = graph.invoke(Command(resume="approved"), thread)
            succeeded += bool(state.get("published"))
        published = time.perf_counter() - began
        cpu_publishing = time.process_time() - cpu

    total = drafted + published
    return {
        "langgraph": version("langgraph"),
        "runs": runs,
        "interrupted": interrupted,
        "succeeded": succeeded,
        "launch_to_draft_s": round(drafted, 3),
        "approve_to_published_s": round(published, 3),
        "runs_per_s": round(runs / total, 2) if total else 0.0,
        "cpu_ms_per_run": round((cpu_drafting + cpu_publishing) * 1000 / runs, 2) if runs else 0.0,
        "peak_rss_mb": common.peak_rss_mb(),
    }


def report(result: common.Result) -> list[str]:
    if "skipped" in result:
        return [f"skipped: {result['skipped']}"]
    return [
        f"LangGraph {result['langgraph']} (SqliteSaver)  runs: {result['runs']}  "
        f"succeeded: {result['succeeded']}",
        f"launch -> interrupt for approval: {result['launch_to_draft_s']:.2f} s",
        f"resume -> published:              {result['approve_to_published_s']:.2f} s",
        f"runs per second (both phases):    {result['runs_per_s']:.1f}",
        f"CPU per run: {result['cpu_ms_per_run']:.1f} ms   peak RSS: {result['peak_rss_mb']} MB",
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--runs", type=int, default=1000, help="runs (graph threads)")
    args = parser.parse_args(argv)
    result = measure(args.runs) if installed() else {"skipped": "langgraph not installed"}
    common.emit(result, args.json, report(result))


if __name__ == "__main__":
    main()
