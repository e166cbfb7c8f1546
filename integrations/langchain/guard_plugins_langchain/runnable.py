"""`GuardRunnable`: Llama Guard as an LCEL step or around any runnable.

>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> from langchain_core.runnables import RunnableLambda
>>> guard = Guard(FunctionBackend(lambda conversation: "safe"))
>>> echo = RunnableLambda(lambda text: f"You said: {text}")
>>> GuardRunnable.wrap(echo, guard).invoke("hello")
'You said: hello'
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Literal

from guard_plugins import Action, Conversation, Decision, Guard, GuardBlocked, Hook
from langchain_core.callbacks import (
    AsyncCallbackManagerForChainRun,
    CallbackManagerForChainRun,
)
from langchain_core.messages import BaseMessage
from langchain_core.runnables import Runnable, RunnableConfig, RunnableSerializable
from langchain_core.runnables.config import (
    ensure_config,
    get_async_callback_manager_for_config,
    get_callback_manager_for_config,
    patch_config,
    set_config_context,
    var_child_runnable_config,
)
from langchain_core.utils.pydantic import TypeBaseModel
from pydantic import ConfigDict, Field

from guard_plugins_langchain._runs import may_have_handlers, quiet_child_config, run_in_context
from guard_plugins_langchain._shapes import (
    Check,
    OutputTarget,
    as_messages,
    enforce,
    input_check,
    locate_output,
    output_check,
    refusal_message,
    refuse_output,
    value_input_check,
)
from guard_plugins_langchain._speculation import (
    InputRefused,
    agate,
    agated,
    gate,
    gated,
    is_side_effect_free,
)
from guard_plugins_langchain._stream import (
    StreamSettings,
    _executor,
    ascreen_stream,
    screen_stream,
)

__all__ = ["GuardRunnable"]

Mode = Literal["input", "output", "wrap"]
DECISION_EVENT = "guard_decision"
"""Name of the custom event every Decision is dispatched as (``astream_events``, callbacks)."""


class GuardRunnable(RunnableSerializable[Any, Any]):
    """Checks what goes into and comes out of a chain with a `guard_plugins.Guard`.

    Build one with `GuardRunnable.input(guard)`, `GuardRunnable.output(guard)` (LCEL steps) or
    `GuardRunnable.wrap(runnable, guard)`. Each call is its own traced run; config and callbacks
    reach the wrapped runnable as a child run, and every Decision is dispatched as a
    ``guard_decision`` custom event.

    Enforcement: an allowed decision passes the value through; ``refuse`` returns the refusal in
    the shape the chain would have produced (a message with the same id, a string, or the state
    with the message replaced); anything else raises `GuardBlocked`. An input *step* cannot cut
    the rest of a sequence short, so it raises `GuardBlocked` on ``refuse`` too (`wrap` returns
    the refusal instead).

    ``speculative`` (wrap only): check the input while the wrapped runnable already runs. Output
    is held until the input verdict allows it, tool runs wait for it, and a blocked verdict
    cancels the call (async) or aborts it at its next streamed token (sync). ``None`` (default)
    speculates only when the wrapped runnable is a language model, which cannot act on the
    world before its output is released.

    Example (a guarded LCEL chain)::

        chain = prompt | GuardRunnable.input(guard) | model | GuardRunnable.output(guard)
    """

    guard: Guard
    mode: Mode = "wrap"
    bound: Runnable[Any, Any] | None = None
    speculative: bool | None = None
    include_system: bool = False
    """Render system messages into the assessed prompt (as ``System:`` user turns)."""
    include_tool_calls: bool = True
    """Assess an assistant message's tool calls together with its text at the output hook."""
    stream_min_chars: int = Field(48, ge=1)
    stream_max_chars: int = Field(400, ge=1)

    model_config = ConfigDict(arbitrary_types_allowed=True)

    # -- constructors ---------------------------------------------------------------------------

    @classmethod
    def input(cls, guard: Guard, **options: Any) -> GuardRunnable:
        """An LCEL step that checks the user turn (or tool result) and passes its input on."""
        return cls(guard=guard, mode="input", **options)

    @classmethod
    def output(cls, guard: Guard, **options: Any) -> GuardRunnable:
        """An LCEL step that checks the assistant reply, streaming it as it is checked."""
        return cls(guard=guard, mode="output", **options)

    @classmethod
    def wrap(cls, runnable: Runnable[Any, Any], guard: Guard, **options: Any) -> GuardRunnable:
        """`runnable` with its input checked before and its output checked after."""
        return cls(guard=guard, mode="wrap", bound=runnable, **options)

    # -- Runnable metadata ----------------------------------------------------------------------

    def get_name(self, suffix: str | None = None, *, name: str | None = None) -> str:
        if name is None and self.name is None:
            if self.mode == "wrap" and self.bound is not None:
                name = f"Guarded{self.bound.get_name()}"
            else:
                name = "GuardInput" if self.mode == "input" else "GuardOutput"
        return super().get_name(suffix, name=name)

    @property
    def InputType(self) -> Any:
        return self.bound.InputType if self.bound is not None else Any

    @property
    def OutputType(self) -> Any:
        return self.bound.OutputType if self.bound is not None else Any

    def get_input_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        if self.bound is not None:
            return self.bound.get_input_schema(config)
        return super().get_input_schema(config)

    def get_output_schema(self, config: RunnableConfig | None = None) -> TypeBaseModel:
        if self.bound is not None:
            return self.bound.get_output_schema(config)
        return super().get_output_schema(config)

    @property
    def _settings(self) -> StreamSettings:
        return StreamSettings(
            self.stream_min_chars,
            max(self.stream_max_chars, self.stream_min_chars),
            self.include_tool_calls,
            self.include_system,
        )

    def _speculate(self) -> bool:
        if self.speculative is not None:
            return self.speculative
        return self.bound is not None and is_side_effect_free(self.bound)

    def _input_check(self, value: Any) -> tuple[list[BaseMessage], Check | None]:
        messages = as_messages(value)
        return messages, input_check(messages, include_system=self.include_system)

    # -- invoke ---------------------------------------------------------------------------------

    # invoke/ainvoke do what `Runnable._call_with_config` does (own run, child config in
    # context) without its per-call signature inspection, a measurable share of a hook's cost.
    # A step (input / output) calls no child runnable, so it needs no child config in context;
    # run-end events go out only when some handler listens (with none they are no-ops, but the
    # async one costs a shielded task). When no handler can be attached at all
    # (`may_have_handlers`), the run manager itself is skipped: nobody could observe the run.
    # The wrapped runnable runs in its child context without a task of its own (`run_in_context`).

    def invoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        wraps = self.bound is not None and self.mode == "wrap"
        if not may_have_handlers(config):
            if not wraps:
                return self._invoke(input, None, config, **kwargs)
            child = quiet_child_config(config)
            return _config_context(child).run(self._invoke, input, None, child, **kwargs)
        run_manager = get_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            run_type="chain",
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            if not wraps:
                output = self._invoke(input, run_manager, config, **kwargs)
            else:
                child = patch_config(config, callbacks=run_manager.get_child())
                with _child_context(child, run_manager) as context:
                    output = context.run(self._invoke, input, run_manager, child, **kwargs)
        except BaseException as exc:
            if run_manager.handlers:
                run_manager.on_chain_error(exc)
            raise
        if run_manager.handlers:
            run_manager.on_chain_end(output)
        return output

    async def ainvoke(self, input: Any, config: RunnableConfig | None = None, **kwargs: Any) -> Any:
        config = ensure_config(config)
        wraps = self.bound is not None and self.mode == "wrap"
        if not may_have_handlers(config):
            if not wraps:
                return await self._ainvoke(input, None, config, **kwargs)
            child = quiet_child_config(config)
            coro = self._ainvoke(input, None, child, **kwargs)
            return await run_in_context(coro, _config_context(child))
        run_manager = await get_async_callback_manager_for_config(config).on_chain_start(
            None,
            input,
            run_type="chain",
            name=config.get("run_name") or self.get_name(),
            run_id=config.pop("run_id", None),
        )
        try:
            if not wraps:
                output = await self._ainvoke(input, run_manager, config, **kwargs)
            else:
                child = patch_config(config, callbacks=run_manager.get_child())
                with _child_context(child, run_manager) as context:
                    coro = self._ainvoke(input, run_manager, child, **kwargs)
                    output = await run_in_context(coro, context)
        except BaseException as exc:
            if run_manager.handlers:
                await run_manager.on_chain_error(exc)
            raise
        if run_manager.handlers:
            await run_manager.on_chain_end(output)
        return output

    def _invoke(
        self,
        value: Any,
        run_manager: CallbackManagerForChainRun | None,
        child: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        """`child`: the config for the wrapped runnable (its run's parent is this one)."""
        if self.mode == "output":
            return self._checked_output(value, (), self._check_sync(run_manager))
        if self.mode == "input" or self.bound is None:
            check = value_input_check(value, include_system=self.include_system)
            if check is not None:
                self._step_enforce(self._check(check, run_manager))
            return value
        messages, check = self._input_check(value)
        if check is None:
            return self._checked_output(
                self.bound.invoke(value, child, **kwargs), messages, self._check_sync(run_manager)
            )
        converted = check.conversation
        if not self._speculate():
            decision = self._check(check, run_manager)
            if not enforce(decision):
                return self._input_refusal(value, messages, decision)
            output = self.bound.invoke(value, child, **kwargs)
        else:
            verdict: Future[Decision] = _executor.submit(self._check, check, run_manager)
            try:
                output = self.bound.invoke(value, gate(child, verdict), **kwargs)
            except BaseException:
                decision = verdict.result()
                if decision.allowed:
                    raise
                if not enforce(decision):
                    return self._input_refusal(value, messages, decision)
                raise  # pragma: no cover - enforce raised
            decision = verdict.result()
            if not enforce(decision):
                return self._input_refusal(value, messages, decision)
        return self._checked_output(
            output, messages, self._check_sync(run_manager), converted=converted
        )

    async def _ainvoke(
        self,
        value: Any,
        run_manager: AsyncCallbackManagerForChainRun | None,
        child: RunnableConfig,
        **kwargs: Any,
    ) -> Any:
        if self.mode == "output":
            return await self._achecked_output(value, (), run_manager)
        if self.mode == "input" or self.bound is None:
            check = value_input_check(value, include_system=self.include_system)
            if check is not None:
                self._step_enforce(await self._acheck(check, run_manager))
            return value
        messages, check = self._input_check(value)
        if check is not None and not self._speculate():
            decision = await self._acheck(check, run_manager)
            if not enforce(decision):
                return self._input_refusal(value, messages, decision)
            output = await self.bound.ainvoke(value, child, **kwargs)
        elif check is not None:
            verdict = asyncio.ensure_future(self._acheck(check, run_manager))
            gate_config = agate(child, verdict)
            model = asyncio.ensure_future(self.bound.ainvoke(value, gate_config, **kwargs))
            try:
                decision = await verdict
            except BaseException:
                model.cancel()
                await _drain(model)
                raise
            if not decision.allowed:
                model.cancel()  # nothing it produced may leave: stop paying for it
                await _drain(model)
                enforce(decision)  # raises GuardBlocked unless the action is refuse
                return self._input_refusal(value, messages, decision)
            output = await model
        else:
            output = await self.bound.ainvoke(value, child, **kwargs)
        converted = check.conversation if check is not None else None
        return await self._achecked_output(output, messages, run_manager, converted=converted)

    # -- output checks ----------------------------------------------------------------------

    def _out_opts(self) -> dict[str, Any]:
        return {
            "include_tool_calls": self.include_tool_calls,
            "include_system": self.include_system,
        }

    def _checked_output(
        self,
        output: Any,
        context: Sequence[BaseMessage],
        check: Any,
        *,
        converted: Conversation | None = None,
    ) -> Any:
        target = locate_output(output)
        if target is None:
            return output
        pending = output_check(target, context, **self._out_opts(), converted=converted)
        if pending is None:
            return output
        decision = check(pending)
        return output if enforce(decision) else refuse_output(output, target, decision)

    async def _achecked_output(
        self,
        output: Any,
        context: Sequence[BaseMessage],
        run_manager: AsyncCallbackManagerForChainRun | None,
        *,
        converted: Conversation | None = None,
    ) -> Any:
        target = locate_output(output)
        if target is None:
            return output
        pending = output_check(target, context, **self._out_opts(), converted=converted)
        if pending is None:
            return output
        decision = await self._acheck(pending, run_manager)
        return output if enforce(decision) else refuse_output(output, target, decision)

    def _input_refusal(
        self, value: Any, messages: list[BaseMessage], decision: Decision, *, chunk: bool = False
    ) -> Any:
        """The refusal in the shape the wrapped runnable would have returned."""
        reply = refusal_message(decision, chunk=chunk)
        if isinstance(value, Mapping) and "messages" in value:
            return {**value, "messages": [*messages, reply]}
        try:
            output_type = self.bound.OutputType if self.bound is not None else None
        except TypeError:
            output_type = None
        return reply.text if output_type is str else reply

    @staticmethod
    def _step_enforce(decision: Decision) -> None:
        if not decision.allowed:
            raise GuardBlocked(decision)

    # -- guard calls (recorded as custom events of this run) ------------------------------------

    def _check(self, check: Check, run_manager: CallbackManagerForChainRun | None) -> Decision:
        decision = self.guard.check(check.hook, check.conversation)
        _emit(run_manager, decision)
        return decision

    async def _acheck(
        self, check: Check, run_manager: AsyncCallbackManagerForChainRun | None
    ) -> Decision:
        decision = await self.guard.acheck(check.hook, check.conversation)
        await _aemit(run_manager, decision)
        return decision

    def _check_sync(self, run_manager: CallbackManagerForChainRun | None) -> Any:
        return lambda check: self._check(check, run_manager)

    # -- batch ----------------------------------------------------------------------------------

    def batch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        return self._batch_with_config(
            self._batch, inputs, config, return_exceptions=return_exceptions, run_type="chain"
        )

    async def abatch(
        self,
        inputs: list[Any],
        config: RunnableConfig | list[RunnableConfig] | None = None,
        *,
        return_exceptions: bool = False,
        **kwargs: Any | None,
    ) -> list[Any]:
        return await self._abatch_with_config(
            self._abatch, inputs, config, return_exceptions=return_exceptions, run_type="chain"
        )

    def _batch(
        self,
        inputs: list[Any],
        run_manager: list[CallbackManagerForChainRun],
        config: list[RunnableConfig],
    ) -> list[Any]:
        plan = _BatchPlan(self, inputs)
        plan.apply_input(self._check_many(plan.input_checks(), run_manager))
        if self.mode == "wrap" and self.bound is not None:
            todo = plan.pending()
            outputs = self.bound.batch(
                [inputs[i] for i in todo], [config[i] for i in todo], return_exceptions=True
            )
            plan.set_outputs(todo, outputs)
        plan.apply_output(self._check_many(plan.output_checks(), run_manager))
        return plan.results

    async def _abatch(
        self,
        inputs: list[Any],
        run_manager: list[AsyncCallbackManagerForChainRun],
        config: list[RunnableConfig],
    ) -> list[Any]:
        plan = _BatchPlan(self, inputs)
        plan.apply_input(await self._acheck_many(plan.input_checks(), run_manager))
        if self.mode == "wrap" and self.bound is not None:
            todo = plan.pending()
            outputs = await self.bound.abatch(
                [inputs[i] for i in todo], [config[i] for i in todo], return_exceptions=True
            )
            plan.set_outputs(todo, outputs)
        plan.apply_output(await self._acheck_many(plan.output_checks(), run_manager))
        return plan.results

    def _check_many(
        self, checks: dict[int, Check], run_managers: list[CallbackManagerForChainRun]
    ) -> dict[int, Decision]:
        decisions: dict[int, Decision] = {}
        for hook, indices in _by_hook(checks).items():
            found = self.guard.check_many(hook, [checks[i].conversation for i in indices])
            decisions.update(zip(indices, found, strict=True))
        for i, decision in decisions.items():
            _emit(run_managers[i], decision)
        return decisions

    async def _acheck_many(
        self, checks: dict[int, Check], run_managers: list[AsyncCallbackManagerForChainRun]
    ) -> dict[int, Decision]:
        groups = _by_hook(checks)
        # One gather: every conversation reaches the guard's micro-batcher together.
        found = await asyncio.gather(
            *(
                self.guard.acheck_many(hook, [checks[i].conversation for i in indices])
                for hook, indices in groups.items()
            )
        )
        decisions: dict[int, Decision] = {}
        for indices, group in zip(groups.values(), found, strict=True):
            decisions.update(zip(indices, group, strict=True))
        for i, decision in decisions.items():
            await _aemit(run_managers[i], decision)
        return decisions

    # -- streaming ------------------------------------------------------------------------------

    def stream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[Any]:
        return self.transform(iter([input]), config, **kwargs)

    async def astream(
        self, input: Any, config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> AsyncIterator[Any]:
        async def one() -> AsyncIterator[Any]:
            yield input

        async for chunk in self.atransform(one(), config, **kwargs):
            yield chunk

    def transform(
        self, input: Iterator[Any], config: RunnableConfig | None = None, **kwargs: Any | None
    ) -> Iterator[Any]:
        yield from self._transform_stream_with_config(input, self._transform, config, **kwargs)

    async def atransform(
        self,
        input: AsyncIterator[Any],
        config: RunnableConfig | None = None,
        **kwargs: Any | None,
    ) -> AsyncIterator[Any]:
        async for chunk in self._atransform_stream_with_config(
            input, self._atransform, config, **kwargs
        ):
            yield chunk

    def _transform(
        self,
        chunks: Iterator[Any],
        run_manager: CallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> Iterator[Any]:
        check = self._check_sync(run_manager)
        if self.mode == "output":
            yield from screen_stream(chunks, check, (), self._settings)
            return
        value = _aggregate(list(chunks))
        messages, pending = self._input_check(value)
        if self.mode == "input" or self.bound is None:
            if pending is not None:
                self._step_enforce(check(pending))
            yield value
            return
        if pending is not None and not self._speculate():
            decision = check(pending)
            if not enforce(decision):
                yield self._input_refusal(value, messages, decision, chunk=True)
                return
            pending = None
        if pending is None:
            upstream = self.bound.stream(value, config, **kwargs)
        else:
            verdict: Future[Decision] = _executor.submit(check, pending)
            gate_config = gate(config, verdict)
            upstream = gated(self.bound.stream(value, gate_config, **kwargs), verdict)
        try:
            yield from screen_stream(upstream, check, messages, self._settings)
        except InputRefused as refused:
            if enforce(refused.decision):  # pragma: no cover - only raised when not allowed
                raise
            yield self._input_refusal(value, messages, refused.decision, chunk=True)

    async def _atransform(
        self,
        chunks: AsyncIterator[Any],
        run_manager: AsyncCallbackManagerForChainRun,
        config: RunnableConfig,
        **kwargs: Any,
    ) -> AsyncIterator[Any]:
        async def check(pending: Check) -> Decision:
            return await self._acheck(pending, run_manager)

        if self.mode == "output":
            async for item in ascreen_stream(chunks, check, (), self._settings):
                yield item
            return
        value = _aggregate([c async for c in chunks])
        messages, pending = self._input_check(value)
        if self.mode == "input" or self.bound is None:
            if pending is not None:
                self._step_enforce(await check(pending))
            yield value
            return
        if pending is not None and not self._speculate():
            decision = await check(pending)
            if not enforce(decision):
                yield self._input_refusal(value, messages, decision, chunk=True)
                return
            pending = None
        upstream: AsyncIterator[Any]
        if pending is None:
            upstream = self.bound.astream(value, config, **kwargs)
        else:
            verdict = asyncio.ensure_future(check(pending))
            gate_config = agate(config, verdict)
            upstream = agated(self.bound.astream(value, gate_config, **kwargs), verdict)
        try:
            async for item in ascreen_stream(upstream, check, messages, self._settings):
                yield item
        except InputRefused as refused:
            if enforce(refused.decision):  # pragma: no cover - only raised when not allowed
                raise
            yield self._input_refusal(value, messages, refused.decision, chunk=True)


class _BatchPlan:
    """Per-item state of a batch: checks, outputs and the final results (values or errors)."""

    def __init__(self, owner: GuardRunnable, inputs: list[Any]) -> None:
        self.owner = owner
        self.inputs = inputs
        self.results: list[Any] = list(inputs)
        self.done: set[int] = set()
        self.contexts: dict[int, list[BaseMessage]] = {}
        self.targets: dict[int, OutputTarget] = {}

    def input_checks(self) -> dict[int, Check]:
        if self.owner.mode == "output":
            return {}
        checks: dict[int, Check] = {}
        for i, value in enumerate(self.inputs):
            try:
                messages, check = self.owner._input_check(value)
            except Exception as exc:
                self._fail(i, exc)
                continue
            self.contexts[i] = messages
            if check is not None:
                checks[i] = check
        return checks

    def apply_input(self, decisions: dict[int, Decision]) -> None:
        for i, decision in decisions.items():
            if decision.allowed:
                continue
            if self.owner.mode == "input" or decision.action is not Action.REFUSE:
                self._fail(i, GuardBlocked(decision))
            else:
                self.results[i] = self.owner._input_refusal(
                    self.inputs[i], self.contexts.get(i, []), decision
                )
                self.done.add(i)

    def pending(self) -> list[int]:
        return [i for i in range(len(self.inputs)) if i not in self.done]

    def set_outputs(self, indices: list[int], outputs: list[Any]) -> None:
        for i, output in zip(indices, outputs, strict=True):
            if isinstance(output, Exception):
                self._fail(i, output)
            else:
                self.results[i] = output

    def output_checks(self) -> dict[int, Check]:
        if self.owner.mode == "input":
            return {}
        checks: dict[int, Check] = {}
        for i in self.pending():
            target = locate_output(self.results[i])
            if target is None:
                continue
            check = output_check(target, self.contexts.get(i, ()), **self.owner._out_opts())
            if check is not None:
                checks[i] = check
                self.targets[i] = target
        return checks

    def apply_output(self, decisions: dict[int, Decision]) -> None:
        for i, decision in decisions.items():
            try:
                if not enforce(decision):
                    self.results[i] = refuse_output(self.results[i], self.targets[i], decision)
            except GuardBlocked as exc:
                self._fail(i, exc)

    def _fail(self, i: int, exc: Exception) -> None:
        self.results[i] = exc
        self.done.add(i)


def _by_hook(checks: dict[int, Check]) -> dict[Hook, list[int]]:
    groups: dict[Hook, list[int]] = {}
    for i, check in checks.items():
        groups.setdefault(check.hook, []).append(i)
    return groups


def _aggregate(chunks: list[Any]) -> Any:
    if not chunks:
        return None
    value = chunks[0]
    for chunk in chunks[1:]:
        try:
            value = value + chunk
        except TypeError:
            value = chunk
    return value


async def _drain(task: asyncio.Future[Any]) -> None:
    # Wait for the cancelled speculative call to unwind; its result or error is discarded.
    await asyncio.wait([task])
    if not task.cancelled():
        task.exception()


def _child_context(
    child: RunnableConfig,
    run_manager: CallbackManagerForChainRun | AsyncCallbackManagerForChainRun,
) -> contextlib.AbstractContextManager[contextvars.Context]:
    """The context the wrapped runnable runs in: `child` as the current config.

    `set_config_context` also points LangSmith's tracing context at this run when a tracer
    handler is present; with no inheritable handlers there is none, and setting the config
    variable in a copied context is all it would do."""
    if run_manager.inheritable_handlers:
        return set_config_context(child)
    return contextlib.nullcontext(_config_context(child))


def _config_context(child: RunnableConfig) -> contextvars.Context:
    """A copy of the current context with `child` as the current config (no tracing context)."""
    context = contextvars.copy_context()
    context.run(var_child_runnable_config.set, child)
    return context


def _emit(run_manager: CallbackManagerForChainRun | None, decision: Decision) -> None:
    if run_manager is not None and run_manager.inheritable_handlers:
        run_manager.get_child().on_custom_event(DECISION_EVENT, decision.to_dict())


async def _aemit(run_manager: AsyncCallbackManagerForChainRun | None, decision: Decision) -> None:
    if run_manager is not None and run_manager.inheritable_handlers:
        await run_manager.get_child().on_custom_event(DECISION_EVENT, decision.to_dict())
