"""Is this LLM callback/instrumentation event nested inside another LLM call?

`CustomLLM.chat` calls `self.complete`, and `CustomLLM.achat` calls `self.chat`: one user-level
call emits two or three LLM events whose content derives from the outer call's. The outer call's
checks cover them (its input before, its output after), so nested events are not checked again.

LlamaIndex gives no parent link between LLM events (they are leaf events), so the call stack is
read instead: a nested event has another LLM callback wrapper of `llama_index.core.llms.callbacks`
below its own. If LlamaIndex renames those wrappers this finds nothing and every event is
checked: the failure mode is an extra check, never a missed one.
"""

from __future__ import annotations

import os
import sys

__all__ = ["in_llm_stream", "nested_llm_call"]

_WRAPPERS = frozenset(
    {
        "wrapped_async_llm_chat",
        "wrapped_llm_chat",
        "wrapped_async_llm_predict",
        "wrapped_llm_predict",
        "wrapped_gen",
    }
)
_CALLBACKS_FILE = os.path.join("llama_index", "core", "llms", "callbacks.py")
_MAX_DEPTH = 400


def _wrapper_frames() -> list[str]:
    names = []
    frame = sys._getframe(1)
    depth = 0
    while frame is not None and depth < _MAX_DEPTH:
        code = frame.f_code
        if code.co_name in _WRAPPERS and code.co_filename.endswith(_CALLBACKS_FILE):
            names.append(code.co_name)
        frame = frame.f_back  # type: ignore[assignment]
        depth += 1
    return names


def nested_llm_call() -> bool:
    """True when the current LLM event fires inside another LLM call's wrapper."""
    return len(_wrapper_frames()) >= 2


def in_llm_stream() -> bool:
    """True when the innermost LLM wrapper on the stack is a stream's generator (its end)."""
    frames = _wrapper_frames()
    return bool(frames) and frames[0] == "wrapped_gen"
