"""`LlamaGuardCallbackHandler`: check model inputs, replies and tool calls from the callback stream.

For applications that only want monitoring, or cannot change their chain: pass the handler in
``config={"callbacks": [handler]}`` and every chat model start, model end and tool start is
checked and logged. With ``enforce=True`` a blocked decision raises `GuardBlocked` out of the
run: before the model is called, before the tool runs, or (for replies) before ``invoke``
returns. Enforcing needs a *sync* handler with ``raise_error=True`` — LangChain runs sync
handlers on async paths too (in a worker thread), while async handlers are skipped on sync paths.

Limits: tokens streamed to the caller by ``stream()`` leave before ``on_llm_end``; use
`GuardRunnable` for streaming-safe output checks.

>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> handler = LlamaGuardCallbackHandler(Guard(FunctionBackend(lambda c: "safe")))
>>> handler.raise_error
False
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from guard_plugins import Decision, Guard, GuardBlocked, Hook
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from langchain_core.outputs import ChatGeneration, LLMResult

from guard_plugins_langchain._shapes import Check, OutputTarget, input_check, output_check

__all__ = ["LlamaGuardCallbackHandler"]

logger = logging.getLogger("guard_plugins_langchain.callbacks")


class LlamaGuardCallbackHandler(BaseCallbackHandler):
    """Checks ``on_chat_model_start`` / ``on_llm_start``, ``on_llm_end`` and ``on_tool_start``.

    Every Decision is logged (flagged ones at WARNING, with `Decision.summary()`, never the
    content) and kept in `decisions` (the latest `max_decisions`). ``enforce=True`` raises
    `GuardBlocked` for decisions that do not allow the content; in monitor mode
    (``Policy(monitor=True)``) nothing is blocked whatever ``enforce`` says.
    """

    def __init__(
        self,
        guard: Guard,
        *,
        enforce: bool = False,
        check_input: bool = True,
        check_output: bool = True,
        check_tools: bool = True,
        include_system: bool = False,
        max_decisions: int = 1000,
    ) -> None:
        self.guard = guard
        self.enforce = enforce
        self.raise_error = enforce
        self.check_input = check_input
        self.check_output = check_output
        self.check_tools = check_tools
        self.include_system = include_system
        self.decisions: deque[Decision] = deque(maxlen=max_decisions)
        self._contexts: dict[UUID, list[list[BaseMessage]]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        mode = "enforcing" if self.enforce else "monitoring"
        return f"<LlamaGuardCallbackHandler {mode} {self.guard!r}>"

    # -- model input ----------------------------------------------------------------------------

    def on_chat_model_start(
        self,
        serialized: dict[str, Any],
        messages: list[list[BaseMessage]],
        *,
        run_id: UUID,
        **kwargs: Any,
    ) -> None:
        self._remember(run_id, messages)
        if self.check_input:
            checks = [input_check(m, include_system=self.include_system) for m in messages]
            self._run_checks(checks)

    def on_llm_start(
        self, serialized: dict[str, Any], prompts: list[str], *, run_id: UUID, **kwargs: Any
    ) -> None:
        lists: list[list[BaseMessage]] = [[HumanMessage(p)] for p in prompts]
        self._remember(run_id, lists)
        if self.check_input:
            self._run_checks([input_check(m) for m in lists])

    # -- model output ---------------------------------------------------------------------------

    def on_llm_end(self, response: LLMResult, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            contexts = self._contexts.pop(run_id, [])
        if not self.check_output:
            return
        checks: list[Check | None] = []
        for index, generations in enumerate(response.generations):
            if not generations:
                continue
            generation = generations[0]
            if isinstance(generation, ChatGeneration) and isinstance(generation.message, AIMessage):
                message = generation.message
            else:
                message = AIMessage(generation.text)
            context = contexts[index] if index < len(contexts) else []
            target = OutputTarget("message", message, ())
            checks.append(output_check(target, context, include_system=self.include_system))
        self._run_checks(checks)

    def on_llm_error(self, error: BaseException, *, run_id: UUID, **kwargs: Any) -> None:
        with self._lock:
            self._contexts.pop(run_id, None)

    # -- tools ----------------------------------------------------------------------------------

    def on_tool_start(
        self,
        serialized: dict[str, Any],
        input_str: str,
        *,
        inputs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if not self.check_tools:
            return
        name = (serialized or {}).get("name") or kwargs.get("name") or "tool"
        arguments: Mapping[str, Any] | str = inputs if isinstance(inputs, Mapping) else input_str
        self._record(self.guard.check_tool_call(str(name), arguments))

    # -- plumbing -------------------------------------------------------------------------------

    def _remember(self, run_id: UUID, messages: list[list[BaseMessage]]) -> None:
        if self.check_output:
            with self._lock:
                self._contexts[run_id] = messages

    def _run_checks(self, checks: Sequence[Check | None]) -> None:
        by_hook: dict[Hook, list[Check]] = {}
        for check in checks:
            if check is not None:
                by_hook.setdefault(check.hook, []).append(check)
        blocked: Decision | None = None
        for hook, group in by_hook.items():
            # One conversation (the usual case) needs no batch: `check` is the same check and
            # runs inline when it can; several reach the backend together.
            decisions = (
                [self.guard.check(hook, group[0].conversation)]
                if len(group) == 1
                else self.guard.check_many(hook, [c.conversation for c in group])
            )
            for decision in decisions:
                blocked = blocked or (None if decision.allowed else decision)
                self._log(decision)
        if blocked is not None and self.enforce:
            raise GuardBlocked(blocked)

    def _record(self, decision: Decision) -> None:
        self._log(decision)
        if self.enforce and not decision.allowed:
            raise GuardBlocked(decision)

    def _log(self, decision: Decision) -> None:
        self.decisions.append(decision)
        level = logging.WARNING if decision.flagged else logging.DEBUG
        if logger.isEnabledFor(level):  # the summary is built only for a record that is kept
            logger.log(level, "guard: %s", decision.summary())
