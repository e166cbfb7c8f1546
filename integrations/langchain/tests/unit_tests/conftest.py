"""Shared fixtures: a keyword-driven FunctionBackend guard and real LangChain fake models."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from typing import Any

import pytest
from guard_plugins import Conversation, Guard, Policy
from guard_plugins.testing import FunctionBackend
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


@pytest.fixture
def backend() -> FunctionBackend:
    return FunctionBackend(keyword_verdict)


@pytest.fixture
def guard(backend: FunctionBackend) -> Guard:
    return Guard(backend, cache_size=0)


@pytest.fixture
def refusing_guard(backend: FunctionBackend) -> Guard:
    """User input refused (not blocked), so refusals come back in the chain's shape."""
    return Guard(backend, Policy.from_dict({"user_input": {"action": "refuse"}}), cache_size=0)


def png_bytes(color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def png_b64() -> str:
    return base64.b64encode(png_bytes()).decode("ascii")
