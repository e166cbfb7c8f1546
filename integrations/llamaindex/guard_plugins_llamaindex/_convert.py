"""LlamaIndex messages → `guard_plugins.Conversation`. The one place that knows both worlds.

Mapping (see docs/llamaindex.md):

- Roles: ``user`` → user; ``assistant`` / ``model`` / ``chatbot`` → assistant; ``tool`` /
  ``function`` → tool; ``system`` / ``developer`` → system (left out of prompts by the core).
- `TextBlock` → `TextPart`; text inside `CitableBlock` / `CitationBlock` is kept too.
- `ImageBlock` → `ImagePart` through the core's image rules: ``image=`` bytes (raw or the
  base64 LlamaIndex stores), ``path=`` (size checked before reading), ``url=`` ``data:`` URLs.
  ``http(s)://`` URLs are never fetched (`ImageBlock.resolve_image()` would fetch them): they
  raise `ImageError` telling the caller to pass the bytes.
- Tool calls: `ToolCallBlock`s and ``additional_kwargs["tool_calls"]`` (`ToolSelection`,
  OpenAI-style dicts or SDK objects) → `ToolCallPart` on the assistant message; duplicates of
  one call id are kept once.
- Tool messages take their tool's name from ``additional_kwargs["name"]`` or from the call
  whose id matches ``additional_kwargs["tool_call_id"]``.
- Thinking, audio, video, document and cache blocks carry nothing the guard assesses and are
  skipped; images in tool and system messages too (Llama Guard has no place for them).
- A message left with no parts is dropped, so an empty message never becomes an empty turn.

Only the assessed (last) message keeps its images unless ``context_images=True``: every image in a
conversation costs model time, more than eight are refused, and an image anywhere drops S14 from
the prompt (the official template), which must never happen to a tool-call check.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping, Sequence
from io import IOBase
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from guard_plugins import Conversation, ImageError, ImagePart, Message, TextPart, ToolCallPart
from guard_plugins.conversation import Part, Role
from guard_plugins.errors import ConversationError
from guard_plugins.images import load_image
from llama_index.core.base.llms.types import (
    ChatMessage,
    CitableBlock,
    CitationBlock,
    ImageBlock,
    MessageRole,
    TextBlock,
    ToolCallBlock,
)

__all__ = [
    "assessable",
    "image_from_block",
    "message_text",
    "to_conversation",
    "to_message",
    "tool_arguments",
    "tool_calls_of",
]

_ROLES: dict[str, Role] = {
    MessageRole.USER.value: "user",
    MessageRole.ASSISTANT.value: "assistant",
    MessageRole.MODEL.value: "assistant",
    MessageRole.CHATBOT.value: "assistant",
    MessageRole.TOOL.value: "tool",
    MessageRole.FUNCTION.value: "tool",
    MessageRole.SYSTEM.value: "system",
    MessageRole.DEVELOPER.value: "system",
}
_UNNAMED_TOOL = "tool"


def guard_role(message: ChatMessage) -> Role:
    role = message.role.value if isinstance(message.role, MessageRole) else str(message.role)
    return _ROLES.get(role.lower(), "user")


def message_text(message: ChatMessage) -> str:
    """The text of a message's text blocks (citations included), joined as LlamaIndex does."""
    return "\n".join(_texts(message.blocks))


def _texts(blocks: Iterable[Any]) -> Iterable[str]:
    for block in blocks:
        if isinstance(block, TextBlock):
            yield block.text
        elif isinstance(block, CitableBlock):
            yield from _texts(block.content)
        elif isinstance(block, CitationBlock):
            yield from _texts([block.cited_content])


def _images(blocks: Iterable[Any]) -> Iterable[ImageBlock]:
    for block in blocks:
        if isinstance(block, ImageBlock):
            yield block
        elif isinstance(block, CitableBlock):
            yield from _images(block.content)
        elif isinstance(block, CitationBlock):
            yield from _images([block.cited_content])


def image_from_block(block: ImageBlock) -> ImagePart:
    """An `ImageBlock` as a validated `ImagePart`, without any network access."""
    if block.image is not None:
        raw = block.image
        if isinstance(raw, IOBase):
            raw.seek(0)
            raw = raw.read()
        if not isinstance(raw, (bytes, bytearray)):
            raise ImageError(f"ImageBlock.image holds {type(raw).__name__}, not bytes")
        return load_image(_unbase64(bytes(raw)))
    if block.path is not None:
        return load_image(Path(block.path))
    if block.url is not None:
        url = str(block.url)
        if url[:5].lower() == "data:":
            return load_image(url)
        parts = urlsplit(url)
        where = f"{parts.scheme}://{parts.hostname or ''}" if parts.scheme else "a URL"
        raise ImageError(
            f"ImageBlock(url=...) points to {where}: guard-plugins never fetches image URLs. "
            "Download the image yourself and pass ImageBlock(image=<bytes>) or a path."
        )
    raise ImageError("ImageBlock has no image bytes, path or url")


def _unbase64(data: bytes) -> bytes:
    # LlamaIndex stores `image=` bytes base64-encoded; raw image bytes never validate as base64.
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return data


def tool_arguments(kwargs: Any) -> Mapping[str, Any] | str:
    """Tool arguments as the core takes them: a mapping, or a string (JSON decoded if it is)."""
    if kwargs is None:
        return {}
    if isinstance(kwargs, Mapping):
        return dict(kwargs)
    if isinstance(kwargs, (bytes, bytearray)):
        kwargs = bytes(kwargs).decode("utf-8", "replace")
    if isinstance(kwargs, str):
        try:
            decoded = json.loads(kwargs) if kwargs.strip() else {}
        except json.JSONDecodeError:
            return kwargs
        return dict(decoded) if isinstance(decoded, Mapping) else kwargs
    return json.dumps(kwargs, ensure_ascii=False, default=str)


def _call_part(name: Any, arguments: Any, call_id: Any) -> ToolCallPart:
    clean = name.strip() if isinstance(name, str) else ""
    return ToolCallPart(
        clean or _UNNAMED_TOOL,
        tool_arguments(arguments),
        call_id=str(call_id) if call_id not in (None, "") else None,
    )


def tool_calls_of(message: ChatMessage) -> list[ToolCallPart]:
    """Every tool call a message carries, from its blocks and its ``additional_kwargs``."""
    calls: list[ToolCallPart] = []
    for block in message.blocks:
        if isinstance(block, ToolCallBlock):
            calls.append(_call_part(block.tool_name, block.tool_kwargs, block.tool_call_id))
    raw_calls = message.additional_kwargs.get("tool_calls") or ()
    if isinstance(raw_calls, (Mapping, str, bytes)) or not isinstance(raw_calls, Iterable):
        raw_calls = (raw_calls,)
    for raw in raw_calls:
        part = _call_from_kwargs(raw)
        if part is not None:
            calls.append(part)
    seen: set[str] = set()
    unique = []
    for call in calls:
        if call.call_id is not None:
            if call.call_id in seen:
                continue
            seen.add(call.call_id)
        unique.append(call)
    return unique


def _call_from_kwargs(raw: Any) -> ToolCallPart | None:
    tool_name = getattr(raw, "tool_name", None)
    if isinstance(tool_name, str):  # ToolSelection, ToolCallBlock
        kwargs = getattr(raw, "tool_kwargs", None)
        call_id = getattr(raw, "tool_id", None) or getattr(raw, "tool_call_id", None)
        return _call_part(tool_name, kwargs, call_id)
    if isinstance(raw, Mapping):
        function = raw.get("function", raw)
        if not isinstance(function, Mapping):
            return None
        arguments = function.get("arguments", function.get("args", function.get("input")))
        return _call_part(function.get("name"), arguments, raw.get("id"))
    function = getattr(raw, "function", None)  # OpenAI SDK objects
    if function is not None and isinstance(getattr(function, "name", None), str):
        return _call_part(
            function.name, getattr(function, "arguments", None), getattr(raw, "id", None)
        )
    return None


def to_message(
    message: ChatMessage,
    *,
    images: bool = True,
    call_names: Mapping[str, str] | None = None,
) -> Message | None:
    """One `ChatMessage` as a core `Message`; None when nothing in it can be assessed."""
    role = guard_role(message)
    texts = [t for t in _texts(message.blocks) if t.strip()]
    if role in ("tool", "system"):
        text = "\n".join(texts)
        if not text.strip():
            return None
        name = None
        if role == "tool":
            name = _tool_name(message, call_names or {})
        return Message(role, (TextPart(text),), name=name)
    parts: list[Part] = []
    if images:
        parts.extend(_image_part(block) for block in _images(message.blocks))
    parts.extend(TextPart(t) for t in texts)
    if role == "assistant":
        parts.extend(tool_calls_of(message))
    if not parts:
        return None
    return Message(role, tuple(parts))


def _image_part(block: ImageBlock) -> ImagePart:
    try:
        return image_from_block(block)
    except ImageError:
        raise
    except ConversationError as exc:  # pragma: no cover - load_image only raises ImageError
        raise ImageError(str(exc)) from exc


def _tool_name(message: ChatMessage, call_names: Mapping[str, str]) -> str | None:
    kwargs = message.additional_kwargs
    for key in ("name", "tool_name"):
        value = kwargs.get(key)
        if isinstance(value, str) and value.strip():
            return value.strip()
    call_id = kwargs.get("tool_call_id")
    if isinstance(call_id, str):
        return call_names.get(call_id)
    return None


def to_conversation(
    messages: Sequence[ChatMessage] | ChatMessage,
    *,
    context_images: bool = False,
    include_system: bool = False,
) -> Conversation:
    """A list of `ChatMessage`s as a `Conversation` whose last message is the assessed one."""
    if isinstance(messages, ChatMessage):
        messages = [messages]
    converted: list[Message] = []
    call_names: dict[str, str] = {}
    last = len(messages) - 1
    for index, message in enumerate(messages):
        keep_images = context_images or index == last
        part = to_message(message, images=keep_images, call_names=call_names)
        if part is None:
            continue
        for call in part.parts:
            if isinstance(call, ToolCallPart) and call.call_id is not None:
                call_names[call.call_id] = call.name
        converted.append(part)
    return Conversation(tuple(converted), include_system=include_system)


def assessable(conversation: Conversation) -> bool:
    """Whether the last turn has anything to assess (text, image or tool call)."""
    if not conversation.messages:
        return False
    try:
        conversation.turns()
    except ImageError:
        raise
    except ConversationError:
        return False
    return True


def text_only(conversation: Conversation) -> Conversation:
    """The same conversation without images (context for tool checks keeps S14 listed)."""
    messages = []
    for message in conversation.messages:
        parts = tuple(p for p in message.parts if not isinstance(p, ImagePart))
        if parts:
            messages.append(Message(message.role, parts, name=message.name))
    return Conversation(tuple(messages), conversation.include_system)
