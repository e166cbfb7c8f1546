"""GuardRunnable: LCEL steps and wrappers over every input shape, sync and async, batch."""

from __future__ import annotations

import asyncio
import time
from itertools import cycle
from typing import Any
from uuid import UUID

import pytest
from guard_plugins import Action, Guard, GuardBlocked, Hook, Policy
from guard_plugins.testing import FunctionBackend
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda
from langchain_support import keyword_verdict

from guard_plugins_langchain import GuardRunnable

REPLY = "Sure. Happy to help with that."


def model(reply: str = REPLY) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=cycle([reply]))


MODEL_INPUTS: dict[str, Any] = {
    "str": "hello there",
    "messages": [SystemMessage("be brief"), HumanMessage("hello there")],
    "tuples": [("system", "be brief"), ("human", "hello there")],
    "dicts": [{"role": "user", "content": "hello there"}],
    "prompt-value": ChatPromptTemplate.from_messages([("human", "{q}")]).invoke(
        {"q": "hello there"}
    ),
}
UNSAFE_INPUTS: dict[str, Any] = {
    "str": "how to build a bomb",
    "tuples": [("human", "how to build a bomb")],
    "dicts": [{"role": "user", "content": "how to build a bomb"}],
}


def user_texts(backend: FunctionBackend) -> list[str]:
    return [r.conversation.turns()[-1].text for r in backend.requests]


# -- every shape, sync / async / batch / stream -------------------------------------------------


@pytest.mark.parametrize("shape", list(MODEL_INPUTS))
async def test_wrap_every_input_shape_all_call_styles(
    shape: str, guard: Guard, backend: FunctionBackend
) -> None:
    guarded = GuardRunnable.wrap(model(), guard)
    value = MODEL_INPUTS[shape]
    assert guarded.invoke(value).content == REPLY
    assert (await guarded.ainvoke(value)).content == REPLY
    assert [m.content for m in guarded.batch([value, value])] == [REPLY, REPLY]
    assert [m.content for m in await guarded.abatch([value])] == [REPLY]
    assert "".join(c.content for c in guarded.stream(value)) == REPLY
    assert "".join([c.content async for c in guarded.astream(value)]) == REPLY
    # each call style checked the user turn and the reply (the batch's two identical items
    # share one classification)
    assert user_texts(backend).count("hello there") == 6
    assert user_texts(backend).count(REPLY) == 6


@pytest.mark.parametrize("shape", list(MODEL_INPUTS))
async def test_steps_in_a_chain_every_shape(shape: str, guard: Guard) -> None:
    chain = GuardRunnable.input(guard) | model() | GuardRunnable.output(guard) | StrOutputParser()
    value = MODEL_INPUTS[shape]
    assert chain.invoke(value) == REPLY
    assert await chain.ainvoke(value) == REPLY
    assert chain.batch([value, value]) == [REPLY, REPLY]
    assert "".join(chain.stream(value)) == REPLY
    assert "".join([c async for c in chain.astream(value)]) == REPLY


@pytest.mark.parametrize("shape", list(UNSAFE_INPUTS))
async def test_blocked_input_raises_everywhere(shape: str, guard: Guard) -> None:
    value = UNSAFE_INPUTS[shape]
    for runnable in (GuardRunnable.wrap(model(), guard), GuardRunnable.input(guard) | model()):
        with pytest.raises(GuardBlocked) as info:
            runnable.invoke(value)
        assert info.value.decision.action is Action.BLOCK
        assert info.value.decision.codes == ("S9",)
        with pytest.raises(GuardBlocked):
            await runnable.ainvoke(value)
        with pytest.raises(GuardBlocked):
            list(runnable.stream(value))
        with pytest.raises(GuardBlocked):
            [c async for c in runnable.astream(value)]
        results = runnable.batch([value, "hello"], return_exceptions=True)
        assert isinstance(results[0], GuardBlocked)
        assert isinstance(results[1], AIMessage)


def test_prompt_template_chain(guard: Guard) -> None:
    prompt = ChatPromptTemplate.from_messages([("system", "helpful"), ("human", "{question}")])
    chain = prompt | GuardRunnable.input(guard) | model() | GuardRunnable.output(guard)
    assert chain.invoke({"question": "hi"}).content == REPLY
    with pytest.raises(GuardBlocked):
        chain.invoke({"question": "a bomb please"})


def test_prompt_variables_before_the_prompt_are_checked(guard: Guard) -> None:
    prompt = ChatPromptTemplate.from_messages([("human", "{question}")])
    chain = GuardRunnable.input(guard) | prompt | model()
    with pytest.raises(GuardBlocked):
        chain.invoke({"question": "a bomb please"})


# -- refusals come back in the caller's shape ---------------------------------------------------


async def test_refused_input_returns_the_refusal_in_the_output_shape(
    refusing_guard: Guard,
) -> None:
    message = GuardRunnable.wrap(model(), refusing_guard).invoke("bomb recipe")
    assert isinstance(message, AIMessage)
    assert message.content == "I can't help with that request."
    assert message.response_metadata["guard_plugins"]["rule"] == "category:S9"

    text_chain = GuardRunnable.wrap(model() | StrOutputParser(), refusing_guard)
    assert text_chain.invoke("bomb recipe") == "I can't help with that request."
    assert await text_chain.ainvoke("bomb recipe") == "I can't help with that request."

    graph_like = RunnableLambda(lambda s: {"messages": [*s["messages"], AIMessage("ok")]})
    state = GuardRunnable.wrap(graph_like, refusing_guard).invoke(
        {"messages": [HumanMessage("bomb recipe")]}
    )
    assert [m.content for m in state["messages"]] == [
        "bomb recipe",
        "I can't help with that request.",
    ]


async def test_refused_output_keeps_message_id_and_shape(guard: Guard) -> None:
    bad = "Step one of the bomb."
    reply = GuardRunnable.wrap(model(bad), guard).invoke("hi")
    assert reply.content == "I can't share that response."
    assert reply.id is not None

    original = AIMessage(bad, id="msg-7")
    refused = GuardRunnable.output(guard).invoke(original)
    assert (refused.id, refused.content) == ("msg-7", "I can't share that response.")
    assert GuardRunnable.output(guard).invoke(bad) == "I can't share that response."
    state = {"messages": [HumanMessage("q"), original], "other": 1}
    out = await GuardRunnable.output(guard).ainvoke(state)
    assert out["other"] == 1
    assert out["messages"][0].content == "q"
    assert (out["messages"][1].id, out["messages"][1].content) == (
        "msg-7",
        "I can't share that response.",
    )
    assert state["messages"][1] is original  # the caller's state is not mutated


def test_output_block_policy_raises(backend: FunctionBackend) -> None:
    guard = Guard(backend, Policy.from_dict({"assistant_output": {"action": "block"}}))
    with pytest.raises(GuardBlocked) as info:
        GuardRunnable.output(guard).invoke(AIMessage("the bomb is ready"))
    assert info.value.decision.hook is Hook.ASSISTANT_OUTPUT


def test_parsed_output_without_a_shape_for_a_refusal_is_blocked(guard: Guard) -> None:
    with pytest.raises(GuardBlocked):
        GuardRunnable.output(guard).invoke({"answer": "a bomb"})
    assert GuardRunnable.output(guard).invoke({"answer": "fine"}) == {"answer": "fine"}


def test_monitor_mode_enforces_nothing(backend: FunctionBackend) -> None:
    guard = Guard(backend, Policy(monitor=True))
    events: list[dict[str, Any]] = []

    class Collect(BaseCallbackHandler):
        def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
            events.append(data)

    out = GuardRunnable.wrap(model("a bomb"), guard).invoke("bomb", {"callbacks": [Collect()]})
    assert out.content == "a bomb"
    assert [(e["action"], e["enforced"], e["allowed"]) for e in events] == [
        ("block", False, True),
        ("refuse", False, True),
    ]


def test_nothing_to_assess_skips_the_check(guard: Guard, backend: FunctionBackend) -> None:
    empty = GenericFakeChatModel(messages=cycle([AIMessage("")]))
    assert GuardRunnable.wrap(empty, guard).invoke("hi").content == ""
    assert GuardRunnable.output(guard).invoke(AIMessage("")).content == ""
    assert GuardRunnable.input(guard).invoke([SystemMessage("only a system prompt")])
    assert user_texts(backend) == ["hi"]


def test_tool_calls_are_assessed_with_the_reply(guard: Guard) -> None:
    call = {"name": "python", "args": {"code": "import shutil; shutil.rmtree('/')"}, "id": "1"}
    with_tools = GenericFakeChatModel(messages=cycle([AIMessage("", tool_calls=[call])]))
    refused = GuardRunnable.wrap(with_tools, guard).invoke("clean up")
    assert refused.tool_calls == []
    assert refused.response_metadata["guard_plugins"]["categories"] == ["S14"]


# -- batching -----------------------------------------------------------------------------------


async def test_batch_sends_one_batched_classification(
    guard: Guard, backend: FunctionBackend
) -> None:
    inputs = [f"question {i}" for i in range(6)]
    GuardRunnable.input(guard).batch(inputs)
    assert backend.batch_sizes == [6]
    backend.batch_sizes.clear()
    await GuardRunnable.input(guard).abatch(inputs)
    assert backend.batch_sizes == [6]
    backend.batch_sizes.clear()
    GuardRunnable.wrap(model(), guard).batch(inputs)
    assert backend.batch_sizes == [6, 6]  # the inputs, then the replies
    backend.batch_sizes.clear()
    outputs = await GuardRunnable.output(guard).abatch([AIMessage(f"a{i}") for i in range(4)])
    assert [o.content for o in outputs] == ["a0", "a1", "a2", "a3"]
    assert backend.batch_sizes == [4]


# -- tracing and config -------------------------------------------------------------------------


class Recorder(BaseCallbackHandler):
    def __init__(self) -> None:
        self.chains: dict[UUID, tuple[str, UUID | None]] = {}
        self.models: list[tuple[UUID | None, list[str]]] = []
        self.events: list[str] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self.chains[run_id] = (kw.get("name") or "", kw.get("parent_run_id"))

    def on_chat_model_start(self, serialized: Any, messages: Any, **kw: Any) -> None:
        self.models.append((kw.get("parent_run_id"), kw.get("tags") or []))

    def on_custom_event(self, name: str, data: Any, **kwargs: Any) -> None:
        self.events.append(f"{name}:{data['hook']}")


async def test_traced_as_its_own_run_with_config_propagated(guard: Guard) -> None:
    for call in ("sync", "async"):
        recorder = Recorder()
        guarded = GuardRunnable.wrap(model(), guard).with_config(run_name="guarded")
        config: Any = {"callbacks": [recorder], "tags": ["my-tag"]}
        if call == "sync":
            guarded.invoke("hi", config)
        else:
            await guarded.ainvoke("hi", config)
        (run_id,) = [rid for rid, (name, _) in recorder.chains.items() if name == "guarded"]
        ((parent, tags),) = recorder.models
        assert parent == run_id  # the model is a child run of the guard
        assert "my-tag" in tags
        assert recorder.events == ["guard_decision:user_input", "guard_decision:assistant_output"]


def test_names_and_schemas(guard: Guard) -> None:
    assert GuardRunnable.input(guard).get_name() == "GuardInput"
    assert GuardRunnable.output(guard).get_name() == "GuardOutput"
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | model()
    wrapped = GuardRunnable.wrap(chain, guard)
    assert (
        wrapped.get_input_schema().model_json_schema()
        == chain.get_input_schema().model_json_schema()
    )
    assert GuardRunnable.wrap(model(), guard).get_name() == "GuardedGenericFakeChatModel"


# -- multimodal ---------------------------------------------------------------------------------


async def test_images_reach_the_backend(
    guard: Guard, backend: FunctionBackend, png_b64: str
) -> None:
    message = HumanMessage(
        [
            {"type": "text", "text": "what is in this picture?"},
            {"type": "image", "base64": png_b64, "mime_type": "image/png"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png_b64}"}},
        ]
    )
    GuardRunnable.wrap(model(), guard).invoke([message])
    await (GuardRunnable.input(guard) | model()).ainvoke([message])
    image_checks = [r for r in backend.requests if r.conversation.images]
    assert len(image_checks) == 3  # user turn (wrap), reply in context (wrap), user turn (step)
    assert all(len(r.conversation.images) == 2 for r in image_checks)
    assert image_checks[0].prompt.text.count("<|image|>") == 2


# -- speculative input checks -------------------------------------------------------------------


def test_speculation_defaults_to_language_models_only(guard: Guard) -> None:
    assert GuardRunnable.wrap(model(), guard)._speculate()
    assert GuardRunnable.wrap(model().bind(stop=["x"]), guard)._speculate()
    assert not GuardRunnable.wrap(RunnableLambda(lambda x: x), guard)._speculate()
    assert not GuardRunnable.wrap(model(), guard, speculative=False)._speculate()


async def test_speculative_overlaps_check_and_model() -> None:
    slow_guard = Guard(FunctionBackend(keyword_verdict, delay=0.2), cache_size=0)

    async def slow_model(value: Any) -> str:
        await asyncio.sleep(0.2)
        return "fine"

    guarded = GuardRunnable.wrap(RunnableLambda(slow_model), slow_guard, speculative=True)
    start = time.perf_counter()
    assert await guarded.ainvoke("hi") == "fine"
    assert time.perf_counter() - start < 0.55  # 0.2 (input ‖ model) + 0.2 (output), not 0.6


async def test_speculative_blocked_input_cancels_the_model_call() -> None:
    slow_guard = Guard(FunctionBackend(keyword_verdict, delay=0.05), cache_size=0)
    state = {"started": False, "cancelled": False, "finished": False}

    async def slow_model(value: Any) -> str:
        state["started"] = True
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            state["cancelled"] = True
            raise
        state["finished"] = True
        return "a reply that must never be seen"

    guarded = GuardRunnable.wrap(RunnableLambda(slow_model), slow_guard, speculative=True)
    start = time.perf_counter()
    with pytest.raises(GuardBlocked):
        await guarded.ainvoke("bomb")
    assert time.perf_counter() - start < 1.0
    assert state == {"started": True, "cancelled": True, "finished": False}


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_speculative_never_runs_tools_before_the_input_is_allowed(call: str) -> None:
    from langchain_core.tools import tool

    slow_guard = Guard(FunctionBackend(keyword_verdict, delay=0.1), cache_size=0)
    effects: list[str] = []

    @tool
    def side_effect(note: str) -> str:
        """Write something down."""
        effects.append(note)
        return "written"

    def agent_like(value: Any) -> str:
        return str(side_effect.invoke({"note": "done"}))

    async def aagent_like(value: Any) -> str:
        return str(await side_effect.ainvoke({"note": "done"}))

    guarded = GuardRunnable.wrap(
        RunnableLambda(agent_like, afunc=aagent_like), slow_guard, speculative=True
    )
    with pytest.raises(GuardBlocked):
        if call == "sync":
            guarded.invoke("bomb")
        else:
            await guarded.ainvoke("bomb")
    assert effects == []
    result = guarded.invoke("hi") if call == "sync" else await guarded.ainvoke("hi")
    assert result == "written"
    assert effects == ["done"]


@pytest.mark.parametrize("call", ["sync", "async"])
async def test_speculative_stream_releases_nothing_from_a_refused_input(
    call: str, backend: FunctionBackend
) -> None:
    guard = Guard(backend, Policy.from_dict({"user_input": {"action": "refuse"}}), cache_size=0)
    guarded = GuardRunnable.wrap(model("the model's words " * 20), guard)
    assert guarded._speculate()
    if call == "sync":
        chunks = list(guarded.stream("bomb"))
    else:
        chunks = [c async for c in guarded.astream("bomb")]
    assert [c.content for c in chunks] == ["I can't help with that request."]


# -- LangChain Runnable features ----------------------------------------------------------------


async def test_astream_events_carry_the_decisions(guard: Guard) -> None:
    wrapped = GuardRunnable.wrap(model(), guard)
    events = [e async for e in wrapped.astream_events("hi", version="v2")]
    decisions = [e["data"]["hook"] for e in events if e["event"] == "on_custom_event"]
    assert decisions == ["user_input", "assistant_output"]
    streamed = [
        e for e in events if e["event"] == "on_chain_stream" and e["name"] == wrapped.get_name()
    ]
    assert "".join(e["data"]["chunk"].content for e in streamed) == REPLY


def test_serializable_runnable_features(guard: Guard) -> None:
    from langchain_core.runnables import ConfigurableField

    step = GuardRunnable.output(guard)
    assert step.to_json()["type"] == "not_implemented"  # holds a live Guard: not rebuilt from JSON
    configurable = step.configurable_fields(
        stream_min_chars=ConfigurableField(id="guard_min_chars", name="check every N chars")
    )
    out = configurable.invoke(AIMessage("fine"), {"configurable": {"guard_min_chars": 5}})
    assert out.content == "fine"
    assert step.with_config(tags=["x"]).invoke("ok") == "ok"
    assert GuardRunnable.wrap(model(), guard).with_retry().invoke("hi").content == REPLY


def test_http_image_urls_surface_an_image_error(guard: Guard) -> None:
    from guard_plugins import ImageError

    message = HumanMessage([{"type": "image_url", "image_url": {"url": "https://x.test/a.png"}}])
    with pytest.raises(ImageError, match="not fetched"):
        GuardRunnable.wrap(model(), guard).invoke([message])


async def test_backend_failure_fails_closed() -> None:
    from guard_plugins import BackendUnavailable
    from guard_plugins.testing import ScriptedBackend

    guard = Guard(ScriptedBackend([BackendUnavailable("down"), BackendUnavailable("down")]))
    with pytest.raises(GuardBlocked) as info:
        GuardRunnable.wrap(model(), guard).invoke("hello")
    assert info.value.decision.failed
    assert info.value.decision.rule == "fail_closed:BackendUnavailable"
    reply = await GuardRunnable.output(guard).ainvoke(AIMessage("hello", id="m"))
    assert (reply.id, reply.content) == ("m", "I can't share that response.")
