"""Conversations from OpenAI-style messages, images, tool calls and their errors."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from guard_plugins import (
    Conversation,
    ConversationError,
    ImageError,
    ImagePart,
    Message,
    ToolCallPart,
)
from guard_plugins.conversation import MAX_IMAGES_PER_CONVERSATION
from guard_plugins.images import MAX_IMAGE_PIXELS
from tests._images import image_bytes, png_bytes


def test_from_openai_string_and_parts() -> None:
    conv = Conversation.from_openai(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}],
            },
            {"role": "assistant", "content": "c"},
        ]
    )
    turns = conv.turns()
    assert [(t.role, t.text) for t in turns] == [("User", "a\n\nb"), ("Agent", "c")]
    assert conv.assessed_role == "Agent"


def test_tool_calls_and_results_map_to_turns() -> None:
    conv = Conversation.from_openai(
        [
            {"role": "user", "content": "run it"},
            {
                "role": "assistant",
                "content": "ok",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {
                            "name": "bash",
                            "arguments": '{"command": "ls -la", "timeout": 5}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "name": "bash", "content": "total 0"},
        ]
    )
    turns = conv.turns()
    assert turns[1].text == 'ok\n\nTool call: bash\nArguments: {"timeout": 5}\n```\nls -la\n```'
    assert turns[2].text == "Tool result (bash):\ntotal 0"
    assert turns[2].role == "User"


def test_non_json_arguments_are_kept_verbatim() -> None:
    conv = Conversation.from_openai(
        [
            {
                "role": "assistant",
                "tool_calls": [{"function": {"name": "sql", "arguments": "DROP TABLE x"}}],
            }
        ]
    )
    assert conv.turns()[-1].text == "Tool call: sql\nArguments: DROP TABLE x"


def test_code_with_backticks_gets_a_longer_fence() -> None:
    call = ToolCallPart("py", {"code": "s = '```'"})
    assert call.render() == "Tool call: py\n````\ns = '```'\n````"


def test_role_aliases_and_unknown_roles() -> None:
    conv = Conversation.from_openai(
        [{"role": "human", "content": "x"}, {"role": "ai", "content": "y"}]
    )
    assert conv.assessed_role == "Agent"
    with pytest.raises(ConversationError, match="unknown role"):
        Conversation.from_openai([{"role": "wizard", "content": "x"}])


@pytest.mark.parametrize(
    "bad",
    [
        None,
        "just a string",
        [None],
        [{"content": "no role"}],
        [{"role": "user", "content": 42}],
        [{"role": "user", "content": [{"type": "audio", "data": "x"}]}],
        [{"role": "user", "content": [{"type": "text", "text": None}]}],
        [{"role": "assistant", "tool_calls": [{"function": {"arguments": "{}"}}]}],
    ],
)
def test_malformed_messages_raise_conversation_error(bad: object) -> None:
    with pytest.raises(ConversationError):
        Conversation.from_openai(bad)  # type: ignore[arg-type]


def test_deeply_nested_content_is_refused() -> None:
    content: object = "x"
    for _ in range(20):
        content = [content]
    with pytest.raises(ConversationError, match="nested"):
        Conversation.from_openai([{"role": "user", "content": content}])


def test_image_sources(tmp_path: Path) -> None:
    data = png_bytes()
    path = tmp_path / "a.png"
    path.write_bytes(data)
    b64 = base64.b64encode(data).decode()
    sources = [data, path, str(path), f"data:image/png;base64,{b64}", b64, Image.new("RGB", (5, 5))]
    for source in sources:
        part = ImagePart.load(source)
        assert part.width > 0
    conv = Conversation.from_openai(
        [
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{b64}"}},
                    {"type": "text", "text": "what is it"},
                ],
            }
        ]
    )
    assert len(conv.images) == 1


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"", "empty"),
        (b"not an image at all", "not a recognised"),
        ("https://example.com/cat.png", "not fetched"),
        ("file:///etc/passwd", "file: URLs"),
        ("data:image/png;base64,@@@@", "invalid base64"),
        ("data:text/plain;base64,aGVsbG8=", "not an image"),
        ("data:image/png,rawdata", "base64"),
        (12345, "unsupported image source"),
    ],
)
def test_bad_images_raise_image_error(source: object, message: str) -> None:
    with pytest.raises(ImageError, match=message):
        ImagePart.load(source)


def test_truncated_image_is_refused() -> None:
    data = image_bytes("JPEG", size=(200, 200))
    with pytest.raises(ImageError, match="corrupt or truncated"):
        ImagePart.load(data[: len(data) // 2])


def test_decompression_bomb_is_refused_before_decoding() -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG")  # 1-bit: small file, huge image
    with pytest.raises(ImageError, match="decompression"):
        ImagePart.load(buf.getvalue())


@pytest.mark.parametrize(
    ("fmt", "mode"),
    [
        ("JPEG", "CMYK"),
        ("PNG", "I;16"),
        ("PNG", "P"),
        ("PNG", "RGBA"),
        ("PNG", "LA"),
        ("GIF", "P"),
        ("WEBP", "RGB"),
        ("BMP", "RGB"),
        ("TIFF", "RGB"),
    ],
)
def test_image_modes_convert_to_rgb(fmt: str, mode: str) -> None:
    part = ImagePart.load(image_bytes(fmt, mode))
    assert part.to_pil().mode == "RGB"
    assert part.data_url().startswith("data:image/")


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), c) for c in [(255, 0, 0), (0, 255, 0)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    part = ImagePart.load(buf.getvalue())
    assert part.frames == 2
    assert part.to_pil().getpixel((0, 0))[0] > 200


def test_unsupported_format_is_refused() -> None:
    with pytest.raises(ImageError, match="not supported"):
        ImagePart.load(image_bytes("ICO", size=(16, 16)))


def test_too_many_images() -> None:
    images = [png_bytes()] * (MAX_IMAGES_PER_CONVERSATION + 1)
    with pytest.raises(ImageError, match="at most"):
        Conversation.user("x", images=images)


def test_messages_are_validated() -> None:
    with pytest.raises(ConversationError):
        Message("tool", (ToolCallPart("x"),))
    with pytest.raises(ConversationError):
        ToolCallPart("")
    with pytest.raises(ConversationError):
        Message.user(None)  # type: ignore[arg-type]


def test_conversation_of_accepts_common_shapes() -> None:
    assert Conversation.of("hi").assessed_role == "User"
    assert Conversation.of(Message.assistant("x")).assessed_role == "Agent"
    assert Conversation.of([Message.user("a")]).assessed_role == "User"
    with pytest.raises(ConversationError):
        Conversation.of(3.5)  # type: ignore[arg-type]
