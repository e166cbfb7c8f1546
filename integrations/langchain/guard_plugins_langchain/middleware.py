"""`LlamaGuardMiddleware`: Llama Guard in a ``langchain.agents.create_agent`` loop.

Where each hook checks:

- ``before_model``: the user turn. Not allowed → ``jump_to="end"`` with the refusal as the
  agent's reply (``block`` raises `GuardBlocked` instead unless ``raise_on_block=False``).
- ``after_model``: the model's reply text; a refused reply is replaced by the refusal *with the
  same message id* (its tool calls go with it, which ends the turn).
- ``wrap_tool_call``: every tool call before it runs. A refused call becomes
  ``ToolMessage(status="error")`` carrying the refusal: the tool never executes and the agent
  continues. Then the tool's result, before the model sees it.
- With ``stream_safe=True`` the reply is checked inside ``wrap_model_call`` and the model call
  is tagged ``nostream``, so ``stream_mode="messages"`` emits the reply only after it was
  checked (as one message). ``speculative=True`` moves the user-turn check there too and runs it
  concurrently with the model call (cancelled on async paths when the input is refused).

Every hook has a sync and an async version. ``approval="interrupt"`` asks a human through
LangGraph's ``interrupt`` when the policy says ``require_approval`` for a tool call and the guard
has no approver of its own (the graph needs a checkpointer); resume with ``True`` /
``{"approved": True}`` to run the call.

>>> from langchain.agents import create_agent                          # doctest: +SKIP
>>> agent = create_agent(model, tools, middleware=[LlamaGuardMiddleware(guard)])  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from typing import Any, Literal

from guard_plugins import Decision, Guard, GuardBlocked, Hook
from guard_plugins.policy import Action
from langchain.agents.middleware.types import (
    AgentMiddleware,
    AgentState,
    ExtendedModelResponse,
    ModelRequest,
    ModelResponse,
    hook_config,
)
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.runnables.config import var_child_runnable_config
from langgraph.prebuilt.tool_node import ToolCallRequest
from langgraph.runtime import Runtime
from langgraph.types import Command, interrupt

from guard_plugins_langchain._convert import messages_to_conversation
from guard_plugins_langchain._shapes import (
    GUARD_METADATA_KEY,
    Check,
    OutputTarget,
    input_check,
    output_check,
    refusal_message,
)
from guard_plugins_langchain._stream import _executor

__all__ = ["LlamaGuardMiddleware"]

_NOSTREAM = "nostream"  # langgraph.constants.TAG_NOSTREAM: the messages stream skips the run
ModelResult = ModelResponse[Any] | AIMessage | ExtendedModelResponse[Any]
ToolResult = ToolMessage | Command[Any]


class LlamaGuardMiddleware(AgentMiddleware[AgentState[Any], Any, Any]):
    """Checks user turns, replies, tool calls and tool results of an agent (module docstring)."""

    def __init__(
        self,
        guard: Guard,
        *,
        check_input: bool = True,
        check_output: bool = True,
        check_tool_calls: bool = True,
        check_tool_results: bool = True,
        stream_safe: bool = False,
        speculative: bool = False,
        raise_on_block: bool = True,
        approval: Literal["guard", "interrupt"] = "guard",
        include_system: bool = False,
        name: str | None = None,
    ) -> None:
        super().__init__()
        self.guard = guard
        self.check_input = check_input
        self.check_output = check_output
        self.check_tool_calls = check_tool_calls
        self.check_tool_results = check_tool_results
        self.speculative = speculative
        self.stream_safe = stream_safe or speculative
        self.raise_on_block = raise_on_block
        self.approval = approval
        self.include_system = include_system
        self._name = name

    @property
    def name(self) -> str:
        return self._name or type(self).__name__

    # -- user turn ------------------------------------------------------------------------------

    def _input_pending(self, messages: Sequence[BaseMessage]) -> Check | None:
        if not self.check_input or not messages or not isinstance(messages[-1], HumanMessage):
            return None
        return input_check(messages, include_system=self.include_system)

    def _input_update(self, decision: Decision) -> dict[str, Any] | None:
        if decision.allowed:
            return None
        self._maybe_raise(decision)
        return {"messages": [refusal_message(decision)], "jump_to": "end"}

    def _maybe_raise(self, decision: Decision) -> None:
        if decision.action is not Action.REFUSE and self.raise_on_block:
            raise GuardBlocked(decision)

    @hook_config(can_jump_to=["end"])
    def before_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        pending = None if self.speculative else self._input_pending(state["messages"])
        if pending is None:
            return None
        return self._input_update(self.guard.check(pending.hook, pending.conversation))

    @hook_config(can_jump_to=["end"])
    async def abefore_model(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        pending = None if self.speculative else self._input_pending(state["messages"])
        if pending is None:
            return None
        return self._input_update(await self.guard.acheck(pending.hook, pending.conversation))

    # -- model reply ----------------------------------------------------------------------------

    def _output_pending(self, messages: Sequence[BaseMessage]) -> tuple[AIMessage, Check] | None:
        if not self.check_output or not messages or not isinstance(messages[-1], AIMessage):
            return None
        reply = messages[-1]
        pending = output_check(
            OutputTarget("message", reply, ()),
            messages[:-1],
            include_tool_calls=False,  # tool calls are checked one by one in wrap_tool_call
            include_system=self.include_system,
        )
        return None if pending is None else (reply, pending)

    def _replacement(self, reply: AIMessage, decision: Decision) -> AIMessage | None:
        if decision.allowed:
            return None
        self._maybe_raise(decision)
        return refusal_message(decision, like=reply)

    def after_model(self, state: AgentState[Any], runtime: Runtime[Any]) -> dict[str, Any] | None:
        found = None if self.stream_safe else self._output_pending(state["messages"])
        if found is None:
            return None
        reply, pending = found
        replacement = self._replacement(reply, self.guard.check(pending.hook, pending.conversation))
        return None if replacement is None else {"messages": [replacement]}

    async def aafter_model(
        self, state: AgentState[Any], runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        found = None if self.stream_safe else self._output_pending(state["messages"])
        if found is None:
            return None
        reply, pending = found
        decision = await self.guard.acheck(pending.hook, pending.conversation)
        replacement = self._replacement(reply, decision)
        return None if replacement is None else {"messages": [replacement]}

    def wrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], ModelResponse[Any]],
    ) -> ModelResult:
        if not self.stream_safe:
            return handler(request)
        pending = self._input_pending(request.messages) if self.speculative else None
        verdict: Future[Decision] | None = None
        if pending is not None:
            verdict = _executor.submit(self.guard.check, pending.hook, pending.conversation)
        try:
            with _nostream():
                response = handler(request)
        except BaseException:
            if verdict is not None and not verdict.result().allowed:
                return self._refused_turn(verdict.result())
            raise
        if verdict is not None and not verdict.result().allowed:
            return self._refused_turn(verdict.result())
        return self._checked_response(request, response, self.guard.check)

    async def awrap_model_call(
        self,
        request: ModelRequest[Any],
        handler: Callable[[ModelRequest[Any]], Awaitable[ModelResponse[Any]]],
    ) -> ModelResult:
        if not self.stream_safe:
            return await handler(request)
        pending = self._input_pending(request.messages) if self.speculative else None
        with _nostream():
            model = asyncio.ensure_future(handler(request))
        if pending is not None:
            try:
                decision = await self.guard.acheck(pending.hook, pending.conversation)
            except BaseException:
                model.cancel()
                raise
            if not decision.allowed:
                model.cancel()  # the reply may never be used: stop paying for it
                await asyncio.wait([model])
                if not model.cancelled():
                    model.exception()
                return self._refused_turn(decision)
        response = await model
        decisions: dict[int, Decision] = {}
        for index, pending_out in self._response_checks(request, response):
            decisions[index] = await self.guard.acheck(pending_out.hook, pending_out.conversation)
        return self._apply(response, decisions)

    def _refused_turn(self, decision: Decision) -> ModelResponse[Any]:
        self._maybe_raise(decision)
        return ModelResponse(result=[refusal_message(decision)])

    def _response_checks(
        self, request: ModelRequest[Any], response: ModelResponse[Any]
    ) -> list[tuple[int, Check]]:
        if not self.check_output:
            return []
        checks = []
        for index, message in enumerate(response.result):
            if isinstance(message, AIMessage):
                found = self._output_pending([*request.messages, message])
                if found is not None:
                    checks.append((index, found[1]))
        return checks

    def _checked_response(
        self,
        request: ModelRequest[Any],
        response: ModelResponse[Any],
        check: Callable[[Hook, Any], Decision],
    ) -> ModelResponse[Any]:
        decisions = {
            index: check(pending.hook, pending.conversation)
            for index, pending in self._response_checks(request, response)
        }
        return self._apply(response, decisions)

    def _apply(
        self, response: ModelResponse[Any], decisions: Mapping[int, Decision]
    ) -> ModelResponse[Any]:
        result = list(response.result)
        changed = False
        for index, decision in decisions.items():
            reply = result[index]
            if isinstance(reply, AIMessage):
                replacement = self._replacement(reply, decision)
                if replacement is not None:
                    result[index] = replacement
                    changed = True
        if not changed:
            return response
        return ModelResponse(result=result, structured_response=None)

    # -- tools ----------------------------------------------------------------------------------

    def wrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], ToolResult],
    ) -> ToolResult:
        call = request.tool_call
        if self.check_tool_calls:
            decision = self.guard.check_tool_call(
                call["name"], call.get("args") or {}, _context(request, self.include_system)
            )
            refused = self._tool_call_refusal(request, decision)
            if refused is not None:
                return refused
        result = handler(request)
        if not self.check_tool_results:
            return result
        return self._checked_result(result, call["name"], self.guard.check_tool_result)

    async def awrap_tool_call(
        self,
        request: ToolCallRequest,
        handler: Callable[[ToolCallRequest], Awaitable[ToolResult]],
    ) -> ToolResult:
        call = request.tool_call
        if self.check_tool_calls:
            decision = await self.guard.acheck_tool_call(
                call["name"], call.get("args") or {}, _context(request, self.include_system)
            )
            refused = self._tool_call_refusal(request, decision)
            if refused is not None:
                return refused
        result = await handler(request)
        if not self.check_tool_results:
            return result
        decisions = {
            i: await self.guard.acheck_tool_result(call["name"], message.text)
            for i, message in _tool_messages(result)
        }
        return _replace_tool_messages(result, decisions)

    def _tool_call_refusal(
        self, request: ToolCallRequest, decision: Decision
    ) -> ToolMessage | None:
        if decision.allowed:
            return None
        if (
            self.approval == "interrupt"
            and decision.action is Action.REQUIRE_APPROVAL
            and self.guard.approver is None
        ):
            answer = interrupt(
                {
                    "type": "guard_plugins.approval",
                    "tool_call": dict(request.tool_call),
                    "decision": decision.to_dict(),
                }
            )
            if answer is True or (isinstance(answer, Mapping) and answer.get("approved") is True):
                return None
            decision = decision.replace(approved=False, rule=decision.rule + ";approval:human")
        return _error_message(request.tool_call["id"], request.tool_call["name"], decision)

    def _checked_result(
        self, result: ToolResult, name: str, check: Callable[[str, Any], Decision]
    ) -> ToolResult:
        decisions = {i: check(name, message.text) for i, message in _tool_messages(result)}
        return _replace_tool_messages(result, decisions)


def _context(request: ToolCallRequest, include_system: bool) -> Any:
    """The user turn the tool call answers (gives the check its context), or None."""
    state = request.state
    messages = state.get("messages") if isinstance(state, Mapping) else None
    if not isinstance(messages, Sequence):
        return None
    for message in reversed(messages):
        if isinstance(message, HumanMessage):
            return messages_to_conversation([message], include_system=include_system)
    return None


def _error_message(call_id: str | None, name: str, decision: Decision) -> ToolMessage:
    return ToolMessage(
        content=decision.refusal or "The tool call was refused by the safety guard.",
        tool_call_id=call_id or "",
        name=name,
        status="error",
        response_metadata={GUARD_METADATA_KEY: {**decision.to_dict(), "refusal": True}},
    )


def _tool_messages(result: ToolResult) -> list[tuple[int, ToolMessage]]:
    if isinstance(result, ToolMessage):
        return [] if result.status == "error" and _is_ours(result) else [(0, result)]
    update = result.update if isinstance(result, Command) else None
    messages = update.get("messages") if isinstance(update, Mapping) else None
    if not isinstance(messages, Sequence):
        return []
    return [(i, m) for i, m in enumerate(messages) if isinstance(m, ToolMessage)]


def _is_ours(message: ToolMessage) -> bool:
    return GUARD_METADATA_KEY in message.response_metadata


def _replace_tool_messages(result: ToolResult, decisions: Mapping[int, Decision]) -> ToolResult:
    refused = {i: d for i, d in decisions.items() if not d.allowed}
    if not refused:
        return result
    if isinstance(result, ToolMessage):
        replacement = _error_message(result.tool_call_id, result.name or "tool", refused[0])
        replacement.id = result.id
        return replacement
    update = dict(result.update) if isinstance(result.update, Mapping) else {}
    messages = list(update["messages"])
    for i, decision in refused.items():
        old = messages[i]
        messages[i] = _error_message(old.tool_call_id, old.name or "tool", decision)
        messages[i].id = old.id
    update["messages"] = messages
    return dataclasses.replace(result, update=update)


@contextlib.contextmanager
def _nostream() -> Iterator[None]:
    """Tag model runs started in this context ``nostream``: LangGraph's messages stream skips
    their tokens, and emits the (checked) reply from the node's output instead."""
    config = var_child_runnable_config.get() or {}
    tags = [*config.get("tags", []), _NOSTREAM]
    token = var_child_runnable_config.set({**config, "tags": tags})
    try:
        yield
    finally:
        var_child_runnable_config.reset(token)
