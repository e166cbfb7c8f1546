"""Streaming output: released only after being checked, incrementally, stopped when unsafe."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator
from itertools import cycle
from typing import Any

import pytest
from guard_plugins import Conversation, Guard, GuardBlocked, Policy
from guard_plugins.testing import FunctionBackend
from langchain.agents import create_agent
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, AIMessageChunk, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableGenerator
from langchain_support import ToolCallingFakeModel, keyword_verdict

from guard_plugins_langchain import GuardRunnable

SENTENCES = [f"Sentence number {i} is perfectly harmless." for i in range(12)]
SAFE_REPLY = " ".join(SENTENCES)
UNSAFE_REPLY = " ".join([*SENTENCES[:4], "Now mix the bomb parts.", *SENTENCES[4:]])


class Watch:
    """A guard whose backend records every assessed reply prefix, and a token counter."""

    def __init__(self, policy: Policy | None = None) -> None:
        self.assessed: list[str] = []
        self.backend = FunctionBackend(self.verdict)
        self.guard = Guard(self.backend, policy, cache_size=0)
        self.produced = 0
        watch = self

        class Tokens(BaseCallbackHandler):
            def on_llm_new_token(self, token: Any, **kwargs: Any) -> None:
                watch.produced += 1
                time.sleep(0.002)  # a model that takes time per token, as real ones do

        self.handler = Tokens()

    def verdict(self, conversation: Conversation) -> str:
        if conversation.assessed_role == "Agent":
            self.assessed.append(conversation.turns()[-1].text)
        return keyword_verdict(conversation)

    def covered(self, released: str) -> bool:
        return any(prefix.startswith(released.strip()) for prefix in self.assessed)


def model(reply: str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=cycle([reply]))


async def collect(runnable: Any, value: Any, call: str, watch: Watch) -> list[tuple[Any, int]]:
    """(chunk, tokens produced so far) for every chunk, asserting the safety invariant."""
    config: Any = {"callbacks": [watch.handler]}
    out: list[tuple[Any, int]] = []
    released = ""

    def see(chunk: Any) -> None:
        nonlocal released
        text = chunk if isinstance(chunk, str) else chunk.content
        meta = {} if isinstance(chunk, str) else chunk.response_metadata
        if "guard_plugins" not in meta and not text.startswith("I can't"):
            released += text
            # Invariant: every released character was inside a checked prefix.
            assert watch.covered(released), released
        out.append((chunk, watch.produced))

    if call == "sync":
        for chunk in runnable.stream(value, config):
            see(chunk)
    else:
        async for chunk in runnable.astream(value, config):
            see(chunk)
    return out


@pytest.mark.parametrize("call", ["sync", "async"])
@pytest.mark.parametrize("form", ["step", "wrap"])
async def test_safe_reply_streams_incrementally(call: str, form: str) -> None:
    watch = Watch()
    runnable = (
        model(SAFE_REPLY) | GuardRunnable.output(watch.guard, stream_min_chars=30)
        if form == "step"
        else GuardRunnable.wrap(model(SAFE_REPLY), watch.guard, stream_min_chars=30)
    )
    chunks = await collect(runnable, "hi", call, watch)
    assert "".join(c.content for c, _ in chunks) == SAFE_REPLY
    total = watch.produced
    first_release = chunks[0][1]
    assert first_release < total / 2  # released while the model was still streaming
    assert len(watch.assessed) > 3  # checked sentence by sentence, not once at the end


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_unsafe_reply_stops_the_stream_with_the_decision(call: str) -> None:
    watch = Watch()
    runnable = GuardRunnable.wrap(model(UNSAFE_REPLY), watch.guard, stream_min_chars=20)
    chunks = [c for c, _ in await collect(runnable, "hi", call, watch)]
    text = "".join(c.content for c in chunks[:-1])
    assert "bomb" not in text
    assert text.strip()  # the safe start was released
    assert SENTENCES[0] in text
    last = chunks[-1]
    assert last.content == "I can't share that response."
    assert last.response_metadata["guard_plugins"]["categories"] == ["S9"]
    assert SENTENCES[-1] not in text  # the stream stopped


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_blocking_policy_raises_mid_stream(call: str) -> None:
    watch = Watch(Policy.from_dict({"assistant_output": {"action": "block"}}))
    runnable = model(UNSAFE_REPLY) | GuardRunnable.output(watch.guard, stream_min_chars=20)
    received: list[str] = []
    with pytest.raises(GuardBlocked):
        if call == "sync":
            for chunk in runnable.stream("hi"):
                received.append(chunk.content)
        else:
            async for chunk in runnable.astream("hi"):
                received.append(chunk.content)
    assert "bomb" not in "".join(received)


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_string_streams_keep_their_shape(call: str) -> None:
    watch = Watch()
    runnable = GuardRunnable.wrap(model(UNSAFE_REPLY) | StrOutputParser(), watch.guard)
    chunks = [c for c, _ in await collect(runnable, "hi", call, watch)]
    assert all(isinstance(c, str) for c in chunks)
    assert chunks[-1] == "I can't share that response."


def _tool_call_stream(_: Iterator[Any]) -> Iterator[AIMessageChunk]:
    yield AIMessageChunk(content="Let me clean that up for you. ")
    yield AIMessageChunk(content="Running it now.", id="m1")
    yield AIMessageChunk(
        content="",
        tool_call_chunks=[
            {"name": "python", "args": '{"code": "import shutil; ', "id": "t1", "index": 0}
        ],
    )
    yield AIMessageChunk(
        content="",
        tool_call_chunks=[{"name": None, "args": "shutil.rmtree('/')\"}", "id": None, "index": 0}],
    )


async def _atool_call_stream(_: AsyncIterator[Any]) -> AsyncIterator[AIMessageChunk]:
    for chunk in _tool_call_stream(iter(())):
        yield chunk


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_tool_call_chunks_wait_for_the_final_check(call: str) -> None:
    watch = Watch()
    upstream = RunnableGenerator(_tool_call_stream, _atool_call_stream)
    runnable = upstream | GuardRunnable.output(watch.guard, stream_min_chars=10)
    chunks = [c for c, _ in await collect(runnable, "hi", call, watch)]
    assert not any(c.tool_call_chunks for c in chunks)  # the S14 call never left
    assert chunks[-1].content.startswith("I can't share")
    assert chunks[-1].response_metadata["guard_plugins"]["categories"] == ["S14"]


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_agent_state_streams(call: str, guard: Guard) -> None:
    def agent(reply: str) -> Any:
        return create_agent(ToolCallingFakeModel(responses=[AIMessage(reply, id="r1")]), [])

    safe = GuardRunnable.wrap(agent("Hello!"), guard)
    unsafe = GuardRunnable.wrap(agent("The bomb goes here."), guard)
    payload = {"messages": [HumanMessage("hi")]}
    if call == "sync":
        states = list(safe.stream(payload))
        refused = list(unsafe.stream(payload))
        final = unsafe.invoke(payload)
    else:
        states = [s async for s in safe.astream(payload)]
        refused = [s async for s in unsafe.astream(payload)]
        final = await unsafe.ainvoke(payload)
    # Pregel streams node updates ({"model": {"messages": [...]}}): the reply is replaced where
    # it sits, keeping its id.
    assert "Hello!" in str(states)
    assert all("bomb" not in str(s) for s in refused)
    (reply,) = refused[-1]["model"]["messages"]
    assert (reply.id, reply.content) == ("r1", "I can't share that response.")
    assert (final["messages"][-1].id, final["messages"][-1].content) == (
        "r1",
        "I can't share that response.",
    )
