"""Shared test material: a marker-driven guard and helpers (all real objects, offline).

The guard's backend is the core's `FunctionBackend`: it renders the real Llama Guard prompt and
parses a real verdict. It flags the assessed (last) turn by marker words, so a test decides what
is unsafe by writing a marker into content:

- ``EVIL``  → ``unsafe / S14`` (code interpreter abuse)
- ``HATE``  → ``unsafe / S10``
- ``CRIME`` → ``unsafe / S2``
"""

from __future__ import annotations

import io
import subprocess
import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from guard_plugins import Conversation, Guard, Policy
from guard_plugins.backends import Backend, ClassificationRequest
from guard_plugins.testing import FunctionBackend
from guard_plugins.verdict import Verdict
from llama_index.core.bridge.pydantic import Field
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events.base import BaseEvent
from llama_index.core.tools.tool_spec.base import BaseToolSpec

from guard_plugins_llamaindex import GuardDecisionEvent

MARKERS = {"EVIL": "S14", "HATE": "S10", "CRIME": "S2"}


def verdict_for(conversation: Conversation) -> str:
    text = conversation.turns()[-1].text
    for marker, code in MARKERS.items():
        if marker in text:
            return f"unsafe\n{code}"
    return "safe"


class Recorder:
    """The backend plus convenient views of what reached it."""

    def __init__(self, fn: Callable[[Conversation], str] = verdict_for) -> None:
        self.backend = FunctionBackend(fn)

    @property
    def assessed(self) -> list[tuple[str, str]]:
        """(role, text) of the assessed turn of every classified request, in order."""
        out = []
        for request in self.backend.requests:
            turn = request.conversation.turns()[-1]
            out.append((turn.role, turn.text))
        return out

    def texts(self) -> list[str]:
        return [text for _, text in self.assessed]

    def images(self) -> list[int]:
        return [len(r.conversation.turns()[-1].images) for r in self.backend.requests]


# Tests use benign code that the static code screen (a separate core feature) has no opinion on;
# turning it off keeps these tests about the integration's plumbing only.
NO_SCREEN = {"tool_call": {"screen_code": False}}


def make_guard(
    policy: dict[str, Any] | Policy | None = None, **kwargs: Any
) -> tuple[Guard, Recorder]:
    recorder = Recorder()
    data: dict[str, Any] = dict(NO_SCREEN)
    if isinstance(policy, Policy):
        return Guard(recorder.backend, policy, cache_size=0, **kwargs), recorder
    for key, value in (policy or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return Guard(recorder.backend, Policy.from_dict(data), cache_size=0, **kwargs), recorder


class EventCollector(BaseEventHandler):
    """An instrumentation handler collecting `GuardDecisionEvent`s (what a tracer would see)."""

    events: list[BaseEvent] = Field(default_factory=list)

    @classmethod
    def class_name(cls) -> str:
        return "EventCollector"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, GuardDecisionEvent):
            self.events.append(event)


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 8)) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, format="PNG")
    return buf.getvalue()


class RecordingBackend(Backend):
    """A real backend wrapper: records every request, then lets `inner` classify it."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.name = inner.name
        self.max_prompt_tokens = inner.max_prompt_tokens
        self.requests: list[ClassificationRequest] = []

    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        self.requests.extend(requests)
        return await self.inner.classify_batch(requests)

    def count_tokens(self, prompt: Any) -> int | None:
        return self.inner.count_tokens(prompt)

    async def aclose(self) -> None:  # the shared model backend outlives each test
        return None

    def assessed(self) -> list[tuple[str, str]]:
        return [(r.prompt.role, r.conversation.turns()[-1].text) for r in self.requests]


try:
    from llama_index.tools.code_interpreter import CodeInterpreterToolSpec
except ImportError:  # pragma: no cover - `pip install -e integrations/llamaindex[test]` has it

    class CodeInterpreterToolSpec(BaseToolSpec):  # type: ignore[no-redef]
        """Same shape as llama-index-tools-code-interpreter's spec (runs ``python -c``)."""

        spec_functions: ClassVar[list[str]] = ["code_interpreter"]

        def code_interpreter(self, code: str) -> str:
            """Execute python code and return stdout and stderr."""
            result = subprocess.run([sys.executable, "-c", code], capture_output=True)
            return f"StdOut:\n{result.stdout!r}\nStdErr:\n{result.stderr!r}"
