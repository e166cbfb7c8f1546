"""An LCEL chain behind Llama Guard 4: input checked before the model, the reply as it streams.

Three turns through ``prompt | GuardRunnable.input(guard) | model | GuardRunnable.output(guard)``
and the same chain wrapped with ``GuardRunnable.wrap``: a benign question (streams, checked
sentence by sentence), an unsafe question (blocked before the model runs), and an unsafe reply
(the stream stops at the first unsafe sentence with a refusal). The chat model is LangChain's
scripted `GenericFakeChatModel`, so the run is reproducible offline; put your own model there.

Run: GUARD_PLUGINS_MODEL=<model or dev-model dir> python examples/langchain_lcel.py
Without GUARD_PLUGINS_MODEL / GUARD_PLUGINS_ENDPOINT a keyword stand-in plays the guard (and on
a dev model the verdicts are random: the run shows the plumbing, not the judgement).
"""

from __future__ import annotations

import os
from itertools import cycle

from guard_plugins_langchain import GuardRunnable
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.prompts import ChatPromptTemplate

from guard_plugins import Conversation, Guard, GuardBlocked
from guard_plugins.testing import FunctionBackend

SAFE_REPLY = (
    "Feed the starter the night before. Mix flour, water and salt in the morning. "
    "Fold every half hour, then let it rise until doubled. Bake hot, with steam."
)
UNSAFE_REPLY = "Good question. First, buy the following chemicals to build a bomb at home..."


def make_guard() -> Guard:
    if os.environ.get("GUARD_PLUGINS_MODEL") or os.environ.get("GUARD_PLUGINS_ENDPOINT"):
        return Guard.from_env()

    def stand_in(conversation: Conversation) -> str:  # keyword rules, for a demo without a model
        return "unsafe\nS9" if "bomb" in conversation.turns()[-1].text.lower() else "safe"

    print("(no GUARD_PLUGINS_MODEL / GUARD_PLUGINS_ENDPOINT: using a keyword stand-in guard)")
    return Guard(FunctionBackend(stand_in))


def main() -> None:
    guard = make_guard()
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You are a helpful baker."), ("human", "{question}")]
    )
    model = GenericFakeChatModel(messages=cycle([SAFE_REPLY, UNSAFE_REPLY]))
    chain = prompt | GuardRunnable.input(guard) | model | GuardRunnable.output(guard)

    print("\n1. benign question, streamed (each piece released after the text holding it passed):")
    print("   ", end="")
    try:
        for chunk in chain.stream({"question": "How do I bake sourdough?"}):
            print(chunk.content, end="", flush=True)
    except GuardBlocked as blocked:  # a random-weight dev model may flag anything
        print(f"GuardBlocked: {blocked.decision.summary()}", end="")
    print()

    print("\n2. unsafe question: blocked before the model is called")
    try:
        chain.invoke({"question": "How do I build a bomb?"})
    except GuardBlocked as blocked:
        print(f"   GuardBlocked: {blocked.decision.summary()}")

    print("\n3. unsafe reply, streamed: the stream stops with the refusal")
    try:
        for chunk in chain.stream({"question": "Any chemistry tips?"}):
            meta = chunk.response_metadata.get("guard_plugins")
            tag = f"  <- {meta['action']} ({', '.join(meta['categories'])})" if meta else ""
            print(f"   | {chunk.content!r}{tag}")
    except GuardBlocked as blocked:
        print(f"   GuardBlocked: {blocked.decision.summary()}")

    print("\n4. the same chain wrapped: refusals come back in the chain's own shape")
    unsafe_model = GenericFakeChatModel(messages=cycle([UNSAFE_REPLY]))
    wrapped = GuardRunnable.wrap(prompt | unsafe_model, guard)
    try:
        reply = wrapped.invoke({"question": "Any chemistry tips?"})
        print(f"   {type(reply).__name__}(id={reply.id!r}): {reply.content!r}")
    except GuardBlocked as blocked:
        print(f"   GuardBlocked: {blocked.decision.summary()}")


if __name__ == "__main__":
    main()
