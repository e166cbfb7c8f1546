"""Monitoring an existing LangChain app with `LlamaGuardCallbackHandler` (no chain changes).

The handler rides along in ``config={"callbacks": [...]}``: it checks every chat model input and
reply and every tool start, logs the Decisions (summaries only, never the content) and keeps them
in ``handler.decisions``. With ``enforce=True`` a blocked Decision raises `GuardBlocked` out of
the run, before the model or the tool does anything.

Run: GUARD_PLUGINS_MODEL=<model or dev-model dir> python examples/langchain_callbacks.py
Without GUARD_PLUGINS_MODEL / GUARD_PLUGINS_ENDPOINT a keyword stand-in plays the guard.
"""

from __future__ import annotations

import logging
import os

from guard_plugins_langchain import LlamaGuardCallbackHandler
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.prompts import ChatPromptTemplate

from guard_plugins import Conversation, Guard, GuardBlocked
from guard_plugins.testing import FunctionBackend


def make_guard() -> Guard:
    if os.environ.get("GUARD_PLUGINS_MODEL") or os.environ.get("GUARD_PLUGINS_ENDPOINT"):
        return Guard.from_env()

    def stand_in(conversation: Conversation) -> str:
        return "unsafe\nS9" if "bomb" in conversation.turns()[-1].text.lower() else "safe"

    print("(no GUARD_PLUGINS_MODEL / GUARD_PLUGINS_ENDPOINT: using a keyword stand-in guard)")
    return Guard(FunctionBackend(stand_in))


def main() -> None:
    logging.basicConfig(level=logging.WARNING, format="   log: %(name)s %(message)s")
    logging.getLogger("guard_plugins").setLevel(logging.ERROR)  # keep the audit log out of the demo
    logging.getLogger("langchain_core").setLevel(logging.ERROR)  # it logs the raised GuardBlocked
    guard = make_guard()
    chain = ChatPromptTemplate.from_messages([("human", "{q}")]) | FakeListChatModel(
        responses=["Bread needs flour, water, salt and time.", "Mix the bomb parts like so..."]
    )

    print("\n1. monitoring: everything runs, flagged Decisions are logged")
    monitor = LlamaGuardCallbackHandler(guard)
    for question in ("What is in bread?", "Tell me a chemistry fact."):
        reply = chain.invoke({"q": question}, {"callbacks": [monitor]})
        print(f"   reply: {reply.content!r}")
    for decision in monitor.decisions:
        print(f"   decision: {decision.summary()}")

    print("\n2. enforcing: a blocked input never reaches the model")
    enforce = LlamaGuardCallbackHandler(guard, enforce=True)
    try:
        reply = chain.invoke({"q": "How do I build a bomb?"}, {"callbacks": [enforce]})
    except GuardBlocked as blocked:
        print(f"   GuardBlocked: {blocked.decision.summary()}")
    else:
        print(f"   allowed by this guard (a dev model's verdicts are random): {reply.content!r}")


if __name__ == "__main__":
    main()
