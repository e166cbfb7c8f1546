"""LlamaGuardCallbackHandler on real LlamaIndex LLMs (MockLLM, MockFunctionCallingLLM)."""

from __future__ import annotations

from typing import Any

import pytest
from guard_plugins import Action, GuardBlocked, Hook, Policy
from llama_index.core import Settings
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation.events.base import BaseEvent
from llama_index.core.llms import MockFunctionCallingLLM, MockLLM
from llama_index.core.llms.llm import ToolSelection
from llamaindex_support import Recorder, make_guard, png_bytes

from guard_plugins_llamaindex import GuardDecisionEvent, LlamaGuardCallbackHandler


def _replying(text: str, **kwargs: Any) -> MockFunctionCallingLLM:
    def respond(messages: Any, **_: Any) -> ChatMessage:
        return ChatMessage(role="assistant", content=text, **kwargs)

    return MockFunctionCallingLLM(response_generator=respond)


def _handler(policy: Any = None, **options: Any) -> tuple[LlamaGuardCallbackHandler, Recorder]:
    guard, recorder = make_guard(policy)
    return LlamaGuardCallbackHandler(guard, **options), recorder


def test_complete_prompt_is_checked() -> None:
    handler, recorder = _handler()
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    with pytest.raises(GuardBlocked) as info:
        llm.complete("how do I commit CRIME")
    assert info.value.decision.hook is Hook.USER_INPUT
    assert recorder.assessed == [("User", "how do I commit CRIME")]
    assert llm.complete("hello").text == "hello"


def test_chat_messages_are_checked_once_despite_nested_events() -> None:
    handler, recorder = _handler()
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    # MockLLM.chat calls complete(): two LLM events, one check per side.
    llm.chat([ChatMessage(role="user", content="hi there")])
    assert [role for role, _ in recorder.assessed] == ["User", "Agent"]
    with pytest.raises(GuardBlocked):
        llm.chat([ChatMessage(role="user", content="HATE them")])


async def test_async_chat_nested_three_events_one_check_each() -> None:
    handler, recorder = _handler()
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    # achat → chat → complete: three LLM events.
    await llm.achat([ChatMessage(role="user", content="hi")])
    assert [role for role, _ in recorder.assessed] == ["User", "Agent"]
    with pytest.raises(GuardBlocked):
        await llm.acomplete("CRIME")


def test_settings_callback_manager_route() -> None:
    handler, recorder = _handler()
    Settings.callback_manager = CallbackManager([handler])
    llm = MockLLM()  # picks up the global handlers
    with pytest.raises(GuardBlocked):
        llm.complete("CRIME")
    assert recorder.assessed


def test_refused_reply_is_replaced_in_place() -> None:
    handler, _ = _handler()
    llm = _replying("HATE filled reply")
    llm.callback_manager = CallbackManager([handler])
    response = llm.chat([ChatMessage(role="user", content="tell me something")])
    decision = handler.decisions[-1]
    assert decision.action is Action.REFUSE
    assert response.message.content == decision.refusal


def test_blocked_reply_raises() -> None:
    handler, _ = _handler({"assistant_output": {"action": "block"}})
    llm = _replying("HATE filled reply")
    llm.callback_manager = CallbackManager([handler])
    with pytest.raises(GuardBlocked) as info:
        llm.chat([ChatMessage(role="user", content="tell me something")])
    assert info.value.decision.hook is Hook.ASSISTANT_OUTPUT


def test_streamed_reply_raises_at_end() -> None:
    handler, _ = _handler()
    llm = _replying("HATE filled reply")
    llm.callback_manager = CallbackManager([handler])
    seen: list[str | None] = []

    def consume() -> None:
        for chunk in llm.stream_chat([ChatMessage(role="user", content="go")]):
            seen.append(chunk.delta)

    with pytest.raises(GuardBlocked):
        consume()
    # The text went out before the end event: the handler can only raise afterwards.
    assert seen == ["HATE filled reply"]


def test_proposed_tool_calls_are_checked() -> None:
    handler, recorder = _handler()
    call = ToolSelection(tool_id="1", tool_name="python", tool_kwargs={"code": "EVIL()"})
    llm = _replying("", additional_kwargs={"tool_calls": [call]})
    llm.callback_manager = CallbackManager([handler])
    with pytest.raises(GuardBlocked) as info:
        llm.chat([ChatMessage(role="user", content="run it")])
    assert info.value.decision.hook is Hook.TOOL_CALL
    assert info.value.decision.codes == ("S14",)
    assert any(text.startswith("Tool call: python") for text in recorder.texts())


def test_tool_result_input_checked_at_tool_result() -> None:
    handler, _ = _handler()
    llm = _replying("ok")
    llm.callback_manager = CallbackManager([handler])
    messages = [
        ChatMessage(role="user", content="read the page"),
        ChatMessage(
            role="assistant",
            content="",
            additional_kwargs={
                "tool_calls": [ToolSelection(tool_id="1", tool_name="web", tool_kwargs={})]
            },
        ),
        ChatMessage(
            role="tool", content="CRIME instructions", additional_kwargs={"tool_call_id": "1"}
        ),
    ]
    with pytest.raises(GuardBlocked) as info:
        llm.chat(messages)
    assert info.value.decision.hook is Hook.TOOL_RESULT


def test_monitoring_only_never_interferes() -> None:
    handler, _ = _handler(enforce=False)
    llm = _replying("HATE reply")
    llm.callback_manager = CallbackManager([handler])
    response = llm.chat([ChatMessage(role="user", content="CRIME")])
    assert response.message.content == "HATE reply"
    assert [d.allowed for d in handler.decisions] == [False, False]


def test_policy_monitor_mode() -> None:
    guard, _ = make_guard(Policy(monitor=True))
    handler = LlamaGuardCallbackHandler(guard)
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    assert llm.complete("CRIME").text == "CRIME"
    assert all(d.allowed and not d.enforced for d in handler.decisions)
    assert handler.decisions[0].action is Action.BLOCK


def test_image_blocks_reach_the_guard() -> None:
    handler, recorder = _handler()
    llm = _replying("a red square")
    llm.callback_manager = CallbackManager([handler])
    llm.chat(
        [
            ChatMessage(
                role="user", blocks=[ImageBlock(image=png_bytes()), TextBlock(text="what is it")]
            )
        ]
    )
    assert recorder.images()[0] == 1


def test_decisions_land_in_llamaindex_traces(decision_events: list[BaseEvent]) -> None:
    handler, _ = _handler()
    llm = MockLLM(callback_manager=CallbackManager([handler]))
    llm.complete("hello")
    events = [e for e in decision_events if isinstance(e, GuardDecisionEvent)]
    assert [(e.hook, e.source, e.allowed) for e in events] == [
        ("user_input", "callback_handler", True),
        ("assistant_output", "callback_handler", True),
    ]
    assert "hello" not in repr(events[0].model_dump())  # no content in traces
