"""LangChain messages → guard_plugins.Conversation, by example and by property."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from guard_plugins import Conversation, GuardError, Hook, ImageError, ImagePart, TextPart
from guard_plugins import ToolCallPart as CoreToolCall
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    ChatMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompts import ChatPromptTemplate
from langchain_support import png_bytes

from guard_plugins_langchain import messages_to_conversation, to_conversation
from guard_plugins_langchain._shapes import (
    as_messages,
    input_check,
    locate_output,
    output_check,
    value_input_check,
)

PNG = png_bytes()
PNG_B64 = base64.b64encode(PNG).decode()


# -- examples ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "block",
    [
        {"type": "image", "base64": PNG_B64, "mime_type": "image/png"},  # v1 standard
        {"type": "image", "url": f"data:image/png;base64,{PNG_B64}"},  # v1 url (data:)
        {"type": "image", "source_type": "base64", "data": PNG_B64, "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
        {"type": "image_url", "image_url": f"data:image/png;base64,{PNG_B64}"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}},
    ],
    ids=["v1-base64", "v1-data-url", "v0-source-type", "openai", "openai-str", "anthropic"],
)
def test_image_blocks_become_image_parts(block: dict[str, Any]) -> None:
    conv = messages_to_conversation(
        [HumanMessage([{"type": "text", "text": "what is this"}, block])]
    )
    (image,) = conv.messages[0].images
    assert isinstance(image, ImagePart)
    assert image.data == PNG
    assert conv.messages[0].text == "what is this"


def test_http_image_url_is_refused_with_a_clear_message() -> None:
    message = HumanMessage([{"type": "image", "url": "https://example.com/cat.png"}])
    with pytest.raises(ImageError, match=r"message 0 \(human\), block 0: .*not fetched"):
        messages_to_conversation([message])
    openai = HumanMessage([{"type": "image_url", "image_url": {"url": "http://x.test/a.png"}}])
    with pytest.raises(ImageError, match="base64"):
        messages_to_conversation([openai])


def test_file_id_image_is_refused() -> None:
    with pytest.raises(ImageError, match="file id"):
        messages_to_conversation([HumanMessage([{"type": "image", "file_id": "file-123"}])])


def test_roles_tool_calls_and_tool_results() -> None:
    messages = [
        SystemMessage("be nice"),
        HumanMessage("run it"),
        AIMessage(
            "sure",
            tool_calls=[{"name": "python", "args": {"code": "print(1)"}, "id": "c1"}],
            invalid_tool_calls=[{"name": "bash", "args": "ls -", "id": "c2", "error": "bad"}],
        ),
        ToolMessage("1", tool_call_id="c1", name="python"),
        ChatMessage(role="assistant", content="done"),
        RemoveMessage(id="gone"),
    ]
    conv = messages_to_conversation(messages)
    assert [m.role for m in conv.messages] == ["system", "user", "assistant", "tool", "assistant"]
    calls = [p for p in conv.messages[2].parts if isinstance(p, CoreToolCall)]
    assert [(c.name, c.code, c.call_id) for c in calls] == [
        ("python", "print(1)", "c1"),
        ("bash", None, "c2"),
    ]
    assert calls[1].arguments == "ls -"
    assert conv.messages[3].name == "python"
    assert conv.messages[3].text == "1"
    assert not conv.include_system
    assert messages_to_conversation(messages, include_system=True).include_system


def test_skipped_and_unknown_blocks() -> None:
    message = AIMessage(
        [
            {"type": "reasoning", "reasoning": "secret chain of thought"},
            {"type": "text", "text": "answer"},
            {"type": "tool_call", "name": "x", "args": {}, "id": "1"},
            {"type": "brand_new_block", "text": "still assessed"},
            {"type": "audio", "base64": "AAAA", "mime_type": "audio/wav"},
        ]
    )
    conv = messages_to_conversation([message])
    assert [p.text for p in conv.messages[0].parts if isinstance(p, TextPart)] == [
        "answer",
        "still assessed",
    ]


def test_images_in_tool_messages_are_dropped_not_fatal() -> None:
    tool = ToolMessage(
        [{"type": "text", "text": "chart"}, {"type": "image", "base64": PNG_B64}],
        tool_call_id="c",
    )
    conv = messages_to_conversation([HumanMessage("hi"), tool])
    assert conv.messages[1].text == "chart"
    assert not conv.messages[1].images


@pytest.mark.parametrize(
    ("value", "texts"),
    [
        ("hello", ["hello"]),
        (HumanMessage("hello"), ["hello"]),
        ([("system", "sys"), ("human", "hello")], ["sys", "hello"]),
        ([{"role": "user", "content": "hello"}], ["hello"]),
        ({"role": "user", "content": "hello"}, ["hello"]),
        (("human", "hello"), ["hello"]),
        (["hello"], ["hello"]),
        ({"messages": [("human", "hello")]}, ["hello"]),
        ({"messages": "hello"}, ["hello"]),
        ({"question": "hello", "n": 3}, ["hello\n\n3"]),
        (ChatPromptTemplate.from_messages([("human", "{q}")]).invoke({"q": "hello"}), ["hello"]),
    ],
    ids=[
        "str",
        "message",
        "tuples",
        "dicts",
        "one-dict",
        "one-tuple",
        "list-of-str",
        "state",
        "state-str",
        "prompt-variables",
        "prompt-value",
    ],
)
def test_every_input_shape(value: Any, texts: list[str]) -> None:
    assert [m.text for m in as_messages(value)] == texts
    assert to_conversation(value).messages[-1].text == texts[-1]


def test_unsupported_input_is_a_conversation_error() -> None:
    with pytest.raises(GuardError):
        as_messages(object())
    with pytest.raises(GuardError):
        as_messages([("nonsense-role", "x")])


def test_nothing_to_assess_is_skipped() -> None:
    assert input_check([SystemMessage("only system")]) is None
    assert input_check([HumanMessage("hi"), AIMessage("hello")]) is None  # assistant last
    assert input_check([HumanMessage("")]) is None
    empty = locate_output(AIMessage(""))
    assert empty is not None
    assert output_check(empty) is None
    assert locate_output({"messages": [HumanMessage("x")]}) is None


def test_input_hook_follows_the_last_message() -> None:
    user = input_check([HumanMessage("hi")])
    assert user is not None
    assert user.hook is Hook.USER_INPUT
    call = AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "1"}])
    tool = input_check([HumanMessage("hi"), call, ToolMessage("result", tool_call_id="1")])
    assert tool is not None
    assert tool.hook is Hook.TOOL_RESULT


# -- property: the converter keeps what is assessed ----------------------------------------------

_text = st.text(min_size=0, max_size=30)
_args = st.dictionaries(
    st.text(min_size=1, max_size=8), st.one_of(_text, st.integers(), st.booleans()), max_size=3
)
_image_block = st.sampled_from(
    [
        {"type": "image", "base64": PNG_B64, "mime_type": "image/png"},
        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
    ]
)
_text_block = _text.map(lambda t: {"type": "text", "text": t})
_content = st.one_of(_text, st.lists(st.one_of(_text_block, _text), max_size=4))
_user_content = st.one_of(_text, st.lists(st.one_of(_text_block, _image_block, _text), max_size=4))
_tool_call = st.builds(
    lambda name, args, i: {"name": name, "args": args, "id": f"call{i}"},
    st.text(alphabet="abcdefgh_", min_size=1, max_size=10),
    _args,
    st.integers(0, 10_000),
)


@st.composite
def _messages(draw: st.DrawFn) -> list[BaseMessage]:
    out: list[BaseMessage] = []
    images = 0
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["human", "ai", "tool", "system"]))
        if kind == "human":
            content = draw(_user_content)
            if isinstance(content, list):
                n = sum(1 for b in content if isinstance(b, dict) and "image" in b["type"])
                if images + n > 8:  # the core assesses at most 8 images a conversation
                    content = [
                        b for b in content if not (isinstance(b, dict) and "image" in b["type"])
                    ]
                else:
                    images += n
            out.append(HumanMessage(content))
        elif kind == "ai":
            out.append(AIMessage(draw(_content), tool_calls=draw(st.lists(_tool_call, max_size=2))))
        elif kind == "tool":
            out.append(
                ToolMessage(
                    draw(_content), tool_call_id="x", name=draw(st.sampled_from(["py", None]))
                )
            )
        else:
            out.append(SystemMessage(draw(_content)))
    return out


def _texts(content: Any) -> list[str]:
    if isinstance(content, str):
        return [content] if content else []
    found = []
    for block in content:
        text = block if isinstance(block, str) else block.get("text")
        if isinstance(text, str) and text:
            found.append(text)
    return found


def _image_count(content: Any) -> int:
    if isinstance(content, str):
        return 0
    return sum(1 for b in content if isinstance(b, dict) and "image" in b["type"])


_ROLE = {"human": "user", "ai": "assistant", "tool": "tool", "system": "system"}


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_messages())
def test_conversion_invariants(messages: list[BaseMessage]) -> None:
    before = [m.model_dump() for m in messages]
    conv = messages_to_conversation(messages)
    # 1. one core message per LangChain message, roles mapped
    assert [m.role for m in conv.messages] == [_ROLE[m.type] for m in messages]
    for original, core in zip(messages, conv.messages, strict=True):
        texts = _texts(original.content)
        if core.role in ("user", "assistant"):
            # 2. every text block kept, in order, verbatim
            assert [p.text for p in core.parts if isinstance(p, TextPart)] == texts
            # 3. every image block kept as a decoded image
            assert len(core.images) == _image_count(original.content)
            assert all(img.data == PNG for img in core.images)
        else:
            # 4. tool and system messages: text joined, nothing dropped
            assert core.text == "\n\n".join(texts)
        if isinstance(original, AIMessage):
            # 5. tool calls kept with their names, arguments and ids
            calls = [p for p in core.parts if isinstance(p, CoreToolCall)]
            assert [(c.name, dict(c.arguments), c.call_id) for c in calls] == [  # type: ignore[arg-type]
                (c["name"], c["args"], c["id"]) for c in original.tool_calls
            ]
    # 6. deterministic, and the input is not mutated
    assert messages_to_conversation(messages) == conv
    assert [m.model_dump() for m in messages] == before


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.one_of(_text, st.dictionaries(st.text(max_size=5), _text, max_size=3)), max_size=4)
)
def test_arbitrary_content_never_crashes_outside_guard_errors(content: list[Any]) -> None:
    try:
        conv = messages_to_conversation([HumanMessage(content)])  # type: ignore[arg-type]
    except GuardError:
        return
    assert isinstance(conv, Conversation)


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.text(max_size=30), st.sampled_from(["", "  ", "\u200b", "hi"])), st.booleans())
def test_a_plain_string_step_check_is_the_message_check(text: str, include_system: bool) -> None:
    # An input step checks a string without building its HumanMessage: the same check.
    expected = input_check(as_messages(text), include_system=include_system)
    assert value_input_check(text, include_system=include_system) == expected
    value: Any = [("human", text or "x")]
    assert value_input_check(value) == input_check(as_messages(value))
