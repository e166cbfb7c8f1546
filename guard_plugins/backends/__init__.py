"""Backends: where verdicts come from.

`TransformersBackend` runs Llama Guard 4 in-process (extra ``transformers``);
`OpenAICompatibleBackend` talks to vLLM and hosted endpoints (extra ``http``). Both are imported
lazily so that ``import guard_plugins.backends`` never imports torch or httpx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from guard_plugins.backends.base import Backend, ClassificationRequest

if TYPE_CHECKING:
    from guard_plugins.backends.openai_compatible import OpenAICompatibleBackend
    from guard_plugins.backends.prompt_guard import PromptGuardBackend
    from guard_plugins.backends.transformers import TransformersBackend

__all__ = [
    "Backend",
    "ClassificationRequest",
    "OpenAICompatibleBackend",
    "PromptGuardBackend",
    "TransformersBackend",
]

_LAZY = {
    "TransformersBackend": "guard_plugins.backends.transformers",
    "OpenAICompatibleBackend": "guard_plugins.backends.openai_compatible",
    "PromptGuardBackend": "guard_plugins.backends.prompt_guard",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'guard_plugins.backends' has no attribute {name!r}")
