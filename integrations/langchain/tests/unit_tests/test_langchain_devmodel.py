"""The integration on the real in-process backend (TransformersBackend) with the tiny dev model.

The dev model has random weights, so its verdicts mean nothing. These tests assert plumbing:
what reached the model (roles, rendered tool calls, images) and that each Decision was enforced
as the policy says. Thresholds at the extremes make the outcome certain without faking the
model: 0.01 flags every score, 1.0 none.
"""

from __future__ import annotations

from itertools import cycle
from pathlib import Path
from typing import Any

import pytest
from guard_plugins import Guard, GuardBlocked, Hook, Policy
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langchain_support import RecordingBackend, ToolCallingFakeModel, png_bytes

from guard_plugins_langchain import GuardRunnable, LlamaGuardMiddleware, guard_tool

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
        "allow_s14_execution": True,  # threshold 1.0 at tool_call lets flagged code through
    }
    for hook, settings in hooks.items():
        data[hook] = {**data[hook], **settings}
    return Guard(recording, Policy.from_dict(data), cache_size=0), recording


def model(reply: str = "Sure. Here you go.") -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=cycle([reply]))


async def test_chain_checks_input_and_output_on_the_model(dev_backend: Any) -> None:
    guard, recording = dev_guard(dev_backend)
    chain = GuardRunnable.wrap(model(), guard)
    assert (await chain.ainvoke("hello")).content == "Sure. Here you go."
    assert chain.invoke("hello again").content == "Sure. Here you go."
    assert recording.assessed() == [
        ("User", "hello"),
        ("Agent", "Sure. Here you go."),
        ("User", "hello again"),
        ("Agent", "Sure. Here you go."),
    ]


async def test_flagged_input_is_enforced_as_the_policy_says(dev_backend: Any) -> None:
    blocking, _ = dev_guard(dev_backend, user_input=ALWAYS)
    with pytest.raises(GuardBlocked) as info:
        await GuardRunnable.wrap(model(), blocking).ainvoke("hello")
    assert info.value.decision.hook is Hook.USER_INPUT
    assert info.value.decision.verdict is not None
    assert info.value.decision.verdict.backend == dev_backend.name
    refusing, _ = dev_guard(dev_backend, user_input={**ALWAYS, "action": "refuse"})
    reply = GuardRunnable.wrap(model(), refusing).invoke("hello")
    assert reply.response_metadata["guard_plugins"]["action"] == "refuse"
    assert reply.content.startswith("I can't help with that request")


async def test_flagged_reply_is_refused_in_a_stream(dev_backend: Any) -> None:
    guard, recording = dev_guard(dev_backend, assistant_output=ALWAYS)
    chunks = [c async for c in GuardRunnable.wrap(model("One. Two. Three."), guard).astream("hi")]
    assert chunks[-1].response_metadata["guard_plugins"]["hook"] == "assistant_output"
    assert ("User", "hi") in recording.assessed()


async def test_batch_is_one_model_batch(dev_backend: Any) -> None:
    guard, recording = dev_guard(dev_backend)
    outputs = await GuardRunnable.input(guard).abatch([f"question {i}" for i in range(4)])
    assert outputs == [f"question {i}" for i in range(4)]
    assert recording.batch_sizes == [4]  # one classification call for the whole batch


async def test_images_reach_the_model(dev_backend: Any) -> None:
    import base64

    guard, recording = dev_guard(dev_backend)
    b64 = base64.b64encode(png_bytes()).decode()
    message = HumanMessage(
        [
            {"type": "text", "text": "what is this?"},
            {"type": "image", "base64": b64, "mime_type": "image/png"},
        ]
    )
    await GuardRunnable.input(guard).ainvoke([message])
    (request,) = recording.requests
    assert len(request.conversation.images) == 1
    assert "<|image|>" in request.prompt.text


@pytest.mark.parametrize("flag", [True, False])
async def test_agent_tool_call_runs_only_when_allowed(
    dev_backend: Any, tmp_path: Path, flag: bool
) -> None:
    guard, recording = dev_guard(dev_backend, tool_call=ALWAYS if flag else NEVER)
    marker = tmp_path / "ran"

    @tool
    def run_python(code: str) -> str:
        """Run Python code."""
        marker.write_text(code)
        return "done"

    scripted = ToolCallingFakeModel(
        responses=[
            AIMessage("", tool_calls=[{"name": "run_python", "args": {"code": "x=1"}, "id": "c"}]),
            AIMessage("Finished."),
        ]
    )
    agent = create_agent(scripted, [run_python], middleware=[LlamaGuardMiddleware(guard)])
    state = await agent.ainvoke({"messages": [HumanMessage("run it")]})
    result = next(m for m in state["messages"] if isinstance(m, ToolMessage))
    assert marker.exists() is not flag
    assert (result.status == "error") is flag
    assert any("Tool call: run_python" in text for _, text in recording.assessed())
    assert state["messages"][-1].content == "Finished."


def test_guard_tool_on_the_model(dev_backend: Any) -> None:
    guard, recording = dev_guard(dev_backend, tool_call=ALWAYS)

    @tool
    def shell(command: str) -> str:
        """Run a shell command."""
        raise AssertionError("must not run")

    refusal = guard_tool(shell, guard, language="bash").invoke({"command": "ls"})
    assert "refused" in refusal
    (request,) = recording.requests
    assert "```bash\nls\n```" in request.prompt.text
