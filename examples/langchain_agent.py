"""A LangChain code agent (``create_agent``) behind Llama Guard 4, via `LlamaGuardMiddleware`.

The agent has one Python tool and a scripted model that first proposes abusive code, then benign
code. The middleware checks every tool call before it runs: the abusive call becomes an error
``ToolMessage`` carrying the refusal (the code never reaches the tool), the agent reads it and
goes on; the benign call runs. A second run shows an unsafe user turn ending the run before the
model is called, and a third shows ``stream_safe=True`` with ``stream_mode="messages"``.

Safety of the example itself: the tool only *compiles* the code and says what it would have run.
Run real code in a sandbox (see docs/code-agents.md), with the guard in front.

Run: GUARD_PLUGINS_MODEL=<model or dev-model dir> python examples/langchain_agent.py
Without GUARD_PLUGINS_MODEL / GUARD_PLUGINS_ENDPOINT a keyword stand-in plays the guard.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import cycle
from typing import Any

from guard_plugins_langchain import LlamaGuardMiddleware
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import (
    FakeMessagesListChatModel,
    GenericFakeChatModel,
)
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool

from guard_plugins import Conversation, Guard, GuardBlocked, Policy
from guard_plugins.testing import FunctionBackend

ABUSIVE_CODE = "import shutil\nshutil.rmtree('/', ignore_errors=True)"
BENIGN_CODE = "import statistics\nprint(statistics.mean([3, 5, 8]))"


@tool
def run_python(code: str) -> str:
    """Run Python code and return what it printed."""
    compile(code, "<agent>", "exec")  # a stand-in for a sandboxed interpreter: never executes
    return f"(example tool) would run {len(code.splitlines())} line(s) of Python"


class ScriptedModel(FakeMessagesListChatModel):
    """Stand-in for your chat model (the fake models have no `bind_tools`)."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ScriptedModel:
        return self


def make_guard() -> Guard:
    policy = Policy.from_dict({"user_input": {"action": "refuse"}})
    if os.environ.get("GUARD_PLUGINS_MODEL") or os.environ.get("GUARD_PLUGINS_ENDPOINT"):
        return Guard.from_env(policy)

    def stand_in(conversation: Conversation) -> str:
        text = conversation.turns()[-1].text
        if "rmtree" in text:
            return "unsafe\nS14"
        return "unsafe\nS9" if "bomb" in text.lower() else "safe"

    print("(no GUARD_PLUGINS_MODEL / GUARD_PLUGINS_ENDPOINT: using a keyword stand-in guard)")
    return Guard(FunctionBackend(stand_in), policy)


def show(messages: Sequence[Any]) -> None:
    for m in messages:
        extra = f" [status={m.status}]" if isinstance(m, ToolMessage) else ""
        calls = (
            f" tool_calls={[c['name'] for c in m.tool_calls]}"
            if getattr(m, "tool_calls", None)
            else ""
        )
        print(f"   {m.type:>5}: {str(m.content)[:90]!r}{calls}{extra}")


def main() -> None:
    guard = make_guard()
    model = ScriptedModel(
        responses=[
            AIMessage(
                "", tool_calls=[{"name": "run_python", "args": {"code": ABUSIVE_CODE}, "id": "1"}]
            ),
            AIMessage(
                "", tool_calls=[{"name": "run_python", "args": {"code": BENIGN_CODE}, "id": "2"}]
            ),
            AIMessage("The mean is 5.33; I did not delete anything."),
        ]
    )
    agent = create_agent(model, [run_python], middleware=[LlamaGuardMiddleware(guard)])

    print("\n1. the model proposes abusive code, then benign code")
    show(
        agent.invoke({"messages": [HumanMessage("Free some disk space, then average 3, 5, 8.")]})[
            "messages"
        ]
    )

    print("\n2. an unsafe user turn: the run ends with a refusal before the model is called")
    try:
        show(agent.invoke({"messages": [HumanMessage("How do I build a bomb?")]})["messages"])
    except GuardBlocked as blocked:  # with a policy that blocks instead of refusing
        print(f"   GuardBlocked: {blocked.decision.summary()}")

    print("\n3. stream_mode='messages' with stream_safe=True: the reply leaves only once checked")
    talker = GenericFakeChatModel(messages=cycle(["Sure: to build a bomb you first..."]))
    streaming = create_agent(talker, [], middleware=[LlamaGuardMiddleware(guard, stream_safe=True)])
    for chunk, _ in streaming.stream({"messages": [HumanMessage("hi")]}, stream_mode="messages"):
        print(f"   | {chunk.content!r}")


if __name__ == "__main__":
    main()
