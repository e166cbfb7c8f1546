"""The code screen on its corpora: every abuse snippet is caught, ordinary agent code passes.

Corpora live in tests/data/codescreen/ (YAML): `malicious.yaml` lists the rule ids each snippet
must trigger; `benign_python.yaml` and `benign_shell.yaml` must produce no blocking finding.
`benchmarks/codescreen_bench.py --corpus` prints the resulting rates.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from guard_plugins.codescreen import scan

DATA = Path(__file__).parent / "data" / "codescreen"


def _load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load((DATA / name).read_text())
    return cases


MALICIOUS = _load("malicious.yaml")
HOLDOUT = _load("holdout.yaml")
BENIGN = [(c, "python") for c in _load("benign_python.yaml")] + [
    (c, "shell") for c in _load("benign_shell.yaml")] + [
    (c, c.get("lang", "python")) for c in _load("holdout_benign.yaml")]


def test_corpus_sizes() -> None:
    assert len(MALICIOUS) >= 80
    assert len([c for c, lang in BENIGN if lang == "python"]) >= 60
    assert len({c["id"] for c in MALICIOUS}) == len(MALICIOUS)


@pytest.mark.parametrize("case", MALICIOUS, ids=[c["id"] for c in MALICIOUS])
def test_malicious_snippet_is_caught(case: dict[str, Any]) -> None:
    findings = scan(case["code"], case.get("lang", "python"))
    found = {f.rule_id for f in findings}
    assert set(case["expect"]) <= found, [str(f) for f in findings]
    if case.get("blocking", True):
        assert any(f.blocking for f in findings), [str(f) for f in findings]


@pytest.mark.parametrize(("case", "language"), BENIGN, ids=[c["id"] for c, _ in BENIGN])
def test_benign_snippet_passes(case: dict[str, Any], language: str) -> None:
    findings = scan(case["code"], language)
    assert not [f for f in findings if f.blocking], [str(f) for f in findings]


@pytest.mark.parametrize("case", MALICIOUS, ids=[c["id"] for c in MALICIOUS])
def test_reasons_do_not_echo_code(case: dict[str, Any]) -> None:
    code = case["code"]
    for finding in scan(code, case.get("lang", "python")):
        assert len(finding.reason) <= 120
        assert "\n" not in finding.reason
        detail = finding.reason.partition(": ")[2]
        assert len(detail) <= 40


@pytest.mark.parametrize("case", HOLDOUT, ids=[c["id"] for c in HOLDOUT])
def test_holdout_snippet_is_blocked(case: dict[str, Any]) -> None:
    # Written after the rules; 48/52 were blocked before the fixes they prompted (see docs).
    findings = scan(case["code"], case.get("lang", "python"))
    assert any(f.blocking for f in findings), [str(f) for f in findings]
