"""LangChain messages → `guard_plugins.Conversation`. The one place that knows both models.

Mapping:

- `HumanMessage` → ``user``; `AIMessage` (and chunks) → ``assistant`` with one `ToolCallPart`
  per entry of ``tool_calls`` (and ``invalid_tool_calls``, arguments kept as raw text);
  `ToolMessage` / `FunctionMessage` → ``tool`` named after the tool; `SystemMessage` →
  ``system`` (left out of the assessed prompt unless ``include_system=True``); `ChatMessage`
  by its role; `RemoveMessage` is dropped.
- Content blocks: text (``text``, ``text-plain``, OpenAI ``input_text`` / ``output_text``,
  ``refusal``); images as v1 standard blocks (``{"type": "image", "base64": .., "mime_type": ..}``,
  ``{"type": "image", "url": ..}``), v0 blocks (``source_type``), Anthropic blocks
  (``source: {"type": "base64", ...}``) and OpenAI ``image_url`` blocks. Images are decoded and
  validated by `guard_plugins.images.load_image`; http(s) URLs are refused there (the guard does
  not fetch), and the `ImageError` says which message and block.
- Blocks that carry no assessable text or image (reasoning, tool-call blocks that duplicate
  ``tool_calls``, citations, audio, video, files) are skipped; unknown block types with a
  ``text`` field contribute that text, so new provider formats fail towards being checked.
- Images in tool and system messages are not supported by Llama Guard; they are dropped (logged).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from guard_plugins import (
    Conversation,
    ConversationError,
    ImageError,
    ImagePart,
    Message,
    TextPart,
    ToolCallPart,
)
from guard_plugins.images import load_image
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)

__all__ = ["content_parts", "message_to_core", "messages_to_conversation", "to_conversation"]

logger = logging.getLogger("guard_plugins_langchain")

_TEXT_TYPES = frozenset({"text", "text-plain", "input_text", "output_text"})
_IMAGE_TYPES = frozenset({"image", "image_url", "input_image"})
_SKIPPED_TYPES = frozenset(
    {
        "reasoning",
        "thinking",
        "redacted_thinking",
        "tool_call",
        "tool_call_chunk",
        "invalid_tool_call",
        "server_tool_call",
        "server_tool_call_chunk",
        "server_tool_result",
        "tool_use",
        "tool_result",
        "function_call",
        "citation",
        "non_standard",
        "audio",
        "input_audio",
        "video",
        "file",
        "input_file",
    }
)
_CHAT_ROLES = {
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "ai": "assistant",
    "model": "assistant",
    "tool": "tool",
    "function": "tool",
    "system": "system",
    "developer": "system",
}


def content_parts(content: Any, where: str = "content") -> list[TextPart | ImagePart]:
    """Text and image parts of a LangChain message ``content`` (a string or a list of blocks)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(content)] if content else []
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, Sequence):
        raise ConversationError(f"{where}: content must be a string or a list of blocks")
    parts: list[TextPart | ImagePart] = []
    for index, block in enumerate(content):
        at = f"{where}, block {index}"
        if isinstance(block, str):
            if block:
                parts.append(TextPart(block))
            continue
        if not isinstance(block, Mapping):
            raise ConversationError(f"{at}: unsupported content block {type(block).__name__}")
        kind = block.get("type")
        if kind in _TEXT_TYPES:
            text = block.get("text")
            if not isinstance(text, str):
                raise ConversationError(f"{at}: text block without a string 'text'")
            if text:
                parts.append(TextPart(text))
        elif kind == "refusal" and isinstance(block.get("refusal"), str):
            parts.append(TextPart(block["refusal"]))
        elif kind in _IMAGE_TYPES:
            parts.append(_image(block, at))
        elif kind in _SKIPPED_TYPES:
            continue
        elif isinstance(block.get("text"), str):
            if block["text"]:
                parts.append(TextPart(block["text"]))
        else:
            logger.debug("skipping content block of type %r at %s", kind, at)
    return parts


def _image(block: Mapping[str, Any], where: str) -> ImagePart:
    source = _image_source(block, where)
    try:
        return load_image(source)
    except ImageError as exc:
        if isinstance(source, str) and source.strip().lower().startswith(("http://", "https://")):
            raise ImageError(
                f"{where}: image blocks with an http(s) URL are not fetched by the guard; pass "
                'the image inline ({"type": "image", "base64": ..., "mime_type": ...} or a data: '
                "URL), or download it and give its bytes"
            ) from exc
        raise ImageError(f"{where}: {exc}") from exc


def _image_source(block: Mapping[str, Any], where: str) -> Any:
    kind = block.get("type")
    if kind in ("image_url", "input_image"):
        value = block.get("image_url")
        if isinstance(value, Mapping):
            value = value.get("url")
        if value is None:
            value = block.get("url")
        if isinstance(value, str):
            return value
        raise ImageError(f"{where}: image_url block without a url")
    # v1 standard block, v0 block (source_type) or Anthropic block (source)
    source = block.get("source")
    if isinstance(source, Mapping):
        if source.get("type") == "base64" and isinstance(source.get("data"), str):
            mime = source.get("media_type") or "image/png"
            return f"data:{mime};base64,{source['data']}"
        if source.get("type") == "url" and isinstance(source.get("url"), str):
            return source["url"]
    payload = block.get("base64")
    if payload is None and block.get("source_type") == "base64":
        payload = block.get("data")
    if isinstance(payload, str):
        mime = block.get("mime_type") or "image/png"
        return f"data:{mime};base64,{payload}"
    if isinstance(block.get("data"), (bytes, bytearray)):
        return bytes(block["data"])
    url = block.get("url")
    if isinstance(url, str):
        return url
    if block.get("file_id") is not None or block.get("id") is not None:
        raise ImageError(
            f"{where}: image blocks that reference a provider file id cannot be assessed; "
            "pass the image inline (base64)"
        )
    raise ImageError(f"{where}: image block without base64 data or a url")


def _tool_calls(message: AIMessage) -> list[ToolCallPart]:
    calls: list[ToolCallPart] = []
    for call in message.tool_calls:
        args = call.get("args")
        calls.append(
            ToolCallPart(
                _tool_name(call.get("name")),
                dict(args) if isinstance(args, Mapping) else {},
                call_id=call.get("id"),
            )
        )
    for bad in message.invalid_tool_calls:
        raw = bad.get("args")
        calls.append(
            ToolCallPart(
                _tool_name(bad.get("name")),
                raw if isinstance(raw, str) else "",
                call_id=bad.get("id"),
            )
        )
    return calls


def _tool_name(name: Any) -> str:
    return name if isinstance(name, str) and name.strip() else "unknown_tool"


def _text_only(
    parts: list[TextPart | ImagePart], role: str, message: BaseMessage, index: int
) -> tuple[TextPart, ...]:
    images = sum(1 for p in parts if isinstance(p, ImagePart))
    if images:
        logger.warning(
            "%s: %d image(s) in a %s message are not assessed",
            _where(message, index),
            images,
            role,
        )
    text = "\n\n".join(p.text for p in parts if isinstance(p, TextPart))
    return (TextPart(text),)


def message_to_core(message: BaseMessage, index: int = 0) -> Message | None:
    """One LangChain message as a core `Message` (None for messages that carry no turn)."""
    if isinstance(message, RemoveMessage):
        return None
    role = _role(message)
    if role is None:
        raise ConversationError(
            f"{_where(message, index)}: unsupported message type {type(message).__name__}"
        )
    content = message.content
    if isinstance(content, str):  # the usual plain text: what content_parts gives for it
        parts: list[TextPart | ImagePart] = [TextPart(content)] if content else []
    else:
        parts = content_parts(content, _where(message, index))
    if role == "assistant":
        calls = _tool_calls(message) if isinstance(message, AIMessage) else []
        return Message("assistant", (*parts, *calls))
    if role == "user":
        return Message("user", tuple(parts))
    if role == "tool":
        name = message.name if isinstance(message.name, str) else None
        return Message("tool", _text_only(parts, role, message, index), name=name)
    return Message("system", _text_only(parts, role, message, index))


def _where(message: BaseMessage, index: int) -> str:
    """How errors and warnings name a message (built only when one is reported)."""
    return f"message {index} ({message.type})"


def _role(message: BaseMessage) -> str | None:
    if isinstance(message, HumanMessage):
        return "user"
    if isinstance(message, AIMessage):
        return "assistant"
    if isinstance(message, (ToolMessage, FunctionMessage)):
        return "tool"
    if isinstance(message, SystemMessage):
        return "system"
    if isinstance(message, ChatMessage):
        return _CHAT_ROLES.get(message.role.lower())
    return _CHAT_ROLES.get(message.type.lower())


def messages_to_conversation(
    messages: Sequence[BaseMessage], *, include_system: bool = False
) -> Conversation:
    """LangChain messages → `Conversation` (validated; raises `ConversationError`/`ImageError`)."""
    converted = [message_to_core(m, i) for i, m in enumerate(messages)]
    return Conversation(tuple(m for m in converted if m is not None), include_system=include_system)


def to_conversation(value: Any, *, include_system: bool = False) -> Conversation:
    """Any LangChain input shape (str, messages, tuples, dicts, PromptValue, ``{"messages"}``
    state) as a `Conversation`."""
    from guard_plugins_langchain._shapes import as_messages

    return messages_to_conversation(as_messages(value), include_system=include_system)


def stringify(value: Any) -> str:
    """Text for values that are not messages (parsed JSON, pydantic objects)."""
    if isinstance(value, str):
        return value
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        value = dump()
    try:
        return json.dumps(value, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(value)
