"""Incremental screening of a streamed reply.

A chunk is released to the caller only after the text that contains it has been checked. Checks
run at sentence boundaries (at least `min_chars` new characters since the last check) or when
`max_chars` unchecked characters have piled up, each time over the whole reply so far plus the
conversation before it (Llama Guard judges a reply in context, and a prefix can only become
unsafe by what follows). While a check is in flight the upstream keeps streaming into the buffer;
only the unchecked tail is held back. The final check covers the complete message, with its tool
calls (streamed tool-call chunks are never released before it). An unsafe prefix stops the stream:
`refuse` ends it with one refusal chunk, `block` raises `GuardBlocked`.

Graph states (``{"messages": [...]}``, or ``{node: update}`` dicts) are screened per chunk: every
assistant message that appears for the first time is checked before the chunk is released.
"""

from __future__ import annotations

import asyncio
import re
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from guard_plugins import Decision, GuardBlocked
from langchain_core.messages import AIMessage, AIMessageChunk, BaseMessage

from guard_plugins_langchain._shapes import (
    Check,
    OutputTarget,
    enforce,
    is_guard_refusal,
    locate_output,
    output_check,
    refusal_message,
)

__all__ = ["StreamSettings", "ascreen_stream", "screen_stream"]

_BOUNDARY = re.compile(r"(?:[.!?;:。！？…](?=[\s\"')\]]))|\n")
_executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="guard-plugins-langchain")


@dataclass(frozen=True)
class StreamSettings:
    """When the stream screen checks: see the module docstring."""

    min_chars: int = 48
    max_chars: int = 400
    include_tool_calls: bool = True
    include_system: bool = False


class _TextScreen:
    """State of a streamed message or string: held chunks, text so far, what is checked."""

    def __init__(
        self, context: Sequence[BaseMessage], settings: StreamSettings, as_str: bool
    ) -> None:
        self.context = list(context)
        self.settings = settings
        self.as_str = as_str
        self.held: deque[tuple[Any, int, bool]] = deque()  # chunk, text end, releasable
        self.parts: list[str] = []
        self.length = 0
        self.checked = 0  # text[:checked] has been allowed
        self.requested = 0  # text[:requested] is being (or was) checked
        self.barrier = False  # a chunk that waits for the final check (tool-call chunks)
        self.message: AIMessageChunk | None = None

    @property
    def text(self) -> str:
        if len(self.parts) > 1:
            self.parts = ["".join(self.parts)]
        return self.parts[0] if self.parts else ""

    def push(self, chunk: Any) -> None:
        if isinstance(chunk, str):
            piece = chunk
            releasable = True
            as_message: AIMessageChunk = AIMessageChunk(content=chunk)
        elif isinstance(chunk, AIMessageChunk):
            piece = chunk.text
            releasable = not (chunk.tool_call_chunks or chunk.invalid_tool_calls)
            as_message = chunk
        else:  # a BaseMessage streamed whole
            message = chunk if isinstance(chunk, BaseMessage) else AIMessage(str(chunk))
            piece = message.text
            releasable = not (isinstance(message, AIMessage) and message.tool_calls)
            as_message = AIMessageChunk(
                content=message.content,
                id=message.id,
                tool_call_chunks=[
                    {"name": c["name"], "args": _json(c["args"]), "id": c["id"], "index": i}
                    for i, c in enumerate(message.tool_calls)
                ]
                if isinstance(message, AIMessage)
                else [],
            )
        self.message = as_message if self.message is None else self.message + as_message
        if piece:
            self.parts.append(piece)
            self.length += len(piece)
        self.barrier = self.barrier or not releasable
        self.held.append((chunk, self.length, releasable and not self.barrier))

    def next_check(self) -> tuple[int, Check] | None:
        """A prefix worth checking now, or None."""
        start = self.requested
        if self.length - start <= 0:
            return None
        offset = None
        if self.length - start >= self.settings.max_chars:
            offset = self.length
        else:
            text = self.text
            for match in _BOUNDARY.finditer(text, start):
                if match.end() - start >= self.settings.min_chars:
                    offset = match.end()
        if offset is None:
            return None
        check = self._check(self.text[:offset], tool_calls=False)
        if check is None:
            return None
        self.requested = offset
        return offset, check

    def _check(self, text: str, *, tool_calls: bool) -> Check | None:
        if tool_calls and self.message is not None:
            message: AIMessage = AIMessage(
                content=self.message.content,
                tool_calls=self.message.tool_calls,
                invalid_tool_calls=self.message.invalid_tool_calls,
                id=self.message.id,
            )
        else:
            message = AIMessage(text)
        return output_check(
            OutputTarget("message", message, ()),
            self.context,
            include_tool_calls=self.settings.include_tool_calls,
            include_system=self.settings.include_system,
        )

    def final_check(self) -> Check | None:
        has_calls = self.message is not None and bool(
            self.message.tool_calls or self.message.invalid_tool_calls
        )
        if self.checked >= self.length and not (has_calls and self.settings.include_tool_calls):
            return None
        self.requested = self.length
        return self._check(self.text, tool_calls=True)

    def release(self, offset: int, *, final: bool = False) -> list[Any]:
        self.checked = max(self.checked, offset)
        out = []
        while self.held and (final or (self.held[0][2] and self.held[0][1] <= offset)):
            out.append(self.held.popleft()[0])
        return out

    def refusal(self, decision: Decision) -> Any:
        like = self.message if self.message is not None else None
        message = refusal_message(decision, like=like, chunk=True)
        return message.text if self.as_str else message


class _StateScreen:
    """Graph-state chunks: check each assistant message the first time it appears."""

    def __init__(self, context: Sequence[BaseMessage], settings: StreamSettings) -> None:
        self.settings = settings
        self.context = list(context)
        self.seen: set[str | int] = {_key(m) for m in context}

    def checks(self, chunk: Any) -> list[tuple[AIMessage, Check]]:
        found: list[tuple[AIMessage, Check]] = []
        history: list[BaseMessage] = list(self.context)
        for messages in _message_lists(chunk):
            for index, message in enumerate(messages):
                if not isinstance(message, AIMessage) or _key(message) in self.seen:
                    continue
                self.seen.add(_key(message))
                if is_guard_refusal(message):
                    continue
                prior = [m for m in messages[:index] if isinstance(m, BaseMessage)] or history
                check = output_check(
                    OutputTarget("message", message, ()),
                    prior,
                    include_tool_calls=self.settings.include_tool_calls,
                    include_system=self.settings.include_system,
                )
                if check is not None:
                    found.append((message, check))
        return found


def _key(message: BaseMessage) -> str | int:
    return message.id if message.id else id(message)


def _message_lists(value: Any, depth: int = 0) -> list[list[BaseMessage]]:
    if depth > 4:
        return []
    if isinstance(value, BaseMessage):
        return [[value]]
    if isinstance(value, Mapping):
        lists: list[list[BaseMessage]] = []
        for item in value.values():
            lists.extend(_message_lists(item, depth + 1))
        return lists
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if value and all(isinstance(m, BaseMessage) for m in value):
            return [list(value)]
        lists = []
        for item in value:
            lists.extend(_message_lists(item, depth + 1))
        return lists
    return []


def _refuse_state_chunk(chunk: Any, message: AIMessage, decision: Decision) -> Any:
    """`chunk` (a state, an update dict, a list) with `message` replaced by the refusal."""
    replacement = refusal_message(decision, like=message)
    replaced, found = _replace(chunk, message, replacement, 0)
    if not found:
        raise GuardBlocked(decision)  # pragma: no cover - the message came from this chunk
    return replaced


def _replace(value: Any, old: BaseMessage, new: BaseMessage, depth: int) -> tuple[Any, bool]:
    if value is old:
        return new, True
    if depth > 4:
        return value, False
    if isinstance(value, Mapping):
        out = {}
        found = False
        for key, item in value.items():
            out[key], hit = _replace(item, old, new, depth + 1)
            found = found or hit
        return (out, True) if found else (value, False)
    if isinstance(value, list | tuple):
        items = []
        found = False
        for item in value:
            replaced, hit = _replace(item, old, new, depth + 1)
            items.append(replaced)
            found = found or hit
        return (type(value)(items), True) if found else (value, False)
    return value, False


def _json(value: Any) -> str:
    import json

    return json.dumps(value, ensure_ascii=False, default=str)


def _is_text_chunk(chunk: Any) -> bool:
    return isinstance(chunk, (str, BaseMessage))


# -- sync driver -----------------------------------------------------------------------------


def screen_stream(
    upstream: Iterator[Any],
    check: Callable[[Check], Decision],
    context: Sequence[BaseMessage],
    settings: StreamSettings,
) -> Iterator[Any]:
    """Yield `upstream`'s chunks, each after the text containing it has been allowed."""
    try:
        first = next(upstream)
    except StopIteration:
        return
    if _is_text_chunk(first):
        yield from _screen_text(first, upstream, check, context, settings)
    elif _message_lists(first):
        yield from _screen_states(first, upstream, check, context, settings)
    else:
        yield from _screen_other(first, upstream, check, context, settings)


def _screen_text(
    first: Any,
    upstream: Iterator[Any],
    check: Callable[[Check], Decision],
    context: Sequence[BaseMessage],
    settings: StreamSettings,
) -> Iterator[Any]:
    screen = _TextScreen(context, settings, as_str=isinstance(first, str))
    inflight: tuple[int, Future[Decision]] | None = None
    chunk: Any = first
    exhausted = False
    try:
        while True:
            screen.push(chunk)
            if inflight is not None and inflight[1].done():
                offset, future = inflight
                inflight = None
                if not enforce(future.result()):
                    yield screen.refusal(future.result())
                    return
                yield from screen.release(offset)
            if inflight is None and (nxt := screen.next_check()) is not None:
                inflight = (nxt[0], _executor.submit(check, nxt[1]))
            try:
                chunk = next(upstream)
            except StopIteration:
                exhausted = True
                break
        if inflight is not None:
            offset, future = inflight
            decision = future.result()
            if not enforce(decision):
                yield screen.refusal(decision)
                return
            yield from screen.release(offset)
        final = screen.final_check()
        if final is not None:
            decision = check(final)
            if not enforce(decision):
                yield screen.refusal(decision)
                return
        yield from screen.release(screen.length, final=True)
    finally:
        if not exhausted:
            _close(upstream)


def _screen_states(
    first: Any,
    upstream: Iterator[Any],
    check: Callable[[Check], Decision],
    context: Sequence[BaseMessage],
    settings: StreamSettings,
) -> Iterator[Any]:
    screen = _StateScreen(context, settings)
    chunk: Any = first
    exhausted = False
    try:
        while True:
            for message, pending in screen.checks(chunk):
                decision = check(pending)
                if not enforce(decision):
                    yield _refuse_state_chunk(chunk, message, decision)
                    return
            yield chunk
            try:
                chunk = next(upstream)
            except StopIteration:
                exhausted = True
                return
    finally:
        if not exhausted:
            _close(upstream)


def _screen_other(
    first: Any,
    upstream: Iterator[Any],
    check: Callable[[Check], Decision],
    context: Sequence[BaseMessage],
    settings: StreamSettings,
) -> Iterator[Any]:
    chunks = [first, *upstream]
    whole = _aggregate(chunks)
    pending = _other_check(whole, context, settings)
    if pending is not None:
        decision = check(pending)
        if not enforce(decision):
            raise GuardBlocked(decision)  # parsed output has no place for a refusal
    yield from chunks


def _aggregate(chunks: list[Any]) -> Any:
    whole = chunks[0]
    for chunk in chunks[1:]:
        try:
            whole = whole + chunk
        except TypeError:
            whole = chunk
    return whole


def _other_check(
    whole: Any, context: Sequence[BaseMessage], settings: StreamSettings
) -> Check | None:
    target = locate_output(whole)
    if target is None:
        return None
    return output_check(
        target,
        context,
        include_tool_calls=settings.include_tool_calls,
        include_system=settings.include_system,
    )


def _close(iterator: Any) -> None:
    close = getattr(iterator, "close", None)
    if callable(close):
        close()


# -- async driver ----------------------------------------------------------------------------


async def ascreen_stream(
    upstream: AsyncIterator[Any],
    check: Callable[[Check], Awaitable[Decision]],
    context: Sequence[BaseMessage],
    settings: StreamSettings,
) -> AsyncIterator[Any]:
    """Async twin of `screen_stream`: same rules, checks run while the upstream keeps going."""
    iterator = upstream.__aiter__()
    try:
        first = await iterator.__anext__()
    except StopAsyncIteration:
        return
    exhausted = False
    try:
        if _is_text_chunk(first):
            async for item in _ascreen_text(first, iterator, check, context, settings):
                yield item
        elif _message_lists(first):
            screen = _StateScreen(context, settings)
            chunk: Any = first
            while True:
                pairs = screen.checks(chunk)
                decisions = await asyncio.gather(*(check(p) for _, p in pairs))
                for (message, _), decision in zip(pairs, decisions, strict=True):
                    if not enforce(decision):
                        yield _refuse_state_chunk(chunk, message, decision)
                        return
                yield chunk
                try:
                    chunk = await iterator.__anext__()
                except StopAsyncIteration:
                    break
        else:
            chunks = [first]
            async for item in iterator:
                chunks.append(item)
            pending = _other_check(_aggregate(chunks), context, settings)
            if pending is not None:
                decision = await check(pending)
                if not enforce(decision):
                    raise GuardBlocked(decision)
            for item in chunks:
                yield item
        exhausted = True
    finally:
        if not exhausted:
            aclose = getattr(iterator, "aclose", None)
            if callable(aclose):
                await aclose()


async def _ascreen_text(
    first: Any,
    iterator: AsyncIterator[Any],
    check: Callable[[Check], Awaitable[Decision]],
    context: Sequence[BaseMessage],
    settings: StreamSettings,
) -> AsyncIterator[Any]:
    screen = _TextScreen(context, settings, as_str=isinstance(first, str))
    inflight: tuple[int, asyncio.Task[Decision]] | None = None
    chunk: Any = first
    try:
        while True:
            screen.push(chunk)
            if inflight is not None and inflight[1].done():
                offset, task = inflight
                inflight = None
                decision = task.result()
                if not enforce(decision):
                    yield screen.refusal(decision)
                    return
                for item in screen.release(offset):
                    yield item
            if inflight is None and (nxt := screen.next_check()) is not None:
                inflight = (nxt[0], asyncio.ensure_future(check(nxt[1])))
            try:
                chunk = await iterator.__anext__()
            except StopAsyncIteration:
                break
        if inflight is not None:
            offset, task = inflight
            inflight = None
            decision = await task
            if not enforce(decision):
                yield screen.refusal(decision)
                return
            for item in screen.release(offset):
                yield item
        final = screen.final_check()
        if final is not None:
            decision = await check(final)
            if not enforce(decision):
                yield screen.refusal(decision)
                return
        for item in screen.release(screen.length, final=True):
            yield item
    finally:
        if inflight is not None and not inflight[1].done():
            inflight[1].cancel()
