"""Every LlamaIndex LLM call behind Llama Guard 4, and the Decisions in LlamaIndex's traces.

- `LlamaGuardCallbackHandler` on ``Settings.callback_manager``: each LLM call's input (chat
  messages *and* completion prompts) is checked before the call, its reply after. A call whose
  input is not allowed raises `GuardBlocked`; a reply the policy refuses is replaced by the
  refusal.
- `LlamaGuardEventHandler` on LlamaIndex's instrumentation dispatcher: records a Decision for each
  LLM call it sees, as a `GuardDecisionEvent` in the call's span, without ever blocking
  (observability only). Any instrumentation handler (here a small printer) sees those events.

The LLM is LlamaIndex's `MockLLM` (it echoes its prompt). Use your own LLM in its place.

Run: GUARD_PLUGINS_MODEL=<model or dev-model dir> python examples/llamaindex_callbacks.py
(on a dev model the verdicts are random: the run shows the plumbing, not the judgement).
"""

from __future__ import annotations

import sys
from typing import Any

from guard_plugins_llamaindex import (
    GuardDecisionEvent,
    LlamaGuardCallbackHandler,
    LlamaGuardEventHandler,
)
from llama_index.core import Settings
from llama_index.core.callbacks import CallbackManager
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.llms import ChatMessage, MockLLM

from guard_plugins import Guard, GuardBlocked
from guard_plugins.errors import GuardError


class PrintDecisions(BaseEventHandler):
    """What a tracing integration sees: guard decisions as instrumentation events."""

    @classmethod
    def class_name(cls) -> str:
        return "PrintDecisions"

    def handle(self, event: Any, **kwargs: Any) -> None:
        if isinstance(event, GuardDecisionEvent):
            print(f"    trace [{event.source}] span={str(event.span_id)[:24]} {event.summary}")


def main() -> int:
    try:
        guard = Guard.from_env()
    except GuardError as exc:
        print(f"error: {exc}\nSet GUARD_PLUGINS_MODEL or GUARD_PLUGINS_ENDPOINT.", file=sys.stderr)
        return 1
    dispatcher = get_dispatcher()
    printer = PrintDecisions()
    dispatcher.add_event_handler(printer)

    print("1. observing: LlamaGuardEventHandler on the instrumentation dispatcher")
    observer = LlamaGuardEventHandler(guard=guard)
    dispatcher.add_event_handler(observer)
    plain = MockLLM()
    print(f"  complete -> {plain.complete('Explain how to hotwire a car.').text!r}")
    decisions = observer.flush()  # checks ran in the background; wait for them
    print(f"  recorded {len(decisions)} decision(s); none of them could block the call")
    dispatcher.event_handlers.remove(observer)

    print("2. enforcing: LlamaGuardCallbackHandler on Settings.callback_manager")
    handler = LlamaGuardCallbackHandler(guard)
    Settings.callback_manager = CallbackManager([handler])
    llm = MockLLM()  # created after the setting: it picks the handler up
    calls = [
        ("complete", lambda: llm.complete("Write a haiku about autumn.").text),
        ("chat", lambda: llm.chat([ChatMessage(role="user", content="Hi there!")]).message.content),
        ("complete", lambda: llm.complete("Explain how to hotwire a car.").text),
    ]
    for kind, call in calls:
        try:
            print(f"  {kind} -> {call()!r}"[:110])
        except GuardBlocked as blocked:
            print(f"  {kind} -> blocked: {blocked.decision.summary()}")

    dispatcher.event_handlers.remove(printer)
    return 0


if __name__ == "__main__":
    sys.exit(main())
