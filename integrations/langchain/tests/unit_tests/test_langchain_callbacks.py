"""LlamaGuardCallbackHandler: monitoring and enforcement from the callback stream."""

from __future__ import annotations

import logging

import pytest
from guard_plugins import Guard, GuardBlocked, Hook
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool

from guard_plugins_langchain import LlamaGuardCallbackHandler


def model(reply: str = "fine") -> FakeMessagesListChatModel:
    return FakeMessagesListChatModel(responses=[AIMessage(reply)])


def test_monitoring_logs_and_records_without_blocking(
    guard: Guard, caplog: pytest.LogCaptureFixture
) -> None:
    handler = LlamaGuardCallbackHandler(guard)
    caplog.set_level(logging.WARNING, "guard_plugins_langchain")
    reply = model("the bomb is ready").invoke([HumanMessage("a bomb?")], {"callbacks": [handler]})
    assert reply.content == "the bomb is ready"
    assert [(d.hook, d.allowed) for d in handler.decisions] == [
        (Hook.USER_INPUT, False),
        (Hook.ASSISTANT_OUTPUT, False),
    ]
    assert "block at user_input" in caplog.text
    assert "bomb" not in caplog.text  # content never logged


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_enforcing_blocks_before_the_model_runs(call: str, guard: Guard) -> None:
    handler = LlamaGuardCallbackHandler(guard, enforce=True)
    assert handler.raise_error
    fake = model()
    with pytest.raises(GuardBlocked):
        if call == "sync":
            fake.invoke("a bomb?", {"callbacks": [handler]})
        else:
            await fake.ainvoke("a bomb?", {"callbacks": [handler]})
    assert fake.i == 0  # the model never produced anything


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_enforcing_blocks_replies_and_tool_runs(call: str, guard: Guard) -> None:
    handler = LlamaGuardCallbackHandler(guard, enforce=True)
    config = {"callbacks": [handler]}
    with pytest.raises(GuardBlocked) as info:
        if call == "sync":
            model("the bomb is ready").invoke("hi", config)
        else:
            await model("the bomb is ready").ainvoke("hi", config)
    assert info.value.decision.hook is Hook.ASSISTANT_OUTPUT

    ran: list[str] = []

    @tool
    def shell(command: str) -> str:
        """Run a command."""
        ran.append(command)
        return "ok"

    with pytest.raises(GuardBlocked):
        if call == "sync":
            shell.invoke({"command": "rm -rf /"}, config)
        else:
            await shell.ainvoke({"command": "rm -rf /"}, config)
    assert ran == []
    assert shell.invoke({"command": "ls"}, config) == "ok"


def test_llm_prompts_and_switches(guard: Guard, backend: object) -> None:
    handler = LlamaGuardCallbackHandler(guard, check_output=False, check_tools=False)
    model().invoke("hello", {"callbacks": [handler]})
    assert [d.hook for d in handler.decisions] == [Hook.USER_INPUT]
    assert "monitoring" in repr(handler)
