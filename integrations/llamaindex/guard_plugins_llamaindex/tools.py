"""`GuardedTool`: any LlamaIndex tool, checked before it runs and after it returns.

The call (``tool_call`` hook: the tool's name and arguments, code verbatim) is checked before
the wrapped tool runs; code flagged S14 never executes. The output (``tool_result`` hook) is
checked before it is returned to the agent. Either way a refusal is an ordinary
``ToolOutput(is_error=True)`` whose content is the refusal, so the agent reads it and carries on;
its ``exception`` is a `GuardBlocked` carrying the Decision. Outputs with no text (nothing to
assess) are returned unchecked.

`GuardedTool` is a `FunctionTool`, so agents treat it as the tool it wraps: same metadata and
schema (``metadata`` is the wrapped tool's own object), `Context` injection for tools that take a
workflow `Context`, and `CodeActAgent` support (its ``real_fn`` is a guarded function with the
original's name, signature and docstring).

>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> def run_python(code: str) -> str:
...     "Run Python code."
...     return "ran"
>>> guard = Guard(FunctionBackend(lambda c: "unsafe\\nS14" if "rmtree" in c.turns()[-1].text
...                               else "safe"))
>>> tool = guard_tool(run_python, guard)
>>> tool.call(code="import shutil; shutil.rmtree('/')").is_error
True
>>> tool.call(code="print(1)").content
'ran'
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guard_plugins import Conversation, Decision, Guard, GuardBlocked, Message, ToolCallPart
from llama_index.core.tools import AsyncBaseTool, BaseTool, FunctionTool, ToolOutput
from llama_index.core.tools.types import adapt_to_async_tool

from guard_plugins_llamaindex import _convert
from guard_plugins_llamaindex.events import record_decision

__all__ = ["GuardedTool", "guard_tool", "guard_tools"]


@dataclass
class ToolScope:
    """What an agent knows about the call a tool is about to serve (set around the call).

    `context`: the conversation the call belongs to (text only). `decisions`: call checks the
    agent already made when the model proposed the calls, keyed by (tool name, arguments), so
    each call is decided once (and an approver asked once).
    """

    context: Conversation | None = None
    decisions: dict[tuple[str, str], list[Decision]] = field(default_factory=dict)

    def take(self, tool_name: str, arguments: Mapping[str, Any] | str) -> Decision | None:
        queue = self.decisions.get((tool_name, arguments_key(arguments)))
        return queue.pop(0) if queue else None


_SCOPE: contextvars.ContextVar[ToolScope | None] = contextvars.ContextVar(
    "guard_plugins_llamaindex_tool_scope", default=None
)


def _presigned(method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` carrying its own signature. LlamaIndex wraps a tool's ``call`` / ``acall`` in
    an instrumentation span that binds the arguments with ``inspect.signature`` on every call;
    a precomputed ``__signature__`` (the same one) is returned at once instead of rebuilt."""
    method.__signature__ = inspect.signature(method)  # type: ignore[attr-defined]
    return method


def arguments_key(arguments: Mapping[str, Any] | str) -> str:
    if isinstance(arguments, str):
        return arguments
    return json.dumps(dict(arguments), sort_keys=True, ensure_ascii=False, default=str)


class GuardedTool(FunctionTool):
    """A tool wrapped by a `Guard` (see module docstring).

    - `language`: language of the code the tool runs (rendered on the fence, e.g. ``python``).
    - `code_argument`: the argument holding code, when its name is not one the core recognises
      (``code``, ``script``, ``command``, ``query``...).
    - `check_output`: also check what the tool returns (``tool_result``), default True.
    """

    def __init__(
        self,
        tool: BaseTool,
        guard: Guard,
        *,
        language: str | None = None,
        code_argument: str | None = None,
        check_output: bool = True,
    ) -> None:
        if isinstance(tool, GuardedTool):
            raise TypeError("the tool is already guarded; wrap the original tool instead")
        self.tool = tool
        self.guard = guard
        self.language = language
        self.code_argument = code_argument
        self.check_output = check_output
        self._async_tool: AsyncBaseTool = adapt_to_async_tool(tool)
        inner_fn: Callable[..., Any] = tool.real_fn if isinstance(tool, FunctionTool) else _opaque
        # Initialised from the wrapped function so that `requires_context` / `ctx_param_name`
        # match it (agents then inject the workflow Context as they would for the original).
        super().__init__(fn=inner_fn, metadata=tool.metadata)
        self.partial_params = {}
        self._guarded_fn = _guarded_function(self, inner_fn)

    def __repr__(self) -> str:
        return f"<GuardedTool {self.metadata.name!r} wrapping {type(self.tool).__name__}>"

    @property
    def name(self) -> str:
        return self.metadata.get_name()

    # FunctionTool exposes its functions; hand out guarded ones so nothing bypasses the guard.
    @property
    def fn(self) -> Callable[..., Any]:
        return self._guarded_fn

    @property
    def async_fn(self) -> Callable[..., Awaitable[Any]]:
        async def guarded(*args: Any, **kwargs: Any) -> Any:
            return _unwrap(await self.acall(*args, **kwargs))

        return guarded

    @property
    def real_fn(self) -> Callable[..., Any]:
        return self._guarded_fn

    # -- calls ------------------------------------------------------------------------------

    @_presigned
    def call(self, *args: Any, **kwargs: Any) -> ToolOutput:
        arguments = self._arguments(args, kwargs)
        scope = _SCOPE.get()
        context = scope.context if scope else None
        decision = scope.take(self.name, arguments) if scope else None
        if decision is None:
            decision = self.check_call(arguments, context)
        if not decision.allowed:
            return self._refusal(decision, arguments)
        output = self._async_tool.call(*args, **kwargs)
        pending = self._output_history(output, arguments, context)
        if pending is None:
            return output
        text, history = pending
        decision = record_decision(self.guard.check_tool_result(self.name, text, history), "tool")
        return output if decision.allowed else self._refusal(decision, arguments)

    @_presigned
    async def acall(self, *args: Any, **kwargs: Any) -> ToolOutput:
        arguments = self._arguments(args, kwargs)
        scope = _SCOPE.get()
        context = scope.context if scope else None
        decision = scope.take(self.name, arguments) if scope else None
        if decision is None:
            decision = await self.acheck_call(arguments, context)
        if not decision.allowed:
            return self._refusal(decision, arguments)
        output = await self._async_tool.acall(*args, **kwargs)
        return await self._screen_output(output, arguments, context)

    async def acheck_call(
        self, arguments: Mapping[str, Any] | str, context: Conversation | None = None
    ) -> Decision:
        """Check a call of this tool with `arguments` (what `acall` does before running it)."""
        decision = await self.guard.acheck_tool_call(
            self.name, self._for_guard(arguments), context, language=self.language
        )
        return record_decision(decision, "tool")

    def check_call(
        self, arguments: Mapping[str, Any] | str, context: Conversation | None = None
    ) -> Decision:
        """Sync twin of `acheck_call` (what `call` does before running the tool)."""
        decision = self.guard.check_tool_call(
            self.name, self._for_guard(arguments), context, language=self.language
        )
        return record_decision(decision, "tool")

    # -- internals --------------------------------------------------------------------------

    def _arguments(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> dict[str, Any]:
        arguments = {k: v for k, v in kwargs.items() if k != self.ctx_param_name}
        if len(args) == 1 and not arguments:
            value = args[0]
            return dict(value) if isinstance(value, Mapping) else {"input": value}
        if args:
            arguments["args"] = list(args)
        return arguments

    def _for_guard(self, arguments: Mapping[str, Any] | str) -> Mapping[str, Any] | str:
        key = self.code_argument
        if key and isinstance(arguments, Mapping) and isinstance(arguments.get(key), str):
            # The core finds code under well-known names; present a custom one under "code".
            rest = {k: v for k, v in arguments.items() if k != key}
            return {"code": arguments[key], **rest}
        return arguments

    def _output_history(
        self,
        output: ToolOutput,
        arguments: Mapping[str, Any] | str,
        context: Conversation | None,
    ) -> tuple[str, Conversation] | None:
        """The output's text and the conversation it is checked in; None: nothing to check."""
        text = output.content
        if not self.check_output or not text.strip():
            return None
        call = Message(
            "assistant",
            (ToolCallPart(self.name, self._for_guard(arguments), language=self.language),),
        )
        return text, context.append(call) if context else Conversation((call,))

    async def _screen_output(
        self,
        output: ToolOutput,
        arguments: Mapping[str, Any] | str,
        context: Conversation | None,
    ) -> ToolOutput:
        pending = self._output_history(output, arguments, context)
        if pending is None:
            return output
        text, history = pending
        decision = await self.guard.acheck_tool_result(self.name, text, history)
        record_decision(decision, "tool")
        if decision.allowed:
            return output
        return self._refusal(decision, arguments)

    def _refusal(self, decision: Decision, arguments: Mapping[str, Any] | str) -> ToolOutput:
        raw_input = dict(arguments) if isinstance(arguments, Mapping) else {"input": arguments}
        return ToolOutput(
            content=decision.refusal or "The safety guard refused this tool call.",
            tool_name=self.name,
            raw_input=raw_input,
            raw_output=None,
            is_error=True,
            exception=GuardBlocked(decision),
        )


def _opaque(*args: Any, **kwargs: Any) -> Any:  # pragma: no cover - signature holder only
    raise NotImplementedError


def _unwrap(output: ToolOutput) -> Any:
    if output.is_error and isinstance(output.exception, GuardBlocked):
        raise output.exception
    return output.raw_output


def _guarded_function(tool: GuardedTool, inner: Callable[..., Any]) -> Callable[..., Any]:
    """A sync function that calls `tool` (guarded), looking like `inner` to introspection."""

    def guarded(*args: Any, **kwargs: Any) -> Any:
        return _unwrap(tool.call(*args, **kwargs))

    if inner is _opaque:
        guarded.__name__ = tool.name
        guarded.__doc__ = tool.metadata.description
        return guarded
    return functools.wraps(inner)(guarded)


def guard_tool(
    tool: BaseTool | Callable[..., Any],
    guard: Guard,
    *,
    language: str | None = None,
    code_argument: str | None = None,
    check_output: bool = True,
) -> GuardedTool:
    """Wrap a LlamaIndex tool (or a plain function) so `guard` checks its calls and results.

    A tool already guarded by the same guard is returned as it is.
    """
    if isinstance(tool, GuardedTool):
        if tool.guard is guard:
            return tool
        tool = tool.tool
    if not isinstance(tool, BaseTool):
        if not callable(tool):
            raise TypeError(f"expected a LlamaIndex tool or a function, got {type(tool).__name__}")
        tool = FunctionTool.from_defaults(tool)
    return GuardedTool(
        tool, guard, language=language, code_argument=code_argument, check_output=check_output
    )


def guard_tools(
    tools: Iterable[BaseTool | Callable[..., Any]],
    guard: Guard,
    *,
    language: str | None = None,
    code_argument: str | None = None,
    check_output: bool = True,
) -> list[GuardedTool]:
    """`guard_tool` on each tool (e.g. ``guard_tools(CodeInterpreterToolSpec().to_tool_list(),
    guard)``)."""
    return [
        guard_tool(
            t, guard, language=language, code_argument=code_argument, check_output=check_output
        )
        for t in tools
    ]


def tool_scope(scope: ToolScope) -> contextvars.Token[ToolScope | None]:
    """Set the scope for tool calls made in the current context (used by `GuardedAgent`)."""
    return _SCOPE.set(scope)


def reset_tool_scope(token: contextvars.Token[ToolScope | None]) -> None:
    _SCOPE.reset(token)


def as_context(messages: Sequence[Any]) -> Conversation:
    """`ChatMessage`s as a text-only context conversation for tool checks."""
    return _convert.text_only(_convert.to_conversation(list(messages)))
