"""Exceptions raised by guard-plugins.

Every exception the library raises on purpose derives from `GuardError`::

    GuardError
    ├── ConversationError      (also ValueError) malformed messages, nothing to assess
    │   └── ImageError         unreadable, oversized or refused image input
    ├── CategoryError          (also ValueError) unknown or duplicate category codes
    ├── PromptTooLongError     the rendered prompt exceeds the backend's token budget
    ├── PromptIntegrityError   the tokenized prompt has special tokens it should not have
    ├── VerdictParseError      the model's output is not a Llama Guard verdict
    ├── ConfigError            (also ValueError) bad policy / configuration values
    ├── MissingDependencyError (also ImportError) an optional extra is not installed
    ├── ModelLoadError         the model or tokenizer cannot be loaded
    ├── BackendError           the backend failed to classify
    │   ├── BackendUnavailable cannot connect / no replica answered
    │   ├── BackendTimeout     the check took longer than allowed
    │   └── BackendHTTPError   the endpoint answered with an error status
    └── GuardBlocked           a Decision blocked the action (carries the Decision)

Messages never contain the classified text: they name counts, codes and positions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from guard_plugins.decision import Decision

__all__ = [
    "BackendError",
    "BackendHTTPError",
    "BackendTimeout",
    "BackendUnavailable",
    "CategoryError",
    "ConfigError",
    "ConversationError",
    "GuardBlocked",
    "GuardError",
    "ImageError",
    "MissingDependencyError",
    "ModelLoadError",
    "PromptIntegrityError",
    "PromptTooLongError",
    "VerdictParseError",
]


class GuardError(Exception):
    """Root of every exception guard-plugins raises on purpose."""


class ConversationError(GuardError, ValueError):
    """The conversation cannot be assessed as given (malformed, empty, nothing to assess)."""


class ImageError(ConversationError):
    """An image could not be read, is too large, or its source is refused."""


class CategoryError(GuardError, ValueError):
    """Unknown, duplicate or malformed category codes."""


class PromptTooLongError(GuardError):
    """The rendered prompt has more tokens than the backend accepts."""

    def __init__(self, token_count: int, limit: int) -> None:
        self.token_count = token_count
        self.limit = limit
        super().__init__(
            f"the prompt is {token_count} tokens long; the model accepts at most {limit}. "
            "Shorten the conversation (the Guard keeps the assessed turn and trims older context) "
            "or raise max_prompt_tokens if the model's context allows it."
        )


class PromptIntegrityError(GuardError):
    """The tokenized prompt carries special tokens at places the renderer did not put them."""


class VerdictParseError(GuardError):
    """The model's output is not a valid Llama Guard verdict. `raw` holds the output."""

    def __init__(self, message: str, raw: str) -> None:
        self.raw = raw
        super().__init__(f"{message} (raw output: {raw[:80]!r})")


class ConfigError(GuardError, ValueError):
    """A policy or configuration value is invalid; the message names the key."""


class MissingDependencyError(GuardError, ImportError):
    """An optional dependency is missing; the message names the extra to install."""

    def __init__(self, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is required for this feature: pip install 'guard-plugins[{extra}]'"
        )


class ModelLoadError(GuardError):
    """The model, its processor or its tokenizer could not be loaded."""


class BackendError(GuardError):
    """The backend failed to produce a verdict."""


class BackendUnavailable(BackendError):
    """The backend could not be reached (connection refused, DNS, every replica down)."""


class BackendTimeout(BackendError):
    """The backend did not answer in time."""


class BackendHTTPError(BackendError):
    """The endpoint answered with an error status. `body` is a short excerpt of the reply."""

    def __init__(self, status_code: int, body: str, url: str = "") -> None:
        self.status_code = status_code
        self.body = body[:500]
        self.url = url
        where = f" from {url}" if url else ""
        super().__init__(f"HTTP {status_code}{where}: {self.body[:200]}")


class GuardBlocked(GuardError):
    """Raised when a Decision blocks an action. `decision` says why."""

    def __init__(self, decision: Decision) -> None:
        self.decision = decision
        super().__init__(decision.summary())
