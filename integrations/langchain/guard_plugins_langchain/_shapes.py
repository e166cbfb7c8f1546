"""The shapes LangChain passes around, and how a Decision is applied to each of them.

Inputs: str, a message, a list of messages / ``(role, content)`` tuples / message dicts, a
`PromptValue`, a ``{"messages": [...]}`` graph state, or a dict of prompt variables.
Outputs: a message (`AIMessage`, `AIMessageChunk`), a string, a state, a list of messages, or
anything else (parsed JSON, pydantic objects) which is assessed as text.

A refusal is returned in the shape the caller would have received: the same message id, a string,
or the state with the assessed message replaced.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from guard_plugins import (
    Conversation,
    ConversationError,
    Decision,
    GuardBlocked,
    Hook,
    Message,
    TextPart,
)
from guard_plugins.policy import Action
from langchain_core.messages import (
    AIMessage,
    AIMessageChunk,
    BaseMessage,
    HumanMessage,
    convert_to_messages,
)
from langchain_core.prompt_values import PromptValue

from guard_plugins_langchain._convert import message_to_core, messages_to_conversation, stringify

__all__ = [
    "GUARD_METADATA_KEY",
    "Check",
    "OutputTarget",
    "as_messages",
    "assessable",
    "enforce",
    "input_check",
    "is_guard_refusal",
    "locate_output",
    "output_check",
    "refusal_message",
    "refuse_output",
    "value_input_check",
]

GUARD_METADATA_KEY = "guard_plugins"

OutputKind = Literal["message", "str", "state", "list", "other"]


@dataclass(frozen=True)
class Check:
    """What to ask the guard: a hook and the conversation whose last turn is assessed."""

    hook: Hook
    conversation: Conversation


def as_messages(value: Any) -> list[BaseMessage]:
    """Normalise every LangChain input shape to a list of messages."""
    if isinstance(value, PromptValue):
        return value.to_messages()
    if isinstance(value, str):
        return [HumanMessage(value)]
    if isinstance(value, BaseMessage):
        return [value]
    try:
        if isinstance(value, Mapping):
            if "messages" in value:
                inner = value["messages"]
                if isinstance(inner, (str, BaseMessage, Mapping)):
                    inner = [dict(inner) if isinstance(inner, Mapping) else inner]
                return convert_to_messages(inner)
            if "content" in value and ("role" in value or "type" in value):
                return convert_to_messages([dict(value)])
            return [HumanMessage(_prompt_variables(value))]
        if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
            return convert_to_messages([value])
        if isinstance(value, Sequence):
            return convert_to_messages(list(value))
    except (ValueError, TypeError, NotImplementedError, KeyError) as exc:
        raise ConversationError(f"cannot read the input as messages: {exc}") from exc
    raise ConversationError(f"unsupported input type {type(value).__name__}")


def _prompt_variables(values: Mapping[str, Any]) -> str:
    # A dict of prompt variables: every value reaches the model, so every value is assessed.
    return "\n\n".join(v if isinstance(v, str) else stringify(v) for v in values.values())


def assessable(conversation: Conversation) -> bool:
    """Whether the last turn has anything to assess (text, image or tool call)."""
    try:
        conversation.turns()
    except ConversationError:
        return False
    return True


def input_check(messages: Sequence[BaseMessage], *, include_system: bool = False) -> Check | None:
    """The check for content about to reach a model: the user turn, or a tool result."""
    conversation = messages_to_conversation(messages, include_system=include_system)
    last = next(
        (m for m in reversed(conversation.messages) if m.role != "system" or include_system),
        None,
    )
    if last is None or last.role == "assistant" or not assessable(conversation):
        return None
    hook = Hook.TOOL_RESULT if last.role == "tool" else Hook.USER_INPUT
    return Check(hook, conversation)


def value_input_check(value: Any, *, include_system: bool = False) -> Check | None:
    """`input_check(as_messages(value))`, for a caller that needs only the check: a plain
    string becomes its user turn directly, without the `HumanMessage` in between."""
    if not isinstance(value, str):
        return input_check(as_messages(value), include_system=include_system)
    # What converting HumanMessage(value) gives: one user message, no part for empty text.
    message = Message("user", (TextPart(value),) if value else ())
    conversation = Conversation((message,), include_system=include_system)
    return Check(Hook.USER_INPUT, conversation) if assessable(conversation) else None


@dataclass(frozen=True)
class OutputTarget:
    """Where the assessed assistant message sits in an output value."""

    kind: OutputKind
    message: AIMessage
    context: tuple[BaseMessage, ...]
    index: int = -1


def locate_output(value: Any) -> OutputTarget | None:
    """Find the assistant message to assess in an output value (None: nothing to assess)."""
    if isinstance(value, AIMessage):
        return OutputTarget("message", value, ())
    if isinstance(value, str):
        return OutputTarget("str", AIMessage(value), ())
    if isinstance(value, BaseMessage):
        return OutputTarget("message", AIMessage(content=value.content, id=value.id), ())
    messages: Any = None
    kind: OutputKind = "list"
    if isinstance(value, Mapping) and "messages" in value:
        messages, kind = value["messages"], "state"
    elif isinstance(value, Sequence) and value and all(isinstance(m, BaseMessage) for m in value):
        messages = value
    if messages is not None:
        if not isinstance(messages, Sequence):
            return None
        for index in range(len(messages) - 1, -1, -1):
            item = messages[index]
            if isinstance(item, AIMessage):
                context = tuple(m for m in messages[:index] if isinstance(m, BaseMessage))
                return OutputTarget(kind, item, context, index)
        return None
    if value is None:
        return None
    return OutputTarget("other", AIMessage(stringify(value)), ())


def output_check(
    target: OutputTarget,
    context: Sequence[BaseMessage] = (),
    *,
    include_tool_calls: bool = True,
    include_system: bool = False,
    converted: Conversation | None = None,
) -> Check | None:
    """The assistant_output check for `target`, with `context` (or the target's own) before it.

    `converted`: `context` already converted (with the same `include_system`), e.g. by the
    input check of the same call; only the reply is converted then."""
    message = target.message
    if is_guard_refusal(message):
        return None
    if not include_tool_calls and (message.tool_calls or message.invalid_tool_calls):
        message = AIMessage(content=message.content, id=message.id)
    history = list(context) if context else list(target.context)
    if converted is not None and context:
        reply = message_to_core(message, len(history))
        turns = converted.messages if reply is None else (*converted.messages, reply)
        conversation = Conversation(turns, include_system=include_system)
    else:
        conversation = messages_to_conversation([*history, message], include_system=include_system)
    if not conversation.messages or conversation.messages[-1].role != "assistant":
        return None
    if not assessable(conversation):
        return None
    return Check(Hook.ASSISTANT_OUTPUT, conversation)


def is_guard_refusal(message: BaseMessage) -> bool:
    meta = message.response_metadata.get(GUARD_METADATA_KEY)
    return isinstance(meta, Mapping) and bool(meta.get("refusal"))


def refusal_message(
    decision: Decision, *, like: BaseMessage | None = None, chunk: bool = False
) -> AIMessage:
    """An AIMessage carrying the refusal (same id and name as `like`), marked as the guard's."""
    text = decision.refusal or "The safety guard withheld this content."
    metadata = {GUARD_METADATA_KEY: {**decision.to_dict(), "refusal": True}}
    cls = AIMessageChunk if chunk or isinstance(like, AIMessageChunk) else AIMessage
    return cls(
        content=text,
        id=like.id if like is not None else None,
        name=like.name if like is not None else None,
        response_metadata=metadata,
    )


def refuse_output(value: Any, target: OutputTarget, decision: Decision) -> Any:
    """`value` with the assessed message replaced by the refusal, in the same shape."""
    replacement = refusal_message(decision, like=target.message)
    if target.kind == "message":
        return replacement
    if target.kind == "str":
        return replacement.text
    if target.kind in ("state", "list"):
        messages = list(value["messages"] if target.kind == "state" else value)
        messages[target.index] = replacement
        if target.kind == "list":
            return messages
        return {**value, "messages": messages}
    raise GuardBlocked(decision)  # no shape to put a refusal into


def enforce(decision: Decision) -> bool:
    """True when the caller may proceed; False for `refuse`; raises `GuardBlocked` otherwise."""
    if decision.allowed:
        return True
    if decision.action is Action.REFUSE:
        return False
    raise GuardBlocked(decision)
