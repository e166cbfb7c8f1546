"""guard_tool: plain invoke, tool calls, ToolNode, create_agent; the tool keeps its identity."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import pytest
from guard_plugins import Guard
from guard_plugins.testing import FunctionBackend
from langchain.agents import create_agent
from langchain.tools import ToolRuntime
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import (
    BaseTool,
    InjectedToolCallId,
    StructuredTool,
    Tool,
    ToolException,
    tool,
)
from langchain_support import ToolCallingFakeModel
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode
from pydantic import BaseModel, Field

from guard_plugins_langchain import GuardToolRefusal, guard_tool, guard_tools

ABUSE = "import shutil; shutil.rmtree('/')"


class CodeArgs(BaseModel):
    code: str = Field(description="Python source")


def make_tool(log: list[str]) -> StructuredTool:
    def run(code: str) -> str:
        log.append(code)
        return "ran"

    async def arun(code: str) -> str:
        log.append(code)
        return "ran async"

    return StructuredTool.from_function(
        func=run,
        coroutine=arun,
        name="python",
        description="Run Python.",
        args_schema=CodeArgs,
        return_direct=True,
        tags=["exec"],
    )


def test_identity_is_kept(guard: Guard) -> None:
    original = make_tool([])
    guarded = guard_tool(original, guard)
    assert isinstance(guarded, StructuredTool)
    assert (guarded.name, guarded.description, guarded.return_direct, guarded.tags) == (
        "python",
        "Run Python.",
        True,
        ["exec"],
    )
    assert guarded.args_schema is CodeArgs
    assert (
        guarded.tool_call_schema.model_json_schema()
        == original.tool_call_schema.model_json_schema()
    )
    assert type(guarded).__name__ == "GuardedStructuredTool"
    assert original.handle_tool_error is False  # the original is untouched
    regarded = guard_tool(guarded, guard)
    assert type(regarded) is type(guarded)


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_plain_invoke_and_tool_calls(call: str, guard: Guard) -> None:
    log: list[str] = []
    guarded = guard_tool(make_tool(log), guard)

    async def invoke(value: Any) -> Any:
        return guarded.invoke(value) if call == "sync" else await guarded.ainvoke(value)

    assert (await invoke({"code": "print(1)"})).startswith("ran")
    refusal = await invoke({"code": ABUSE})
    assert "S14" in refusal
    message = await invoke(
        {"type": "tool_call", "name": "python", "args": {"code": ABUSE}, "id": "c1"}
    )
    assert isinstance(message, ToolMessage)
    assert (message.status, message.tool_call_id) == ("error", "c1")
    assert log == ["print(1)"]  # the abusive code never reached the function


async def test_sync_only_tool_on_the_async_path_is_checked_once(
    guard: Guard, backend: FunctionBackend
) -> None:
    log: list[str] = []

    @tool
    def shell(command: str) -> str:
        """Run a shell command."""
        log.append(command)
        return "ok"

    guarded = guard_tool(shell, guard, language="bash")
    assert await guarded.ainvoke({"command": "ls"}) == "ok"
    assert "rm -rf" not in log
    assert "S14" in await guarded.ainvoke({"command": "rm -rf /"})
    assert log == ["ls"]
    assert len(backend.requests) == 2
    assert "```bash" in backend.requests[0].prompt.text


def test_string_tools_and_custom_tool_errors(guard: Guard) -> None:
    ran: list[str] = []
    legacy = Tool(name="sql", description="Run SQL.", func=lambda q: ran.append(q) or "rows")
    guarded = guard_tool(legacy, guard)
    assert guarded.invoke("select 1") == "rows"
    assert "S14" in guarded.invoke("rm -rf /")
    assert ran == ["select 1"]

    def failing(code: str) -> str:
        raise ToolException("the tool's own error")

    own = StructuredTool.from_function(failing, name="f", description="d")
    with pytest.raises(ToolException, match="own error"):
        guard_tool(own, guard).invoke({"code": "x"})  # handle_tool_error=False kept
    own_handled = StructuredTool.from_function(
        failing, name="f", description="d", handle_tool_error="handled"
    )
    assert guard_tool(own_handled, guard).invoke({"code": "x"}) == "handled"


def test_refusal_is_a_tool_exception_carrying_the_decision(guard: Guard) -> None:
    guarded = guard_tool(make_tool([]), guard)
    guarded.handle_tool_error = False
    with pytest.raises(GuardToolRefusal) as info:
        guarded.invoke({"code": ABUSE})
    assert isinstance(info.value, ToolException)
    assert info.value.decision.codes == ("S14",)


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_in_a_tool_node_with_injected_arguments(call: str, guard: Guard) -> None:
    seen: list[str] = []

    @tool
    def python(code: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> str:
        """Run Python."""
        seen.append(tool_call_id)
        return "ran"

    graph = StateGraph(MessagesState)
    graph.add_node("tools", ToolNode(guard_tools([python], guard)))
    graph.add_edge(START, "tools")
    node = graph.compile()
    calls = [
        {"name": "python", "args": {"code": "print(1)"}, "id": "ok", "type": "tool_call"},
        {"name": "python", "args": {"code": ABUSE}, "id": "bad", "type": "tool_call"},
    ]
    state = {"messages": [AIMessage("", tool_calls=calls)]}
    out = node.invoke(state) if call == "sync" else await node.ainvoke(state)
    by_id = {m.tool_call_id: m for m in out["messages"] if isinstance(m, ToolMessage)}
    assert by_id["ok"].status == "success"
    assert by_id["bad"].status == "error"
    assert seen == ["ok"]  # the id was still injected; the refused call never ran


def test_in_create_agent_without_middleware(guard: Guard, tmp_path: Path) -> None:
    marker = tmp_path / "marker"

    @tool
    def run_python(code: str, runtime: ToolRuntime) -> str:
        """Run Python."""
        marker.write_text(f"{runtime.tool_call_id}: {code}")
        return "ran"

    model = ToolCallingFakeModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "run_python", "args": {"code": ABUSE}, "id": "1"}]),
            AIMessage("", tool_calls=[{"name": "run_python", "args": {"code": "1+1"}, "id": "2"}]),
            AIMessage("I could not do that."),
        ]
    )
    agent = create_agent(model, [guard_tool(run_python, guard)])
    state = agent.invoke({"messages": [HumanMessage("clean up")]})
    assert marker.read_text() == "2: 1+1"  # runtime injected into the allowed call only
    assert state["messages"][-1].content == "I could not do that."


def test_rejects_non_tools(guard: Guard) -> None:
    with pytest.raises(TypeError):
        guard_tool(lambda: None, guard)  # type: ignore[arg-type]


def test_subclassed_tool_keeps_its_behaviour(guard: Guard) -> None:
    class Echo(BaseTool):
        name: str = "echo"
        description: str = "Echo."
        prefix: str = ">"

        def _run(self, text: Annotated[str, "text"]) -> str:
            return f"{self.prefix} {text}"

    guarded = guard_tool(Echo(prefix="#"), guard)
    assert guarded.invoke({"text": "hi"}) == "# hi"
