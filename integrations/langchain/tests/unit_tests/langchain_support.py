"""Helpers shared by the LangChain integration tests (a unique module name: the repository's
test directories are collected together without packages)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from guard_plugins import Conversation
from langchain_core.language_models.fake_chat_models import FakeMessagesListChatModel
from PIL import Image

UNSAFE = {"bomb": "S9", "shutil.rmtree": "S14", "rm -rf": "S14", "credit card dump": "S7"}


def keyword_verdict(conversation: Conversation) -> str:
    """Llama Guard stand-in: unsafe when the assessed turn contains a known keyword."""
    text = conversation.turns()[-1].text
    for word, code in UNSAFE.items():
        if word in text:
            return f"unsafe\n{code}"
    return "safe"


class ToolCallingFakeModel(FakeMessagesListChatModel):
    """`FakeMessagesListChatModel` lacks `bind_tools`; binding returns the model itself so a
    `create_agent` loop runs offline on scripted replies."""

    def bind_tools(self, tools: Sequence[Any], **kwargs: Any) -> ToolCallingFakeModel:
        return self


def png_bytes(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()
