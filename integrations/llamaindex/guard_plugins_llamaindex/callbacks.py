"""`LlamaGuardCallbackHandler`: a legacy callback handler that guards every LLM call.

Attach it to ``Settings.callback_manager`` or to one component's ``callback_manager``. On
`CBEventType.LLM` start it checks the input: the chat ``MESSAGES`` payload *and* the completion
``PROMPT`` payload (checking only one would let ``llm.complete`` through). On LLM end it checks
the reply text (assistant_output) and every tool call the reply proposes (tool_call).

Enforcement: LlamaIndex propagates exceptions raised by legacy callback handlers, so raising
`GuardBlocked` aborts the call. An input that is not allowed raises (nothing can be substituted
before the call). A reply that is not allowed is replaced *in place* by the refusal when the
policy says ``refuse`` and the reply was not streamed (the caller receives the refusal), and
raises otherwise. A streamed reply has already reached the caller by the time LlamaIndex reports
its end, so a flagged stream raises at its end: use `GuardedAgent` or the engine wrappers to
hold streams back until they are checked.

``enforce=False`` (or ``Policy(monitor=True)``) records Decisions without interfering.
The checks run synchronously (legacy callbacks are synchronous): an async caller's event loop
waits for them.

>>> from llama_index.core import Settings
>>> from llama_index.core.callbacks import CallbackManager
>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> handler = LlamaGuardCallbackHandler(Guard(FunctionBackend(lambda c: "safe")))
>>> Settings.callback_manager = CallbackManager([handler])      # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from guard_plugins import (
    Action,
    Conversation,
    Decision,
    Guard,
    GuardBlocked,
    Hook,
    Message,
    TextPart,
)
from guard_plugins._sync import run_sync
from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    CompletionResponse,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler

from guard_plugins_llamaindex import _convert
from guard_plugins_llamaindex._nesting import in_llm_stream, nested_llm_call
from guard_plugins_llamaindex.events import input_hook, record_decision

__all__ = ["LlamaGuardCallbackHandler"]

_OTHER_EVENTS: list[CBEventType] = [e for e in CBEventType if e is not CBEventType.LLM]


class LlamaGuardCallbackHandler(BaseCallbackHandler):
    """Check LLM inputs and outputs from LlamaIndex's callback system (see module docstring).

    - `enforce`: raise / refuse as the policy says (False: record only).
    - `check_input`, `check_output`, `check_tool_calls`: which checks run.
    - `on_decision`: called with every Decision; `decisions` keeps the last `max_decisions`.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        enforce: bool = True,
        check_input: bool = True,
        check_output: bool = True,
        check_tool_calls: bool = True,
        on_decision: Callable[[Decision], None] | None = None,
        max_decisions: int = 1000,
    ) -> None:
        super().__init__(event_starts_to_ignore=_OTHER_EVENTS, event_ends_to_ignore=_OTHER_EVENTS)
        self.guard = guard
        self.enforce = enforce
        self.check_input = check_input
        self.check_output = check_output
        self.check_tool_calls = check_tool_calls
        self.on_decision = on_decision
        self._decisions: deque[Decision] = deque(maxlen=max_decisions)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<LlamaGuardCallbackHandler {self.guard!r} enforce={self.enforce}>"

    @property
    def decisions(self) -> list[Decision]:
        with self._lock:
            return list(self._decisions)

    # -- BaseCallbackHandler ----------------------------------------------------------------

    def start_trace(self, trace_id: str | None = None) -> None:
        return None

    def end_trace(
        self, trace_id: str | None = None, trace_map: dict[str, list[str]] | None = None
    ) -> None:
        return None

    def on_event_start(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        parent_id: str = "",
        **kwargs: Any,
    ) -> str:
        if event_type is not CBEventType.LLM or not payload or not self.check_input:
            return event_id
        if nested_llm_call():
            return event_id
        conversation, hook = _input_of(payload)
        if conversation is None or hook is None or not _convert.assessable(conversation):
            return event_id
        decision = self._record(run_sync(self.guard.acheck(hook, conversation), api="acheck()"))
        if self.enforce and not decision.allowed:
            raise GuardBlocked(decision)
        return event_id

    def on_event_end(
        self,
        event_type: CBEventType,
        payload: dict[str, Any] | None = None,
        event_id: str = "",
        **kwargs: Any,
    ) -> None:
        if event_type is not CBEventType.LLM or not payload:
            return
        if EventPayload.EXCEPTION in payload or nested_llm_call():
            return
        response = payload.get(EventPayload.RESPONSE, payload.get(EventPayload.COMPLETION))
        if not isinstance(response, (ChatResponse, CompletionResponse)):
            return
        decisions = run_sync(self._check_reply(payload, response), api="acheck_output()")
        failing = [self._record(d) for d in decisions]
        failing = [d for d in failing if not d.allowed]
        if not failing or not self.enforce:
            return
        worst = max(failing, key=lambda d: d.action.severity)
        if all(d.action is Action.REFUSE for d in failing) and not in_llm_stream():
            _replace_reply(response, worst.refusal or "")
            return
        raise GuardBlocked(worst)

    # -- checks -----------------------------------------------------------------------------

    async def _check_reply(
        self, payload: dict[str, Any], response: ChatResponse | CompletionResponse
    ) -> list[Decision]:
        context = _context_of(payload)
        jobs = []
        if isinstance(response, CompletionResponse):
            text, calls = response.text, []
        else:
            text = _convert.message_text(response.message)
            calls = _convert.tool_calls_of(response.message) if self.check_tool_calls else []
        if self.check_output and text.strip():
            conv = context.append(Message("assistant", (TextPart(text),)))
            jobs.append(self.guard.acheck_output(conv))
        for call in calls:
            jobs.append(self.guard.acheck_tool_call(call.name, call.arguments, context))
        return list(await asyncio.gather(*jobs))

    def _record(self, decision: Decision) -> Decision:
        with self._lock:
            self._decisions.append(decision)
        record_decision(decision, "callback_handler")
        if self.on_decision is not None:
            self.on_decision(decision)
        return decision


def _input_of(payload: dict[str, Any]) -> tuple[Conversation | None, Hook | None]:
    messages = payload.get(EventPayload.MESSAGES)
    if messages is not None:
        messages = list(messages)
        return _convert.to_conversation(messages), input_hook(messages)
    prompt = payload.get(EventPayload.PROMPT)
    if isinstance(prompt, str):
        return Conversation.user(prompt), Hook.USER_INPUT
    return None, None


def _context_of(payload: dict[str, Any]) -> Conversation:
    """The text of the call's input, as context for the reply's checks (no images: S14 stays)."""
    messages = payload.get(EventPayload.MESSAGES)
    if messages is not None:
        return _convert.text_only(_convert.to_conversation(_plain(messages)))
    prompt = payload.get(EventPayload.PROMPT)
    if isinstance(prompt, str) and prompt.strip():
        return Conversation.user(prompt)
    return Conversation(())


def _plain(messages: Sequence[ChatMessage]) -> list[ChatMessage]:
    # Context only needs text: converting images here would read or reject them for nothing.
    return [
        ChatMessage(
            role=m.role,
            blocks=[b for b in m.blocks if isinstance(b, (TextBlock, ToolCallBlock))],
            additional_kwargs=m.additional_kwargs,
        )
        for m in messages
    ]


def _replace_reply(response: ChatResponse | CompletionResponse, refusal: str) -> None:
    """Make the object the caller is about to receive say the refusal (and call no tools)."""
    if isinstance(response, CompletionResponse):
        response.text = refusal
        response.delta = None
        return
    response.message = ChatMessage(role=MessageRole.ASSISTANT, content=refusal)
    response.delta = None
