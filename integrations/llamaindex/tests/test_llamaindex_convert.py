"""ChatMessage → Conversation: unit cases and a fuzzed contract.

Invariants the fuzz test holds `to_conversation` to, for any list of messages built from text,
tool calls (blocks, ToolSelections, OpenAI dicts), tool messages and valid images:

1. It either returns a `Conversation` or raises a `GuardError` (never another exception).
2. Every message with something assessable is kept, in order; messages with nothing are dropped.
3. Roles map as documented (user→user, assistant/model/chatbot→assistant, tool/function→tool,
   system/developer→system).
4. Every text block's text appears verbatim, in order, in the converted message.
5. Every tool call keeps its name (or "tool" when empty) and its arguments (dicts equal; JSON
   strings decoded); a ``code`` argument is the call's code.
6. Images: only the last message keeps them (by default), each with the SHA-256 of the raw bytes.
7. The conversation is assessable exactly when its last turn has text, an image or a tool call.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from guard_plugins import Conversation, GuardError, ImageError, ImagePart, TextPart, ToolCallPart
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.base.llms.types import (
    ChatMessage,
    ImageBlock,
    MessageRole,
    TextBlock,
    ThinkingBlock,
    ToolCallBlock,
)
from llama_index.core.llms.llm import ToolSelection
from llamaindex_support import png_bytes

from guard_plugins_llamaindex import _convert

PNG = png_bytes()
PNG_SHA = hashlib.sha256(PNG).hexdigest()


def test_roles_text_and_tool_messages() -> None:
    conv = _convert.to_conversation(
        [
            ChatMessage(role="system", content="be nice"),
            ChatMessage(role="user", content="hello"),
            ChatMessage(
                role="assistant",
                content="let me check",
                additional_kwargs={
                    "tool_calls": [
                        ToolSelection(tool_id="c1", tool_name="run", tool_kwargs={"code": "ls"})
                    ]
                },
            ),
            ChatMessage(role="tool", content="a.txt", additional_kwargs={"tool_call_id": "c1"}),
        ]
    )
    roles = [m.role for m in conv.messages]
    assert roles == ["system", "user", "assistant", "tool"]
    call = conv.messages[2].parts[-1]
    assert isinstance(call, ToolCallPart)
    assert (call.name, call.code, call.call_id) == ("run", "ls", "c1")
    assert conv.messages[3].name == "run"  # resolved through the call id
    assert conv.assessed_role == "User"  # a tool result is assessed like user input


def test_tool_call_blocks_openai_dicts_and_dedup() -> None:
    message = ChatMessage(
        role="assistant",
        blocks=[
            ToolCallBlock(tool_call_id="x", tool_name="sql", tool_kwargs='{"query": "SELECT 1"}')
        ],
        additional_kwargs={
            "tool_calls": [
                {"id": "x", "function": {"name": "sql", "arguments": '{"query": "SELECT 1"}'}},
                {
                    "id": "y",
                    "type": "function",
                    "function": {"name": "py", "arguments": "print(1)"},
                },
            ]
        },
    )
    calls = _convert.tool_calls_of(message)
    assert [(c.name, c.call_id) for c in calls] == [("sql", "x"), ("py", "y")]
    assert calls[0].arguments == {"query": "SELECT 1"}
    assert calls[1].arguments == "print(1)"  # not JSON: kept verbatim


def test_skipped_blocks_and_empty_messages() -> None:
    conv = _convert.to_conversation(
        [
            ChatMessage(role="user", content="hi"),
            ChatMessage(role="assistant", blocks=[ThinkingBlock(content="hmm")]),
            ChatMessage(role="assistant", content="   "),
        ]
    )
    assert [m.role for m in conv.messages] == ["user"]


def test_image_block_sources(tmp_path: Path) -> None:
    path = tmp_path / "cat.png"
    path.write_bytes(PNG)
    data_url = "data:image/png;base64," + base64.b64encode(PNG).decode()
    for block in (
        ImageBlock(image=PNG),  # LlamaIndex stores these base64-encoded
        ImageBlock(image=base64.b64encode(PNG)),
        ImageBlock(path=path),
        ImageBlock(url=data_url),
    ):
        part = _convert.image_from_block(block)
        assert isinstance(part, ImagePart)
        assert part.sha256 == PNG_SHA


def test_http_image_url_is_refused_without_fetching(no_network: list[Any]) -> None:
    block = ImageBlock(url="https://images.example.com/cat.png?token=secret")
    with pytest.raises(ImageError) as info:
        _convert.image_from_block(block)
    message = str(info.value)
    assert "never fetches" in message
    assert "https://images.example.com" in message
    assert "secret" not in message  # no query string (tokens) echoed
    assert no_network == []


def test_only_last_message_keeps_images_by_default() -> None:
    messages = [
        ChatMessage(role="user", blocks=[ImageBlock(image=PNG), TextBlock(text="what is this")]),
        ChatMessage(role="assistant", content="a red square"),
        ChatMessage(role="user", blocks=[ImageBlock(image=PNG), TextBlock(text="and this?")]),
    ]
    conv = _convert.to_conversation(messages)
    assert [len(m.images) for m in conv.messages] == [0, 0, 1]
    full = _convert.to_conversation(messages, context_images=True)
    assert [len(m.images) for m in full.messages] == [1, 0, 1]
    assert _convert.text_only(full).images == ()


def test_assessable() -> None:
    assert _convert.assessable(Conversation.user("x"))
    assert not _convert.assessable(Conversation(()))
    only_system = _convert.to_conversation([ChatMessage(role="system", content="rules")])
    assert not _convert.assessable(only_system)


# -- fuzz ------------------------------------------------------------------------------------

_text = st.text(min_size=0, max_size=40)
_kwargs = st.dictionaries(
    st.sampled_from(["code", "x", "path", "query", "n"]),
    st.one_of(st.text(max_size=20), st.integers(), st.booleans(), st.none()),
    max_size=3,
)
_name = st.one_of(st.sampled_from(["run", "search", "code_interpreter"]), st.text(max_size=8))


@st.composite
def _tool_call(draw: st.DrawFn) -> tuple[str, Any, dict[str, Any] | str]:
    """(kind, object to put in the message, expected arguments)."""
    kind = draw(st.sampled_from(["selection", "block", "openai"]))
    name = draw(_name)
    kwargs = draw(_kwargs)
    call_id = draw(st.uuids()).hex
    if kind == "selection":
        return kind, ToolSelection(tool_id=call_id, tool_name=name, tool_kwargs=kwargs), kwargs
    if kind == "block":
        return kind, ToolCallBlock(tool_call_id=call_id, tool_name=name, tool_kwargs=kwargs), kwargs
    raw = {"id": call_id, "function": {"name": name, "arguments": json.dumps(kwargs)}}
    return kind, raw, kwargs


@st.composite
def _message(draw: st.DrawFn) -> tuple[ChatMessage, dict[str, Any]]:
    role = draw(st.sampled_from(list(MessageRole)))
    texts = draw(st.lists(_text, max_size=3))
    blocks: list[Any] = [TextBlock(text=t) for t in texts]
    with_image = role in (MessageRole.USER, MessageRole.ASSISTANT) and draw(st.booleans())
    if with_image:
        blocks.insert(draw(st.integers(0, len(blocks))), ImageBlock(image=PNG))
    kwargs: dict[str, Any] = {}
    calls: list[tuple[str, Any, Any]] = []
    if role == MessageRole.ASSISTANT:
        calls = draw(st.lists(_tool_call(), max_size=2))
        blocks.extend(obj for kind, obj, _ in calls if kind == "block")
        listed = [obj for kind, obj, _ in calls if kind != "block"]
        if listed:
            kwargs["tool_calls"] = listed
    message = ChatMessage(role=role, blocks=blocks, additional_kwargs=kwargs)
    expect = {"texts": texts, "calls": calls, "image": with_image}
    return message, expect


_EXPECTED_ROLE = {
    MessageRole.USER: "user",
    MessageRole.ASSISTANT: "assistant",
    MessageRole.MODEL: "assistant",
    MessageRole.CHATBOT: "assistant",
    MessageRole.TOOL: "tool",
    MessageRole.FUNCTION: "tool",
    MessageRole.SYSTEM: "system",
    MessageRole.DEVELOPER: "system",
}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_message(), max_size=5))
def test_fuzz_conversion_contract(items: list[tuple[ChatMessage, dict[str, Any]]]) -> None:
    messages = [m for m, _ in items]
    try:
        conv = _convert.to_conversation(messages)
    except GuardError:
        return  # (1) e.g. a message with more images than a check accepts
    # (2) kept messages, in order
    kept = []
    for index, (message, expect) in enumerate(items):
        role = _EXPECTED_ROLE[message.role]
        has_text = any(t.strip() for t in expect["texts"])
        has_image = expect["image"] and index == len(items) - 1
        has_calls = role == "assistant" and bool(expect["calls"])
        if role in ("tool", "system"):
            has_image = False
        if has_text or has_image or has_calls:
            kept.append((message, expect, role, index))
    assert len(conv.messages) == len(kept)
    for converted, (_message, expect, role, index) in zip(conv.messages, kept, strict=True):
        # (3) roles
        assert converted.role == role
        # (4) texts verbatim, in order
        texts = [t for t in expect["texts"] if t.strip()]
        if role in ("tool", "system"):
            assert converted.text == "\n".join(texts)
        else:
            assert [p.text for p in converted.parts if isinstance(p, TextPart)] == texts
        # (5) tool calls: name and arguments
        calls = [p for p in converted.parts if isinstance(p, ToolCallPart)]
        if role == "assistant":
            expected_calls = sorted(expect["calls"], key=lambda c: c[0] != "block")
            assert len(calls) == len(expected_calls)
            for part, (_, obj, kwargs) in zip(calls, expected_calls, strict=True):
                name = obj.tool_name if hasattr(obj, "tool_name") else obj["function"]["name"]
                assert part.name == (name.strip() or "tool")
                assert part.arguments == kwargs
                code = kwargs.get("code")
                if isinstance(code, str) and code.strip():
                    assert part.code == code
        else:
            assert calls == []
        # (6) images only on the last message, with the raw bytes' hash
        images = converted.images
        if index == len(items) - 1 and expect["image"] and role in ("user", "assistant"):
            assert [i.sha256 for i in images] == [PNG_SHA]
        else:
            assert images == ()
    # (7) assessable iff the last turn has something
    if conv.messages:
        assert _convert.assessable(conv) == _last_turn_has_content(conv)
    else:
        assert not _convert.assessable(conv)


def _last_turn_has_content(conv: Conversation) -> bool:
    visible = [m for m in conv.messages if m.role != "system"]
    if not visible:
        return False
    last = visible[-1]
    return bool(
        last.text.strip() or last.images or any(isinstance(p, ToolCallPart) for p in last.parts)
    )


@settings(max_examples=100, deadline=None)
@given(st.one_of(st.none(), st.text(max_size=30), _kwargs, st.lists(st.integers(), max_size=3)))
def test_fuzz_tool_arguments_shape(value: Any) -> None:
    result = _convert.tool_arguments(value)
    assert isinstance(result, (dict, str))
    if isinstance(value, dict):
        assert result == value
