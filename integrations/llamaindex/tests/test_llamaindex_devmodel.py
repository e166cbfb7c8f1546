"""The integration on the real in-process backend (TransformersBackend) with the tiny dev model.

The dev model has random weights, so its verdicts mean nothing. These tests assert plumbing:
what reached the model (roles, rendered tool calls, images, listed categories) and that each
Decision was enforced as the policy says. Policies with thresholds at the extremes make the
outcome certain without faking the model: a threshold of 0.01 flags every score, 1.0 none.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from guard_plugins import Action, Category, Guard, GuardBlocked, Policy
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.callbacks import CallbackManager
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockFunctionCallingLLM, MockLLM
from llama_index.core.llms.llm import ToolSelection
from llamaindex_support import CodeInterpreterToolSpec, RecordingBackend, png_bytes

from guard_plugins_llamaindex import (
    GuardedFunctionAgent,
    GuardedReActAgent,
    LlamaGuardCallbackHandler,
    guard_query_engine,
)

pytestmark = pytest.mark.model

NEVER = {"threshold": 1.0}
ALWAYS = {"threshold": 0.01}


def dev_guard(backend: Any, **hooks: dict[str, Any]) -> tuple[Guard, RecordingBackend]:
    recording = RecordingBackend(backend)
    data: dict[str, Any] = {
        "user_input": NEVER,
        "assistant_output": NEVER,
        "tool_call": {**NEVER, "screen_code": False},
        "tool_result": NEVER,
    }
    for hook, settings in hooks.items():
        data[hook] = {**data[hook], **settings}
    return Guard(recording, Policy.from_dict(data), cache_size=0), recording


def scripted_code_call(code: str) -> tuple[MockFunctionCallingLLM, list[list[ChatMessage]]]:
    calls: list[list[ChatMessage]] = []

    def respond(messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        calls.append(list(messages))
        if messages[-1].role == "tool":
            return ChatMessage(role="assistant", content="Done.")
        selection = ToolSelection(
            tool_id="c1", tool_name="code_interpreter", tool_kwargs={"code": code}
        )
        return ChatMessage(
            role="assistant", content="", additional_kwargs={"tool_calls": [selection]}
        )

    return MockFunctionCallingLLM(response_generator=respond), calls


def code_writing(path: Path) -> str:
    return f"open({str(path)!r}, 'w').write('ran')"


async def test_flagged_tool_call_never_runs(dev_backend: Any, tmp_path: Path) -> None:
    guard, recording = dev_guard(dev_backend, tool_call=ALWAYS)
    target = tmp_path / "side_effect"
    llm, calls = scripted_code_call(code_writing(target))
    agent = GuardedFunctionAgent(
        tools=CodeInterpreterToolSpec().to_tool_list(), llm=llm, guard=guard
    )
    await agent.run(user_msg="write the file")
    assert not target.exists()
    refusal = calls[1][-1].content or ""
    assert refusal.startswith("The tool call was refused by the safety guard")
    (call_request,) = [
        r for r in recording.requests if r.conversation.turns()[-1].text.startswith("Tool call:")
    ]
    text = call_request.conversation.turns()[-1].text
    assert text.startswith("Tool call: code_interpreter\n```")
    assert code_writing(target) in text  # the code verbatim
    assert Category.S14 in call_request.prompt.categories
    assert (
        call_request.conversation.turns()[0].text == "write the file"
    )  # the user's turn as context


async def test_allowed_tool_call_runs(dev_backend: Any, tmp_path: Path) -> None:
    guard, recording = dev_guard(dev_backend)
    target = tmp_path / "side_effect"
    llm, _ = scripted_code_call(code_writing(target))
    agent = GuardedFunctionAgent(
        tools=CodeInterpreterToolSpec().to_tool_list(), llm=llm, guard=guard
    )
    await agent.run(user_msg="write the file")
    assert target.read_text() == "ran"
    roles = [r.prompt.role for r in recording.requests]
    # user turn, the call, its result, the final reply (the call turn has no prose)
    assert roles == ["User", "Agent", "User", "Agent"]


async def test_image_turn_reaches_the_model_and_tool_checks_keep_s14(
    dev_backend: Any, tmp_path: Path
) -> None:
    guard, recording = dev_guard(dev_backend)
    llm, _ = scripted_code_call("print(1)")
    agent = GuardedFunctionAgent(
        tools=CodeInterpreterToolSpec().to_tool_list(), llm=llm, guard=guard
    )
    message = ChatMessage(
        role="user", blocks=[ImageBlock(image=png_bytes()), TextBlock(text="run code on this")]
    )
    await agent.run(user_msg=message)
    user_check = recording.requests[0]
    assert user_check.prompt.image_count == 1
    assert Category.S14 not in user_check.prompt.categories  # the official image rule
    tool_check = recording.requests[1]
    assert tool_check.conversation.images == ()
    assert Category.S14 in tool_check.prompt.categories


async def test_query_engine_drops_flagged_nodes(dev_backend: Any) -> None:
    guard, recording = dev_guard(dev_backend, tool_result=ALWAYS)
    index = VectorStoreIndex.from_documents(
        [Document(text="Opening hours: 9 to 5."), Document(text="Parking is free.")],
        embed_model=MockEmbedding(embed_dim=8),
    )
    engine = guard_query_engine(
        index.as_query_engine(llm=MockLLM(), similarity_top_k=2), guard, check_nodes=True
    )
    response = await engine.aquery("When is it open?")
    assert response.source_nodes == []
    node_checks = [
        r
        for r in recording.requests
        if "Tool result (retriever):" in r.conversation.turns()[-1].text
    ]
    assert len(node_checks) == 2


def test_callback_handler_enforces_the_decision_it_records(dev_backend: Any) -> None:
    guard = Guard(RecordingBackend(dev_backend), Policy(tool_call={"screen_code": False}))
    handler = LlamaGuardCallbackHandler(guard)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    for prompt in ("hello", "what is the capital of France?", "tell me a joke", "ok"):
        before = len(handler.decisions)
        blocked: GuardBlocked | None = None
        try:
            response = llm.complete(prompt)
        except GuardBlocked as exc:
            blocked = exc
        if blocked is not None:
            assert not blocked.decision.allowed
            assert blocked.decision is handler.decisions[-1]
            continue
        for decision in handler.decisions[before:]:
            if not decision.allowed:  # only a refused reply passes, as the refusal
                assert decision.action is Action.REFUSE
                assert response.text == decision.refusal
        assert len(handler.decisions) == before + 2


async def test_react_agent_on_the_dev_model(dev_backend: Any, tmp_path: Path) -> None:
    guard, recording = dev_guard(dev_backend, tool_call=ALWAYS)
    target = tmp_path / "side_effect"
    code = code_writing(target)
    seen: list[list[ChatMessage]] = []

    def respond(messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        seen.append(list(messages))
        if len(seen) == 1:
            text = f'Thought: run it.\nAction: code_interpreter\nAction Input: {{"code": "{code}"}}'
        else:
            text = f"Thought: done.\nAnswer: {messages[-1].content}"
        return ChatMessage(role="assistant", content=text)

    agent = GuardedReActAgent(
        tools=CodeInterpreterToolSpec().to_tool_list(),
        llm=MockFunctionCallingLLM(response_generator=respond),
        guard=guard,
    )
    result = await agent.run(user_msg="write the file")
    assert not target.exists()
    assert "refused by the safety guard" in str(result)
    texts = [r.conversation.turns()[-1].text for r in recording.requests]
    assert "Thought: run it." in texts  # the prose, checked apart from the call
    assert any(t.startswith("Tool call: code_interpreter") and code in t for t in texts)
