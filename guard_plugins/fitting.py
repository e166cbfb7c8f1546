"""Fitting a conversation into the backend's token budget. Pure apart from token counting.

Rule (docs/concepts.md): the assessed turn is always kept whole when it fits; preceding context is
dropped oldest message first until the prompt fits (`max_context_turns` can cap it earlier). An
assessed turn that alone exceeds the budget is split into overlapping windows (10% overlap), each
checked separately, and the worst verdict wins. Continuation windows repeat the turn's first line
(``Tool call: NAME`` / ``Tool result (NAME):``) so each window keeps its context. Content that
would need more than `MAX_WINDOWS` windows is refused with a `ConversationError`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from guard_plugins.categories import CategoryLike
from guard_plugins.conversation import (
    Conversation,
    ImagePart,
    Message,
    Part,
    Role,
    TextPart,
    Turn,
)
from guard_plugins.errors import ConversationError, PromptTooLongError
from guard_plugins.prompt import RenderedPrompt, build_prompt, build_prompt_from_turns

__all__ = ["IMAGE_TOKEN_ESTIMATE", "MAX_WINDOWS", "FitResult", "fit_conversation"]

MAX_WINDOWS = 64
IMAGE_TOKEN_ESTIMATE = 2467  # a 4x4-tile image, the most one image can cost
_OVERLAP = 0.1

TokenCounter = Callable[[RenderedPrompt], "int | None"]


@dataclass(frozen=True)
class FitResult:
    conversations: list[Conversation]
    trimmed_messages: int = 0
    prompt: RenderedPrompt | None = field(default=None, compare=False, repr=False)
    """The rendered prompt of the single conversation, when fitting had to render it."""


def _turn_role(message: Message, include_system: bool) -> str | None:
    if message.role == "assistant":
        return "Agent"
    if message.role == "system" and not include_system:
        return None
    return "User"


def _assessed_start(conv: Conversation) -> int:
    """Index of the first message of the last (assessed) turn."""
    roles = [_turn_role(m, conv.include_system) for m in conv.messages]
    last = next(r for r in reversed(roles) if r is not None)
    start = len(roles)
    for i in range(len(roles) - 1, -1, -1):
        if roles[i] is None:
            continue
        if roles[i] != last:
            break
        start = i
    return start


def _turn_starts(conv: Conversation, end: int) -> list[int]:
    starts: list[int] = []
    previous = None
    for i, message in enumerate(conv.messages[:end]):
        role = _turn_role(message, conv.include_system)
        if role is not None and role != previous:
            starts.append(i)
            previous = role
    return starts


def fit_conversation(
    conversation: Conversation,
    categories: tuple[CategoryLike, ...],
    *,
    budget: int | None,
    count_tokens: TokenCounter,
    max_context_turns: int | None = None,
    turns: tuple[Turn, ...] | None = None,
) -> FitResult:
    # validate first: nothing-to-assess errors surface unchanged
    turns = conversation.turns() if turns is None else turns
    if budget is None and max_context_turns is None:
        return FitResult([conversation])  # nothing to trim: the common case, no copies
    start = _assessed_start(conversation)
    messages = list(conversation.messages)
    dropped = 0
    if max_context_turns is not None:
        starts = _turn_starts(conversation, start)
        keep_from = (
            starts[-max_context_turns]
            if 0 < max_context_turns <= len(starts)
            else (start if max_context_turns == 0 else 0)
        )
        dropped, messages, start = keep_from, messages[keep_from:], start - keep_from
    current = (
        conversation if dropped == 0 else Conversation(tuple(messages), conversation.include_system)
    )
    if budget is None:
        return FitResult([current], dropped)

    def count(conv: Conversation, prompt: RenderedPrompt | None = None) -> int:
        if prompt is None:
            prompt = build_prompt(conv, categories)
        if len(prompt.text) + IMAGE_TOKEN_ESTIMATE * prompt.image_count <= budget:
            return 0  # cannot exceed: a token is at least one character
        exact = count_tokens(prompt)
        if exact is not None:
            return exact
        return len(prompt.text) // 3 + IMAGE_TOKEN_ESTIMATE * prompt.image_count

    rendered = (
        build_prompt_from_turns(current, turns, categories)
        if current is conversation
        else build_prompt(current, categories)
    )
    if count(current, rendered) <= budget:
        return FitResult([current], dropped, rendered)

    def from_(drop: int) -> Conversation:
        return Conversation(tuple(messages[drop:]), conversation.include_system)

    # Binary search for the fewest dropped messages that fit (length falls as more are dropped),
    # so a conversation of thousands of turns costs O(log n) token counts, not O(n).
    low, high = 1, start
    if count(from_(high)) > budget:
        return FitResult(_windows(from_(high), categories, budget, count), dropped + high)
    while low < high:
        mid = (low + high) // 2
        if count(from_(mid)) <= budget:
            high = mid
        else:
            low = mid + 1
    return FitResult([from_(low)], dropped + low)


def _windows(
    conv: Conversation,
    categories: tuple[CategoryLike, ...],
    budget: int,
    count: Callable[[Conversation], int],
) -> list[Conversation]:
    turn = conv.turns()[-1]
    role: Role = "user" if turn.role == "User" else "assistant"
    text = turn.text
    first_line = text.split("\n", 1)[0]
    header = first_line + "\n" if len(first_line) < 200 and "\n" in text else ""

    def make(chunk: str, index: int, images: tuple[ImagePart, ...]) -> Conversation:
        body = chunk if index == 0 or not header else header + chunk
        parts: tuple[Part, ...] = (*images, TextPart(body))
        return Conversation((Message(role, parts),))

    overhead = count(make("x", 0, turn.images)) or 1
    total = count(make(text, 0, turn.images)) or len(text) // 3
    chars_per_token = len(text) / max(total - overhead, 1)
    window = int(max(budget - overhead - len(header), 16) * chars_per_token * 0.9)
    for _ in range(6):
        window = max(window, 64)
        step = max(int(window * (1 - _OVERLAP)), 1)
        chunks = [text[i : i + window] for i in range(0, max(len(text) - window, 0) + step, step)]
        if len(chunks) > MAX_WINDOWS:
            raise ConversationError(
                f"the assessed turn is {len(text)} characters and would need {len(chunks)} "
                f"windows of the model's {budget}-token budget; at most {MAX_WINDOWS} are checked"
            )
        convs = [make(c, i, turn.images if i == 0 else ()) for i, c in enumerate(chunks)]
        worst = max(count(c) for c in convs)
        if worst <= budget:
            return convs
        window = int(window * 0.75)
    raise PromptTooLongError(worst, budget)
