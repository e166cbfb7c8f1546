"""Suite ``streaming``: what screening a streamed reply costs the reader.

A chat model streams a reply of several sentences word by word at a fixed pace (the model's
decode speed); the guard is the real `Guard` over `FunctionBackend(delay=...)` (a check of fixed
cost, like the agent suite). Three ways to consume it, alternated, medians over repetitions:

- ``unguarded``: the model's own stream;
- ``incremental``: ``model | GuardRunnable.output(guard)`` streamed — chunks are released once
  the text containing them has been checked (checks at sentence boundaries, over the reply so
  far; only the unchecked tail is held back), then one final check of the complete reply;
- ``whole_reply``: the same chain invoked without streaming — the reply is released only after
  one check of all of it (what a non-streaming guard gives a streaming UI).

Reported per way: time to the first released chunk, time to the last one, and the checks made.
Needs ``langchain-core`` and ``guard_plugins_langchain`` (installed or from the checkout).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from guard_plugins.bench.adapters_suite import import_integration
from guard_plugins.bench.measure import median
from guard_plugins.bench.settings import BenchContext
from guard_plugins.guard import Guard
from guard_plugins.testing import FunctionBackend

__all__ = ["REPLY", "run_streaming_suite"]

USER_TEXT = "How should I prepare for my first half marathon?"
REPLY = (
    "Start about twelve weeks out with three or four easy runs a week. "
    "Add one longer run every weekend and stretch it by a kilometre or two each time. "
    "Keep most runs at a pace where you can still talk in full sentences. "
    "Practise drinking and eating on the long runs, so race day holds no surprises. "
    "In the last ten days cut the distance back and sleep well. "
    "On the day, start slower than you think you should and enjoy the second half."
)
#: full-run pace: 40 words per second is a model decoding ~50 tokens/s
WORD_S = 0.025
WAYS = ("unguarded", "incremental", "whole_reply")


def run_streaming_suite(ctx: BenchContext) -> dict[str, Any]:
    core, origin = import_integration("langchain_core", "langchain")
    adapter, adapter_origin = import_integration("guard_plugins_langchain", "langchain")
    if core is None or adapter is None:
        return {"skipped": f"langchain integration unavailable ({origin}; {adapter_origin})"}
    scale = ctx.settings.agent_time_scale
    word_s, check_s = WORD_S * scale, ctx.settings.guard_check_s * scale
    return asyncio.run(_measure(adapter, word_s, check_s, ctx.settings.agent_repetitions))


async def _measure(adapter: Any, word_s: float, check_s: float, repetitions: int) -> dict[str, Any]:
    from langchain_core.messages import HumanMessage

    checks = 0

    def answer(_: Any) -> str:
        nonlocal checks
        checks += 1
        return "safe"

    guard = Guard(FunctionBackend(answer, delay=check_s), cache_size=0)
    model = _paced_model(word_s)
    chain = model | adapter.GuardRunnable.output(guard)
    messages = [HumanMessage(USER_TEXT)]
    runs: dict[str, list[tuple[float, float, int]]] = {way: [] for way in WAYS}
    words = len(_words(REPLY))
    for repetition in range(repetitions):
        order = WAYS[repetition % 3:] + WAYS[: repetition % 3]
        for way in order:
            checks_before = checks
            if way == "whole_reply":
                start = time.perf_counter()
                reply = await chain.ainvoke(messages)
                first = last = time.perf_counter() - start
                text = reply.content
            else:
                runnable = model if way == "unguarded" else chain
                first, last, text = await _consume(runnable.astream(messages))
            if text != REPLY:
                raise RuntimeError(f"{way}: the reply was changed or cut ({text[:60]!r}...)")
            runs[way].append((first, last, checks - checks_before))
    await guard.aclose()
    plain_last = median([r[1] for r in runs["unguarded"]])
    result: dict[str, Any] = {
        "word_ms": round(word_s * 1000, 2),
        "guard_check_ms": round(check_s * 1000, 2),
        "reply_words": words,
        "reply_chars": len(REPLY),
        "repetitions": repetitions,
    }
    for way, samples in runs.items():
        first = median([r[0] for r in samples])
        last = median([r[1] for r in samples])
        result[way] = {
            "first_chunk_ms": round(first * 1000, 1),
            "last_chunk_ms": round(last * 1000, 1),
            "checks": samples[-1][2],
            "total_ratio_to_unguarded": round(last / plain_last, 3) if plain_last else None,
        }
    return result


async def _consume(stream: AsyncIterator[Any]) -> tuple[float, float, str]:
    start = time.perf_counter()
    first: float | None = None
    text = ""
    async for chunk in stream:
        if first is None:
            first = time.perf_counter() - start
        text += chunk.content if isinstance(chunk.content, str) else ""
    return first or 0.0, time.perf_counter() - start, text


def _words(text: str) -> list[str]:
    return re.findall(r"\S+\s*", text)


def _paced_model(word_s: float) -> Any:
    """A LangChain chat model that streams `REPLY` one word every `word_s` seconds."""
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import AIMessage, AIMessageChunk
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, ChatResult

    class PacedChatModel(BaseChatModel):
        pace_s: float

        @property
        def _llm_type(self) -> str:
            return "paced-fake"

        def _generate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                      **kwargs: Any) -> ChatResult:
            time.sleep(self.pace_s * len(_words(REPLY)))
            return ChatResult(generations=[ChatGeneration(message=AIMessage(REPLY))])

        async def _agenerate(self, messages: Any, stop: Any = None, run_manager: Any = None,
                             **kwargs: Any) -> ChatResult:
            # Paced exactly like the stream (timer granularity adds up over the words).
            text = "".join([str(c.message.content) async for c in self._astream(messages)])
            return ChatResult(generations=[ChatGeneration(message=AIMessage(text))])

        async def _astream(self, messages: Any, stop: Any = None, run_manager: Any = None,
                           **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
            for word in _words(REPLY):
                await asyncio.sleep(self.pace_s)
                yield ChatGenerationChunk(message=AIMessageChunk(content=word))

    return PacedChatModel(pace_s=word_s)
