"""Speculative input checks: run the model while the user turn is being checked.

Nothing the model produces leaves before the input verdict allows it: outputs are held by the
caller, and a gate callback handler (inherited by every child run) makes tool runs wait for the
verdict and aborts a streaming model call (at its next token) once the verdict blocks. Async model
calls are cancelled outright.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import Future
from typing import Any

from guard_plugins import Decision, GuardBlocked
from langchain_core.callbacks import (
    AsyncCallbackHandler,
    AsyncCallbackManager,
    BaseCallbackHandler,
    BaseCallbackManager,
    CallbackManager,
)
from langchain_core.language_models import BaseLanguageModel
from langchain_core.runnables import Runnable, RunnableBinding, RunnableConfig
from langchain_core.runnables.config import patch_config

__all__ = [
    "AsyncInputGate",
    "InputGate",
    "InputRefused",
    "agate",
    "agated",
    "gate",
    "gated",
    "is_side_effect_free",
]


class InputRefused(Exception):
    """The input verdict arrived and does not allow the speculative output."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(decision.summary())


def _stop_if_blocked(decision: Decision) -> None:
    if not decision.allowed:
        raise GuardBlocked(decision)


class InputGate(BaseCallbackHandler):
    """Sync gate: a tool run waits for the input verdict and fails when it blocks; a streamed
    token aborts the model call once the verdict blocks.

    Sync handlers run on async paths too (in a worker thread, so the wait never stalls the event
    loop), which covers sync tools and nodes an async graph runs in threads. On async paths the
    token check is left to `AsyncInputGate` (``tokens=False``) to avoid a thread hop per token.
    """

    raise_error = True

    def __init__(self, verdict: Future[Decision], *, tokens: bool = True) -> None:
        self.verdict = verdict
        self.tokens = tokens

    @property
    def ignore_llm(self) -> bool:
        return not self.tokens

    def on_tool_start(self, serialized: dict[str, Any], input_str: str, **kwargs: Any) -> None:
        _stop_if_blocked(self.verdict.result())

    def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        if self.verdict.done():
            _stop_if_blocked(self.verdict.result())


class AsyncInputGate(AsyncCallbackHandler):
    """Async gate for runs on the caller's event loop (async handlers are awaited there)."""

    raise_error = True
    run_inline = True

    def __init__(self, verdict: Future[Decision], loop: asyncio.AbstractEventLoop) -> None:
        self.verdict = verdict
        self.loop = loop

    async def on_tool_start(
        self, serialized: dict[str, Any], input_str: str, **kwargs: Any
    ) -> None:
        if asyncio.get_running_loop() is not self.loop:
            return  # a sync run in a worker thread: `InputGate` waits there
        _stop_if_blocked(await asyncio.shield(asyncio.wrap_future(self.verdict)))

    async def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
        if self.verdict.done():
            _stop_if_blocked(self.verdict.result())


def gate(config: RunnableConfig, verdict: Future[Decision]) -> RunnableConfig:
    """`config` with the gate handlers for a sync run."""
    return _with_handlers(config, [InputGate(verdict)], CallbackManager)


def agate(config: RunnableConfig, verdict: asyncio.Task[Decision]) -> RunnableConfig:
    """`config` with the gate handlers for an async run (the verdict task mirrored into a
    thread-safe future, so gates in worker threads can wait on it)."""
    mirrored: Future[Decision] = Future()

    def transfer(task: asyncio.Task[Decision]) -> None:
        if task.cancelled():
            mirrored.cancel()
        elif (error := task.exception()) is not None:
            mirrored.set_exception(error)
        else:
            mirrored.set_result(task.result())

    verdict.add_done_callback(transfer)
    loop = asyncio.get_running_loop()
    handlers: list[BaseCallbackHandler] = [
        InputGate(mirrored, tokens=False),
        AsyncInputGate(mirrored, loop),
    ]
    return _with_handlers(config, handlers, AsyncCallbackManager)


def _with_handlers(
    config: RunnableConfig,
    handlers: list[BaseCallbackHandler],
    cls: type[BaseCallbackManager],
) -> RunnableConfig:
    callbacks = config.get("callbacks")
    manager: BaseCallbackManager
    if isinstance(callbacks, BaseCallbackManager):
        manager = callbacks.copy()
    else:
        manager = cls(handlers=list(callbacks or []), inheritable_handlers=list(callbacks or []))
    for handler in handlers:
        manager.add_handler(handler, inherit=True)
    return patch_config(config, callbacks=manager)


def is_side_effect_free(runnable: Runnable[Any, Any]) -> bool:
    """Language models (also bound with tools or config) run nothing: safe to speculate on."""
    while isinstance(runnable, RunnableBinding):
        runnable = runnable.bound
    return isinstance(runnable, BaseLanguageModel)


def gated(upstream: Iterator[Any], verdict: Future[Decision]) -> Iterator[Any]:
    """Chunks of `upstream`, the first one only after the verdict allows the input."""
    try:
        for chunk in upstream:
            decision = verdict.result()
            if not decision.allowed:
                raise InputRefused(decision)
            yield chunk
    except GuardBlocked as exc:  # the gate aborted the model: report the input decision
        decision = verdict.result()
        if not decision.allowed:
            raise InputRefused(decision) from exc
        raise
    finally:
        close = getattr(upstream, "close", None)
        if callable(close):
            close()


async def agated(
    upstream: AsyncIterator[Any], verdict: asyncio.Task[Decision]
) -> AsyncIterator[Any]:
    """Async twin of `gated`: the upstream is pumped while the verdict is pending, and cancelled
    (not merely abandoned) when it blocks."""
    queue: asyncio.Queue[tuple[bool, Any]] = asyncio.Queue()

    async def pump() -> None:
        try:
            async for chunk in upstream:
                await queue.put((False, chunk))
        except BaseException as exc:
            await queue.put((True, exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
        else:
            await queue.put((True, None))

    task = asyncio.ensure_future(pump())
    try:
        decision = await verdict
        if not decision.allowed:
            raise InputRefused(decision)
        while True:
            done, item = await queue.get()
            if done:
                if isinstance(item, BaseException):
                    raise item
                return
            yield item
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        aclose = getattr(upstream, "aclose", None)
        if callable(aclose):
            with contextlib.suppress(Exception):
                await aclose()
