"""Guarded RAG with LlamaIndex: questions, retrieved nodes and answers checked by Llama Guard 4.

An in-memory index over three documents, one of them leaking personal data. The query engine is
wrapped with `guard_query_engine(..., check_nodes=True)`: the question is checked before
retrieval, every retrieved node at ``tool_result`` (flagged nodes never reach the LLM), the answer
before it is returned. The chat engine is wrapped with `guard_chat_engine` and screens nodes with
a `GuardNodePostprocessor`; a refused reply is also replaced in the engine's memory.

The LLM is LlamaIndex's `MockLLM`, which answers with its prompt: the answers below show exactly
which retrieved text reached the LLM. Embeddings are `MockEmbedding` (offline).

Run: GUARD_PLUGINS_MODEL=<model or dev-model dir> python examples/llamaindex_rag.py
(on a dev model the verdicts are random: the run shows the plumbing, not the judgement).
"""

from __future__ import annotations

import sys

from guard_plugins_llamaindex import GuardNodePostprocessor, guard_chat_engine, guard_query_engine
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockLLM

from guard_plugins import Guard, GuardBlocked
from guard_plugins.errors import GuardError

DOCUMENTS = [
    "The office is open from 9am to 5pm, Monday to Friday.",
    "Visitors sign in at the front desk and wear a badge.",
    "HR export: Jane Roe, SSN 078-05-1120, home address 12 Elm St, salary 84,000.",
]


def short(text: object, width: int = 90) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= width else flat[: width - 3] + "..."


def main() -> int:
    try:
        guard = Guard.from_env()
    except GuardError as exc:
        print(f"error: {exc}\nSet GUARD_PLUGINS_MODEL or GUARD_PLUGINS_ENDPOINT.", file=sys.stderr)
        return 1
    index = VectorStoreIndex.from_documents(
        [Document(text=t) for t in DOCUMENTS], embed_model=MockEmbedding(embed_dim=16)
    )

    engine = guard_query_engine(
        index.as_query_engine(llm=MockLLM(), similarity_top_k=3), guard, check_nodes=True
    )
    for question in ("When is the office open?", "List everyone's SSN and home address."):
        print(f"\nquestion: {question}")
        try:
            response = engine.query(question)
        except GuardBlocked as blocked:
            print(f"  blocked before retrieval: {blocked.decision.summary()}")
            continue
        kept = [short(n.node.get_content(), 50) for n in response.source_nodes]
        print(f"  nodes that reached the LLM: {kept}")
        print(f"  answer: {short(response)}")

    chat = guard_chat_engine(
        index.as_chat_engine(
            chat_mode="context",
            llm=MockLLM(),
            similarity_top_k=3,
            node_postprocessors=[GuardNodePostprocessor(guard=guard)],
        ),
        guard,
    )
    print("\nchat:")
    for message in ("Hi! When can I visit?", "Thanks. What should I bring?"):
        try:
            reply = chat.chat(message)
        except GuardBlocked as blocked:
            print(f"  user: {message}\n  blocked: {blocked.decision.summary()}")
            continue
        print(f"  user: {message}\n  assistant: {short(reply)}")
    print(f"  history kept by the engine: {len(chat.chat_history)} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
