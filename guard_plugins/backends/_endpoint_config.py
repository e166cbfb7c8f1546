"""Endpoint configuration of `OpenAICompatibleBackend`: provider presets, CLI options, environment.

Environment variables (each overridden by the matching CLI option / argument)::

    GUARD_PLUGINS_ENDPOINT          base URL(s), comma-separated, or a provider name (groq, ...)
    GUARD_PLUGINS_ENDPOINT_MODEL    served model name (required for URLs)
    GUARD_PLUGINS_API_KEY_ENV       name of the variable holding the key (default
                                    GUARD_PLUGINS_API_KEY; a provider's own variable for presets)
    GUARD_PLUGINS_MODE              completions | chat
    GUARD_PLUGINS_TIMEOUT           seconds per attempt
    GUARD_PLUGINS_MAX_RETRIES       retries after the first attempt
    GUARD_PLUGINS_MAX_CONNECTIONS   concurrent connections per event loop

Invalid values raise `ConfigError` naming the variable or option; key values are never echoed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast, get_args
from urllib.parse import urlsplit, urlunsplit

from guard_plugins.errors import ConfigError

__all__ = [
    "PROVIDERS",
    "EndpointOptions",
    "Mode",
    "ProviderName",
    "ProviderPreset",
    "display_url",
    "normalize_base_url",
    "options_from_env",
    "resolve_api_key",
]

Mode = Literal["completions", "chat"]
ProviderName = Literal["together", "deepinfra", "groq", "openrouter", "nim"]
DEFAULT_KEY_ENV = "GUARD_PLUGINS_API_KEY"
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class ProviderPreset:
    """Where a hosted provider serves Llama Guard 4 and how to talk to it."""

    base_url: str
    model: str
    api_key_env: str
    options: Mapping[str, Any] = field(default_factory=dict)


# Hosted endpoints expose chat only for this model and reject or ignore unknown body fields, so
# exclusions are enforced client-side (send_template_kwargs=False).
PROVIDERS: dict[str, ProviderPreset] = {
    "together": ProviderPreset(
        "https://api.together.xyz/v1", "meta-llama/Llama-Guard-4-12B", "TOGETHER_API_KEY",
        {"mode": "chat", "logprobs_style": "integer", "send_template_kwargs": False},
    ),
    "deepinfra": ProviderPreset(
        "https://api.deepinfra.com/v1/openai", "meta-llama/Llama-Guard-4-12B", "DEEPINFRA_API_KEY",
        {"mode": "chat", "send_template_kwargs": False},
    ),
    "groq": ProviderPreset(
        "https://api.groq.com/openai/v1", "meta-llama/llama-guard-4-12b", "GROQ_API_KEY",
        {"mode": "chat", "logprobs": False, "send_template_kwargs": False},
    ),
    "openrouter": ProviderPreset(
        "https://openrouter.ai/api/v1", "meta-llama/llama-guard-4-12b", "OPENROUTER_API_KEY",
        {"mode": "chat", "send_template_kwargs": False},
    ),
    "nim": ProviderPreset(
        "https://integrate.api.nvidia.com/v1", "meta/llama-guard-4-12b", "NVIDIA_API_KEY",
        {"mode": "chat", "send_template_kwargs": False},
    ),
}


def normalize_base_url(url: str) -> str:
    """``http://host:8000`` and ``http://host:8000/v1`` both mean the ``/v1`` API root."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"not an http(s) URL: {display_url(url)!r}")
    path = parts.path.rstrip("/")
    return urlunsplit((parts.scheme, parts.netloc, path or "/v1", parts.query, ""))


def display_url(url: str) -> str:
    """The URL without user info or query string (where keys are sometimes put)."""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
    except ValueError:
        return "<invalid url>"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def resolve_api_key(variable: str, required: bool, named_by: str = "") -> str | None:
    """The key held by environment variable `variable` (None if unset and not required)."""
    value = os.environ.get(variable, "").strip()
    if value:
        return value
    if required:
        how = f" (named by {named_by})" if named_by else ""
        raise ConfigError(f"environment variable {variable}{how} is not set or empty")
    return None


@dataclass(frozen=True)
class EndpointOptions:
    """Resolved options: either `urls` + `model`, or a `provider` preset."""

    urls: tuple[str, ...] = ()
    provider: ProviderName | None = None
    model: str = ""
    api_key: str | None = field(default=None, repr=False)
    mode: Mode = "completions"
    mode_given: bool = False
    timeout: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)


def _pick(value: Any, variable: str, option: str) -> tuple[Any, str]:
    if value is not None and value != "":
        return value, option
    return os.environ.get(variable) or None, variable


def options_from_env(
    endpoint: str | Sequence[str] | None = None,
    model: str | None = None,
    api_key_env: str | None = None,
    mode: str | None = None,
    timeout: float | str | None = None,
) -> EndpointOptions:
    """Merge explicit options over ``GUARD_PLUGINS_*`` variables and validate them."""
    raw_endpoint, source = _pick(endpoint, "GUARD_PLUGINS_ENDPOINT", "endpoint (--endpoint)")
    if raw_endpoint is None:
        raise ConfigError("no endpoint: pass --endpoint URL or set GUARD_PLUGINS_ENDPOINT")
    items = raw_endpoint.split(",") if isinstance(raw_endpoint, str) else list(raw_endpoint)
    items = [str(i).strip() for i in items if str(i).strip()]
    if not items:
        raise ConfigError(f"{source} is empty")
    provider: ProviderName | None = None
    urls: list[str] = []
    if len(items) == 1 and items[0].lower() in PROVIDERS:
        provider = cast(ProviderName, items[0].lower())
    else:
        for item in items:
            try:
                urls.append(normalize_base_url(item))
            except ValueError:
                raise ConfigError(
                    f"{source}: {display_url(item)!r} is not an http(s) URL "
                    f"(or a provider name: {', '.join(PROVIDERS)})"
                ) from None

    raw_model, _ = _pick(model, "GUARD_PLUGINS_ENDPOINT_MODEL", "--endpoint-model")
    if provider is None and not raw_model:
        raise ConfigError(
            "no model name: pass --endpoint-model NAME or set GUARD_PLUGINS_ENDPOINT_MODEL"
        )

    key_var, key_source = _pick(api_key_env, "GUARD_PLUGINS_API_KEY_ENV", "--api-key-env")
    if key_var is not None and not _VAR_NAME.match(key_var):
        raise ConfigError(
            f"{key_source} must be the *name* of the environment variable holding the key "
            "(letters, digits, underscores), not the key itself"
        )
    if key_var is not None:
        api_key = resolve_api_key(key_var, True, key_source)
    elif provider is None:
        api_key = resolve_api_key(DEFAULT_KEY_ENV, False)
    else:
        api_key = None  # the preset reads its provider's own variable

    raw_mode, mode_source = _pick(mode, "GUARD_PLUGINS_MODE", "--mode")
    if raw_mode is not None and str(raw_mode).strip().lower() not in get_args(Mode):
        raise ConfigError(f"{mode_source} must be 'completions' or 'chat', not {raw_mode!r}")
    resolved_mode = cast(Mode, str(raw_mode).strip().lower()) if raw_mode else "completions"

    raw_timeout, timeout_source = _pick(timeout, "GUARD_PLUGINS_TIMEOUT", "--timeout")
    extra: dict[str, Any] = {}
    for variable, key, minimum in (
        ("GUARD_PLUGINS_MAX_RETRIES", "max_retries", 0),
        ("GUARD_PLUGINS_MAX_CONNECTIONS", "max_connections", 1),
    ):
        text = os.environ.get(variable)
        if text:
            extra[key] = _number(text, variable, int, minimum)
    return EndpointOptions(
        urls=tuple(urls),
        provider=provider,
        model=str(raw_model).strip() if raw_model else "",
        api_key=api_key,
        mode=resolved_mode,
        mode_given=raw_mode is not None,
        timeout=None if raw_timeout is None else _number(raw_timeout, timeout_source, float, 0),
        extra=extra,
    )


def _number(text: Any, source: str, kind: type[int] | type[float], minimum: float) -> Any:
    try:
        value = kind(text)
    except (TypeError, ValueError):
        raise ConfigError(f"{source} must be a number, not {text!r}") from None
    if value < minimum or (kind is float and value <= 0) or value != value:
        raise ConfigError(f"{source} must be {'> 0' if kind is float else f'>= {minimum}'}")
    return value
