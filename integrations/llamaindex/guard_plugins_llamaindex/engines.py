"""Guarded query and chat engines, and a node postprocessor that screens retrieved nodes.

- `guard_query_engine(engine, guard)`: the question is checked (``user_input``) before anything
  is retrieved, the answer (``assistant_output``) before it is returned. Streaming answers are
  collected and checked before the first token is handed out.
- `guard_chat_engine(engine, guard)`: the same for chat engines; a refused reply is also
  replaced in the engine's memory, so the unsafe text is not fed back on the next turn.
- ``check_nodes=True`` / `GuardNodePostprocessor`: retrieved nodes are checked at
  ``tool_result`` (retrieved text is untrusted input) and flagged nodes are dropped before the
  LLM sees them. For a `RetrieverQueryEngine` this happens between retrieval and synthesis; for
  other engines the answer's source nodes are checked afterwards and an answer built on a flagged
  node is refused. For chat engines pass ``node_postprocessors=[GuardNodePostprocessor(guard)]``
  to ``index.as_chat_engine(...)``.

Enforcement: not allowed + ``refuse`` → the refusal is the answer; anything else raises
`GuardBlocked` (for the question: before retrieval).

>>> engine = guard_query_engine(index.as_query_engine(), guard, check_nodes=True)  # doctest: +SKIP
>>> print(engine.query("What does the handbook say about expenses?"))               # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncGenerator, Generator, Sequence
from typing import Any

from guard_plugins import Action, Conversation, Decision, Guard, GuardBlocked, Hook
from guard_plugins import Message as GuardMessage
from guard_plugins import TextPart as GuardText
from guard_plugins._sync import run_sync
from llama_index.core.base.base_query_engine import BaseQueryEngine
from llama_index.core.base.base_retriever import BaseRetriever
from llama_index.core.base.llms.types import ChatMessage, ChatResponse, MessageRole
from llama_index.core.base.response.schema import (
    RESPONSE_TYPE,
    AsyncStreamingResponse,
    PydanticResponse,
    Response,
    StreamingResponse,
)
from llama_index.core.bridge.pydantic import Field
from llama_index.core.chat_engine.types import (
    AGENT_CHAT_RESPONSE_TYPE,
    AgentChatResponse,
    BaseChatEngine,
    StreamingAgentChatResponse,
)
from llama_index.core.memory import BaseMemory
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.prompts.mixin import PromptMixinType
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle

from guard_plugins_llamaindex import _convert
from guard_plugins_llamaindex.events import record_decision

__all__ = [
    "GuardNodePostprocessor",
    "GuardedChatEngine",
    "GuardedQueryEngine",
    "guard_chat_engine",
    "guard_query_engine",
]

logger = logging.getLogger("guard_plugins_llamaindex")
RETRIEVER_TOOL_NAME = "retriever"


# -- shared -----------------------------------------------------------------------------------


async def _acheck(guard: Guard, hook: Hook, conversation: Conversation, source: str) -> Decision:
    return record_decision(await guard.acheck(hook, conversation), source)


def _reply(context: Conversation, text: str) -> Conversation:
    return context.append(GuardMessage("assistant", (GuardText(text),)))


def _refuse_or_raise(decision: Decision) -> str:
    """The refusal to answer with when the policy says refuse; raise otherwise."""
    if decision.action is Action.REFUSE:
        return decision.refusal or ""
    raise GuardBlocked(decision)


async def _acheck_nodes(
    guard: Guard,
    nodes: Sequence[NodeWithScore],
    query: str | None,
    source: str,
) -> list[Decision | None]:
    """One decision per node (None: nothing to assess); checked concurrently, batched."""
    context = Conversation.user(query) if query and query.strip() else Conversation(())

    async def one(node: NodeWithScore) -> Decision | None:
        text = node.node.get_content(metadata_mode=MetadataMode.NONE)
        if not text.strip():
            return None
        decision = await guard.acheck_tool_result(RETRIEVER_TOOL_NAME, text, context)
        return record_decision(decision, source)

    return list(await asyncio.gather(*(one(n) for n in nodes)))


class GuardNodePostprocessor(BaseNodePostprocessor):
    """Drops retrieved nodes the guard does not allow at ``tool_result``.

    >>> screen = GuardNodePostprocessor(guard=guard)
    >>> index.as_chat_engine(chat_mode="context", node_postprocessors=[screen])  # doctest: +SKIP
    """

    guard: Guard = Field(exclude=True)

    @classmethod
    def class_name(cls) -> str:
        return "GuardNodePostprocessor"

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        return run_sync(self._apostprocess_nodes(nodes, query_bundle), api="apostprocess_nodes()")

    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query = query_bundle.query_str if query_bundle is not None else None
        decisions = await _acheck_nodes(self.guard, nodes, query, "node_postprocessor")
        kept = [n for n, d in zip(nodes, decisions, strict=True) if d is None or d.allowed]
        if len(kept) < len(nodes):
            logger.info(
                "guard dropped %d of %d retrieved nodes", len(nodes) - len(kept), len(nodes)
            )
        return kept


class _GuardedRetriever(BaseRetriever):
    """A retriever whose results pass through a `GuardNodePostprocessor`."""

    def __init__(self, retriever: BaseRetriever, guard: Guard) -> None:
        super().__init__(callback_manager=retriever.callback_manager)
        self._inner = retriever
        self._screen = GuardNodePostprocessor(guard=guard)

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = self._inner.retrieve(query_bundle)
        return self._screen.postprocess_nodes(nodes, query_bundle)

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        nodes = await self._inner.aretrieve(query_bundle)
        return await self._screen.apostprocess_nodes(nodes, query_bundle)


# -- query engines ----------------------------------------------------------------------------


class GuardedQueryEngine(BaseQueryEngine):
    """A query engine whose questions and answers are checked (see module docstring)."""

    def __init__(self, engine: BaseQueryEngine, guard: Guard, *, check_nodes: bool = False) -> None:
        super().__init__(callback_manager=engine.callback_manager)
        self.guard = guard
        self.check_nodes = check_nodes
        self.engine = engine
        self._post_hoc_nodes = False
        if check_nodes:
            if isinstance(engine, RetrieverQueryEngine):
                self.engine = engine.with_retriever(_GuardedRetriever(engine.retriever, guard))
            else:
                self._post_hoc_nodes = True

    def _get_prompt_modules(self) -> PromptMixinType:
        return {"engine": self.engine}

    def _query(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        refusal = run_sync(self._screen_question(query_bundle), api="aquery()")
        if refusal is not None:
            return Response(response=refusal, metadata={"guard_refused": True})
        response = self.engine.query(query_bundle)
        if isinstance(response, StreamingResponse):
            tokens = list(response.response_gen)
            return run_sync(self._screen_stream(query_bundle, response, tokens), api="aquery()")
        return run_sync(self._screen_answer(query_bundle, response), api="aquery()")

    async def _aquery(self, query_bundle: QueryBundle) -> RESPONSE_TYPE:
        refusal = await self._screen_question(query_bundle)
        if refusal is not None:
            return Response(response=refusal, metadata={"guard_refused": True})
        response = await self.engine.aquery(query_bundle)
        if isinstance(response, StreamingResponse):
            return await self._screen_stream(query_bundle, response, list(response.response_gen))
        if isinstance(response, AsyncStreamingResponse):
            tokens = [t async for t in response.async_response_gen()]
            return await self._screen_stream(query_bundle, response, tokens)
        return await self._screen_answer(query_bundle, response)

    async def _screen_question(self, query_bundle: QueryBundle) -> str | None:
        images = [query_bundle.image_path] if query_bundle.image_path else []
        conversation = Conversation.user(query_bundle.query_str, images)
        if not _convert.assessable(conversation):
            return None
        decision = await _acheck(self.guard, Hook.USER_INPUT, conversation, "query_engine")
        return None if decision.allowed else _refuse_or_raise(decision)

    async def _screen_text(
        self, query_bundle: QueryBundle, text: str, nodes: Sequence[NodeWithScore]
    ) -> str | None:
        """None when `text` may be returned; else the refusal (or raise)."""
        if self._post_hoc_nodes and nodes:
            decisions = await _acheck_nodes(
                self.guard, nodes, query_bundle.query_str, "query_engine"
            )
            blocked = [d for d in decisions if d is not None and not d.allowed]
            if blocked:
                return blocked[0].refusal or ""
        if not text.strip():
            return None
        context = (
            Conversation.user(query_bundle.query_str)
            if query_bundle.query_str.strip()
            else (Conversation(()))
        )
        decision = await _acheck(
            self.guard, Hook.ASSISTANT_OUTPUT, _reply(context, text), "query_engine"
        )
        return None if decision.allowed else _refuse_or_raise(decision)

    async def _screen_answer(
        self, query_bundle: QueryBundle, response: RESPONSE_TYPE
    ) -> RESPONSE_TYPE:
        if isinstance(response, PydanticResponse):
            text = response.response.model_dump_json() if response.response is not None else ""
        elif isinstance(response, Response):
            text = response.response or ""
        else:  # a streaming response the caller's engine returned from a non-streaming path
            text = str(response)
        refusal = await self._screen_text(query_bundle, text, response.source_nodes)
        if refusal is None:
            return response
        return Response(response=refusal, source_nodes=[], metadata={"guard_refused": True})

    async def _screen_stream(
        self,
        query_bundle: QueryBundle,
        response: StreamingResponse | AsyncStreamingResponse,
        tokens: list[str],
    ) -> RESPONSE_TYPE:
        refusal = await self._screen_text(query_bundle, "".join(tokens), response.source_nodes)
        metadata: dict[str, Any] | None
        if refusal is not None:
            tokens, nodes, metadata = [refusal], [], {"guard_refused": True}
        else:
            nodes, metadata = response.source_nodes, response.metadata
        if isinstance(response, AsyncStreamingResponse):
            return AsyncStreamingResponse(_agen(tokens), source_nodes=nodes, metadata=metadata)
        return StreamingResponse(_gen(tokens), source_nodes=nodes, metadata=metadata)


def guard_query_engine(
    engine: BaseQueryEngine, guard: Guard, *, check_nodes: bool = False
) -> GuardedQueryEngine:
    """Wrap a query engine: question checked before retrieval, answer before it is returned."""
    return GuardedQueryEngine(engine, guard, check_nodes=check_nodes)


def _gen(tokens: Sequence[str]) -> Generator[str, None, None]:
    yield from tokens


async def _agen(tokens: Sequence[str]) -> AsyncGenerator[str, None]:
    for token in tokens:
        yield token


# -- chat engines -----------------------------------------------------------------------------


class GuardedChatEngine(BaseChatEngine):
    """A chat engine whose user turns and replies are checked (see module docstring)."""

    def __init__(self, engine: BaseChatEngine, guard: Guard, *, check_nodes: bool = False) -> None:
        self.engine = engine
        self.guard = guard
        self.check_nodes = check_nodes

    def reset(self) -> None:
        self.engine.reset()

    @property
    def chat_history(self) -> list[ChatMessage]:
        return self.engine.chat_history

    # sync

    def chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AGENT_CHAT_RESPONSE_TYPE:
        refusal = run_sync(self._screen_message(message, chat_history), api="achat()")
        if refusal is not None:
            return AgentChatResponse(response=refusal, metadata={"guard_refused": True})
        response = self.engine.chat(message, chat_history)
        if isinstance(response, StreamingAgentChatResponse):
            return self._finish_stream(message, response, list(response.response_gen))
        refusal = run_sync(
            self._screen_reply(message, response.response, response.source_nodes), api="achat()"
        )
        return response if refusal is None else self._refused(response.response, refusal)

    def stream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        refusal = run_sync(self._screen_message(message, chat_history), api="astream_chat()")
        if refusal is not None:
            return _stream_of([refusal], [], [])
        response = self.engine.stream_chat(message, chat_history)
        return self._finish_stream(message, response, list(response.response_gen))

    def _finish_stream(
        self, message: str, response: StreamingAgentChatResponse, tokens: list[str]
    ) -> StreamingAgentChatResponse:
        text = "".join(tokens)
        refusal = run_sync(
            self._screen_reply(message, text, response.source_nodes), api="astream_chat()"
        )
        if refusal is None:
            return _stream_of(tokens, response.sources, response.source_nodes)
        self._fix_memory(text, refusal)
        return _stream_of([refusal], [], [])

    # async

    async def achat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> AGENT_CHAT_RESPONSE_TYPE:
        refusal = await self._screen_message(message, chat_history)
        if refusal is not None:
            return AgentChatResponse(response=refusal, metadata={"guard_refused": True})
        response = await self.engine.achat(message, chat_history)
        if isinstance(response, StreamingAgentChatResponse):
            tokens = [t async for t in response.async_response_gen()]
            return await self._afinish_stream(message, response, tokens)
        refusal = await self._screen_reply(message, response.response, response.source_nodes)
        return response if refusal is None else self._refused(response.response, refusal)

    async def astream_chat(
        self, message: str, chat_history: list[ChatMessage] | None = None
    ) -> StreamingAgentChatResponse:
        refusal = await self._screen_message(message, chat_history)
        if refusal is not None:
            return _astream_of([refusal], [], [])
        response = await self.engine.astream_chat(message, chat_history)
        tokens = [t async for t in response.async_response_gen()]
        return await self._afinish_stream(message, response, tokens)

    async def _afinish_stream(
        self, message: str, response: StreamingAgentChatResponse, tokens: list[str]
    ) -> StreamingAgentChatResponse:
        text = "".join(tokens)
        refusal = await self._screen_reply(message, text, response.source_nodes)
        if refusal is None:
            return _astream_of(tokens, response.sources, response.source_nodes)
        self._fix_memory(text, refusal)
        return _astream_of([refusal], [], [])

    # checks

    async def _screen_message(
        self, message: str, chat_history: list[ChatMessage] | None
    ) -> str | None:
        history = chat_history if chat_history is not None else self.engine.chat_history
        user = ChatMessage(role=MessageRole.USER, content=message)
        conversation = _convert.to_conversation([*history, user])
        if not _convert.assessable(conversation) or conversation.messages[-1].role != "user":
            return None
        decision = await _acheck(self.guard, Hook.USER_INPUT, conversation, "chat_engine")
        return None if decision.allowed else _refuse_or_raise(decision)

    async def _screen_reply(
        self, message: str, text: str, nodes: Sequence[NodeWithScore]
    ) -> str | None:
        if self.check_nodes and nodes:
            decisions = await _acheck_nodes(self.guard, nodes, message, "chat_engine")
            blocked = [d for d in decisions if d is not None and not d.allowed]
            if blocked:
                self._fix_memory(text, blocked[0].refusal or "")
                return blocked[0].refusal or ""
        if not text.strip():
            return None
        context = Conversation.user(message) if message.strip() else Conversation(())
        decision = await _acheck(
            self.guard, Hook.ASSISTANT_OUTPUT, _reply(context, text), "chat_engine"
        )
        if decision.allowed:
            return None
        self._fix_memory(text, decision.refusal or "")
        return _refuse_or_raise(decision)

    def _refused(self, text: str, refusal: str) -> AgentChatResponse:
        return AgentChatResponse(response=refusal, metadata={"guard_refused": True})

    def _fix_memory(self, text: str, refusal: str) -> None:
        """Replace the engine's stored copy of a refused reply with the refusal."""
        memory = getattr(self.engine, "_memory", None) or getattr(self.engine, "memory", None)
        if not isinstance(memory, BaseMemory):
            logger.warning(
                "%s keeps no reachable memory: a refused reply may stay in its history",
                type(self.engine).__name__,
            )
            return
        history = memory.get_all()
        for index in range(len(history) - 1, -1, -1):
            if history[index].role == MessageRole.ASSISTANT:
                if (history[index].content or "").strip() == text.strip() or index == len(
                    history
                ) - 1:
                    history[index] = ChatMessage(role=MessageRole.ASSISTANT, content=refusal)
                    memory.set(history)
                break


def guard_chat_engine(
    engine: BaseChatEngine, guard: Guard, *, check_nodes: bool = False
) -> GuardedChatEngine:
    """Wrap a chat engine: user turns checked before the engine runs, replies before returning."""
    return GuardedChatEngine(engine, guard, check_nodes=check_nodes)


def _responses(tokens: Sequence[str]) -> Generator[ChatResponse, None, None]:
    text = ""
    for token in tokens:
        text += token
        yield ChatResponse(
            message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=token
        )


async def _aresponses(tokens: Sequence[str]) -> AsyncGenerator[ChatResponse, None]:
    for response in _responses(tokens):
        yield response


def _stream_of(tokens: Sequence[str], sources: Any, nodes: Any) -> StreamingAgentChatResponse:
    return StreamingAgentChatResponse(
        chat_stream=_responses(tokens),
        sources=list(sources),
        source_nodes=list(nodes),
        is_writing_to_memory=False,
    )


def _astream_of(tokens: Sequence[str], sources: Any, nodes: Any) -> StreamingAgentChatResponse:
    return StreamingAgentChatResponse(
        achat_stream=_aresponses(tokens),
        sources=list(sources),
        source_nodes=list(nodes),
        is_writing_to_memory=False,
    )
