"""Guarded FunctionAgent / ReActAgent / CodeActAgent runs with scripted LLMs and a real code tool.

Every run is a real LlamaIndex workflow agent run. The LLM is LlamaIndex's
`MockFunctionCallingLLM` with a scripted `response_generator`; the code tool is the real
`CodeInterpreterToolSpec` (it runs ``python -c``), so "the code never executed" is observed as a
file that was never written.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import llamaindex_ctx_tool
import pytest
from guard_plugins import Action, Decision, GuardBlocked, Hook, Policy
from llama_index.core import VectorStoreIndex
from llama_index.core.agent.workflow import (
    AgentStream,
    FunctionAgent,
    ToolCallResult,
)
from llama_index.core.base.llms.types import ChatMessage, ImageBlock, TextBlock
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockFunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.memory import ChatMemoryBuffer
from llama_index.core.objects import ObjectIndex
from llama_index.core.tools import FunctionTool
from llama_index.core.workflow import Context
from llamaindex_support import CodeInterpreterToolSpec, Recorder, make_guard, png_bytes

from guard_plugins_llamaindex import (
    GuardedAgent,
    GuardedCodeActAgent,
    GuardedFunctionAgent,
    GuardedReActAgent,
    GuardedTool,
)
from guard_plugins_llamaindex.tools import guard_tools


def code_tools() -> list[FunctionTool]:
    return CodeInterpreterToolSpec().to_tool_list()


def writes(path: Path, marker: str = "") -> str:
    return f"open({str(path)!r}, 'w').write('ran'); print('wrote it')  # {marker}"


class Script:
    """A scripted LLM: `turns` are called in order with the messages the LLM received."""

    def __init__(self, *turns: Callable[[Sequence[ChatMessage]], ChatMessage]) -> None:
        self.turns = list(turns)
        self.calls: list[list[ChatMessage]] = []

    def __call__(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatMessage:
        self.calls.append(list(messages))
        return self.turns[min(len(self.calls), len(self.turns)) - 1](messages)

    def llm(self) -> MockFunctionCallingLLM:
        return MockFunctionCallingLLM(response_generator=self)


def call_code(code: str) -> Callable[[Sequence[ChatMessage]], ChatMessage]:
    call = ToolSelection(tool_id="call-1", tool_name="code_interpreter", tool_kwargs={"code": code})
    return lambda _: ChatMessage(
        role="assistant", content="Running it.", additional_kwargs={"tool_calls": [call]}
    )


def say(text: str) -> Callable[[Sequence[ChatMessage]], ChatMessage]:
    return lambda _: ChatMessage(role="assistant", content=text)


def echo_tool_result(messages: Sequence[ChatMessage]) -> ChatMessage:
    return ChatMessage(role="assistant", content=f"The tool said: {messages[-1].content}")


async def run(agent: Any, user_msg: Any, **kwargs: Any) -> tuple[Any, list[Any]]:
    handler = agent.run(user_msg=user_msg, **kwargs)
    events = [event async for event in handler.stream_events()]
    return await handler, events


def streamed_text(events: list[Any]) -> str:
    return "".join(e.delta for e in events if isinstance(e, AgentStream))


def memory_text(memory: ChatMemoryBuffer) -> str:
    return "\n".join(f"{m.role.value}: {m.content}" for m in memory.get_all())


# -- FunctionAgent ----------------------------------------------------------------------------


async def test_function_agent_abusive_code_never_runs_and_agent_reads_refusal(
    tmp_path: Path,
) -> None:
    guard, recorder = make_guard()
    target = tmp_path / "pwned"
    script = Script(call_code(writes(target, "EVIL")), echo_tool_result)
    agent = GuardedFunctionAgent(tools=code_tools(), llm=script.llm(), guard=guard)
    result, events = await run(agent, "clean up my disk")

    assert not target.exists()
    tool_message = script.calls[1][-1]
    assert tool_message.role == "tool"
    assert "refused by the safety guard (S14 Code Interpreter Abuse)" in tool_message.content
    (tool_result,) = [e for e in events if isinstance(e, ToolCallResult)]
    assert tool_result.tool_output.is_error
    assert "S14" in str(result)
    # One tool_call check (made when the model proposed the call, enforced when it ran).
    assert sum(t.startswith("Tool call:") for t in recorder.texts()) == 1


async def test_function_agent_benign_code_runs(tmp_path: Path) -> None:
    guard, recorder = make_guard()
    target = tmp_path / "ok"
    script = Script(call_code(writes(target)), echo_tool_result)
    agent = GuardedFunctionAgent(tools=code_tools(), llm=script.llm(), guard=guard)
    result, _ = await run(agent, "write the file")
    assert target.read_text() == "ran"
    assert "wrote it" in str(result)
    hooks = [role for role, _ in recorder.assessed]
    # user turn, the turn's prose, the call, the result, the final reply
    assert hooks == ["User", "Agent", "Agent", "User", "Agent"]


async def test_unsafe_reply_never_reaches_caller_stream_or_memory() -> None:
    guard, _ = make_guard()
    memory = ChatMemoryBuffer.from_defaults()
    agent = GuardedFunctionAgent(
        tools=code_tools(), llm=Script(say("Here is some HATE for you")).llm(), guard=guard
    )
    result, events = await run(agent, "say something", memory=memory)
    refusal = "I can't share that response"
    assert refusal in str(result)
    assert "HATE" not in streamed_text(events)
    assert refusal in streamed_text(events)
    assert "HATE" not in memory_text(memory)
    assert [m.role.value for m in memory.get_all()] == ["user", "assistant"]


async def test_blocked_reply_raises_and_leaves_no_trace() -> None:
    guard, _ = make_guard({"assistant_output": {"action": "block"}})
    memory = ChatMemoryBuffer.from_defaults()
    agent = GuardedFunctionAgent(tools=[], llm=Script(say("HATE")).llm(), guard=guard)
    handler = agent.run(user_msg="hi", memory=memory)
    events: list[Any] = []

    async def consume() -> None:
        events.extend([e async for e in handler.stream_events()])
        await handler

    with pytest.raises(GuardBlocked) as info:
        await consume()
    assert info.value.decision.hook is Hook.ASSISTANT_OUTPUT
    assert "HATE" not in streamed_text(events)
    assert "HATE" not in memory_text(memory)


async def test_blocked_user_turn_never_reaches_the_llm() -> None:
    guard, _ = make_guard()
    memory = ChatMemoryBuffer.from_defaults()
    memory.put(ChatMessage(role="user", content="earlier question"))
    script = Script(say("sure"))
    agent = GuardedFunctionAgent(tools=[], llm=script.llm(), guard=guard)
    with pytest.raises(GuardBlocked) as info:
        await run(agent, "how to do CRIME", memory=memory)
    assert info.value.decision.hook is Hook.USER_INPUT
    assert script.calls == []
    assert memory_text(memory) == "user: earlier question"  # the blocked turn was taken out


async def test_refused_user_turn_answers_with_the_refusal() -> None:
    guard, _ = make_guard({"user_input": {"action": "refuse"}})
    memory = ChatMemoryBuffer.from_defaults()
    script = Script(say("sure"))
    agent = GuardedFunctionAgent(tools=[], llm=script.llm(), guard=guard)
    result, events = await run(agent, "how to do CRIME", memory=memory)
    assert str(result) == "I can't help with that request."
    assert streamed_text(events) == "I can't help with that request."
    assert script.calls == []
    assert memory.get_all() == []


async def test_speculative_input_check_overlaps_the_llm_but_releases_nothing(
    tmp_path: Path,
) -> None:
    llm_started = asyncio.Event()
    target = tmp_path / "pwned"

    async def verdict(conversation: Any) -> str:
        turn = conversation.turns()[-1]
        if turn.role == "User" and "CRIME" in turn.text:
            # Deadlocks (and times out) unless the LLM call runs while this check is pending.
            await asyncio.wait_for(llm_started.wait(), timeout=5)
            return "unsafe\nS2"
        return "safe"

    guard, recorder = make_guard()
    recorder.backend._fn = verdict

    def first_turn(messages: Sequence[ChatMessage]) -> ChatMessage:
        llm_started.set()
        return call_code(writes(target))(messages)

    script = Script(first_turn, echo_tool_result)
    memory = ChatMemoryBuffer.from_defaults()
    agent = GuardedFunctionAgent(
        tools=code_tools(),
        llm=script.llm(),
        guard=guard,
        speculative_input_check=True,
    )
    handler = agent.run(user_msg="CRIME time", memory=memory)
    events: list[Any] = []

    async def consume() -> None:
        events.extend([e async for e in handler.stream_events()])
        await handler

    with pytest.raises(GuardBlocked):
        await consume()
    assert len(script.calls) == 1  # the LLM did run, speculatively
    assert not target.exists()  # but what it proposed never executed
    assert streamed_text(events) == ""  # and none of its text was released
    assert memory.get_all() == []


async def test_speculative_allowed_turn_runs_normally(tmp_path: Path) -> None:
    guard, _ = make_guard()
    target = tmp_path / "ok"
    script = Script(call_code(writes(target)), echo_tool_result)
    agent = GuardedFunctionAgent(
        tools=code_tools(), llm=script.llm(), guard=guard, speculative_input_check=True
    )
    result, _ = await run(agent, "write it")
    assert target.exists()
    assert "wrote it" in str(result)


async def test_tools_from_a_tool_retriever_are_guarded(tmp_path: Path) -> None:
    guard, _ = make_guard()
    target = tmp_path / "pwned"
    object_index = ObjectIndex.from_objects(
        code_tools(), index_cls=VectorStoreIndex, embed_model=MockEmbedding(embed_dim=8)
    )
    script = Script(call_code(writes(target, "EVIL")), echo_tool_result)
    agent = GuardedFunctionAgent(
        tool_retriever=object_index.as_retriever(similarity_top_k=1), llm=script.llm(), guard=guard
    )
    tools = await agent.get_tools("run code")
    assert all(isinstance(t, GuardedTool) for t in tools)
    result, _ = await run(agent, "run it")
    assert not target.exists()
    assert "S14" in str(result)


async def test_context_tools_still_get_the_workflow_context() -> None:
    guard, _ = make_guard()
    llamaindex_ctx_tool.SEEN.clear()
    call = ToolSelection(tool_id="1", tool_name="remember", tool_kwargs={"note": "milk"})
    script = Script(
        lambda _: ChatMessage(
            role="assistant", content="", additional_kwargs={"tool_calls": [call]}
        ),
        echo_tool_result,
    )
    agent = GuardedFunctionAgent(
        tools=[llamaindex_ctx_tool.remember], llm=script.llm(), guard=guard
    )
    (tool,) = await agent.get_tools()
    assert isinstance(tool, GuardedTool)
    assert tool.requires_context
    result, _ = await run(agent, "remember milk")
    assert len(llamaindex_ctx_tool.SEEN) == 1
    assert isinstance(llamaindex_ctx_tool.SEEN[0], Context)
    assert "stored milk" in str(result)


async def test_approver_is_asked_once_per_call(tmp_path: Path) -> None:
    asked: list[str | None] = []

    def approver(request: Any) -> bool:
        asked.append(request.tool_name)
        return True

    policy = {"tool_call": {"actions": {"S14": "require_approval"}, "screen_code": False}}
    guard, _ = make_guard(policy, approver=approver)
    target = tmp_path / "approved"
    script = Script(call_code(writes(target, "EVIL")), echo_tool_result)
    agent = GuardedFunctionAgent(tools=code_tools(), llm=script.llm(), guard=guard)
    await run(agent, "go")
    assert asked == ["code_interpreter"]
    assert target.exists()  # approved: it ran


async def test_monitor_mode_records_but_never_blocks(tmp_path: Path) -> None:
    guard, _ = make_guard(Policy(monitor=True, tool_call={"screen_code": False}))
    decisions: list[Decision] = []
    target = tmp_path / "ran"
    script = Script(call_code(writes(target, "EVIL")), say("HATE"))
    agent = GuardedFunctionAgent(tools=code_tools(), llm=script.llm(), guard=guard)
    original = agent._check

    async def spy(hook: Hook, conversation: Any) -> Decision:
        decision = await original(hook, conversation)
        decisions.append(decision)
        return decision

    agent._check = spy  # type: ignore[method-assign]
    result, _ = await run(agent, "CRIME")
    assert target.exists()
    assert str(result) == "HATE"
    assert any(d.action is Action.BLOCK and d.allowed and not d.enforced for d in decisions)


async def test_wrap_existing_agent(tmp_path: Path) -> None:
    guard, _ = make_guard()
    target = tmp_path / "pwned"
    script = Script(call_code(writes(target, "EVIL")), echo_tool_result)
    plain = FunctionAgent(tools=code_tools(), llm=script.llm(), system_prompt="Be careful.")
    agent = GuardedAgent.wrap(plain, guard)
    assert isinstance(agent, GuardedFunctionAgent)
    assert agent.system_prompt == "Be careful."
    await run(agent, "go")
    assert not target.exists()


async def test_image_user_turn_reaches_the_guard_as_an_image() -> None:
    guard, recorder = make_guard()
    agent = GuardedFunctionAgent(tools=[], llm=Script(say("a red square")).llm(), guard=guard)
    message = ChatMessage(
        role="user", blocks=[ImageBlock(image=png_bytes()), TextBlock(text="what is this?")]
    )
    await run(agent, message)
    assert recorder.images()[0] == 1  # the user_input check carried the image
    assert recorder.assessed[0] == ("User", "what is this?")


async def test_url_image_is_refused_clearly_without_fetching(no_network: list[Any]) -> None:
    guard, _ = make_guard()
    script = Script(say("nice"))
    agent = GuardedFunctionAgent(tools=[], llm=script.llm(), guard=guard)
    message = ChatMessage(
        role="user", blocks=[ImageBlock(url="http://example.com/x.png"), TextBlock(text="see")]
    )
    with pytest.raises(Exception, match="never fetches image URLs"):
        await run(agent, message)
    assert script.calls == []
    assert no_network == []


# -- ReActAgent -------------------------------------------------------------------------------


def react_action(code: str) -> Callable[[Sequence[ChatMessage]], ChatMessage]:
    text = (
        "Thought: I should run the code.\nAction: code_interpreter\n"
        f"Action Input: {json.dumps({'code': code})}"
    )
    return say(text)


def react_answer(messages: Sequence[ChatMessage]) -> ChatMessage:
    observation = messages[-1].content or ""
    return ChatMessage(role="assistant", content=f"Thought: done.\nAnswer: {observation}")


async def test_react_agent_abusive_code_never_runs(tmp_path: Path) -> None:
    guard, _ = make_guard()
    target = tmp_path / "pwned"
    script = Script(react_action(writes(target, "EVIL")), react_answer)
    memory = ChatMemoryBuffer.from_defaults()
    agent = GuardedReActAgent(tools=code_tools(), llm=script.llm(), guard=guard)
    result, events = await run(agent, "tidy up", memory=memory)
    assert not target.exists()
    observation = script.calls[1][-1].content or ""
    assert observation.startswith("Observation: The tool call was refused by the safety guard")
    assert "S14" in str(result)
    # The refused call's code was never streamed: the turn's text was cut to its checked prose.
    assert "EVIL" not in streamed_text(events)
    assert "Thought: I should run the code." in streamed_text(events)


async def test_react_agent_benign_code_runs(tmp_path: Path) -> None:
    guard, _ = make_guard()
    target = tmp_path / "ok"
    script = Script(react_action(writes(target)), react_answer)
    agent = GuardedReActAgent(tools=code_tools(), llm=script.llm(), guard=guard)
    result, events = await run(agent, "write it")
    assert target.read_text() == "ran"
    assert "wrote it" in str(result)
    assert "Action Input" in streamed_text(events)  # allowed turns stream in full


async def test_react_agent_unsafe_answer_never_reaches_memory() -> None:
    guard, _ = make_guard()
    memory = ChatMemoryBuffer.from_defaults()
    agent = GuardedReActAgent(
        tools=code_tools(),
        llm=Script(say("Thought: easy.\nAnswer: pure HATE")).llm(),
        guard=guard,
    )
    result, events = await run(agent, "talk to me", memory=memory)
    assert str(result) == "I can't share that response."
    assert "HATE" not in streamed_text(events)
    assert "HATE" not in memory_text(memory)
    assert "I can't share that response." in memory_text(memory)


# -- CodeActAgent -----------------------------------------------------------------------------


class Executor:
    """A code executor recording what it was asked to run (`fn` is the code_execute_fn)."""

    def __init__(self) -> None:
        self.ran: list[str] = []

        async def execute(code: str) -> dict[str, Any]:
            self.ran.append(code)
            return {"output": "42"}

        self.fn = execute


async def test_codeact_agent_abusive_code_never_reaches_the_executor() -> None:
    guard, _ = make_guard()
    executor = Executor()
    script = Script(
        say("Let me do it.\n<execute>\nimport os  # EVIL\n</execute>"),
        lambda messages: ChatMessage(role="assistant", content=f"Done: {messages[-1].content}"),
    )
    agent = GuardedCodeActAgent(code_execute_fn=executor.fn, llm=script.llm(), guard=guard)
    result, events = await run(agent, "wipe it")
    assert executor.ran == []
    assert "refused by the safety guard" in (script.calls[1][-1].content or "")
    assert "S14" in str(result)
    assert "EVIL" not in streamed_text(events)


async def test_codeact_agent_benign_code_runs_and_helper_tools_stay_visible() -> None:
    guard, _ = make_guard()
    executor = Executor()

    def add(a: int, b: int) -> int:
        """Add two numbers."""
        return a + b

    script = Script(
        say("<execute>\nprint(add(40, 2))\n</execute>"),
        lambda messages: ChatMessage(role="assistant", content="It is 42."),
    )
    agent = GuardedCodeActAgent(
        code_execute_fn=executor.fn, tools=[add], llm=script.llm(), guard=guard
    )
    result, _ = await run(agent, "add")
    assert executor.ran == ["print(add(40, 2))"]
    assert str(result) == "It is 42."
    system = script.calls[0][0].content or ""
    assert "def add(a" in system
    assert "Add two numbers." in system


def test_guard_tools_and_agent_share_one_wrapper() -> None:
    guard, _ = make_guard()
    tools = guard_tools(code_tools(), guard)
    agent = GuardedFunctionAgent(tools=tools, llm=Script(say("x")).llm(), guard=guard)
    assert agent._guarded(tools[0]) is tools[0]


def _unused(recorder: Recorder) -> None:  # keep the import used for type checkers
    del recorder


# -- streaming order, early stopping, options -------------------------------------------------


async def test_stream_events_are_released_only_after_their_turn_is_checked(
    tmp_path: Path,
) -> None:
    log: list[str] = []

    def verdict(conversation: Any) -> str:
        turn = conversation.turns()[-1]
        log.append(f"check {turn.role}: {turn.text[:20]}")
        return "safe"

    guard, recorder = make_guard()
    recorder.backend._fn = verdict
    target = tmp_path / "ok"
    script = Script(
        lambda m: ChatMessage(
            role="assistant",
            content="Let me write it.",
            additional_kwargs={
                "tool_calls": [
                    ToolSelection(
                        tool_id="1",
                        tool_name="code_interpreter",
                        tool_kwargs={"code": writes(target)},
                    )
                ]
            },
        ),
        say("All done."),
    )
    agent = GuardedFunctionAgent(tools=code_tools(), llm=script.llm(), guard=guard)
    handler = agent.run(user_msg="write it")
    async for event in handler.stream_events():
        if isinstance(event, AgentStream) and event.delta:
            log.append(f"stream: {event.delta}")
    await handler
    first = log.index("stream: Let me write it.")
    assert "check Agent: Let me write it." in log[:first]
    assert any(line.startswith("check Agent: Tool call:") for line in log[:first])
    final = log.index("stream: All done.")
    assert log[final - 1] == "check Agent: All done."


async def test_early_stopping_reply_is_checked_before_memory() -> None:
    guard, _ = make_guard()
    memory = ChatMemoryBuffer.from_defaults()
    call = ToolSelection(tool_id="1", tool_name="code_interpreter", tool_kwargs={"code": "1"})
    script = Script(
        lambda _: ChatMessage(
            role="assistant", content="", additional_kwargs={"tool_calls": [call]}
        ),
        say("Out of steps, so here is some HATE"),
    )
    agent = GuardedFunctionAgent(
        tools=code_tools(), llm=script.llm(), guard=guard, early_stopping_method="generate"
    )
    result, events = await run(agent, "go", memory=memory, max_iterations=1)
    assert "HATE" not in str(result)
    assert "HATE" not in streamed_text(events)
    assert "HATE" not in memory_text(memory)
    assert "I can't share that response." in memory_text(memory)


async def test_without_precheck_the_call_is_checked_when_it_runs(tmp_path: Path) -> None:
    guard, recorder = make_guard()
    target = tmp_path / "pwned"
    script = Script(call_code(writes(target, "EVIL")), echo_tool_result)
    agent = GuardedFunctionAgent(
        tools=code_tools(), llm=script.llm(), guard=guard, precheck_tool_calls=False
    )
    result, _ = await run(agent, "go")
    assert not target.exists()
    assert "S14" in str(result)
    assert sum(t.startswith("Tool call:") for t in recorder.texts()) == 1


def test_wrap_react_and_codeact_agents() -> None:
    from llama_index.core.agent.workflow import CodeActAgent, ReActAgent

    guard, _ = make_guard()
    react = GuardedAgent.wrap(
        ReActAgent(tools=code_tools(), llm=Script(say("x")).llm(), system_prompt="Be brief."),
        guard,
        speculative_input_check=True,
    )
    assert isinstance(react, GuardedReActAgent)
    assert react.speculative_input_check
    assert react.formatter.context.count("Be brief.") == 1
    executor = Executor()
    codeact = GuardedAgent.wrap(
        CodeActAgent(code_execute_fn=executor.fn, llm=Script(say("x")).llm(), system_prompt="Hi."),
        guard,
    )
    assert isinstance(codeact, GuardedCodeActAgent)
    assert [t.metadata.name for t in codeact.tools or []] == ["execute"]
    assert str(codeact.code_act_system_prompt.get_template()).count("Hi.") == 1
    with pytest.raises(TypeError):
        GuardedAgent.wrap(codeact, guard)
