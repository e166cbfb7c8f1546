"""LlamaGuardEventHandler: decisions recorded in LlamaIndex's instrumentation, never blocking."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.llm import LLMCompletionStartEvent
from llama_index.core.llms import MockLLM
from llama_index_instrumentation.base import BaseEvent
from llamaindex_support import make_guard

from guard_plugins_llamaindex import GuardDecisionEvent, LlamaGuardEventHandler


class AllEvents(BaseEventHandler):
    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "AllEvents"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def attach() -> Iterator[Any]:
    root = get_dispatcher()
    attached: list[BaseEventHandler] = []

    def add(handler: BaseEventHandler) -> BaseEventHandler:
        root.add_event_handler(handler)
        attached.append(handler)
        return handler

    yield add
    for handler in attached:
        root.event_handlers.remove(handler)


def test_records_without_blocking(attach: Any) -> None:
    guard, recorder = make_guard()
    handler = attach(LlamaGuardEventHandler(guard=guard))
    seen = attach(AllEvents(events=[]))
    llm = MockLLM()
    assert llm.complete("how to do CRIME").text == "how to do CRIME"  # not blocked
    decisions = handler.flush()
    assert [(d.hook.value, d.allowed) for d in decisions] == [
        ("user_input", False),
        ("assistant_output", False),
    ]
    traced = [e for e in seen.events if isinstance(e, GuardDecisionEvent)]
    assert {e.source for e in traced} == {"event_handler"}
    # Each decision sits in the span of the LLM call it assessed.
    start = next(e for e in seen.events if isinstance(e, LLMCompletionStartEvent))
    assert traced[0].span_id == start.span_id
    assert len(recorder.assessed) == 2


def test_nested_llm_events_checked_once(attach: Any) -> None:
    guard, recorder = make_guard()
    handler = attach(LlamaGuardEventHandler(guard=guard, blocking=True))
    MockLLM().chat([ChatMessage(role="user", content="hello")])  # chat → complete
    assert [d.hook.value for d in handler.decisions] == ["user_input", "assistant_output"]
    assert [role for role, _ in recorder.assessed] == ["User", "Agent"]


def test_on_decision_callback_and_switches(attach: Any) -> None:
    guard, _ = make_guard()
    got: list[Any] = []
    attach(
        LlamaGuardEventHandler(
            guard=guard, blocking=True, check_output=False, on_decision=got.append
        )
    )
    MockLLM().complete("hi")
    assert [d.hook.value for d in got] == ["user_input"]
