"""Verdicts: the parsed answer of Llama Guard. Pure, no I/O.

The model answers ``"\\n\\nsafe"`` or ``"\\n\\nunsafe\\nS1,S10"``. `parse_verdict` reads that text
tolerantly (leading/trailing white space, end-of-turn tokens, ``S1, S10``, letter case) and strictly
(anything else raises `VerdictParseError` carrying the raw text; the policy decides what a parse
failure means).

Categories the model names that were not listed in the prompt (excluded, or unknown codes) are kept
out of `Verdict.categories` and reported in `Verdict.ignored_categories`. An ``unsafe`` answer that
names only excluded categories is a safe verdict for this policy (that is how exclusions are
enforced when a server ignores them); one that names no category or only unknown codes stays
unsafe, with no categories: the guard never turns an unexplained ``unsafe`` into ``safe``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from guard_plugins.categories import DEFAULT_CATEGORIES, Category, CategoryLike
from guard_plugins.conversation import AssessedRole
from guard_plugins.errors import VerdictParseError

__all__ = ["Verdict", "parse_verdict", "score_from_logprobs"]

_END_TOKENS = re.compile(r"<\|(?:eot|eom|end_of_text|eot_id)\|>|</s>")
_CODE_SPLIT = re.compile(r"[\s,;]+")
_RAW_LIMIT = 2000


@dataclass(frozen=True)
class Verdict:
    """What the guard model said about the last turn of a conversation.

    `score` is P(unsafe) of the verdict token (the Llama Guard model cards' classifier score), or
    None when the backend cannot observe probabilities.

    >>> v = Verdict(safe=False, categories=(Category.S14,), score=0.93)
    >>> v.unsafe, v.codes
    (True, ('S14',))
    """

    safe: bool
    categories: tuple[CategoryLike, ...] = ()
    score: float | None = None
    raw: str = ""
    role: AssessedRole | None = None
    backend: str = ""
    latency_ms: float | None = None
    ignored_categories: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.score is not None and not (0.0 <= self.score <= 1.0 and math.isfinite(self.score)):
            raise ValueError(f"score must be a probability in [0, 1], got {self.score}")

    @property
    def unsafe(self) -> bool:
        return not self.safe

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    def replace(self, **changes: Any) -> Verdict:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "safe": self.safe,
            "categories": list(self.codes),
            "score": self.score,
            "raw": self.raw,
            "role": self.role,
            "backend": self.backend,
            "latency_ms": self.latency_ms,
            "ignored_categories": list(self.ignored_categories),
        }


def parse_verdict(
    raw: str,
    listed: Sequence[CategoryLike] | None = None,
    *,
    score: float | None = None,
    role: AssessedRole | None = None,
    backend: str = "",
    latency_ms: float | None = None,
) -> Verdict:
    """Parse the model's text output. `listed` is the categories the prompt listed."""
    if not isinstance(raw, str):
        raise VerdictParseError("model output is not text", repr(raw))
    if raw.strip() == "safe":  # the common answer, as the general path below reads it
        return Verdict(
            safe=True,
            score=score,
            raw=raw[:_RAW_LIMIT],
            role=role,
            backend=backend,
            latency_ms=latency_ms,
        )
    text = _END_TOKENS.sub("\n", raw)
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    if not lines:
        raise VerdictParseError("model output is empty", raw)
    head, _, rest_of_line = lines[0].partition(" ")
    word = head.strip(" .:").lower()
    common: dict[str, Any] = {
        "raw": raw[:_RAW_LIMIT],
        "role": role,
        "backend": backend,
        "latency_ms": latency_ms,
    }
    if word == "safe" and not rest_of_line.strip(" ."):
        return Verdict(safe=True, score=score, **common)
    if word != "unsafe":
        raise VerdictParseError("model output does not start with 'safe' or 'unsafe'", raw)
    code_text = rest_of_line if rest_of_line.strip() else (lines[1] if len(lines) > 1 else "")
    named = [c.strip(" .").upper() for c in _CODE_SPLIT.split(code_text) if c.strip(" .")]
    if any(not re.fullmatch(r"[A-Z][A-Z0-9_]{0,15}", c) for c in named):
        raise VerdictParseError(
            "the category line of an unsafe verdict is not a list of codes", raw
        )
    by_code = {c.code.upper(): c for c in (listed if listed is not None else DEFAULT_CATEGORIES)}
    categories: list[CategoryLike] = []
    ignored: list[str] = []
    for code in dict.fromkeys(named):
        if code in by_code:
            categories.append(by_code[code])
        else:
            ignored.append(code)
    only_excluded = bool(ignored) and not categories and all(_is_known(c) for c in ignored)
    return Verdict(
        safe=only_excluded,
        categories=tuple(categories),
        score=score,
        ignored_categories=tuple(ignored),
        **common,
    )


def _is_known(code: str) -> bool:
    return code in Category.__members__


def score_from_logprobs(unsafe_logprob: float | None, safe_logprob: float | None) -> float | None:
    """P(unsafe) renormalised over the two verdict tokens, from their log-probabilities.

    Either may be None (not among the returned top tokens); both None gives None.
    """
    if unsafe_logprob is None and safe_logprob is None:
        return None
    p_unsafe = math.exp(unsafe_logprob) if unsafe_logprob is not None else 0.0
    p_safe = math.exp(safe_logprob) if safe_logprob is not None else 0.0
    total = p_unsafe + p_safe
    if total <= 0.0 or not math.isfinite(total):
        return None
    return min(1.0, max(0.0, p_unsafe / total))
