"""GuardRunnable's own traced run on the lean paths: steps (no child context) and run-end events
(sent only when a handler listens) must look to callbacks exactly as a runnable's run does."""

from __future__ import annotations

import contextvars
from typing import Any
from uuid import UUID

import pytest
from guard_plugins import Guard, GuardBlocked, Hook
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.config import var_child_runnable_config

from guard_plugins_langchain import GuardRunnable

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
