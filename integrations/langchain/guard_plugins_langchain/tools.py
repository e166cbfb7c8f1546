"""`guard_tool`: a tool whose arguments (or code) are checked before it runs.

The guarded tool is an instance of a subclass of the tool's own class, built from the same field
values: name, description, args schema, ``return_direct``, ``response_format``, the wrapped
function (so LangGraph's `ToolNode` still injects state, store and runtime) all stay as they were.
Only ``_run`` / ``_arun`` change: they ask the guard at the ``tool_call`` hook first. A refusal
is a `GuardToolRefusal` (a `ToolException`), handled by the tool's ``handle_tool_error``: called
with a tool call it becomes a ``ToolMessage(status="error")`` carrying the refusal, so the agent
sees it and continues; called with plain arguments it returns the refusal text. The tool's own
`ToolException`\\ s are handled exactly as before.

>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> from langchain_core.tools import tool
>>> @tool
... def run_python(code: str) -> str:
...     "Run Python code."
...     return "ran"
>>> guard = Guard(FunctionBackend(lambda c: "unsafe\\nS14" if "rm -rf" in c.turns()[-1].text
...                               else "safe"))
>>> safe_tool = guard_tool(run_python, guard)
>>> safe_tool.invoke({"code": "print(1)"})
'ran'
>>> safe_tool.invoke({"code": "import os; os.system('rm -rf /')"})
'The tool call was refused by the safety guard (S14 Code Interpreter Abuse).'
"""

from __future__ import annotations

import functools
import weakref
from collections.abc import Callable, Iterable, Mapping
from contextvars import ContextVar
from typing import Any

from guard_plugins import Decision, Guard
from langchain_core.tools import BaseTool, ToolException
from langchain_core.tools.base import FILTERED_ARGS
from pydantic import PrivateAttr

__all__ = ["GuardToolRefusal", "guard_tool", "guard_tools", "is_guarded"]

# Set while an async run delegates to the sync `_run` (BaseTool's default `_arun` runs `_run` in
# a thread): the arguments were checked once already.
_checked: ContextVar[bool] = ContextVar("guard_plugins_langchain_tool_checked", default=False)
_classes: weakref.WeakKeyDictionary[type[BaseTool], type[BaseTool]] = weakref.WeakKeyDictionary()
_SKIP_KEYS = frozenset({*FILTERED_ARGS, "config"})


class GuardToolRefusal(ToolException):
    """The guard refused a tool call. `decision` says why; the message is the refusal."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(decision.refusal or "The tool call was refused by the safety guard.")


class _RefusalHandler:
    """``handle_tool_error`` of a guarded tool: refusals become the tool's output; every other
    `ToolException` is handled as the original setting says."""

    def __init__(self, original: Any) -> None:
        self.original = original

    def __call__(self, error: ToolException) -> Any:
        if isinstance(error, GuardToolRefusal):
            return error.args[0]
        original = self.original
        if not original:
            raise error
        if original is True:
            return error.args[0] if error.args else "Tool execution error"
        if isinstance(original, str):
            return original
        return original(error)


def is_guarded(tool: BaseTool) -> bool:
    return getattr(tool, "_gp_guard", None) is not None


def guard_tool(tool: BaseTool, guard: Guard, *, language: str | None = None) -> BaseTool:
    """`tool` with its arguments checked by `guard` before every run (see the module docstring).

    `language` labels code arguments in the assessed prompt (``"python"``, ``"bash"``...).
    Guarding an already guarded tool replaces its guard.
    """
    if not isinstance(tool, BaseTool):
        raise TypeError(f"guard_tool expects a LangChain BaseTool, got {type(tool).__name__}")
    if is_guarded(tool):
        base_handler = tool.handle_tool_error
        original = base_handler.original if isinstance(base_handler, _RefusalHandler) else None
        cls = type(tool)
    else:
        original = tool.handle_tool_error
        cls = _guarded_class(type(tool))
    values = {name: getattr(tool, name) for name in type(tool).model_fields}
    values["handle_tool_error"] = _RefusalHandler(original)
    guarded = cls.model_construct(_fields_set=set(tool.model_fields_set), **values)
    private = getattr(tool, "__pydantic_private__", None) or {}
    for key, value in private.items():
        if not key.startswith("_gp_"):
            setattr(guarded, key, value)
    guarded._gp_guard = guard
    guarded._gp_language = language
    return guarded


def guard_tools(tools: Iterable[BaseTool], guard: Guard, **options: Any) -> list[BaseTool]:
    """`guard_tool` over a list of tools."""
    return [guard_tool(t, guard, **options) for t in tools]


def _guarded_class(base: type[BaseTool]) -> type[BaseTool]:
    cached = _classes.get(base)
    if cached is not None:
        return cached
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": f"Guarded{base.__name__}",
        "__annotations__": {"_gp_guard": Any, "_gp_language": Any},
        "_gp_guard": PrivateAttr(default=None),
        "_gp_language": PrivateAttr(default=None),
        "_run": _make_run(base._run),
    }
    if base._arun is not BaseTool._arun:
        # Overriding the default `_arun` would change which signature BaseTool inspects for
        # `config` / `run_manager`; the default runs our `_run` in a thread anyway.
        namespace["_arun"] = _make_arun(base._arun)
    guarded = type(f"Guarded{base.__name__}", (base,), namespace)
    _classes[base] = guarded
    return guarded


def _make_run(base_run: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(base_run)  # keeps the signature BaseTool.run inspects
    def _run(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        if not _checked.get():
            guard, language = _settings(self)
            decision = guard.check_tool_call(
                self.name, _arguments(self, args, kwargs), language=language
            )
            _enforce(decision)
        return base_run(self, *args, **kwargs)

    return _run


def _make_arun(base_arun: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(base_arun)
    async def _arun(self: BaseTool, *args: Any, **kwargs: Any) -> Any:
        if not _checked.get():
            guard, language = _settings(self)
            decision = await guard.acheck_tool_call(
                self.name, _arguments(self, args, kwargs), language=language
            )
            _enforce(decision)
        token = _checked.set(True)
        try:
            return await base_arun(self, *args, **kwargs)
        finally:
            _checked.reset(token)

    return _arun


def _settings(tool: BaseTool) -> tuple[Guard, str | None]:
    """The guard and code language `guard_tool` gave `tool`. Read from the model's private
    storage directly: pydantic's attribute fallback for private attributes costs more per call
    than the rest of the wrapper."""
    private = getattr(tool, "__pydantic_private__", None) or {}
    guard = private.get("_gp_guard")
    if not isinstance(guard, Guard):  # pragma: no cover - only built by guard_tool
        raise RuntimeError("guarded tool without a guard")
    language = private.get("_gp_language")
    return guard, language if isinstance(language, str) else None


def _arguments(
    tool: BaseTool, args: tuple[Any, ...], kwargs: Mapping[str, Any]
) -> dict[str, Any] | str:
    """The arguments the model chose (injected values and run plumbing left out)."""
    injected = getattr(tool, "_injected_args_keys", ())
    arguments: dict[str, Any] = {
        k: v for k, v in kwargs.items() if k not in _SKIP_KEYS and k not in injected
    }
    if len(args) == 1 and not arguments and isinstance(args[0], str):
        return args[0]  # a single-string tool: the string is the code or query
    for index, value in enumerate(args):
        arguments.setdefault(f"arg{index}", value)
    return arguments


def _enforce(decision: Decision) -> None:
    if not decision.allowed:
        raise GuardToolRefusal(decision)
