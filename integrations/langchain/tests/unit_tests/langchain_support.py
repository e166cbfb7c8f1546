"""Helpers shared by the LangChain integration tests (a unique module name: the repository's
test directories are collected together without packages)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

from guard_plugins import Conversation
from guard_plugins.backends.base import Backend, ClassificationRequest
from guard_plugins.verdict import Verdict
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


class RecordingBackend(Backend):
    """A real backend wrapper: records every request, then lets `inner` classify it."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_prompt_tokens = inner.max_prompt_tokens
        self.requests: list[ClassificationRequest] = []
        self.batch_sizes: list[int] = []

    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        self.requests.extend(requests)
        self.batch_sizes.append(len(requests))
        return await self.inner.classify_batch(requests)

    def count_tokens(self, prompt: Any) -> int | None:
        return self.inner.count_tokens(prompt)

    async def aclose(self) -> None:  # the shared model backend outlives each test
        return None

    def assessed(self) -> list[tuple[str, str]]:
        return [(r.prompt.role, r.conversation.turns()[-1].text) for r in self.requests]
