"""guard-plugins for LlamaIndex: Llama Guard 4 on LLM calls, tools, agents and engines.

Entry points (docs/llamaindex.md has a section on each):

- `LlamaGuardCallbackHandler`: every LLM call, through ``Settings.callback_manager``.
- `guard_tool` / `guard_tools` / `GuardedTool`: tool calls checked before they run (S14 code
  never executes), outputs before they return.
- `GuardedFunctionAgent` / `GuardedReActAgent` / `GuardedCodeActAgent` (`GuardedAgent`):
  user turns, replies (before they are streamed or stored) and tools, in one agent.
- `guard_query_engine` / `guard_chat_engine` / `GuardNodePostprocessor`: RAG.
- `LlamaGuardEventHandler` / `GuardDecisionEvent`: Decisions in LlamaIndex's own traces.

>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> from guard_plugins_llamaindex import guard_tool
>>> guard = Guard(FunctionBackend(lambda conversation: "safe"))
>>> guard_tool(lambda code: "ok", guard).metadata.name
'<lambda>'
"""

from __future__ import annotations

from guard_plugins_llamaindex.agent import (
    GuardedAgent,
    GuardedCodeActAgent,
    GuardedFunctionAgent,
    GuardedReActAgent,
)
from guard_plugins_llamaindex.callbacks import LlamaGuardCallbackHandler
from guard_plugins_llamaindex.engines import (
    GuardedChatEngine,
    GuardedQueryEngine,
    GuardNodePostprocessor,
    guard_chat_engine,
    guard_query_engine,
)
from guard_plugins_llamaindex.events import GuardDecisionEvent, LlamaGuardEventHandler
from guard_plugins_llamaindex.tools import GuardedTool, guard_tool, guard_tools

__version__ = "0.1.0"

__all__ = [
    "GuardDecisionEvent",
    "GuardNodePostprocessor",
    "GuardedAgent",
    "GuardedChatEngine",
    "GuardedCodeActAgent",
    "GuardedFunctionAgent",
    "GuardedQueryEngine",
    "GuardedReActAgent",
    "GuardedTool",
    "LlamaGuardCallbackHandler",
    "LlamaGuardEventHandler",
    "__version__",
    "guard_chat_engine",
    "guard_query_engine",
    "guard_tool",
    "guard_tools",
]
