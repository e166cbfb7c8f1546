"""What a screen reports: `Severity`, `Threat`, `Finding`. Pure data, no logic beyond ordering.

A `Finding` names a rule, a line and a short reason. The reason never carries more than a short
identifier taken from the code (a call name, a path, a command), capped by `short_ident`, so
findings can go to logs and audit events without echoing the screened code.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Final, Literal

__all__ = ["Confidence", "Finding", "Language", "Severity", "Threat", "short_ident"]

Confidence = Literal["high", "low"]
Language = Literal["python", "shell"]

_IDENT_LIMIT: Final = 40


class Severity(str, enum.Enum):
    """How bad it is if the finding is right. Ordered: ``Severity.LOW < Severity.CRITICAL``.

    >>> max([Severity.MEDIUM, Severity.CRITICAL, Severity.LOW]).value
    'critical'
    """

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _RANK[self]

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank < other.rank

    def __le__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank <= other.rank

    def __gt__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank > other.rank

    def __ge__(self, other: object) -> bool:
        if not isinstance(other, Severity):
            return NotImplemented
        return self.rank >= other.rank

    def __str__(self) -> str:
        return self.value


_RANK: Final = {Severity.LOW: 0, Severity.MEDIUM: 1, Severity.HIGH: 2, Severity.CRITICAL: 3}


class Threat(str, enum.Enum):
    """The abuse family a rule belongs to (the sub-kinds of Llama Guard's S14)."""

    RESOURCE_EXHAUSTION = "resource_exhaustion"
    SANDBOX_ESCAPE = "sandbox_escape"
    PRIVILEGE_ESCALATION = "privilege_escalation"
    CREDENTIAL_ACCESS = "credential_access"
    REMOTE_EXECUTION = "remote_execution"
    DESTRUCTION = "destruction"
    PERSISTENCE = "persistence"
    DEFENSE_EVASION = "defense_evasion"
    OBFUSCATION = "obfuscation"
    SCREEN_LIMIT = "screen_limit"

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Finding:
    """One thing the screen found. `line` is 1-based in the screened text (0 when unknown).

    `confidence` is ``"high"`` when the pattern has no ordinary use in agent code; a policy may
    let a high-confidence finding block on its own and treat ``"low"`` ones as hints for the model.

    >>> f = Finding("SH-REVSHELL", Severity.CRITICAL, 1, "shell bound to a network socket",
    ...             "high", Threat.REMOTE_EXECUTION, "shell")
    >>> f.blocking, f.to_dict()["severity"]
    (True, 'critical')
    """

    rule_id: str
    severity: Severity
    line: int
    reason: str
    confidence: Confidence
    threat: Threat
    language: Language

    @property
    def blocking(self) -> bool:
        """True when this finding alone should stop the code (the default policy)."""
        return self.confidence == "high"

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule_id": self.rule_id,
            "severity": self.severity.value,
            "line": self.line,
            "reason": self.reason,
            "confidence": self.confidence,
            "threat": self.threat.value,
            "language": self.language,
        }

    def __str__(self) -> str:
        return f"{self.rule_id} line {self.line} [{self.severity.value}/{self.confidence}]: " + (
            self.reason
        )


def short_ident(text: str, limit: int = _IDENT_LIMIT) -> str:
    """`text` reduced to a short, single-line identifier safe to put in a reason."""
    flat = text.strip()
    if not flat.isprintable():  # the per-character pass only when something must be replaced
        flat = "".join(ch if ch.isprintable() else "?" for ch in flat)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
