"""Framework-neutral conversations: what adapters convert to and the prompt renders from.

Mapping onto Llama Guard turns (there is no official tool-call syntax; this is ours, see
docs/concepts.md):

- ``user`` messages → ``User`` turns; ``assistant`` messages → ``Agent`` turns.
- A tool call is part of the assistant's turn that requests it: ``Tool call: NAME`` followed by
  the code verbatim in a fenced block (code tools) or the arguments as JSON.
- A ``tool`` message (a tool's result) → a ``User`` turn, ``Tool result (NAME):`` + the result:
  tool output enters the conversation from outside, as user input does.
- ``system`` messages are the application's own instructions and are left out unless
  `include_system=True`, which renders them as ``User`` turns prefixed ``System:``.
- Consecutive turns of the same role are merged (parts joined by a blank line), never dropped.
- The assessed role is the role of the last turn.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union, cast

from guard_plugins.errors import ConversationError, ImageError
from guard_plugins.images import ImagePart, load_image

__all__ = [
    "CODE_ARGUMENT_KEYS",
    "MAX_IMAGES_PER_CONVERSATION",
    "AssessedRole",
    "Conversation",
    "ImagePart",
    "Message",
    "Part",
    "Role",
    "TextPart",
    "ToolCallPart",
    "Turn",
]

Role = Literal["user", "assistant", "tool", "system"]
AssessedRole = Literal["User", "Agent"]
MAX_IMAGES_PER_CONVERSATION = 8
CODE_ARGUMENT_KEYS = (
    "code",
    "source",
    "source_code",
    "script",
    "python",
    "python_code",
    "program",
    "command",
    "cmd",
    "shell",
    "bash",
    "query",
    "sql",
)
_ROLES: tuple[Role, ...] = ("user", "assistant", "tool", "system")
_ROLE_ALIASES: dict[str, Role] = {
    "human": "user",
    "ai": "assistant",
    "model": "assistant",
    "function": "tool",
    "developer": "system",
    "ipython": "tool",
}


def _check_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise ConversationError(f"{where}: text must be a string, got {type(text).__name__}")
    return text


@dataclass(frozen=True)
class TextPart:
    """Plain text in a message."""

    text: str = field(repr=False)

    def __post_init__(self) -> None:
        _check_text(self.text, "TextPart")


@dataclass(frozen=True)
class ToolCallPart:
    """A tool call an assistant produced: the tool's name and its arguments or code verbatim.

    `code` is set for code-executing tools (taken from a code-like argument when not given).
    """

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict, repr=False)
    code: str | None = field(default=None, repr=False)
    language: str | None = None
    call_id: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConversationError("ToolCallPart: the tool name must be a non-empty string")
        if not isinstance(self.arguments, (str, Mapping)):
            raise ConversationError(
                f"ToolCallPart({self.name}): arguments must be a mapping or a string, "
                f"got {type(self.arguments).__name__}"
            )
        if self.code is None:
            object.__setattr__(self, "code", _code_from_arguments(self.arguments))
        elif not isinstance(self.code, str):
            raise ConversationError(f"ToolCallPart({self.name}): code must be a string")

    def render(self) -> str:
        """The deterministic text a tool call is assessed as (code kept verbatim)."""
        header = f"Tool call: {self.name.strip()}"
        if self.code is not None:
            fence = "`" * max(3, _longest_backtick_run(self.code) + 1)
            lang = (self.language or "").strip()
            rest = {}
            if isinstance(self.arguments, Mapping):
                rest = {k: v for k, v in self.arguments.items() if v is not self.code}
            if rest:
                header += "\nArguments: " + json.dumps(rest, ensure_ascii=False, default=str)
            return f"{header}\n{fence}{lang}\n{self.code}\n{fence}"
        if isinstance(self.arguments, str):
            body = self.arguments
        else:
            body = json.dumps(dict(self.arguments), ensure_ascii=False, default=str)
        return f"{header}\nArguments: {body}" if body.strip() else header


Part = Union[TextPart, ImagePart, ToolCallPart]


@dataclass(frozen=True)
class Message:
    """One message: a role and its parts. `name` is the tool's name on ``tool`` messages."""

    role: Role
    parts: tuple[Part, ...]
    name: str | None = None

    def __post_init__(self) -> None:
        if self.role not in _ROLES:
            raise ConversationError(f"unknown role {self.role!r}; expected one of {_ROLES}")
        if not isinstance(self.parts, tuple):
            object.__setattr__(self, "parts", tuple(self.parts))
        images: list[ImagePart] = []
        for part in self.parts:
            if isinstance(part, TextPart):
                continue
            if isinstance(part, ToolCallPart):
                if self.role != "assistant":
                    raise ConversationError("tool calls can only appear in assistant messages")
            elif isinstance(part, ImagePart):
                if self.role in ("tool", "system"):
                    raise ConversationError(f"images are not supported in {self.role} messages")
                images.append(part)
            else:
                raise ConversationError(f"{self.role} message: unsupported part {part!r}")
        # Kept on the (immutable) instance like Conversation's views: every conversation built
        # from this message reads it. Not a field: equality and repr ignore it.
        self.__dict__["_images"] = tuple(images)

    @classmethod
    def user(cls, text: str = "", images: Iterable[Any] = ()) -> Message:
        return cls("user", _parts(text, images))

    @classmethod
    def assistant(
        cls, text: str = "", tool_calls: Iterable[ToolCallPart] = (), images: Iterable[Any] = ()
    ) -> Message:
        return cls("assistant", _parts(text, images) + tuple(tool_calls))

    @classmethod
    def tool(cls, content: str, name: str | None = None) -> Message:
        return cls("tool", (TextPart(_check_text(content, "tool message")),), name=name)

    @property
    def text(self) -> str:
        return "\n\n".join(p.text for p in self.parts if isinstance(p, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        images: tuple[ImagePart, ...] | None = self.__dict__.get("_images")
        if images is None:
            images = tuple(p for p in self.parts if isinstance(p, ImagePart))
        return images


def _parts(text: str, images: Iterable[Any]) -> tuple[Part, ...]:
    parts: list[Part] = [load_image(i) for i in images]
    if _check_text(text, "message"):
        parts.append(TextPart(text))
    return tuple(parts)


@dataclass(frozen=True)
class Turn:
    """A rendered Llama Guard turn: role label, images (marker count) and text."""

    role: AssessedRole
    text: str
    images: tuple[ImagePart, ...] = ()


@dataclass(frozen=True)
class Conversation:
    """An ordered list of messages, validated and immutable.

    >>> conv = Conversation.from_openai([
    ...     {"role": "user", "content": "How do I kill a Python process?"},
    ...     {"role": "assistant", "content": "Use kill <pid>."},
    ... ])
    >>> conv.assessed_role
    'Agent'
    """

    messages: tuple[Message, ...]
    include_system: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.messages, tuple):
            object.__setattr__(self, "messages", tuple(self.messages))
        images: tuple[ImagePart, ...] = ()
        for m in self.messages:
            if not isinstance(m, Message):
                raise ConversationError(f"Conversation holds Message objects, not {m!r}")
            if m.images:
                images += m.images
        # Derived views are kept on the (immutable) instance: every check reads them several
        # times (adapters, fitting, rendering). Not fields: equality and repr ignore them.
        self.__dict__["_images"] = images
        count = len(images)
        if count > MAX_IMAGES_PER_CONVERSATION:
            raise ImageError(
                f"the conversation holds {count} images; at most "
                f"{MAX_IMAGES_PER_CONVERSATION} are assessed per check"
            )

    # -- constructors -----------------------------------------------------------------------

    @classmethod
    def of(cls, source: ConversationLike) -> Conversation:
        """Accept a Conversation, a user text, or an OpenAI-style message list."""
        if isinstance(source, Conversation):
            return source
        if isinstance(source, str):
            return cls.user(source)
        if isinstance(source, Message):
            return cls((source,))
        if isinstance(source, Sequence):
            items = list(source)
            if all(isinstance(m, Message) for m in items):
                return cls(tuple(m for m in items if isinstance(m, Message)))
            return cls.from_openai(cast("list[Mapping[str, Any]]", items))
        raise ConversationError(
            f"expected a Conversation, a string or a list of messages, got {type(source).__name__}"
        )

    @classmethod
    def user(cls, text: str, images: Iterable[Any] = ()) -> Conversation:
        return cls((Message.user(text, images),))

    @classmethod
    def from_openai(
        cls, messages: Sequence[Mapping[str, Any]], *, include_system: bool = False
    ) -> Conversation:
        """Build from OpenAI chat messages (string or content-part lists, tool_calls, tool)."""
        if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
            raise ConversationError("from_openai expects a list of message dicts")
        converted = tuple(_message_from_openai(m, i) for i, m in enumerate(messages))
        return cls(converted, include_system=include_system)

    def append(self, message: Message) -> Conversation:
        return Conversation((*self.messages, message), self.include_system)

    def with_user(self, text: str, images: Iterable[Any] = ()) -> Conversation:
        return self.append(Message.user(text, images))

    def with_assistant(
        self, text: str = "", tool_calls: Iterable[ToolCallPart] = ()
    ) -> Conversation:
        return self.append(Message.assistant(text, tool_calls))

    def with_tool_result(self, content: str, name: str | None = None) -> Conversation:
        return self.append(Message.tool(content, name))

    # -- views ------------------------------------------------------------------------------

    @property
    def images(self) -> tuple[ImagePart, ...]:
        images: tuple[ImagePart, ...] | None = self.__dict__.get("_images")
        if images is None:
            images = tuple(img for m in self.messages for img in m.images)
        return images

    @property
    def has_images(self) -> bool:
        return bool(self.images)

    def turns(self) -> tuple[Turn, ...]:
        """Messages mapped onto alternating User/Agent turns (see the module docstring)."""
        turns: tuple[Turn, ...] | None = self.__dict__.get("_turns")
        if turns is None:
            turns = self._render_turns()  # raises: nothing is kept, the next call raises again
            self.__dict__["_turns"] = turns
        return turns

    def _render_turns(self) -> tuple[Turn, ...]:
        merged: list[tuple[AssessedRole, list[str], list[ImagePart]]] = []
        last_empty: Message | None = None
        for message in self.messages:
            rendered = _render_message(message, self.include_system)
            if rendered is None:
                continue
            role, texts, images = rendered
            last_empty = message if not texts and not images else None
            if merged and merged[-1][0] == role:
                merged[-1][1].extend(texts)
                merged[-1][2].extend(images)
            else:
                merged.append((role, texts, images))
        if not merged:
            raise ConversationError("the conversation has no user, assistant or tool messages")
        if last_empty is not None:
            raise ConversationError(
                f"the conversation ends in a {last_empty.role} message with nothing to assess"
            )
        # `_render_message` keeps only non-empty texts.
        turns = tuple(
            Turn(role, "\n\n".join(texts), tuple(images)) for role, texts, images in merged
        )
        last = turns[-1]
        if not last.text.strip() and not last.images:
            raise ConversationError(
                f"the last {last.role} turn has nothing to assess (no text, image or tool call)"
            )
        return turns

    @property
    def assessed_role(self) -> AssessedRole:
        return self.turns()[-1].role

    def __len__(self) -> int:
        return len(self.messages)


ConversationLike = Union[Conversation, str, Message, Sequence[Mapping[str, Any]], Sequence[Message]]


def _render_message(
    message: Message, include_system: bool
) -> tuple[AssessedRole, list[str], list[ImagePart]] | None:
    if message.role == "system":
        if not include_system or not message.text.strip():
            return None
        return "User", [f"System: {message.text.strip()}"], []
    if message.role == "tool":
        if not message.text.strip():
            return "User", [], []
        label = f"Tool result ({message.name})" if message.name else "Tool result"
        return "User", [f"{label}:\n{message.text.strip()}"], []
    # Text parts first, then tool calls (each in order); empty texts are left out.
    texts: list[str] = []
    calls: list[str] = []
    images: list[ImagePart] = []
    for part in message.parts:
        if isinstance(part, TextPart):
            text = part.text.strip()
            if text:
                texts.append(text)
        elif isinstance(part, ToolCallPart):
            calls.append(part.render())  # never empty: it starts with the call's header
        else:
            images.append(part)
    role: AssessedRole = "User" if message.role == "user" else "Agent"
    return role, texts + calls if calls else texts, images


def _message_from_openai(raw: Mapping[str, Any], index: int) -> Message:
    where = f"message {index}"
    if not isinstance(raw, Mapping):
        raise ConversationError(f"{where}: expected a dict, got {type(raw).__name__}")
    role_value = raw.get("role")
    if not isinstance(role_value, str):
        raise ConversationError(f"{where}: missing or non-string 'role'")
    role = _ROLE_ALIASES.get(role_value.lower(), role_value.lower())
    if role not in _ROLES:
        raise ConversationError(f"{where}: unknown role {role_value!r}")
    parts = list(_content_parts(raw.get("content"), where, depth=0))
    if role == "assistant":
        for call in raw.get("tool_calls") or ():
            parts.append(_tool_call_from_openai(call, where))
        legacy = raw.get("function_call")
        if legacy:
            parts.append(_tool_call_from_openai({"function": legacy}, where))
    if role in ("tool", "system"):
        text = "\n\n".join(p.text for p in parts if isinstance(p, TextPart))
        if any(isinstance(p, ImagePart) for p in parts):
            raise ConversationError(f"{where}: images are not supported in {role} messages")
        parts = [TextPart(text)]
    name = raw.get("name") if role == "tool" else None
    return Message(role, tuple(parts), name=name if isinstance(name, str) else None)


_MAX_CONTENT_DEPTH = 8


def _content_parts(content: Any, where: str, depth: int) -> Iterable[Part]:
    if depth > _MAX_CONTENT_DEPTH:
        raise ConversationError(f"{where}: content blocks nested deeper than {_MAX_CONTENT_DEPTH}")
    if content is None:
        return
    if isinstance(content, str):
        yield TextPart(content)
        return
    if isinstance(content, Mapping):
        content = [content]
    if not isinstance(content, Sequence):
        raise ConversationError(f"{where}: content must be a string or a list of parts")
    for block in content:
        if isinstance(block, str):
            yield TextPart(block)
            continue
        if isinstance(block, Sequence) and not isinstance(block, (str, bytes)):
            yield from _content_parts(block, where, depth + 1)
            continue
        if not isinstance(block, Mapping):
            raise ConversationError(f"{where}: unsupported content block {type(block).__name__}")
        kind = block.get("type")
        if kind in ("text", "input_text", "output_text"):
            yield TextPart(_check_text(block.get("text"), f"{where} text block"))
        elif kind in ("image_url", "input_image", "image"):
            yield _image_from_block(block, where)
        elif kind in ("refusal",):
            yield TextPart(_check_text(block.get("refusal", ""), f"{where} refusal block"))
        else:
            raise ConversationError(
                f"{where}: unsupported content block type {kind!r} "
                "(supported: text, image_url, image, input_text, input_image)"
            )


def _image_from_block(block: Mapping[str, Any], where: str) -> ImagePart:
    source: Any = block.get("image_url", block.get("url", block.get("image")))
    if isinstance(source, Mapping):
        source = source.get("url")
    if source is None and "data" in block:
        source = block["data"]
    if source is None and "base64" in block:
        mime = block.get("mime_type", "image/png")
        source = f"data:{mime};base64,{block['base64']}"
    if source is None and "path" in block:
        source = str(block["path"])
    if source is None:
        raise ConversationError(f"{where}: image block without url, data or path")
    try:
        return load_image(source)
    except ImageError as exc:
        raise ImageError(f"{where}: {exc}") from exc


def _tool_call_from_openai(call: Any, where: str) -> ToolCallPart:
    if not isinstance(call, Mapping):
        raise ConversationError(f"{where}: tool call must be a dict")
    function = call.get("function", call)
    if not isinstance(function, Mapping):
        raise ConversationError(f"{where}: tool call without a function")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise ConversationError(f"{where}: tool call without a name")
    arguments: Any = function.get("arguments", function.get("args", {}))
    if isinstance(arguments, str):
        try:
            decoded = json.loads(arguments) if arguments.strip() else {}
            arguments = decoded if isinstance(decoded, Mapping) else arguments
        except json.JSONDecodeError:
            pass  # keep the raw string: the model may have produced code directly
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, (str, Mapping)):
        arguments = json.dumps(arguments, default=str)
    call_id = call.get("id")
    return ToolCallPart(name, arguments, call_id=call_id if isinstance(call_id, str) else None)


def _code_from_arguments(arguments: Mapping[str, Any] | str) -> str | None:
    if isinstance(arguments, str):
        return None
    for key in CODE_ARGUMENT_KEYS:
        value = arguments.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None


def _longest_backtick_run(text: str) -> int:
    if "`" not in text:  # most code: no fence to outgrow
        return 0
    return max(len(run) for run in _BACKTICKS.findall(text))


_BACKTICKS = re.compile(r"`+")
