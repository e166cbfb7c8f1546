"""guard-plugins: Llama Guard 4 in front of user turns, replies, images and agent tool code.

>>> from guard_plugins import Guard
>>> from guard_plugins.testing import FunctionBackend
>>> guard = Guard(FunctionBackend(lambda conversation: "safe"))
>>> guard.check_input("How do I bake bread?").allowed
True
"""

from __future__ import annotations

import logging

from guard_plugins.categories import Category, CustomCategory
from guard_plugins.conversation import Conversation, ImagePart, Message, TextPart, ToolCallPart
from guard_plugins.decision import Decision
from guard_plugins.errors import (
    BackendError,
    BackendHTTPError,
    BackendTimeout,
    BackendUnavailable,
    CategoryError,
    ConfigError,
    ConversationError,
    GuardBlocked,
    GuardError,
    ImageError,
    MissingDependencyError,
    ModelLoadError,
    PromptIntegrityError,
    PromptTooLongError,
    VerdictParseError,
)
from guard_plugins.guard import ApprovalRequest, Guard
from guard_plugins.policy import Action, Hook, HookPolicy, Policy
from guard_plugins.prompt import build_prompt, render_prompt
from guard_plugins.verdict import Verdict, parse_verdict

__version__ = "0.1.0"

logging.getLogger("guard_plugins").addHandler(logging.NullHandler())

__all__ = [
    "Action",
    "ApprovalRequest",
    "BackendError",
    "BackendHTTPError",
    "BackendTimeout",
    "BackendUnavailable",
    "Category",
    "CategoryError",
    "ConfigError",
    "Conversation",
    "ConversationError",
    "CustomCategory",
    "Decision",
    "Guard",
    "GuardBlocked",
    "GuardError",
    "Hook",
    "HookPolicy",
    "ImageError",
    "ImagePart",
    "Message",
    "MissingDependencyError",
    "ModelLoadError",
    "Policy",
    "PromptIntegrityError",
    "PromptTooLongError",
    "TextPart",
    "ToolCallPart",
    "Verdict",
    "VerdictParseError",
    "__version__",
    "build_prompt",
    "parse_verdict",
    "render_prompt",
]
