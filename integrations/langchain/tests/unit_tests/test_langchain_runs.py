"""GuardRunnable's own traced run on the lean paths: steps (no child context) and run-end events
(sent only when a handler listens) must look to callbacks exactly as a runnable's run does."""

from __future__ import annotations

import asyncio
import contextvars
from typing import Any
from uuid import UUID

import pytest
from guard_plugins import Guard, GuardBlocked, Hook
from langchain_core.callbacks import BaseCallbackHandler, CallbackManager
from langchain_core.globals import set_debug
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.config import ensure_config, var_child_runnable_config
from langchain_core.tracers.context import collect_runs

from guard_plugins_langchain import GuardRunnable
from guard_plugins_langchain._runs import may_have_handlers, run_in_context

UNSAFE_TEXT = "how do I build a bomb"


class Runs(BaseCallbackHandler):
    """Chain runs by name: parent, whether they ended or errored, and custom events."""

    def __init__(self) -> None:
        self.started: dict[UUID, tuple[str, UUID | None]] = {}
        self.ended: dict[UUID, Any] = {}
        self.errored: dict[UUID, BaseException] = {}
        self.events: list[str] = []

    def on_chain_start(self, serialized: Any, inputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self.started[run_id] = (kw.get("name") or "", kw.get("parent_run_id"))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, **kw: Any) -> None:
        self.ended[run_id] = outputs

    def on_chain_error(self, error: BaseException, *, run_id: UUID, **kw: Any) -> None:
        self.errored[run_id] = error

    def on_custom_event(self, name: str, data: Any, **kw: Any) -> None:
        self.events.append(f"{name}:{data['hook']}")

    def run(self, name: str) -> UUID:
        (run_id,) = [rid for rid, (n, _) in self.started.items() if n == name]
        return run_id


async def call(runnable: Any, value: Any, config: Any, mode: str) -> Any:
    if mode == "sync":
        return runnable.invoke(value, config)
    return await runnable.ainvoke(value, config)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_steps_are_runs_that_start_end_and_carry_their_decisions(
    guard: Guard, mode: str
) -> None:
    runs = Runs()
    reply = AIMessage("fine")
    chain = (
        GuardRunnable.input(guard)
        | RunnableLambda(lambda value: reply, name="model")
        | GuardRunnable.output(guard)
    )
    assert await call(chain, "hello", {"callbacks": [runs]}, mode) is reply
    sequence = runs.run("RunnableSequence")
    guard_in, guard_out = runs.run("GuardInput"), runs.run("GuardOutput")
    assert runs.started[guard_in][1] == sequence
    assert runs.started[guard_out][1] == sequence
    assert runs.ended[guard_in] == "hello"
    assert guard_out in runs.ended
    assert runs.events == ["guard_decision:user_input", "guard_decision:assistant_output"]
    assert not runs.errored


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_blocking_step_ends_its_run_with_the_error(guard: Guard, mode: str) -> None:
    runs = Runs()
    step = GuardRunnable.input(guard)
    with pytest.raises(GuardBlocked):
        await call(step, UNSAFE_TEXT, {"callbacks": [runs], "run_name": "gate"}, mode)
    gate = runs.run("gate")
    assert isinstance(runs.errored[gate], GuardBlocked)
    assert gate not in runs.ended
    assert runs.events == ["guard_decision:user_input"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_without_handlers_results_and_errors_are_unchanged(guard: Guard, mode: str) -> None:
    wrapped = GuardRunnable.wrap(RunnableLambda(lambda value: f"echo {value}"), guard)
    assert await call(wrapped, "hello", None, mode) == "echo hello"
    assert await call(GuardRunnable.input(guard), "hello", None, mode) == "hello"
    with pytest.raises(GuardBlocked) as info:
        await call(GuardRunnable.input(guard), UNSAFE_TEXT, None, mode)
    assert info.value.decision.hook is Hook.USER_INPUT


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_wrapped_runnable_still_sees_the_child_config_in_context(
    guard: Guard, mode: str
) -> None:
    seen: list[Any] = []

    def inner(value: str) -> str:
        # What a nested runnable called without a config would inherit.
        seen.append(var_child_runnable_config.get())
        return value

    def bare(value: str) -> str:
        return RunnableLambda(inner).invoke(value)  # no config passed on purpose

    runs = Runs()
    wrapped = GuardRunnable.wrap(RunnableLambda(bare, name="bare"), guard)
    config: Any = {"callbacks": [runs], "tags": ["t"], "configurable": {"thread": 7}}
    assert await call(wrapped, "hi", config, mode) == "hi"
    (child_config,) = seen
    assert child_config["configurable"] == {"thread": 7}
    assert "t" in child_config["tags"]
    assert runs.started[runs.run("bare")][1] == runs.run("Guardedbare")
    assert contextvars.copy_context().get(var_child_runnable_config) is None


# -- with nobody listening the run manager is skipped; anything that could listen restores it --


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_configure_hook_tracer_still_records_the_guard_runs(
    guard: Guard, mode: str
) -> None:
    """`collect_runs` attaches its tracer through a configure hook, not through the config: the
    guard's runs must still be recorded, with their parents."""
    chain = GuardRunnable.input(guard) | GuardRunnable.wrap(
        RunnableLambda(lambda value: value, name="echo"), guard
    )
    with collect_runs() as collector:
        assert await call(chain, "hello", None, mode) == "hello"
    (root,) = collector.traced_runs
    assert root.name == "RunnableSequence"
    names = {run.name: run for run in root.child_runs}
    assert set(names) == {"GuardInput", "Guardedecho"}
    (inner,) = names["Guardedecho"].child_runs
    assert inner.name == "echo"
    assert inner.parent_run_id == names["Guardedecho"].id


def test_handlers_are_only_ruled_out_when_nothing_could_attach_one() -> None:
    assert not may_have_handlers(ensure_config(None))
    assert may_have_handlers(ensure_config({"callbacks": [Runs()]}))
    manager = CallbackManager(handlers=[], inheritable_handlers=[Runs()])
    assert may_have_handlers(ensure_config({"callbacks": manager}))
    assert not may_have_handlers(ensure_config({"callbacks": CallbackManager(handlers=[])}))
    with collect_runs():
        assert may_have_handlers(ensure_config(None))
    set_debug(True)
    try:
        assert may_have_handlers(ensure_config(None))
    finally:
        set_debug(False)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_without_handlers_the_wrapped_runnable_is_still_a_child_run(
    guard: Guard, mode: str
) -> None:
    """A handler attached to the wrapped runnable alone sees its run as a child (of a run it was
    not told about, as without the lean path), its config and tags, and cannot leak context."""
    runs = Runs()
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="unset")

    def inner(value: str) -> str:
        marker.set("changed inside")
        return f"{value}:{var_child_runnable_config.get()['configurable']['thread']}"

    bound = RunnableLambda(inner, name="inner").with_config(callbacks=[runs])
    wrapped = GuardRunnable.wrap(bound, guard)
    config: Any = {"configurable": {"thread": 3}, "tags": ["t"], "run_name": "outer"}
    assert await call(wrapped, "hi", config, mode) == "hi:3"
    run_id = runs.run("inner")
    assert runs.started[run_id][1] is not None
    assert runs.ended[run_id] == "hi:3"
    assert marker.get() == "unset"
    with pytest.raises(GuardBlocked):
        await call(wrapped, UNSAFE_TEXT, config, mode)


async def test_run_in_context_passes_results_errors_and_cancellation() -> None:
    marker: contextvars.ContextVar[str] = contextvars.ContextVar("marker", default="outer")
    context = contextvars.copy_context()
    context.run(marker.set, "inner")

    async def seen() -> str:
        await asyncio.sleep(0)
        child = asyncio.ensure_future(asyncio.sleep(0, result=marker.get()))
        return f"{marker.get()}/{await child}"

    assert await run_in_context(seen(), context) == "inner/inner"
    assert marker.get() == "outer"

    async def fails() -> None:
        await asyncio.sleep(0)
        raise KeyError("boom")

    with pytest.raises(KeyError):
        await run_in_context(fails(), context)

    cleaned: list[str] = []

    async def waits() -> None:
        try:
            await asyncio.sleep(10)
        finally:
            cleaned.append(marker.get())

    task = asyncio.ensure_future(run_in_context(waits(), context))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cleaned == ["inner"]
