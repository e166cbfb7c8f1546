"""The plumbing of GuardRunnable's own traced run, kept cheap when nobody listens.

`may_have_handlers(config)` answers whether `CallbackManager.configure` (what
`get_callback_manager_for_config` calls) could attach any handler for this config: callbacks in
the config, debug mode, LangSmith tracing (environment, ``tracing_context``, a run tree, the
``tracing_v2_enabled`` variable) or a registered configure hook (``collect_runs``, ...). Only when
all of them are off is the run manager skipped: with no handler, starting and ending a run has no
observer (LangChain's own `handle_event` loops over an empty list), so the guard's run is
invisible either way, while the manager itself costs about a third of a step's overhead. When
`langchain_core` lacks the internals read here, the answer is always True (the full path).

`run_in_context(coro, context)` awaits `coro` with each of its steps run in `context`, which is
what `asyncio.create_task(coro, context=context)` gives (the wrapped runnable sees its child
config; its context changes stay inside), without a task and the extra event-loop turn it costs.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Awaitable, Coroutine
from contextvars import Context
from typing import Any, TypeVar

from guard_plugins._await import drive
from langchain_core.callbacks import BaseCallbackManager, CallbackManager
from langchain_core.runnables import RunnableConfig
from langchain_core.runnables.config import patch_config

_configure_hooks: Any
_tracing_v2_is_enabled: Any
_new_run_id: Any
try:
    from langchain_core.globals import get_debug
    from langchain_core.tracers.context import _configure_hooks, _tracing_v2_is_enabled
    from langchain_core.utils.uuid import uuid7 as _new_run_id
except ImportError:  # pragma: no cover - another langchain-core layout: always the full path
    _configure_hooks = None
    _new_run_id = uuid.uuid4

__all__ = ["may_have_handlers", "quiet_child_config", "run_in_context"]

T = TypeVar("T")

# Set, these make `configure` raise (v1 tracing) or add handlers: leave them to the full path.
_V1_TRACING = ("LANGCHAIN_TRACING", "LANGCHAIN_HANDLER")
_OFF = ("", "0", "false", "False")  # langchain_core.utils.env.env_var_is_set


def _env_set(name: str) -> bool:
    value = os.environ.get(name)
    return value is not None and value not in _OFF


def may_have_handlers(config: RunnableConfig) -> bool:
    """False only when configuring callbacks for `config` would attach no handler at all."""
    if _configure_hooks is None:  # pragma: no cover - see the import above
        return True
    callbacks = config.get("callbacks")
    if callbacks:
        if not isinstance(callbacks, BaseCallbackManager):
            return True  # a non-empty list of handlers
        if callbacks.handlers or callbacks.inheritable_handlers:
            return True
    if get_debug() or _tracing_v2_is_enabled():
        return True
    if any(_env_set(name) for name in _V1_TRACING):
        return True
    for var, _inheritable, handler_class, env_var in _configure_hooks:
        if var.get() is not None:
            return True
        if env_var is not None and handler_class is not None and _env_set(env_var):
            return True
    return False


def quiet_child_config(config: RunnableConfig) -> RunnableConfig:
    """The wrapped runnable's config when nobody listens: what `run_manager.get_child()` gives
    it (no handlers; the parent run id of a run of its own; tags and metadata are in `config`),
    with ``run_name`` / ``run_id`` consumed by the guard's run as usual."""
    run_id = config.get("run_id") or _new_run_id()
    return patch_config(config, callbacks=CallbackManager(handlers=[], parent_run_id=run_id))


def run_in_context(coro: Coroutine[Any, Any, T], context: Context) -> Awaitable[T]:
    """Await `coro`, running each of its steps in `context` (see the module docstring)."""
    return drive(coro, context=context)
