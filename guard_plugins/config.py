"""Building backends from options and environment variables, once per process.

Environment (read by `Guard.from_env`, the CLI and the adapters' defaults):

- ``GUARD_PLUGINS_MODEL``: a model id or local path for the in-process backend (a dev model
  directory in tests and offline demos).
- ``GUARD_PLUGINS_ENDPOINT``: base URL(s) of an OpenAI-compatible server (takes precedence), with
  ``GUARD_PLUGINS_ENDPOINT_MODEL``, ``GUARD_PLUGINS_API_KEY_ENV``, ``GUARD_PLUGINS_MODE``,
  ``GUARD_PLUGINS_TIMEOUT``.
- ``GUARD_PLUGINS_POLICY``: a policy file (YAML, TOML or JSON).

Loaded in-process models are cached per (path, device, dtype): a model is never loaded per call.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from guard_plugins.backends.base import Backend
from guard_plugins.errors import ConfigError

__all__ = ["DEFAULT_MODEL", "backend_from_env", "load_transformers_backend"]

DEFAULT_MODEL = "meta-llama/Llama-Guard-4-12B"
_cache: dict[tuple[str, str | None, str | None], Backend] = {}
_lock = threading.Lock()


def load_transformers_backend(
    model: str = DEFAULT_MODEL,
    *,
    device: str | None = None,
    dtype: str | None = None,
    **kwargs: Any,
) -> Backend:
    """The in-process backend for `model`, loaded once per process and shared."""
    key = (model, device, dtype)
    with _lock:
        backend = _cache.get(key)
        if backend is None:
            from guard_plugins.backends.transformers import TransformersBackend

            backend = TransformersBackend.from_pretrained(
                model, device=device, dtype=dtype, **kwargs
            )
            _cache[key] = backend
        return backend


def backend_from_env() -> Backend:
    """`OpenAICompatibleBackend` when ``GUARD_PLUGINS_ENDPOINT`` is set, else the in-process
    backend for ``GUARD_PLUGINS_MODEL``."""
    if os.environ.get("GUARD_PLUGINS_ENDPOINT"):
        from guard_plugins.backends.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend.from_env()
    model = os.environ.get("GUARD_PLUGINS_MODEL")
    if model:
        return load_transformers_backend(model)
    raise ConfigError(
        "no guard backend configured: set GUARD_PLUGINS_MODEL (a model id or path, e.g. "
        f"{DEFAULT_MODEL} or a dev model built with `guard-plugins dev-model DIR`) or "
        "GUARD_PLUGINS_ENDPOINT (an OpenAI-compatible server such as vLLM)"
    )
