import guard_plugins_langchain

EXPECTED_ALL = [
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


def test_all_is_pinned() -> None:
    assert sorted(guard_plugins_langchain.__all__) == sorted(EXPECTED_ALL)


def test_every_public_name_resolves() -> None:
    for name in guard_plugins_langchain.__all__:
        assert getattr(guard_plugins_langchain, name) is not None


def test_middleware_is_a_langchain_agent_middleware() -> None:
    from langchain.agents.middleware import AgentMiddleware

    assert issubclass(guard_plugins_langchain.LlamaGuardMiddleware, AgentMiddleware)


def test_unknown_attribute_raises() -> None:
    import pytest

    with pytest.raises(AttributeError):
        _ = guard_plugins_langchain.NoSuchThing  # type: ignore[attr-defined]
