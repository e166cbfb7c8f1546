"""Suite ``adapters``: what the guard layer itself costs, with a zero-latency backend.

``core``: one `Guard` call per hook over `FunctionBackend(lambda c: "safe")` (no delay), verdict
cache off, so each call runs the whole pipeline — conversation fitting, prompt rendering and
neutralisation, the micro-batcher, verdict parsing, policy, audit. Also: a cache hit, and the
sync wrapper (which hands the coroutine to the shared background loop).

``langchain`` / ``llamaindex``: the integration packages' overhead over the same unguarded
object, when they can be imported (installed, or from this repository's ``integrations/``
checkout); otherwise skipped with a note. Times are per call, in microseconds.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from guard_plugins.bench.measure import summarize
from guard_plugins.bench.settings import BenchContext
from guard_plugins.conversation import Conversation, Message
from guard_plugins.guard import Guard
from guard_plugins.testing import FunctionBackend

__all__ = ["import_integration", "run_adapters_suite"]

USER_TEXT = "What's the best way to learn a new language as an adult?"
REPLY_TEXT = "Practise a little every day, speak with native speakers and read what you enjoy."


def _zero_guard(cache: bool = False) -> Guard:
    return Guard(FunctionBackend(lambda _: "safe"), cache_size=4096 if cache else 0)


def _time_sync(fn: Callable[[], Any], iterations: int) -> dict[str, Any]:
    for _ in range(max(iterations // 10, 5)):
        fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return summarize(samples).to_dict(1)


async def _time_async(fn: Callable[[], Awaitable[Any]], iterations: int) -> dict[str, Any]:
    for _ in range(max(iterations // 10, 5)):
        await fn()
    samples = []
    for _ in range(iterations):
        start = time.perf_counter_ns()
        await fn()
        samples.append((time.perf_counter_ns() - start) / 1000)
    return summarize(samples).to_dict(1)


async def _core(iterations: int) -> dict[str, Any]:
    guard = _zero_guard()
    conv = Conversation.user(USER_TEXT)
    answered = conv.append(Message.assistant(REPLY_TEXT))
    hooks: dict[str, Callable[[], Awaitable[Any]]] = {
        "user_input": lambda: guard.acheck_input(conv),
        "assistant_output": lambda: guard.acheck_output(answered),
        "tool_call": lambda: guard.acheck_tool_call("bash", {"command": "ls -la /tmp"}, conv),
        "tool_result": lambda: guard.acheck_tool_result("search", {"hits": 3}, conv),
    }
    result: dict[str, Any] = {n: await _time_async(fn, iterations) for n, fn in hooks.items()}
    cached = _zero_guard(cache=True)
    result["user_input_cache_hit"] = await _time_async(
        lambda: cached.acheck_input(conv), iterations
    )
    return result


def import_integration(module: str, folder: str) -> tuple[Any | None, str]:
    """Import an integration package: installed, else from the repository checkout, else None."""
    try:
        return importlib.import_module(module), "installed"
    except ImportError:
        pass
    checkout = Path(__file__).resolve().parents[2] / "integrations" / folder
    if not (checkout / module / "__init__.py").is_file():
        return None, "not installed"
    sys.path.insert(0, str(checkout))
    try:
        return importlib.import_module(module), "repository checkout"
    except ImportError as exc:
        sys.path.remove(str(checkout))
        return None, f"not importable: {exc}"


def _overhead(plain: dict[str, Any], guarded: dict[str, Any], hooks: int) -> dict[str, Any]:
    return {
        "plain_us": plain,
        "guarded_us": guarded,
        "hooks_per_call": hooks,
        "overhead_us_p50": round(guarded["p50"] - plain["p50"], 1),
        "overhead_per_hook_us_p50": round((guarded["p50"] - plain["p50"]) / hooks, 1),
    }


def _langchain(iterations: int) -> dict[str, Any]:
    module, origin = import_integration("guard_plugins_langchain", "langchain")
    if module is None:
        return {"skipped": f"guard_plugins_langchain {origin}"}
    from langchain_core.runnables import RunnableLambda

    guard = _zero_guard()
    identity: RunnableLambda[str, str] = RunnableLambda(lambda text: text)
    wrapped = module.GuardRunnable.wrap(identity, guard)
    step = identity | module.GuardRunnable.input(guard)
    plain_sync = _time_sync(lambda: identity.invoke(USER_TEXT), iterations)

    async def both() -> tuple[dict[str, Any], dict[str, Any]]:
        plain = await _time_async(lambda: identity.ainvoke(USER_TEXT), iterations)
        guarded = await _time_async(lambda: wrapped.ainvoke(USER_TEXT), iterations)
        return plain, guarded

    plain_async, guarded_async = asyncio.run(both())
    return {
        "import": origin,
        "wrap_invoke": _overhead(
            plain_sync, _time_sync(lambda: wrapped.invoke(USER_TEXT), iterations), 2
        ),
        "wrap_ainvoke": _overhead(plain_async, guarded_async, 2),
        "input_step_invoke": _overhead(
            plain_sync, _time_sync(lambda: step.invoke(USER_TEXT), iterations), 1
        ),
        "note": "GuardRunnable.wrap checks input and output (2 hooks); plain = RunnableLambda "
        "identity; the input step is compared with the bare identity (it adds a sequence too)",
    }


def _llamaindex(iterations: int) -> dict[str, Any]:
    module, origin = import_integration("guard_plugins_llamaindex", "llamaindex")
    if module is None:
        return {"skipped": f"guard_plugins_llamaindex {origin}"}
    from llama_index.core.tools import FunctionTool

    def run_python(code: str) -> str:
        """Run Python code."""
        return "ok"

    plain = FunctionTool.from_defaults(fn=run_python)
    guarded = module.guard_tool(run_python, _zero_guard())
    return {
        "import": origin,
        "tool_call": _overhead(
            _time_sync(lambda: plain.call(code="print(1)"), iterations),
            _time_sync(lambda: guarded.call(code="print(1)"), iterations),
            2,
        ),
        "note": "guard_tool checks the call and the tool's output (2 hooks); plain = "
        "FunctionTool.from_defaults on the same function",
    }


def run_adapters_suite(ctx: BenchContext) -> dict[str, Any]:
    """The suite's JSON section."""
    n = ctx.settings.overhead_iterations
    ctx.log(f"adapters: per-hook overhead, {n} calls each")
    result: dict[str, Any] = {"iterations": n, "unit": "us"}
    result["core"] = asyncio.run(_core(n))
    guard = _zero_guard()
    conv = Conversation.user(USER_TEXT)
    result["core"]["user_input_sync"] = _time_sync(lambda: guard.check_input(conv), n)
    for name, fn in (("langchain", _langchain), ("llamaindex", _llamaindex)):
        try:
            result[name] = fn(n)
        except Exception as exc:  # an integration under construction must not sink the run
            result[name] = {"skipped": f"failed: {type(exc).__name__}: {exc}"}
    return result
