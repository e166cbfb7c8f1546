"""LlamaGuardMiddleware in real create_agent loops driven by scripted fake chat models."""

from __future__ import annotations

import asyncio
from itertools import cycle
from pathlib import Path
from typing import Annotated, Any

import pytest
from guard_plugins import Guard, GuardBlocked, Hook, Policy
from guard_plugins.testing import FunctionBackend
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import BaseTool, InjectedToolCallId, tool
from langchain_support import ToolCallingFakeModel, keyword_verdict
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from guard_plugins_langchain import LlamaGuardMiddleware

ABUSE = "import shutil; shutil.rmtree('/'); open(MARKER, 'w').write('abuse ran')"
BENIGN = "open(MARKER, 'w').write('benign ran')"


def python_tool(marker: Path) -> BaseTool:
    @tool
    def run_python(code: str) -> str:
        """Execute Python code and return what it printed."""
        # The side effect the test looks for: the tool writes the marker file when it runs.
        marker.write_text(code)
        return f"executed {len(code)} characters"

    return run_python


def scripted(*codes: str, final: str = "All done.") -> ToolCallingFakeModel:
    replies = [
        AIMessage("", tool_calls=[{"name": "run_python", "args": {"code": c}, "id": f"call{i}"}])
        for i, c in enumerate(codes)
    ]
    return ToolCallingFakeModel(responses=[*replies, AIMessage(final)])


async def run(agent: Any, call: str, payload: Any, **kwargs: Any) -> dict[str, Any]:
    if call == "sync":
        return agent.invoke(payload, **kwargs)  # type: ignore[no-any-return]
    return await agent.ainvoke(payload, **kwargs)  # type: ignore[no-any-return]


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_s14_code_never_executes_and_the_agent_finishes(
    call: str, guard: Guard, tmp_path: Path
) -> None:
    marker = tmp_path / "marker.txt"
    agent = create_agent(
        scripted(ABUSE), [python_tool(marker)], middleware=[LlamaGuardMiddleware(guard)]
    )
    state = await run(agent, call, {"messages": [HumanMessage("free some disk space")]})
    assert not marker.exists()  # the abusive code never ran
    refusal = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert refusal.status == "error"
    assert refusal.tool_call_id == "call0"
    assert "S14" in refusal.text
    assert refusal.response_metadata["guard_plugins"]["hook"] == "tool_call"
    assert state["messages"][-1].content == "All done."  # the agent got the refusal and finished


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_benign_code_runs(call: str, guard: Guard, tmp_path: Path) -> None:
    marker = tmp_path / "marker.txt"
    agent = create_agent(
        scripted(BENIGN), [python_tool(marker)], middleware=[LlamaGuardMiddleware(guard)]
    )
    state = await run(agent, call, {"messages": [HumanMessage("write a file")]})
    assert marker.read_text() == BENIGN
    tool_message = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert tool_message.status == "success"


async def test_tool_calls_are_checked_with_the_user_turn_as_context(
    guard: Guard, backend: FunctionBackend, tmp_path: Path
) -> None:
    agent = create_agent(
        scripted(BENIGN), [python_tool(tmp_path / "m")], middleware=[LlamaGuardMiddleware(guard)]
    )
    await agent.ainvoke({"messages": [HumanMessage("write a file")]})
    hooks = [r.conversation for r in backend.requests]
    tool_call = next(c for c in hooks if "Tool call: run_python" in c.turns()[-1].text)
    assert [t.role for t in tool_call.turns()] == ["User", "Agent"]
    assert "```" in tool_call.turns()[-1].text  # code fenced verbatim


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_unsafe_user_turn_ends_the_run_with_a_refusal(
    call: str, refusing_guard: Guard, tmp_path: Path
) -> None:
    model = scripted(BENIGN)
    agent = create_agent(
        model, [python_tool(tmp_path / "m")], middleware=[LlamaGuardMiddleware(refusing_guard)]
    )
    state = await run(agent, call, {"messages": [HumanMessage("how do I build a bomb")]})
    assert [m.type for m in state["messages"]] == ["human", "ai"]
    assert state["messages"][-1].content == "I can't help with that request."
    assert model.i == 0  # the model was never called


async def test_blocked_user_turn_raises_or_ends(guard: Guard, tmp_path: Path) -> None:
    tools = [python_tool(tmp_path / "m")]
    agent = create_agent(scripted(BENIGN), tools, middleware=[LlamaGuardMiddleware(guard)])
    with pytest.raises(GuardBlocked) as info:
        await agent.ainvoke({"messages": [HumanMessage("bomb")]})
    assert info.value.decision.hook is Hook.USER_INPUT
    quiet = create_agent(
        scripted(BENIGN), tools, middleware=[LlamaGuardMiddleware(guard, raise_on_block=False)]
    )
    state = quiet.invoke({"messages": [HumanMessage("bomb")]})
    assert state["messages"][-1].content == "I can't help with that request."


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_unsafe_reply_is_replaced_keeping_its_id(call: str, guard: Guard) -> None:
    model = ToolCallingFakeModel(responses=[AIMessage("Here is the bomb recipe.", id="reply-1")])
    agent = create_agent(model, [], middleware=[LlamaGuardMiddleware(guard)])
    state = await run(agent, call, {"messages": [HumanMessage("hi")]})
    reply = state["messages"][-1]
    assert (reply.id, reply.content) == ("reply-1", "I can't share that response.")
    assert len(state["messages"]) == 2


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_tool_results_are_withheld_before_the_model_sees_them(
    call: str, guard: Guard
) -> None:
    @tool
    def fetch(url: str) -> str:
        """Fetch a page."""
        return "leaked: credit card dump 4111..."

    model = ToolCallingFakeModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "fetch", "args": {"url": "x"}, "id": "f1"}]),
            AIMessage("Nothing useful there."),
        ]
    )
    agent = create_agent(model, [fetch], middleware=[LlamaGuardMiddleware(guard)])
    state = await run(agent, call, {"messages": [HumanMessage("read x")]})
    result = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert result.status == "error"
    assert "4111" not in result.text
    assert "withheld" in result.text


def test_streaming_messages_leak_without_stream_safe_and_not_with_it(guard: Guard) -> None:
    def tokens(middleware: LlamaGuardMiddleware) -> list[str]:
        model = GenericFakeChatModel(messages=cycle(["Mix the bomb parts carefully."]))
        agent = create_agent(model, [], middleware=[middleware])
        return [
            str(chunk.content)
            for chunk, _ in agent.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages")
        ]

    # The documented hazard: tokens leave before after_model can replace the reply.
    assert "bomb" in "".join(tokens(LlamaGuardMiddleware(guard)))
    safe = tokens(LlamaGuardMiddleware(guard, stream_safe=True))
    assert safe == ["I can't share that response."]


async def test_stream_safe_async_and_safe_replies_still_arrive(guard: Guard) -> None:
    model = GenericFakeChatModel(messages=cycle(["A perfectly fine answer."]))
    agent = create_agent(model, [], middleware=[LlamaGuardMiddleware(guard, stream_safe=True)])
    chunks = [
        c
        async for c, _ in agent.astream({"messages": [HumanMessage("hi")]}, stream_mode="messages")
    ]
    assert [c.content for c in chunks] == ["A perfectly fine answer."]


async def test_speculative_model_call_is_cancelled_when_the_input_is_refused() -> None:
    backend = FunctionBackend(keyword_verdict, delay=0.05)
    guard = Guard(backend, Policy.from_dict({"user_input": {"action": "refuse"}}), cache_size=0)
    seen: dict[str, bool] = {"started": False, "cancelled": False}

    class SlowModel(ToolCallingFakeModel):
        async def _agenerate(self, *args: Any, **kwargs: Any) -> Any:
            seen["started"] = True
            try:
                await asyncio.sleep(5)
            except asyncio.CancelledError:
                seen["cancelled"] = True
                raise
            return await super()._agenerate(*args, **kwargs)

    agent = create_agent(
        SlowModel(responses=[AIMessage("never seen")]),
        [],
        middleware=[LlamaGuardMiddleware(guard, speculative=True)],
    )
    state = await asyncio.wait_for(agent.ainvoke({"messages": [HumanMessage("bomb")]}), 2)
    assert state["messages"][-1].content == "I can't help with that request."
    assert seen == {"started": True, "cancelled": True}


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_speculative_allowed_input_runs_normally(
    call: str, guard: Guard, tmp_path: Path
) -> None:
    marker = tmp_path / "m"
    agent = create_agent(
        scripted(BENIGN),
        [python_tool(marker)],
        middleware=[LlamaGuardMiddleware(guard, speculative=True)],
    )
    state = await run(agent, call, {"messages": [HumanMessage("write")]})
    assert marker.exists()
    assert state["messages"][-1].content == "All done."


async def test_require_approval_through_interrupt(backend: FunctionBackend, tmp_path: Path) -> None:
    policy = Policy.from_dict({"tool_call": {"actions": {"S14": "require_approval"}}})
    guard = Guard(backend, policy)
    marker = tmp_path / "m"
    agent = create_agent(
        scripted(ABUSE),
        [python_tool(marker)],
        middleware=[LlamaGuardMiddleware(guard, approval="interrupt")],
        checkpointer=InMemorySaver(),
    )
    config: Any = {"configurable": {"thread_id": "t1"}}
    first = await agent.ainvoke({"messages": [HumanMessage("clean")]}, config)
    (pending,) = first["__interrupt__"]
    assert pending.value["type"] == "guard_plugins.approval"
    assert pending.value["decision"]["categories"] == ["S14"]
    assert not marker.exists()
    denied = await agent.ainvoke(Command(resume=False), config)
    assert not marker.exists()
    refusal = next(m for m in denied["messages"] if isinstance(m, ToolMessage))
    assert refusal.status == "error"

    approving = create_agent(
        scripted(ABUSE),
        [python_tool(marker)],
        middleware=[LlamaGuardMiddleware(guard, approval="interrupt")],
        checkpointer=InMemorySaver(),
    )
    approving.invoke({"messages": [HumanMessage("clean")]}, config)
    approving.invoke(Command(resume={"approved": True}), config)
    assert marker.exists()  # a human approved it


def test_monitor_mode_lets_everything_through(backend: FunctionBackend, tmp_path: Path) -> None:
    guard = Guard(backend, Policy(monitor=True))
    marker = tmp_path / "m"
    agent = create_agent(
        scripted(ABUSE), [python_tool(marker)], middleware=[LlamaGuardMiddleware(guard)]
    )
    agent.invoke({"messages": [HumanMessage("bomb")]})
    assert marker.exists()
    assert any("S14" in r.prompt.text for r in backend.requests)


def test_custom_name_allows_two_instances(guard: Guard) -> None:
    first = LlamaGuardMiddleware(guard, check_output=False, name="input_guard")
    second = LlamaGuardMiddleware(guard, check_input=False, name="output_guard")
    model = ToolCallingFakeModel(responses=[AIMessage("hello")])
    state = create_agent(model, [], middleware=[first, second]).invoke(
        {"messages": [("user", "hi")]}
    )
    assert state["messages"][-1].content == "hello"


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_tool_results_inside_commands_are_checked(call: str, guard: Guard) -> None:

    @tool
    def lookup(query: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command[Any]:
        """Look something up."""
        message = ToolMessage("credit card dump: 4111 1111", tool_call_id=tool_call_id)
        return Command(update={"messages": [message]})

    model = ToolCallingFakeModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "lookup", "args": {"query": "x"}, "id": "q1"}]),
            AIMessage("Nothing to share."),
        ]
    )
    agent = create_agent(model, [lookup], middleware=[LlamaGuardMiddleware(guard)])
    state = await run(agent, call, {"messages": [HumanMessage("look up x")]})
    result = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert result.status == "error"
    assert "4111" not in result.text
