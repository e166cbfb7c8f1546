"""Suite ``adapters``: what the guard layer itself costs, with a zero-latency backend.

``core``: one `Guard` call per hook over `FunctionBackend(lambda c: "safe")` (no delay), verdict
cache off, so each call runs the whole pipeline — conversation fitting, prompt rendering and
neutralisation, the micro-batcher, verdict parsing, policy, audit. Also: a cache hit, and the
sync method (run in the caller's thread: this backend never waits).

``langchain`` / ``llamaindex``: the integration packages' overhead over the same unguarded
object, when they can be imported (installed, or from this repository's ``integrations/``
checkout); otherwise skipped with a note. Guarded and unguarded calls alternate, so machine-load
drift hits both alike; the overhead is the median (and 99th percentile) of the per-pair
differences, also divided by the number of hooks a call checks. Times are per call, in
microseconds. ``reference_*`` rows guard nothing: an unguarded `RunnableLambda` added to a
sequence the way the input step is, i.e. what LangChain's own plumbing costs for such a step.
"""

from __future__ import annotations

import asyncio
import importlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from guard_plugins.bench.measure import percentile, summarize
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


def _paired_result(plain: list[float], guarded: list[float], hooks: int) -> dict[str, Any]:
    added = [g - p for g, p in zip(guarded, plain, strict=True)]
    p50, p99 = percentile(added, 50), percentile(added, 99)
    return {
        "plain_us": summarize(plain).to_dict(1),
        "guarded_us": summarize(guarded).to_dict(1),
        "hooks_per_call": hooks,
        "overhead_us_p50": round(p50, 1),
        "overhead_us_p99": round(p99, 1),
        "overhead_per_hook_us_p50": round(p50 / hooks, 1),
        "overhead_per_hook_us_p99": round(p99 / hooks, 1),
    }


def _nothing() -> None:
    return None


async def _anothing() -> None:
    return None


def _paired(
    guarded: Callable[[], Any], plain: Callable[[], Any], iterations: int, hooks: int
) -> dict[str, Any]:
    """Guarded and plain calls alternate; the overhead is taken per pair."""
    for _ in range(max(iterations // 10, 5)):
        guarded(), plain()
    clock = time.perf_counter_ns
    plain_us, guarded_us = [], []
    for _ in range(iterations):
        t0 = clock()
        guarded()
        t1 = clock()
        plain()
        t2 = clock()
        guarded_us.append((t1 - t0) / 1000)
        plain_us.append((t2 - t1) / 1000)
    return _paired_result(plain_us, guarded_us, hooks)


async def _apaired(
    guarded: Callable[[], Awaitable[Any]],
    plain: Callable[[], Awaitable[Any]],
    iterations: int,
    hooks: int,
) -> dict[str, Any]:
    for _ in range(max(iterations // 10, 5)):
        await guarded()
        await plain()
    clock = time.perf_counter_ns
    plain_us, guarded_us = [], []
    for _ in range(iterations):
        t0 = clock()
        await guarded()
        t1 = clock()
        await plain()
        t2 = clock()
        guarded_us.append((t1 - t0) / 1000)
        plain_us.append((t2 - t1) / 1000)
    return _paired_result(plain_us, guarded_us, hooks)


def _langchain(iterations: int) -> dict[str, Any]:
    module, origin = import_integration("guard_plugins_langchain", "langchain")
    if module is None:
        return {"skipped": f"guard_plugins_langchain {origin}"}
    from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_core.runnables import RunnableLambda
    from langchain_core.tools import tool

    guard = _zero_guard()
    identity: RunnableLambda[str, str] = RunnableLambda(lambda text: text)
    after: RunnableLambda[str, str] = RunnableLambda(lambda text: text)
    wrapped = module.GuardRunnable.wrap(identity, guard)
    step = module.GuardRunnable.input(guard)
    out_step = module.GuardRunnable.output(guard)
    new_sequence = identity | step
    chain = identity | after
    guarded_chain = identity | step | after
    # LangChain's own cost of a step added the same way, unguarded: a RunnableLambda identity.
    lam: RunnableLambda[str, str] = RunnableLambda(lambda text: text)
    lambda_sequence = identity | lam
    lambda_chain = identity | lam | after
    reply = AIMessage(REPLY_TEXT)
    middleware = module.LlamaGuardMiddleware(guard)
    before: Any = {"messages": [HumanMessage(USER_TEXT)]}
    answered: Any = {"messages": [HumanMessage(USER_TEXT), reply]}

    @tool
    def run_python(code: str) -> str:
        """Run Python code."""
        return "ok"

    guarded_tool = module.guard_tool(run_python, guard)
    args = {"code": "print(sum(range(10)))"}
    model = FakeMessagesListChatModel(responses=[reply] * (iterations * 3))
    traced: Any = {"callbacks": [module.LlamaGuardCallbackHandler(guard)]}

    async def both() -> dict[str, Any]:
        return {
            "wrap_ainvoke": await _apaired(
                lambda: wrapped.ainvoke(USER_TEXT),
                lambda: identity.ainvoke(USER_TEXT),
                iterations,
                2,
            ),
            "input_step_ainvoke": await _apaired(
                lambda: step.ainvoke(USER_TEXT), _anothing, iterations, 1
            ),
            "middleware_aafter_model": await _apaired(
                lambda: middleware.aafter_model(answered, None), _anothing, iterations, 1
            ),
        }

    result: dict[str, Any] = {
        "import": origin,
        "wrap_invoke": _paired(
            lambda: wrapped.invoke(USER_TEXT), lambda: identity.invoke(USER_TEXT), iterations, 2
        ),
        "input_step_invoke": _paired(
            lambda: new_sequence.invoke(USER_TEXT),
            lambda: identity.invoke(USER_TEXT),
            iterations,
            1,
        ),
        "input_step_in_chain_invoke": _paired(
            lambda: guarded_chain.invoke(USER_TEXT),
            lambda: chain.invoke(USER_TEXT),
            iterations,
            1,
        ),
        "reference_lambda_step_invoke": _paired(
            lambda: lambda_sequence.invoke(USER_TEXT),
            lambda: identity.invoke(USER_TEXT),
            iterations,
            1,
        ),
        "reference_lambda_step_in_chain_invoke": _paired(
            lambda: lambda_chain.invoke(USER_TEXT),
            lambda: chain.invoke(USER_TEXT),
            iterations,
            1,
        ),
        "input_step_alone_invoke": _paired(lambda: step.invoke(USER_TEXT), _nothing, iterations, 1),
        "output_step_alone_invoke": _paired(
            lambda: out_step.invoke(reply), _nothing, iterations, 1
        ),
        "middleware_before_model": _paired(
            lambda: middleware.before_model(before, None), _nothing, iterations, 1
        ),
        "guard_tool_invoke": _paired(
            lambda: guarded_tool.invoke(args), lambda: run_python.invoke(args), iterations, 1
        ),
        "callback_handler_invoke": _paired(
            lambda: model.invoke(USER_TEXT, traced),
            lambda: model.invoke(USER_TEXT),
            iterations,
            2,
        ),
    }
    result.update(asyncio.run(both()))
    result["note"] = (
        "plain = the same call unguarded: a RunnableLambda identity; for a step alone, middleware"
        " hook: nothing. wrap and the callback handler check input and output (2 hooks);"
        " input_step_invoke adds a sequence (identity | step vs identity);"
        " input_step_in_chain_invoke inserts the step into an existing sequence;"
        " reference_lambda_step_*: no guard, an unguarded RunnableLambda identity added the same"
        " way (LangChain's own cost of such a step, for comparison);"
        " guard_tool_invoke includes the static code screen"
    )
    return result


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

    async def acall() -> dict[str, Any]:
        return await _apaired(
            lambda: guarded.acall(code="print(1)"),
            lambda: plain.acall(code="print(1)"),
            iterations,
            2,
        )

    return {
        "import": origin,
        "tool_call": _paired(
            lambda: guarded.call(code="print(1)"),
            lambda: plain.call(code="print(1)"),
            iterations,
            2,
        ),
        "tool_acall": asyncio.run(acall()),
        "note": "guard_tool checks the call (with the static code screen) and the tool's output"
        " (2 hooks); plain = FunctionTool.from_defaults on the same function",
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
