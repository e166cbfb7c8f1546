"""Awaiting without creating a task: a coroutine driven step by step, and a deadline.

`drive` awaits a coroutine inside the current task, optionally after its caller already took the
first step (to find out whether it would wait at all) and optionally running every step in a
given `contextvars.Context` (what ``asyncio.create_task(coro, context=...)`` gives, without the
task and the event-loop turn it costs). `within_deadline` bounds an awaitable by a loop time.
"""

from __future__ import annotations

import asyncio
import sys
import types
from collections.abc import Awaitable, Callable, Coroutine, Generator
from contextvars import Context
from typing import Any, TypeVar

__all__ = ["NOT_STARTED", "drive", "within_deadline"]

T = TypeVar("T")
NOT_STARTED: Any = object()
"""`drive`'s `started` when the coroutine has not run a step yet."""


@types.coroutine
def drive(
    coro: Coroutine[Any, Any, T],
    *,
    started: Any = NOT_STARTED,
    context: Context | None = None,
) -> Generator[Any, Any, T]:
    """Await `coro` in the current task.

    `started` is what `coro` yielded when the caller already took its first step; with
    `context`, every step runs in it. Cancellation and errors thrown into the awaiting task go
    into `coro` where it waits; a `coro` abandoned half-way is closed (in `context`).
    """

    def step(method: Callable[[Any], Any], argument: Any) -> Any:
        return method(argument) if context is None else context.run(method, argument)

    value: Any = None
    error: BaseException | None = None
    yielded = started
    try:
        while True:
            if yielded is NOT_STARTED:
                try:
                    if error is None:  # noqa: SIM108 - two calls, one per branch
                        yielded = step(coro.send, value)
                    else:
                        yielded = step(coro.throw, error)
                except StopIteration as stop:
                    return stop.value  # type: ignore[no-any-return]
                error = None
            try:
                value = yield yielded
            except GeneratorExit:
                raise
            except BaseException as exc:  # cancellation and errors go in where they came out
                value, error = None, exc
            yielded = NOT_STARTED
    finally:
        if getattr(coro, "cr_frame", None) is not None:  # abandoned half-way: unwind it there
            if context is None:
                coro.close()
            else:
                context.run(coro.close)


async def within_deadline(awaitable: Awaitable[T], deadline: float | None) -> T:
    """Await `awaitable`, raising `TimeoutError` at loop time `deadline` (None: no limit)."""
    if deadline is None:
        return await awaitable
    if sys.version_info >= (3, 11):
        async with asyncio.timeout_at(deadline):
            return await awaitable
    else:  # pragma: no cover - Python 3.10

        async def rest() -> T:
            return await awaitable

        left = deadline - asyncio.get_running_loop().time()
        return await asyncio.wait_for(rest(), max(left, 0.0))
