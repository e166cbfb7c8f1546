"""The async methods' direct path (`MicroBatcher.classify_now`: a lone check with a backend that
answers at once goes straight to it, without a timeout scope) gives the Decisions the queued
path gives, falls back to the hook's timeout when the backend waits after all, and leaves the
micro-batcher's semantics (batches, cancellation, failures) as they were."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import pytest

from guard_plugins import Conversation, Decision, Guard, Hook, Policy
from guard_plugins.backends.base import ClassificationRequest
from guard_plugins.testing import FunctionBackend
from guard_plugins.verdict import Verdict
from tests.test_guard_sync_inline import ANSWERS, CONTENT, POLICIES, _raise_or, comparable


class Counting(FunctionBackend):
    """A FunctionBackend that counts its async calls; `inline=False` hides its inline ability,
    so checks take the batcher's ordinary direct call (the path before `classify_now`)."""

    def __init__(self, fn: Any, *, inline: bool = True, **kwargs: Any) -> None:
        super().__init__(fn, **kwargs)
        self.inline = inline
        self.async_calls = 0

    def can_classify_inline(self) -> bool:
        return self.inline and super().can_classify_inline()

    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        self.async_calls += 1
        return await super().classify_batch(requests)


async def acheck(guard: Guard, hook: Hook) -> Decision:
    content = CONTENT[hook]
    if hook is Hook.TOOL_CALL:
        return await guard.acheck_tool_call(*content)
    if hook is Hook.TOOL_RESULT:
        return await guard.acheck_tool_result(*content)
    return await guard.acheck(hook, content)


@pytest.mark.parametrize("hook", list(Hook))
@pytest.mark.parametrize("answer", ANSWERS, ids=repr)
@pytest.mark.parametrize("policy", POLICIES, ids=repr)
def test_direct_async_decisions_equal_the_queued_path(
    hook: Hook, answer: Any, policy: dict[str, Any]
) -> None:
    def make(inline: bool) -> tuple[Guard, Counting]:
        backend = Counting(lambda c: _raise_or(answer), inline=inline)
        return Guard(backend, Policy.from_dict(policy), cache_size=0), backend

    async def main() -> tuple[Decision, Decision, Decision]:
        fast, fast_backend = make(True)
        plain, _ = make(False)
        queued, _ = make(True)
        with queued.batcher.gathering():  # busy batcher: the check queues and is drained
            waiting = asyncio.ensure_future(acheck(queued, hook))
        results = (await acheck(fast, hook), await acheck(plain, hook), await waiting)
        assert fast.batcher.batches == fast_backend.async_calls
        return results

    fast, plain, queued = asyncio.run(main())
    assert comparable(fast) == comparable(plain) == comparable(queued)


def test_concurrent_async_checks_are_still_batched() -> None:
    backend = Counting(lambda c: "unsafe\nS1" if "bad" in c.turns()[-1].text else "safe")
    guard = Guard(backend, cache_size=0)

    async def main() -> list[Decision]:
        texts = [f"{'bad' if i % 2 else 'good'} {i}" for i in range(6)]
        decisions = list(await asyncio.gather(*(guard.acheck_input(t) for t in texts)))
        state = guard.batcher._state(asyncio.get_running_loop())
        assert not state.draining and not state.pending
        return decisions

    decisions = asyncio.run(main())
    assert [d.allowed for d in decisions] == [i % 2 == 0 for i in range(6)]
    # Each gathered task starts its check in turn, and none waits: every one finds the batcher
    # idle and is served at once, as the batcher's direct call did.
    assert backend.batch_sizes == [1] * 6
    batched = asyncio.run(guard.acheck_many(Hook.USER_INPUT, ["a", "b", "c"]))
    assert [d.allowed for d in batched] == [True] * 3
    assert backend.batch_sizes[-1] == 3  # acheck_many still reaches the backend as one batch


def test_a_backend_that_waits_after_all_is_held_to_the_hooks_timeout() -> None:
    async def answer(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "unsafe\nS1"

    policy = Policy.from_dict({"user_input": {"timeout": 0.05}})

    async def main() -> tuple[Decision, Decision, Decision]:
        slow = Guard(FunctionBackend(lambda c: answer(0.5)), policy, cache_size=0)
        quick = Guard(FunctionBackend(lambda c: answer(0.0)), policy, cache_size=0)
        assert slow.backend.can_classify_inline()  # a plain function: it looks inline
        timed_out = await slow.acheck_input("hi")
        again = await slow.acheck_input("hi")  # the batcher was released
        return timed_out, again, await quick.acheck_input("hi")

    timed_out, again, quick = asyncio.run(main())
    assert timed_out.rule == again.rule == "fail_closed:TimeoutError"
    assert timed_out.latency_ms is not None and timed_out.latency_ms < 400
    assert quick.rule == "category:S1"


def test_a_cancelled_check_releases_the_batcher() -> None:
    async def main() -> Decision:
        entered = asyncio.Event()

        async def answer() -> str:
            entered.set()
            await asyncio.sleep(10)
            return "safe"

        def respond(conversation: Conversation) -> Any:
            return answer() if "wait" in conversation.turns()[-1].text else "safe"

        guard = Guard(FunctionBackend(respond), cache_size=0)
        task = asyncio.ensure_future(guard.acheck_input("wait"))
        await entered.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        state = guard.batcher._state(asyncio.get_running_loop())
        assert not state.draining and not state.pending
        return await asyncio.wait_for(guard.acheck_input("next"), 5)

    assert asyncio.run(main()).allowed


def test_cache_hits_and_misses_are_counted_as_before() -> None:
    guard = Guard(FunctionBackend(lambda c: "safe"))

    async def main() -> tuple[Decision, Decision]:
        return await guard.acheck_input("same"), await guard.acheck_input("same")

    first, second = asyncio.run(main())
    assert (first.cached, second.cached) == (False, True)
    assert (guard.cache.hits, guard.cache.misses) == (1, 1)
    assert comparable(first) | {"cached": True} == comparable(second)


def test_conversation_errors_surface_as_before() -> None:
    guard = Guard(FunctionBackend(lambda c: "safe"), cache_size=0)
    empty = Conversation.from_openai([{"role": "system", "content": "x"}])
    with pytest.raises(Exception) as sync_error:
        guard.check_input(empty)
    with pytest.raises(Exception) as async_error:
        asyncio.run(guard.acheck_input(empty))
    assert type(sync_error.value) is type(async_error.value)
