"""Parsing model output into Verdicts."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from guard_plugins import Category, CustomCategory, Verdict, VerdictParseError, parse_verdict
from guard_plugins.verdict import score_from_logprobs


@pytest.mark.parametrize(
    ("raw", "safe", "codes"),
    [
        ("\n\nsafe", True, ()),
        ("\n\nsafe<|eot|>", True, ()),
        ("safe", True, ()),
        ("  Safe.  ", True, ()),
        ("\n\nunsafe\nS9<|eot|>", False, ("S9",)),
        ("unsafe\nS1,S10", False, ("S1", "S10")),
        ("unsafe\nS1, S10", False, ("S1", "S10")),
        ("unsafe\n s1 ,  s10 ", False, ("S1", "S10")),
        ("UNSAFE\nS14", False, ("S14",)),
        ("unsafe S2", False, ("S2",)),
        ("unsafe\nS2,S2", False, ("S2",)),
        ("unsafe", False, ()),
    ],
)
def test_parse_valid_outputs(raw: str, safe: bool, codes: tuple[str, ...]) -> None:
    verdict = parse_verdict(raw)
    assert verdict.safe is safe
    assert verdict.codes == codes
    assert verdict.raw == raw


def test_categories_are_enum_members() -> None:
    assert parse_verdict("unsafe\nS14").categories == (Category.S14,)


def test_excluded_only_categories_make_a_safe_verdict_but_are_reported() -> None:
    listed = [c for c in Category if c is not Category.S9]
    verdict = parse_verdict("unsafe\nS9", listed)
    assert verdict.safe
    assert verdict.categories == ()
    assert verdict.ignored_categories == ("S9",)


def test_excluded_and_listed_keeps_the_listed() -> None:
    listed = [c for c in Category if c is not Category.S9]
    verdict = parse_verdict("unsafe\nS9,S1", listed)
    assert not verdict.safe
    assert verdict.codes == ("S1",)
    assert verdict.ignored_categories == ("S9",)


def test_unknown_codes_stay_unsafe() -> None:
    verdict = parse_verdict("unsafe\nS15")
    assert not verdict.safe
    assert verdict.categories == ()
    assert verdict.ignored_categories == ("S15",)


def test_custom_categories() -> None:
    listed = [CustomCategory("C1", "Competitors")]
    verdict = parse_verdict("unsafe\nC1", listed)
    assert verdict.categories == (listed[0],)


@pytest.mark.parametrize(
    "raw",
    ["", "   ", "maybe", "I cannot answer", "unsafe\nthis is bad!", "safe but unsafe", "<|eot|>"],
)
def test_garbage_raises_with_raw_text(raw: str) -> None:
    with pytest.raises(VerdictParseError) as info:
        parse_verdict(raw)
    assert info.value.raw == raw


def test_non_text_raises() -> None:
    with pytest.raises(VerdictParseError):
        parse_verdict(None)  # type: ignore[arg-type]


def test_score_from_logprobs() -> None:
    assert score_from_logprobs(math.log(0.3), math.log(0.6)) == pytest.approx(1 / 3)
    assert score_from_logprobs(None, math.log(0.9)) == 0.0
    assert score_from_logprobs(math.log(0.9), None) == 1.0
    assert score_from_logprobs(None, None) is None


def test_verdict_rejects_bad_scores() -> None:
    with pytest.raises(ValueError, match="probability"):
        Verdict(safe=True, score=1.5)
    with pytest.raises(ValueError, match="probability"):
        Verdict(safe=True, score=float("nan"))


@settings(max_examples=500, deadline=None)
@given(st.text(max_size=80))
def test_parse_never_raises_anything_else(raw: str) -> None:
    """Invariant: any text either parses to a Verdict or raises VerdictParseError with the raw
    text; a verdict that is safe never carries categories."""
    try:
        verdict = parse_verdict(raw)
    except VerdictParseError as exc:
        assert exc.raw == raw
        return
    assert not (verdict.safe and verdict.categories)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(list(Category)), min_size=1, max_size=5, unique=True),
    st.sampled_from([",", ", ", " , "]),
    st.sampled_from(["", "\n\n", "  "]),
)
def test_roundtrip_of_well_formed_outputs(cats: list[Category], sep: str, lead: str) -> None:
    """Invariant: the model's documented output format parses back to the same codes."""
    verdict = parse_verdict(f"{lead}unsafe\n{sep.join(c.code for c in cats)}<|eot|>")
    assert verdict.categories == tuple(cats)
