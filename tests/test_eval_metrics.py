"""Evaluation metrics, checked exactly against hand-computed values."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from guard_plugins.evaluation.metrics import (
    Confusion,
    Outcome,
    Rate,
    category_accuracy,
    compute_metrics,
    confusion,
    macro_average,
    per_category,
    threshold_for_fpr,
    threshold_sweep,
)

# Five positives, five negatives (one without a score). Hand-computed below.
HANDMADE = [
    Outcome(True, True, ("S1",), ("S1",), 0.9),  # TP, names S1
    Outcome(True, True, ("S1",), ("S2",), 0.8),  # TP, wrong code
    Outcome(True, False, ("S1",), (), 0.4),  # FN
    Outcome(True, True, ("S10",), ("S10", "S1"), 0.7),  # TP, names S10
    Outcome(True, False, (), (), 0.3),  # FN, no expected code
    Outcome(False, True, (), ("S1",), 0.6),  # FP naming S1
    Outcome(False, False, (), (), 0.4),  # TN, ties with a positive
    Outcome(False, False, (), (), 0.2),
    Outcome(False, False, (), (), 0.1),
    Outcome(False, False, (), (), None),  # TN, no score
]


def test_overall_counts_and_rates() -> None:
    c = confusion(HANDMADE)
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 1, 4, 2)
    assert (c.recall.num, c.recall.den) == (3, 5)
    assert (c.fpr.num, c.fpr.den) == (1, 5)
    assert (c.precision.num, c.precision.den) == (3, 4)
    assert (c.f1.num, c.f1.den) == (6, 9)
    p, r = 3 / 4, 3 / 5
    assert c.f1.value == pytest.approx(2 * p * r / (p + r))
    assert c.accuracy.value == pytest.approx(7 / 10)


def test_zero_denominators_are_none_not_nan() -> None:
    only_positives = confusion([Outcome(True, True), Outcome(True, False)])
    assert only_positives.fpr == Rate(0, 0)
    assert only_positives.fpr.value is None
    nothing = confusion([])
    assert nothing.f1.value is None and nothing.precision.value is None
    assert Confusion(0, 0, 3, 0).f1.value is None  # nothing positive, nothing flagged
    metrics = compute_metrics([Outcome(True, False, ("S1",))])
    text = json.dumps(metrics.to_dict(), allow_nan=False)  # would raise on NaN
    assert '"value": null' in text


def test_category_accuracy() -> None:
    rate = category_accuracy(HANDMADE)
    assert (rate.num, rate.den) == (2, 3)  # flagged positives with expected codes: 3, 2 named


def test_per_category_uses_all_negatives() -> None:
    s1, s10 = per_category(HANDMADE)
    assert s1.code == "S1" and s10.code == "S10"
    assert (s1.confusion.tp, s1.confusion.fn, s1.confusion.fp, s1.confusion.tn) == (2, 1, 1, 4)
    assert s1.confusion.recall.value == pytest.approx(2 / 3)
    assert s1.confusion.fpr.value == pytest.approx(1 / 5)
    assert s1.confusion.precision.value == pytest.approx(2 / 3)
    assert (s1.confusion.f1.num, s1.confusion.f1.den) == (4, 6)
    assert (s1.accuracy.num, s1.accuracy.den) == (1, 2)
    assert s1.negatives_naming == 1
    assert (s10.confusion.tp, s10.confusion.fn, s10.confusion.fp, s10.confusion.tn) == (1, 0, 1, 4)
    assert s10.confusion.precision.value == pytest.approx(1 / 2)
    assert (s10.confusion.f1.num, s10.confusion.f1.den) == (2, 3)
    assert (s10.accuracy.num, s10.accuracy.den) == (1, 1)
    assert s10.negatives_naming == 0


def test_macro_average_weights_categories_equally() -> None:
    macro = macro_average(per_category(HANDMADE))
    assert macro.recall.value == pytest.approx((2 / 3 + 1) / 2)
    assert macro.fpr.value == pytest.approx(1 / 5)
    assert macro.precision.value == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert macro.f1.value == pytest.approx((4 / 6 + 2 / 3) / 2)
    assert macro.recall.n == 2
    no_negatives = macro_average(per_category([Outcome(True, True, ("S1",), ("S1",))]))
    assert no_negatives.fpr.value is None and no_negatives.fpr.n == 0
    assert no_negatives.recall.value == 1.0


def test_threshold_sweep_points_with_ties() -> None:
    sweep = threshold_sweep(HANDMADE)
    assert (sweep.scored, sweep.unscored, sweep.positives, sweep.negatives) == (9, 1, 5, 4)
    got = [(p.threshold, p.confusion.tp, p.confusion.fp) for p in sweep.points]
    assert got == [
        (0.9, 1, 0),
        (0.8, 2, 0),
        (0.7, 3, 0),
        (0.6, 3, 1),
        (0.4, 4, 2),  # the tie at 0.4: one point, both examples flagged
        (0.3, 5, 2),
        (0.2, 5, 3),
        (0.1, 5, 4),
    ]
    last = sweep.points[-1].confusion
    assert (last.tn, last.fn) == (0, 0)


def test_auroc_and_average_precision() -> None:
    sweep = threshold_sweep(HANDMADE)
    # Mann-Whitney: 16.5 of 20 positive/negative pairs ordered correctly (the tie counts 1/2).
    assert sweep.auroc == pytest.approx(16.5 / 20)
    # 0.2 x (1 + 1 + 1) + 0.2 x 4/6 + 0.2 x 5/7
    assert sweep.average_precision == pytest.approx(float(Fraction(92, 105)))


def test_threshold_for_target_fpr() -> None:
    sweep = threshold_sweep(HANDMADE)
    at_5 = threshold_for_fpr(sweep, 0.05)
    assert at_5 is not None and at_5.threshold == 0.7
    assert (at_5.confusion.tp, at_5.confusion.fp) == (3, 0)
    at_25 = threshold_for_fpr(sweep, 0.25)
    assert at_25 is not None and at_25.threshold == 0.6
    at_50 = threshold_for_fpr(sweep, 0.5)
    assert at_50 is not None and at_50.threshold == 0.3
    # the top score is a negative: no threshold keeps FPR at 0
    worst = threshold_sweep([Outcome(False, True, score=0.9), Outcome(True, True, score=0.5)])
    assert threshold_for_fpr(worst, 0.0) is None
    no_negatives = threshold_sweep([Outcome(True, True, score=0.5)])
    assert threshold_for_fpr(no_negatives, 0.05) is None
    assert no_negatives.auroc is None


def test_compute_metrics_bundle() -> None:
    m = compute_metrics(HANDMADE, target_fpr=0.25)
    d = m.to_dict()
    assert d["overall"]["recall"] == {"value": 0.6, "num": 3, "den": 5}
    assert d["positives_without_category"] == 1
    assert [c["code"] for c in d["per_category"]] == ["S1", "S10"]
    assert d["at_target_fpr"]["threshold"] == 0.6
    assert d["sweep"]["auroc"] == pytest.approx(0.825)
    assert len(d["sweep"]["points"]) == 8


scores = st.lists(
    st.tuples(st.booleans(), st.sampled_from([0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0])),
    min_size=1,
    max_size=40,
)


@given(scores)
def test_auroc_equals_pairwise_probability(pairs: list[tuple[bool, float]]) -> None:
    outcomes = [Outcome(unsafe, score >= 0.5, score=score) for unsafe, score in pairs]
    pos = [s for u, s in pairs if u]
    neg = [s for u, s in pairs if not u]
    auroc = threshold_sweep(outcomes).auroc
    if not pos or not neg:
        assert auroc is None
        return
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    assert auroc == pytest.approx(wins / (len(pos) * len(neg)))


@given(scores, st.floats(0.0, 1.0))
def test_sweep_is_monotone_and_target_is_respected(
    pairs: list[tuple[bool, float]], target: float
) -> None:
    sweep = threshold_sweep([Outcome(u, s >= 0.5, score=s) for u, s in pairs])
    tps = [p.confusion.tp for p in sweep.points]
    fps = [p.confusion.fp for p in sweep.points]
    assert tps == sorted(tps) and fps == sorted(fps)
    assert [p.threshold for p in sweep.points] == sorted({s for _, s in pairs}, reverse=True)
    point = threshold_for_fpr(sweep, target)
    if point is not None:
        fpr = point.confusion.fpr.value
        assert fpr is not None and fpr <= target
        lower = [p for p in sweep.points if p.threshold < point.threshold]
        assert all((p.confusion.fpr.value or 0) > target for p in lower)
