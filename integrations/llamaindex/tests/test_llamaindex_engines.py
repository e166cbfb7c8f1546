"""Guarded query / chat engines over a small in-memory index (MockEmbedding, MockLLM: offline).

`MockLLM` answers with its prompt, so the synthesized answer contains the retrieved text: a
flagged document that reaches the LLM shows up in the answer.
"""

from __future__ import annotations

from typing import Any

import pytest
from guard_plugins import GuardBlocked, Hook
from llama_index.core import Document, VectorStoreIndex
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage
from llama_index.core.base.response.schema import (
    AsyncStreamingResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.chat_engine import SimpleChatEngine
from llama_index.core.embeddings import MockEmbedding
from llama_index.core.llms import MockFunctionCallingLLM, MockLLM
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import NodeWithScore, QueryBundle, TextNode
from llamaindex_support import make_guard

from guard_plugins_llamaindex import (
    GuardNodePostprocessor,
    guard_chat_engine,
    guard_query_engine,
)

DOCS = [
    "The office opens at 9am and closes at 5pm.",
    "Leaked CRIME manual: step one, acquire tools.",
]


def build_index() -> VectorStoreIndex:
    return VectorStoreIndex.from_documents(
        [Document(text=t) for t in DOCS], embed_model=MockEmbedding(embed_dim=8)
    )


class RecordingRetriever(BaseRetriever):
    """Delegates to a real retriever and records the queries it was asked."""

    def __init__(self, inner: BaseRetriever) -> None:
        super().__init__()
        self.inner = inner
        self.queries: list[str] = []

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        self.queries.append(query_bundle.query_str)
        return self.inner.retrieve(query_bundle)


def query_engine(streaming: bool = False) -> tuple[RetrieverQueryEngine, RecordingRetriever]:
    retriever = RecordingRetriever(build_index().as_retriever(similarity_top_k=2))
    return RetrieverQueryEngine.from_args(retriever, llm=MockLLM(), streaming=streaming), retriever


def test_question_checked_before_retrieval() -> None:
    guard, recorder = make_guard()
    engine, retriever = query_engine()
    guarded = guard_query_engine(engine, guard)
    with pytest.raises(GuardBlocked) as info:
        guarded.query("plan a CRIME for me")
    assert info.value.decision.hook is Hook.USER_INPUT
    assert retriever.queries == []
    assert recorder.assessed == [("User", "plan a CRIME for me")]


async def test_refused_question_answers_with_refusal() -> None:
    guard, _ = make_guard({"user_input": {"action": "refuse"}})
    engine, retriever = query_engine()
    response = await guard_query_engine(engine, guard).aquery("plan a CRIME")
    assert str(response) == "I can't help with that request."
    assert retriever.queries == []


def test_answer_built_from_flagged_text_is_refused() -> None:
    guard, _ = make_guard()
    engine, _ = query_engine()
    response = guard_query_engine(engine, guard).query("When does the office open?")
    assert isinstance(response, Response)
    assert str(response) == "I can't share that response."  # the echoed CRIME doc was caught
    assert response.source_nodes == []


def test_check_nodes_drops_flagged_nodes_before_synthesis() -> None:
    guard, recorder = make_guard()
    engine, _ = query_engine()
    response = guard_query_engine(engine, guard, check_nodes=True).query("When does it open?")
    text = str(response)
    assert "9am" in text
    assert "CRIME" not in text
    assert [n.node.get_content() for n in response.source_nodes] == [DOCS[0]]
    # Each node was assessed as a tool result, after the question (one merged User turn).
    node_checks = [t for t in recorder.texts() if "\n\nTool result (retriever):\n" in t]
    assert len(node_checks) == 2


async def test_streaming_answer_is_checked_before_the_first_token() -> None:
    guard, _ = make_guard()
    engine, _ = query_engine(streaming=True)
    guarded = guard_query_engine(engine, guard)
    response = guarded.query("When does the office open?")
    assert isinstance(response, StreamingResponse)
    assert list(response.response_gen) == ["I can't share that response."]
    ok = await guard_query_engine(engine, guard, check_nodes=True).aquery("When?")
    assert isinstance(ok, AsyncStreamingResponse)  # what the inner engine returns from aquery
    streamed = "".join([t async for t in ok.async_response_gen()])
    assert "9am" in streamed
    assert "CRIME" not in streamed


class CannedEngine(BaseQueryEngine):
    """A non-retriever engine: answers with fixed text and source nodes."""

    def __init__(self, answer: str, sources: list[str]) -> None:
        super().__init__(callback_manager=None)
        self.answer = answer
        self.sources = sources

    def _get_prompt_modules(self) -> PromptMixinType:
        return {}

    def _query(self, query_bundle: QueryBundle) -> Response:
        nodes = [NodeWithScore(node=TextNode(text=s), score=1.0) for s in self.sources]
        return Response(response=self.answer, source_nodes=nodes)

    async def _aquery(self, query_bundle: QueryBundle) -> Response:
        return self._query(query_bundle)


def test_check_nodes_after_the_fact_for_other_engines() -> None:
    guard, _ = make_guard()
    engine = CannedEngine("It opens at nine.", ["opening hours", "CRIME manual"])
    assert str(guard_query_engine(engine, guard).query("open?")) == "It opens at nine."
    refused = guard_query_engine(engine, guard, check_nodes=True).query("open?")
    assert "withheld by the safety guard" in str(refused)


def test_node_postprocessor_sync_and_async() -> None:
    guard, _ = make_guard()
    screen = GuardNodePostprocessor(guard=guard)
    nodes = [NodeWithScore(node=TextNode(text=t), score=1.0) for t in [*DOCS, "  "]]
    kept = screen.postprocess_nodes(nodes, query_str="hours?")
    assert [n.node.get_content() for n in kept] == [DOCS[0], "  "]


# -- chat engines -----------------------------------------------------------------------------


def replying(text: str) -> MockFunctionCallingLLM:
    return MockFunctionCallingLLM(
        response_generator=lambda messages, **_: ChatMessage(role="assistant", content=text)
    )


def history_text(engine: Any) -> str:
    return "\n".join(f"{m.role.value}: {m.content}" for m in engine.chat_history)


def test_chat_reply_refused_and_replaced_in_memory() -> None:
    guard, _ = make_guard()
    inner = SimpleChatEngine.from_defaults(llm=replying("some HATE"))
    engine = guard_chat_engine(inner, guard)
    response = engine.chat("hello")
    assert str(response) == "I can't share that response."
    assert "HATE" not in history_text(inner)
    assert history_text(inner) == "user: hello\nassistant: I can't share that response."


def test_chat_blocked_user_turn_never_reaches_the_engine() -> None:
    guard, _ = make_guard()
    inner = SimpleChatEngine.from_defaults(llm=replying("sure"))
    with pytest.raises(GuardBlocked):
        guard_chat_engine(inner, guard).chat("help me with CRIME")
    assert inner.chat_history == []


def test_stream_chat_is_checked_before_streaming() -> None:
    guard, _ = make_guard()
    inner = SimpleChatEngine.from_defaults(llm=replying("some HATE"))
    response = guard_chat_engine(inner, guard).stream_chat("hello")
    assert "".join(response.response_gen) == "I can't share that response."
    assert "HATE" not in history_text(inner)
    fine = guard_chat_engine(SimpleChatEngine.from_defaults(llm=replying("hi!")), guard)
    assert "".join(fine.stream_chat("hello").response_gen) == "hi!"


async def test_async_chat_paths() -> None:
    guard, _ = make_guard()
    inner = SimpleChatEngine.from_defaults(llm=replying("some HATE"))
    engine = guard_chat_engine(inner, guard)
    assert str(await engine.achat("hello")) == "I can't share that response."
    streamed = await engine.astream_chat("again")
    assert "".join([t async for t in streamed.async_response_gen()]) == (
        "I can't share that response."
    )
    assert "HATE" not in history_text(inner)


def test_context_chat_engine_with_node_postprocessor() -> None:
    guard, recorder = make_guard()
    inner = build_index().as_chat_engine(
        chat_mode="context",
        llm=MockLLM(),
        similarity_top_k=2,
        node_postprocessors=[GuardNodePostprocessor(guard=guard)],
    )
    response = guard_chat_engine(inner, guard).chat("When does the office open?")
    assert "CRIME" not in str(response)
    assert "9am" in str(response)
    assert any("Tool result (retriever):" in t for t in recorder.texts())
