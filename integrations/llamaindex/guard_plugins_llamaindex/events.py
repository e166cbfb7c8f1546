"""Decisions in LlamaIndex's own traces (the instrumentation module). Observability only.

- `GuardDecisionEvent`: every Decision this package makes (callback handler, tools, agent,
  engines, node postprocessor) is dispatched as an instrumentation event on the
  ``guard_plugins_llamaindex`` dispatcher, a child of LlamaIndex's root dispatcher. Whatever is
  attached to LlamaIndex instrumentation (event handlers, tracing integrations) sees it within
  the span it happened in. It carries codes, scores and the rule, never the checked text.
- `LlamaGuardEventHandler`: a `BaseEventHandler` for the root dispatcher that assesses the LLM
  calls it sees (chat and completion start/end events) and dispatches the Decisions as
  `GuardDecisionEvent`s in the same span. It cannot block anything: LlamaIndex's dispatcher
  swallows exceptions from event handlers. Enforce with `LlamaGuardCallbackHandler`,
  `guard_tools`, `GuardedAgent` or the engine wrappers.

>>> >>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> handler = LlamaGuardEventHandler(guard=Guard(FunctionBackend(lambda c: "safe")))
>>> get_dispatcher().add_event_handler(handler)            # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from guard_plugins import Conversation, Decision, Guard, Hook
from guard_plugins._sync import portal_loop
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field, PrivateAttr
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import (
    LLMChatEndEvent,
    LLMChatStartEvent,
    LLMCompletionEndEvent,
    LLMCompletionStartEvent,
)
from llama_index_instrumentation import get_dispatcher
from llama_index_instrumentation.base import BaseEvent
from llama_index_instrumentation.event_handlers import NullEventHandler

from guard_plugins_llamaindex import _convert
from guard_plugins_llamaindex._nesting import nested_llm_call

__all__ = ["GuardDecisionEvent", "LlamaGuardEventHandler", "dispatcher", "record_decision"]

logger = logging.getLogger("guard_plugins_llamaindex")
dispatcher = get_dispatcher("guard_plugins_llamaindex")


class GuardDecisionEvent(BaseEvent):
    """One guard Decision, as an instrumentation event (no checked content in it)."""

    hook: str
    action: str
    allowed: bool
    enforced: bool
    rule: str
    categories: list[str] = Field(default_factory=list)
    tool_name: str | None = None
    source: str = Field(description="The component that made the check")
    summary: str = ""
    data: dict[str, Any] = Field(default_factory=dict, description="Decision.to_dict()")
    decision: Any = Field(default=None, exclude=True, description="The Decision itself")

    @classmethod
    def class_name(cls) -> str:
        return "GuardDecisionEvent"

    @classmethod
    def of(cls, decision: Decision, source: str, span_id: str | None = None) -> GuardDecisionEvent:
        extra: dict[str, Any] = {} if span_id is None else {"span_id": span_id}
        return cls(
            hook=decision.hook.value,
            action=decision.action.value,
            allowed=decision.allowed,
            enforced=decision.enforced,
            rule=decision.rule,
            categories=list(decision.codes),
            tool_name=decision.tool_name,
            source=source,
            summary=decision.summary(),
            data=decision.to_dict(),
            decision=decision,
            **extra,
        )


def record_decision(decision: Decision, source: str, span_id: str | None = None) -> Decision:
    """Dispatch `decision` into LlamaIndex's traces and log it; returns it unchanged."""
    if not decision.allowed or decision.flagged:
        logger.info("%s: %s", source, decision.summary())
    if _observed(dispatcher):  # the event is a pydantic model: build it only for a listener
        dispatcher.event(GuardDecisionEvent.of(decision, source, span_id))
    return decision


def _observed(start: Any) -> bool:
    """Whether `Dispatcher.event` would reach any event handler (it walks the same chain)."""
    current = start
    while current:
        if any(not isinstance(h, NullEventHandler) for h in current.event_handlers):
            return True
        current = current.parent if current.propagate else None
    return False


class LlamaGuardEventHandler(BaseEventHandler):
    """Assess LLM calls seen through LlamaIndex instrumentation; record, never block.

    Checks run in the background on the guard's own loop (``blocking=False``, the default) so
    the application is never slowed down; `flush()` waits for them (tests, shutdown).
    ``blocking=True`` checks inline instead. Decisions are dispatched as `GuardDecisionEvent`s
    in the span of the LLM call, kept in `decisions` (the last `max_decisions`) and passed to
    `on_decision`.
    """

    guard: Guard
    blocking: bool = False
    check_input: bool = True
    check_output: bool = True
    on_decision: Callable[[Decision], None] | None = None
    max_decisions: int = 1000

    _decisions: deque[Decision] = PrivateAttr()
    _pending: set[concurrent.futures.Future[Decision | None]] = PrivateAttr(default_factory=set)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _idle: threading.Condition = PrivateAttr(default_factory=threading.Condition)

    def model_post_init(self, context: Any, /) -> None:
        self._decisions = deque(maxlen=self.max_decisions)

    @classmethod
    def class_name(cls) -> str:
        return "LlamaGuardEventHandler"

    @property
    def decisions(self) -> list[Decision]:
        with self._lock:
            return list(self._decisions)

    def handle(self, event: BaseEvent, **kwargs: Any) -> Any:
        if isinstance(event, GuardDecisionEvent):
            return None
        try:
            job = self._job(event)
        except Exception as exc:  # malformed content: say so in the trace, never raise
            logger.warning("LlamaGuardEventHandler skipped %s: %s", event.class_name(), exc)
            return None
        if job is None:
            return None
        span_id = event.span_id
        if self.blocking:
            future: concurrent.futures.Future[Decision | None] = asyncio.run_coroutine_threadsafe(
                job, portal_loop()
            )
            self._finish(future, span_id)
            return None
        future = asyncio.run_coroutine_threadsafe(job, portal_loop())
        with self._idle:
            self._pending.add(future)
        future.add_done_callback(lambda f: self._finish(f, span_id))
        return None

    def flush(self, timeout: float | None = 30.0) -> list[Decision]:
        """Wait until the background checks started so far are recorded; returns the decisions."""
        with self._idle:
            self._idle.wait_for(lambda: not self._pending, timeout=timeout)
        return self.decisions

    def _finish(
        self, future: concurrent.futures.Future[Decision | None], span_id: str | None
    ) -> None:
        try:
            self._record(future, span_id)
        finally:
            with self._idle:
                self._pending.discard(future)
                self._idle.notify_all()

    def _record(
        self, future: concurrent.futures.Future[Decision | None], span_id: str | None
    ) -> None:
        try:
            decision = future.result()
        except Exception as exc:
            logger.warning("LlamaGuardEventHandler check failed: %s", type(exc).__name__)
            return
        if decision is None:
            return
        with self._lock:
            self._decisions.append(decision)
        record_decision(decision, "event_handler", span_id)
        if self.on_decision is not None:
            try:
                self.on_decision(decision)
            except Exception:
                logger.exception("on_decision callback failed")

    def _job(self, event: BaseEvent) -> Coroutine[Any, Any, Decision | None] | None:
        if self.check_input and isinstance(event, (LLMChatStartEvent, LLMCompletionStartEvent)):
            if nested_llm_call():
                return None
            if isinstance(event, LLMChatStartEvent):
                return _check_messages(self.guard, event.messages)
            return _check_conversation(self.guard, Hook.USER_INPUT, Conversation.user(event.prompt))
        if self.check_output and isinstance(event, (LLMChatEndEvent, LLMCompletionEndEvent)):
            if nested_llm_call():
                return None
            if isinstance(event, LLMChatEndEvent):
                if event.response is None:
                    return None
                messages = [*event.messages, _without_tool_calls(event.response.message)]
                conv = _convert.to_conversation(messages)
            else:
                conv = Conversation.user(event.prompt).with_assistant(event.response.text)
            return _check_conversation(self.guard, Hook.ASSISTANT_OUTPUT, conv)
        return None


def _without_tool_calls(message: ChatMessage) -> ChatMessage:
    return ChatMessage(role=message.role, content=_convert.message_text(message))


def input_hook(messages: Sequence[ChatMessage]) -> Hook | None:
    """The hook an LLM input is assessed at: its last message's role decides."""
    for message in reversed(messages):
        role = _convert.guard_role(message)
        if role == "system":
            continue
        if role == "user":
            return Hook.USER_INPUT
        if role == "tool":
            return Hook.TOOL_RESULT
        return None
    return None


def _check_messages(
    guard: Guard, messages: Sequence[ChatMessage]
) -> Coroutine[Any, Any, Decision | None] | None:
    hook = input_hook(messages)
    if hook is None:
        return None
    return _check_conversation(guard, hook, _convert.to_conversation(messages))


def _check_conversation(
    guard: Guard, hook: Hook, conversation: Conversation
) -> Coroutine[Any, Any, Decision | None] | None:
    if not _convert.assessable(conversation):
        return None
    return _acheck(guard, hook, conversation)


async def _acheck(guard: Guard, hook: Hook, conversation: Conversation) -> Decision | None:
    return await guard.acheck(hook, conversation)
