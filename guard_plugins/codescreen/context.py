"""The state one `scan` call shares between scanners: findings, limits, and nested re-scans.

Nested code (a string passed to ``exec``, ``bash -c``, ``python -c``, a decoded payload) is scanned
through `ScanContext.scan_nested`, which bounds the nesting depth and the total amount of nested
text, and reports every nested finding at the line of the outermost construct that holds it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from guard_plugins.codescreen.findings import Confidence, Finding, Language, Severity, short_ident
from guard_plugins.codescreen.rules import get_rule

__all__ = ["Limits", "ScanContext"]


@dataclass(frozen=True)
class Limits:
    """Caps that keep a scan bounded on any input (documented in docs/codescreen.md)."""

    max_input_chars: int = 1_000_000
    max_depth: int = 4
    nested_budget_chars: int = 2_000_000
    max_findings: int = 200


Scanner = Callable[[str, "ScanContext"], None]


@dataclass
class ScanContext:
    """Collects findings for one top-level scan. Scanners register themselves in `scanners`."""

    limits: Limits = field(default_factory=Limits)
    scanners: dict[str, Scanner] = field(default_factory=dict)
    findings: dict[tuple[str, int], Finding] = field(default_factory=dict)
    depth: int = 0
    anchor: int | None = None
    budget: int = 0
    nesting_reported: bool = False
    exhaustive: bool = False  # analyse every statement (no text gate); for tests and audits

    def __post_init__(self) -> None:
        self.budget = self.limits.nested_budget_chars

    def report(
        self,
        rule_id: str,
        line: int,
        detail: str = "",
        *,
        confidence: Confidence | None = None,
        severity: Severity | None = None,
    ) -> None:
        """Record a finding of `rule_id`; `detail` is a short identifier appended to the reason."""
        rule = get_rule(rule_id)
        where = self.anchor if self.anchor is not None else line
        reason = rule.reason if not detail else f"{rule.reason}: {short_ident(detail)}"
        language: Language = "shell" if rule_id.startswith("SH-") else "python"
        finding = Finding(
            rule_id=rule_id,
            severity=severity or rule.severity,
            line=max(0, where),
            reason=reason,
            confidence=confidence or rule.confidence,
            threat=rule.threat,
            language=language,
        )
        key = (rule_id, finding.line)
        old = self.findings.get(key)
        if old is None:
            if len(self.findings) < self.limits.max_findings:
                self.findings[key] = finding
        elif _stronger(finding, old):
            self.findings[key] = finding

    def scan_nested(self, text: str, language: str, line: int) -> bool:
        """Scan `text` (code found inside the code) as `language`; False when limits stop it."""
        if not text.strip():
            return True
        if self.depth >= self.limits.max_depth or len(text) > self.budget:
            if not self.nesting_reported:
                self.nesting_reported = True
                self.report("SCREEN-NESTING", line)
            return False
        self.budget -= len(text)
        with self._nested(line):
            self.scanners[language](text, self)
        return True

    @contextmanager
    def _nested(self, line: int) -> Iterator[None]:
        saved_anchor = self.anchor
        if self.anchor is None:
            self.anchor = line
        self.depth += 1
        try:
            yield
        finally:
            self.depth -= 1
            self.anchor = saved_anchor

    def result(self) -> list[Finding]:
        """Findings ordered by line, then most severe first."""
        return sorted(self.findings.values(), key=lambda f: (f.line, -f.severity.rank, f.rule_id))

    def has(self, rule_prefix: str = "") -> bool:
        return any(key[0].startswith(rule_prefix) for key in self.findings)


def _stronger(new: Finding, old: Finding) -> bool:
    if new.confidence != old.confidence:
        return new.confidence == "high"
    return new.severity > old.severity
