"""Per-hook overhead of guard-plugins-langchain with a zero-latency backend.

Each row interleaves the guarded call, the same call unguarded (for an LCEL step: nothing) and
the same guard check made directly, and reports per hook, at the median and the 99th percentile:

- total: guarded − unguarded — what a user pays (adapter + guard core, no model time);
- adapter: total − the direct guard check — this package's own share (conversion, its traced
  run, enforcement).

The backend answers "safe" at once and the verdict cache is off. With such a backend (it never
waits) the core's sync methods run in the caller's thread, and its async methods call it
directly on the caller's loop; with a model or HTTP backend the sync methods hand the
classification to the guard's background loop. The "unguarded" rows add a plain
`RunnableLambda` where the guard step goes: LangChain's own per-step cost, for comparison.
Numbers scale with machine load: the load average is printed.

    python integrations/langchain/benchmarks/overhead.py [--n 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from guard_plugins import Guard
from guard_plugins.testing import FunctionBackend
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import Runnable, RunnableLambda
from langchain_core.tools import tool

from guard_plugins_langchain import (
    GuardRunnable,
    LlamaGuardCallbackHandler,
    LlamaGuardMiddleware,
    guard_tool,
    messages_to_conversation,
)

Call = Callable[[], Any]
ACall = Callable[[], Awaitable[Any]]


def _paired(guarded: Call, plain: Call, core: Call, n: int) -> tuple[list[float], list[float]]:
    """Per-iteration (guarded − plain, guarded − plain − core) in µs, from interleaved calls:
    interleaving keeps machine-load drift out of the differences. `core` is the same guard check
    made directly, so the second series is the adapter's own share."""
    for _ in range(min(200, n)):
        guarded(), plain(), core()
    total, adapter = [], []
    clock = time.perf_counter
    for _ in range(n):
        t0 = clock()
        guarded()
        t1 = clock()
        plain()
        t2 = clock()
        core()
        t3 = clock()
        total.append(((t1 - t0) - (t2 - t1)) * 1e6)
        adapter.append(((t1 - t0) - (t2 - t1) - (t3 - t2)) * 1e6)
    return total, adapter


def _apaired(guarded: ACall, plain: ACall, core: ACall, n: int) -> tuple[list[float], list[float]]:
    async def run() -> tuple[list[float], list[float]]:
        for _ in range(min(200, n)):
            await guarded()
            await plain()
            await core()
        total, adapter = [], []
        clock = time.perf_counter
        for _ in range(n):
            t0 = clock()
            await guarded()
            t1 = clock()
            await plain()
            t2 = clock()
            await core()
            t3 = clock()
            total.append(((t1 - t0) - (t2 - t1)) * 1e6)
            adapter.append(((t1 - t0) - (t2 - t1) - (t3 - t2)) * 1e6)
        return total, adapter

    return asyncio.run(run())


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _row(name: str, hooks: int, series: tuple[list[float], list[float]]) -> tuple[str, ...]:
    total, adapter = series
    return (
        name,
        str(hooks),
        *(f"{_pct(values, q) / hooks:8.1f}" for values in (total, adapter) for q in (0.5, 0.99)),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Per-hook overhead of guard-plugins-langchain")
    parser.add_argument("--n", type=int, default=2000)
    n = parser.parse_args().n
    logging.disable(logging.WARNING)
    guard = Guard(FunctionBackend(lambda conversation: "safe"), cache_size=0)
    reply = AIMessage("Sure, here is a short and harmless answer.")
    echo: Runnable[Any, Any] = RunnableLambda(lambda value: reply)
    question = "How do I bake sourdough bread at home?"
    step_in = GuardRunnable.input(guard)
    step_out = GuardRunnable.output(guard)
    after: Runnable[Any, Any] = RunnableLambda(lambda value: value)
    lam: Runnable[Any, Any] = RunnableLambda(lambda value: value)  # an unguarded step
    chain, guarded_chain, lambda_chain = echo | after, echo | step_in | after, echo | lam | after
    sequence, lambda_sequence = echo | step_in, echo | lam
    wrapped = GuardRunnable.wrap(echo, guard)
    middleware = LlamaGuardMiddleware(guard)
    state: Any = {"messages": [HumanMessage(question)]}
    after: Any = {"messages": [HumanMessage(question), reply]}
    runtime: Any = None  # the hooks do not read the runtime

    @tool
    def run_python(code: str) -> str:
        """Run Python code."""
        return "ok"

    guarded_tool = guard_tool(run_python, guard)
    args = {"code": "print(sum(range(10)))"}
    model = FakeMessagesListChatModel(responses=[reply] * (n * 3))
    handler = LlamaGuardCallbackHandler(guard)
    traced: Any = {"callbacks": [handler]}
    answer = [HumanMessage(question), reply]

    def _none() -> Any:
        return None

    def check_in() -> Any:
        return guard.check_input(question)

    def check_out() -> Any:
        return guard.check_output(messages_to_conversation([reply]))

    def check_both() -> Any:
        guard.check_input(question)
        return guard.check_output(messages_to_conversation(answer))

    def check_tool() -> Any:
        return guard.check_tool_call("run_python", args)

    async def acheck_in() -> Any:
        return await guard.acheck_input(question)

    async def acheck_out() -> Any:
        return await guard.acheck_output(messages_to_conversation(answer))

    async def acheck_both() -> Any:
        await guard.acheck_input(question)
        return await guard.acheck_output(messages_to_conversation(answer))

    rows = [
        _row(
            "GuardRunnable.input (invoke)",
            1,
            _paired(lambda: step_in.invoke(question), lambda: None, check_in, n),
        ),
        _row(
            "GuardRunnable.input (ainvoke)",
            1,
            _apaired(lambda: step_in.ainvoke(question), lambda: asyncio.sleep(0), acheck_in, n),
        ),
        _row(
            "echo | GuardRunnable.input vs echo",
            1,
            _paired(lambda: sequence.invoke(question), lambda: echo.invoke(question), check_in, n),
        ),
        _row(
            "  unguarded: echo | RunnableLambda vs echo",
            1,
            _paired(
                lambda: lambda_sequence.invoke(question), lambda: echo.invoke(question), _none, n
            ),
        ),
        _row(
            "GuardRunnable.input inserted in a sequence",
            1,
            _paired(
                lambda: guarded_chain.invoke(question), lambda: chain.invoke(question), check_in, n
            ),
        ),
        _row(
            "  unguarded: RunnableLambda inserted",
            1,
            _paired(
                lambda: lambda_chain.invoke(question), lambda: chain.invoke(question), _none, n
            ),
        ),
        _row(
            "GuardRunnable.output (invoke)",
            1,
            _paired(lambda: step_out.invoke(reply), lambda: None, check_out, n),
        ),
        _row(
            "GuardRunnable.wrap (invoke)",
            2,
            _paired(lambda: wrapped.invoke(question), lambda: echo.invoke(question), check_both, n),
        ),
        _row(
            "GuardRunnable.wrap (ainvoke)",
            2,
            _apaired(
                lambda: wrapped.ainvoke(question), lambda: echo.ainvoke(question), acheck_both, n
            ),
        ),
        _row(
            "LlamaGuardMiddleware.before_model",
            1,
            _paired(lambda: middleware.before_model(state, runtime), lambda: None, check_in, n),
        ),
        _row(
            "LlamaGuardMiddleware.aafter_model",
            1,
            _apaired(
                lambda: middleware.aafter_model(after, runtime),
                lambda: asyncio.sleep(0),
                acheck_out,
                n,
            ),
        ),
        _row(
            "guard_tool (invoke)",
            1,
            _paired(
                lambda: guarded_tool.invoke(args), lambda: run_python.invoke(args), check_tool, n
            ),
        ),
        _row(
            "LlamaGuardCallbackHandler (start+end)",
            2,
            _paired(
                lambda: model.invoke(question, traced),
                lambda: model.invoke(question),
                check_both,
                n,
            ),
        ),
    ]
    header = ("hook", "hooks", "total p50", "total p99", "adapter p50", "adapter p99")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [
            c.rjust(w) if i else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print("  ".join(cells))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"\nµs per hook over the unguarded call (interleaved pairs, n={n}, zero-latency backend,"
        f" cache off, load average {load:.1f}). total: adapter + guard core; adapter: total minus"
        " the same guard check called directly. The 'unguarded' rows guard nothing: they are"
        " LangChain's own cost of a step added the same way (the row above includes it too)"
    )


if __name__ == "__main__":
    main()
