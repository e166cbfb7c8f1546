"""The public surface is a contract: adding or removing a name is a deliberate change."""

from __future__ import annotations

import guard_plugins_llamaindex

EXPECTED = [
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


def test_all_is_pinned() -> None:
    assert sorted(guard_plugins_llamaindex.__all__) == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in guard_plugins_llamaindex.__all__:
        assert getattr(guard_plugins_llamaindex, name) is not None


def test_issue_contract_names_exist() -> None:
    # The names the issue and docs/DESIGN.md refer to.
    for name in (
        "LlamaGuardCallbackHandler",
        "guard_tool",
        "GuardedTool",
        "guard_tools",
        "GuardedAgent",
        "guard_query_engine",
        "guard_chat_engine",
        "LlamaGuardEventHandler",
    ):
        assert name in guard_plugins_llamaindex.__all__
