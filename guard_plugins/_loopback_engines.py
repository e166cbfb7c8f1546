"""Engines for `guard_plugins.loopback.LoopbackServer`: what answers a prompt.

An engine is ``engine(prompt, images, max_tokens, top_logprobs)`` returning ``(text,
top_logprobs_per_position)`` or an object with ``.text`` and ``.top_logprobs`` (sync or async).
A prompt may end with a forced start of the answer after the final ``<|header_end|>`` (the
backend teacher-forces ``"\\n\\nunsafe\\n"`` to get categories); engines then answer the rest.

- `RuleEngine`: a deterministic function of the last turn, with made-up but consistent logprobs.
- `backend_engine`: plain greedy generation through an in-process backend's ``generate_raw`` —
  what vLLM does. A random-weight dev model answers noise this way.
- `VerdictEngine`: a server whose decoding is constrained to the Llama Guard answer grammar,
  reporting the exact P(unsafe) at the verdict token: the prompt is read back into a request and
  classified by an in-process backend. With it a dev model's verdict travels the wire intact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from guard_plugins.backends.base import ClassificationRequest
from guard_plugins.categories import Category, CategoryLike, CustomCategory
from guard_plugins.conversation import Conversation, Message, Part, TextPart
from guard_plugins.images import ImagePart
from guard_plugins.prompt import IMAGE_TOKEN, build_prompt

__all__ = [
    "RuleEngine",
    "TopLogprobs",
    "VerdictEngine",
    "backend_engine",
    "last_turn_text",
    "listed_codes",
    "request_from_prompt",
    "synthetic_output",
]

TopLogprobs = Sequence[Sequence[tuple[str, float]]]
_FILLER = ("\n", " ", "The", "I", ".", "S", "0", "a")
_HEADER_END = "<|header_end|>"
_TURN_END = "\\n\\n\n\n"


def _split_forced(prompt: str) -> tuple[str, str]:
    head, marker, forced = prompt.rpartition(_HEADER_END)
    return head + marker, forced


def last_turn_text(prompt: str) -> str:
    """The text of the last conversation turn in a Llama Guard 4 prompt (markers removed)."""
    body = prompt.partition("<BEGIN CONVERSATION>\n")[2].partition("<END CONVERSATION>")[0]
    turns = [t for t in body.split(_TURN_END) if t.strip()]
    if not turns:
        return ""
    return re.sub(r"^(User|Agent): (<\|image\|>)*", "", turns[-1])


def listed_codes(prompt: str) -> tuple[str, ...]:
    """Category codes listed in a Llama Guard 4 prompt."""
    block = prompt.partition("<BEGIN UNSAFE CONTENT CATEGORIES>\n")[2].partition("<END UNSAFE")[0]
    return tuple(re.findall(r"^([A-Z][A-Za-z0-9_]*): ", block, re.MULTILINE))


def synthetic_output(text: str, p_unsafe: float, top_logprobs: int) -> tuple[str, TopLogprobs]:
    """`text` with made-up per-token logprobs that put P(unsafe)=`p_unsafe` at the verdict token."""
    p = min(max(p_unsafe, 1e-300), 1 - 1e-16)
    positions: list[list[tuple[str, float]]] = []
    for token in re.findall(r"\n\n|\n|,|[^\n,]+", text):
        if token.strip() in ("safe", "unsafe"):
            pair = [("unsafe", math.log(p)), ("safe", math.log1p(-p))]
            top = sorted(pair, key=lambda t: -t[1])
        else:
            top = [(token, -1e-4)]
        top += [(f, -40.0 - i) for i, f in enumerate(_FILLER) if f not in dict(top)]
        positions.append(top[: max(1, top_logprobs)])
    return text, positions


class RuleEngine:
    """Answers ``rule(last_turn_text, listed_codes)`` (``"safe"`` / ``"unsafe\\nS1"``).

    P(unsafe) at the verdict token is `confidence` for unsafe answers, 1 - `confidence` else.
    """

    def __init__(
        self, rule: Callable[[str, tuple[str, ...]], str], *, confidence: float = 0.95
    ) -> None:
        self.rule = rule
        self.confidence = confidence
        self.calls = 0

    @classmethod
    def keywords(cls, mapping: Mapping[str, str], *, confidence: float = 0.95) -> RuleEngine:
        """Unsafe with code C iff the last turn contains keyword K (any case) and C is listed in
        the prompt (so exclusions behave as with a real model)."""
        lowered = {k.lower(): v for k, v in mapping.items()}

        def rule(turn: str, listed: tuple[str, ...]) -> str:
            text = turn.lower()
            codes = dict.fromkeys(c for k, c in lowered.items() if k in text and c in listed)
            return "unsafe\n" + ",".join(codes) if codes else "safe"

        return cls(rule, confidence=confidence)

    def __call__(
        self, prompt: str, images: list[ImagePart], max_tokens: int, top_logprobs: int
    ) -> tuple[str, TopLogprobs]:
        self.calls += 1
        base, forced = _split_forced(prompt)
        answer = self.rule(last_turn_text(base), listed_codes(prompt)).strip()
        p_unsafe = self.confidence if answer.startswith("unsafe") else 1 - self.confidence
        full = "\n\n" + answer
        if forced:
            full = full[len(forced):] if full.startswith(forced) else ""
        return synthetic_output(full, p_unsafe, top_logprobs)


def backend_engine(backend: Any) -> Callable[..., Any]:
    """Greedy generation through ``backend.generate_raw`` (e.g. a TransformersBackend)."""

    async def engine(
        prompt: str, images: list[ImagePart], max_tokens: int, top_logprobs: int
    ) -> Any:
        return await backend.generate_raw(
            prompt, images=tuple(images), max_new_tokens=max_tokens, top_logprobs=top_logprobs
        )

    return engine


def request_from_prompt(
    prompt: str, images: Sequence[ImagePart] = (), threshold: float = 0.5
) -> ClassificationRequest:
    """Read a rendered Llama Guard 4 prompt back into the request that renders it.

    Raises ValueError unless the request renders byte for byte to `prompt`.
    """
    block = prompt.partition("<BEGIN UNSAFE CONTENT CATEGORIES>\n")[2].partition(
        "<END UNSAFE CONTENT CATEGORIES>"
    )[0]
    entries: list[list[str]] = []
    for line in block.splitlines():
        if re.match(r"^[A-Z][A-Za-z0-9_]{0,15}: .*\.$", line) or not entries:
            entries.append([line])
        else:
            entries[-1].append(line)
    categories: list[CategoryLike] = []
    for first, *description in entries:
        code, _, name = first.partition(": ")
        name = name[:-1]
        if code in Category.__members__ and name == Category(code).short_name and not description:
            categories.append(Category(code))
        else:
            categories.append(CustomCategory(code, name, "\n".join(description)))
    body = prompt.partition("<BEGIN CONVERSATION>\n")[2].partition("<END CONVERSATION>")[0]
    pending = list(images)
    messages: list[Message] = []
    for turn in body.split(_TURN_END)[:-1]:
        role, _, rest = turn.partition(": ")
        count = 0
        while rest.startswith(IMAGE_TOKEN):
            rest, count = rest[len(IMAGE_TOKEN):], count + 1
        parts: list[Part] = [*pending[:count]]
        del pending[:count]
        if rest:
            parts.append(TextPart(rest))
        messages.append(Message("user" if role == "User" else "assistant", tuple(parts)))
    request = ClassificationRequest(Conversation(tuple(messages)), tuple(categories),
                                    threshold=threshold)
    if pending or build_prompt(request.conversation, request.categories).text != prompt:
        raise ValueError("the prompt does not read back into a conversation that renders to it")
    return request


class VerdictEngine:
    """Grammar-constrained answers with the exact verdict probability, from `backend.classify`.

    The answer is ``unsafe`` with the backend's decoded categories when the score reaches
    `threshold` (0.5: what greedy decoding picks); after a forced ``"\\n\\nunsafe\\n"`` the
    categories are decoded whatever the score.
    """

    def __init__(self, backend: Any, *, threshold: float = 0.5) -> None:
        self.backend = backend
        self.threshold = threshold

    async def __call__(
        self, prompt: str, images: list[ImagePart], max_tokens: int, top_logprobs: int
    ) -> tuple[str, TopLogprobs]:
        base, forced = _split_forced(prompt)
        threshold = 1e-12 if forced else self.threshold
        verdict = await self.backend.classify(request_from_prompt(base, images, threshold))
        text = str(verdict.raw)
        if forced:
            text = text[len(forced):] if text.startswith(forced) else ""
        return synthetic_output(text, float(verdict.score or 0.0), top_logprobs)
