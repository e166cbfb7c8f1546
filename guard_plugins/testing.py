"""Real backends for tests: yours and ours.

`FunctionBackend` answers with a function of the conversation; `ScriptedBackend` answers from a
script and fails on calls it did not expect. Both go through the same rendering and verdict parsing
as the model backends, so a test with them exercises the real pipeline minus the model.

>>> from guard_plugins import Guard
>>> backend = FunctionBackend(lambda conv: "unsafe\\nS14" if "rm -rf" in conv.turns()[-1].text
...                           else "safe")
>>> Guard(backend).check_tool_call("bash", "rm -rf /").allowed
False
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Union

from guard_plugins._sync import run_sync
from guard_plugins.backends.base import Backend, ClassificationRequest
from guard_plugins.conversation import Conversation
from guard_plugins.verdict import Verdict, parse_verdict

__all__ = ["FunctionBackend", "ScriptedBackend", "ScriptedBackendError", "Step"]

Answer = Union[Verdict, str]
Responder = Callable[[Conversation], Answer | Awaitable[Answer]]
Step = Union[Answer, BaseException, Responder]


class ScriptedBackendError(AssertionError):
    """A ScriptedBackend was called more often, or less often, than its script says.

    Not a `GuardError`: a broken test script must fail the test, not trigger a fail mode."""


def _finish(answer: Answer, request: ClassificationRequest, name: str, start: float) -> Verdict:
    latency = (time.perf_counter() - start) * 1000
    prompt = request.prompt
    if isinstance(answer, Verdict):
        return answer.replace(
            role=answer.role or prompt.role,
            backend=answer.backend or name,
            latency_ms=answer.latency_ms if answer.latency_ms is not None else latency,
        )
    if isinstance(answer, str):
        return parse_verdict(
            answer, prompt.categories, role=prompt.role, backend=name, latency_ms=latency
        )
    raise TypeError(f"a test backend must answer with a Verdict or raw text, not {answer!r}")


def _is_async_callable(fn: object) -> bool:
    # An `async def` function, or an object whose class defines `async def __call__`.
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        inspect.getattr_static(type(fn), "__call__", None)
    )


async def _resolve(value: Answer | Awaitable[Answer]) -> Answer:
    if inspect.isawaitable(value):
        return await value
    return value


class FunctionBackend(Backend):
    """A backend whose verdict is `fn(conversation)`: a `Verdict` or raw model text.

    `fn` may be sync or async. Every request is recorded in `requests` (prompt rendered, so
    rendering errors surface exactly as with a model backend). `delay` simulates model latency.
    With a plain function and no delay nothing ever waits, so the Guard's sync methods call it
    inline (`can_classify_inline`) instead of via the background loop.
    """

    name = "function"

    def __init__(
        self,
        fn: Responder,
        *,
        name: str = "function",
        delay: float = 0.0,
        max_prompt_tokens: int | None = None,
    ) -> None:
        self._fn = fn
        self.name = name
        self.delay = delay
        self.max_prompt_tokens = max_prompt_tokens
        self.requests: list[ClassificationRequest] = []
        self.batch_sizes: list[int] = []
        self._sync_fn = not _is_async_callable(fn)

    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        self.batch_sizes.append(len(requests))
        for request in requests:
            _ = request.prompt  # render first: bad input fails here as it would with a model
        if self.delay:
            await asyncio.sleep(self.delay)
        verdicts = []
        for request in requests:
            start = time.perf_counter()
            self.requests.append(request)
            answer = await _resolve(self._fn(request.conversation))
            verdicts.append(_finish(answer, request, self.name, start))
        return verdicts

    def can_classify_inline(self) -> bool:
        return self._sync_fn and not self.delay

    def classify_batch_inline(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        self.batch_sizes.append(len(requests))
        for request in requests:
            _ = request.prompt
        verdicts = []
        for request in requests:
            start = time.perf_counter()
            self.requests.append(request)
            answer = self._fn(request.conversation)
            if inspect.isawaitable(answer):  # a plain function that returned an awaitable
                self._sync_fn = False  # from now on: the async path, with the hook's timeout
                answer = run_sync(_resolve(answer), api="acheck()")
            verdicts.append(_finish(answer, request, self.name, start))
        return verdicts

    def count_tokens(self, prompt: object) -> int | None:
        text = getattr(prompt, "text", "")
        # A rough, deterministic stand-in (about 4 characters a token) for budget tests.
        return len(text) // 4 + 1 if self.max_prompt_tokens is not None else None


@dataclass
class _Call:
    request: ClassificationRequest
    step: int


class ScriptedBackend(Backend):
    """A backend that answers from a script, one step per classified conversation.

    A step is a `Verdict`, raw model text (``"unsafe\\nS14"``), an exception to raise, or a
    function of the conversation. A call past the end of the script raises
    `ScriptedBackendError`; `assert_consumed()` (or leaving a ``with`` block) fails when steps
    were left unused.
    """

    name = "scripted"

    def __init__(self, steps: Iterable[Step], *, name: str = "scripted") -> None:
        self._steps = list(steps)
        self._next = 0
        self.name = name
        self.calls: list[_Call] = []

    @property
    def remaining(self) -> int:
        return len(self._steps) - self._next

    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        verdicts = []
        for request in requests:
            _ = request.prompt
            if self._next >= len(self._steps):
                raise ScriptedBackendError(
                    f"unexpected call #{self._next + 1}: the script has {len(self._steps)} steps "
                    f"(last turn role {request.prompt.role})"
                )
            step = self._steps[self._next]
            self.calls.append(_Call(request, self._next))
            self._next += 1
            start = time.perf_counter()
            if isinstance(step, BaseException):
                raise step
            answer = (
                step
                if isinstance(step, (Verdict, str))
                else await _resolve(step(request.conversation))
            )
            verdicts.append(_finish(answer, request, self.name, start))
        return verdicts

    def assert_consumed(self) -> None:
        if self.remaining:
            raise ScriptedBackendError(
                f"{self.remaining} scripted step(s) were never used ({self._next} of "
                f"{len(self._steps)} consumed)"
            )

    async def aclose(self) -> None:
        return None

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.assert_consumed()
