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
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from guard_plugins.backends.base import Backend
from guard_plugins.errors import ConfigError, ModelLoadError

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

            kwargs = {**_hub_options(model), **kwargs}
            backend = TransformersBackend.from_pretrained(
                model, device=device, dtype=dtype, **kwargs
            )
            _cache[key] = backend
        return backend


def _hub_options(model: str) -> dict[str, Any]:
    """Fail fast instead of retrying a hub that cannot be reached.

    A local directory needs nothing. A hub id found in the local cache loads from it without
    network round trips when the hub is unreachable; a hub id that is neither cached nor
    reachable raises `ModelLoadError` at once (instead of half a minute of retries).
    """
    if os.path.isdir(model) or os.environ.get("HF_HUB_OFFLINE") == "1":
        return {}
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on it
        return {}
    cached = isinstance(try_to_load_from_cache(model, "config.json"), str)
    if _hub_reachable():
        return {}
    if cached:
        return {"local_files_only": True}
    from guard_plugins.backends.transformers import _load_error

    raise _load_error(
        model,
        ModelLoadError(
            "not in the local Hugging Face cache and the hub cannot be reached (offline?)"
        ),
    )


def _hub_reachable(timeout: float = 3.0) -> bool:
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    parts = urlsplit(endpoint)
    host = parts.hostname or "huggingface.co"
    port = parts.port or (443 if parts.scheme != "http" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
