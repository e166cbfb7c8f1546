"""guard-plugins for LangChain: Llama Guard 4 around chains, agents, tools and callbacks.

Four entry points, one `guard_plugins.Guard` behind them:

- `GuardRunnable` — an LCEL step (``GuardRunnable.input(guard)`` / ``.output(guard)``) or a
  wrapper around any runnable (``GuardRunnable.wrap(chain, guard)``), streaming included.
- `LlamaGuardMiddleware` — middleware for ``langchain.agents.create_agent`` (needs the
  ``agents`` extra: ``pip install 'guard-plugins-langchain[agents]'``).
- `guard_tool` / `guard_tools` — a tool whose arguments (code) are checked before it runs.
- `LlamaGuardCallbackHandler` — monitoring (and optional blocking) for chains you cannot change.

>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> guard = Guard(FunctionBackend(lambda conversation: "safe"))
>>> GuardRunnable.input(guard).invoke("How do I bake bread?")
'How do I bake bread?'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guard_plugins_langchain._convert import messages_to_conversation, to_conversation
from guard_plugins_langchain.callbacks import LlamaGuardCallbackHandler
from guard_plugins_langchain.runnable import GuardRunnable
from guard_plugins_langchain.tools import GuardToolRefusal, guard_tool, guard_tools

if TYPE_CHECKING:
    from guard_plugins_langchain.middleware import LlamaGuardMiddleware

__version__ = "0.1.0"

__all__ = [
    "GuardRunnable",
    "GuardToolRefusal",
    "LlamaGuardCallbackHandler",
    "LlamaGuardMiddleware",
    "__version__",
    "guard_tool",
    "guard_tools",
    "messages_to_conversation",
    "to_conversation",
]


def __getattr__(name: str) -> Any:
    # The middleware needs `langchain` (the agents extra); import it only when asked for.
    if name == "LlamaGuardMiddleware":
        try:
            from guard_plugins_langchain.middleware import LlamaGuardMiddleware
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError(
                "LlamaGuardMiddleware needs langchain>=1.0: "
                "pip install 'guard-plugins-langchain[agents]'"
            ) from exc
        return LlamaGuardMiddleware
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
