"""Decisions: what the Guard concluded at a hook and whether the caller may proceed.

A Decision never raises by itself; `raise_if_blocked()` does, like httpx's `raise_for_status()`.

>>> from guard_plugins.policy import Action, Hook
>>> d = Decision(hook=Hook.USER_INPUT, action=Action.ALLOW, rule="safe")
>>> d.allowed
True
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from guard_plugins._frozen import filled
from guard_plugins.categories import CategoryLike
from guard_plugins.errors import GuardBlocked
from guard_plugins.policy import Action, FailMode, Hook
from guard_plugins.verdict import Verdict

__all__ = ["Decision", "PromptGuardResult", "ScreenFinding"]


@dataclass(frozen=True)
class ScreenFinding:
    """A static code-screen finding as recorded in a Decision (see guard_plugins.codescreen)."""

    rule_id: str
    severity: str
    line: int
    reason: str
    high_confidence: bool


@dataclass(frozen=True)
class PromptGuardResult:
    """Llama Prompt Guard 2's opinion: P(malicious) and whether it crossed the threshold."""

    score: float
    flagged: bool
    windows: int = 1


@dataclass(frozen=True)
class Decision:
    """The outcome of one check.

    - `action`: what the policy says to do (``allow``, ``warn``, ``refuse``, ``block``,
      ``require_approval``).
    - `allowed`: whether the caller may proceed. False for refuse/block and for a denied approval,
      unless the policy runs in monitor mode (`enforced` False).
    - `rule`: which rule fired (``"safe"``, ``"category:S14"``, ``"fail_closed:BackendTimeout"``,
      ``"screen:PY-FORKBOMB"``, ``"prompt_guard"``, ``"approval:denied"`` ...).
    - `failed` / `fail_mode`: the backend errored and the hook's fail mode decided.
    - `refusal`: the message to show instead of the content when the action is ``refuse``
      (set for every non-allowed decision, so adapters always have a message).
    """

    hook: Hook
    action: Action
    rule: str
    verdict: Verdict | None = None
    categories: tuple[CategoryLike, ...] = ()
    enforced: bool = True
    failed: bool = False
    fail_mode: FailMode | None = None
    error: str | None = None
    latency_ms: float = 0.0
    refusal: str | None = None
    approved: bool | None = None
    tool_name: str | None = None
    findings: tuple[ScreenFinding, ...] = ()
    prompt_guard: PromptGuardResult | None = None
    cached: bool = False
    neutralized: bool = False
    """Content had to be neutralised so it could not forge the guard prompt's structure."""
    windows: int = 1
    trimmed_turns: int = 0
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def allowed(self) -> bool:
        if not self.enforced:
            return True
        if self.action is Action.REQUIRE_APPROVAL:
            return self.approved is True
        return self.action in (Action.ALLOW, Action.WARN)

    @property
    def blocked(self) -> bool:
        return not self.allowed

    @property
    def flagged(self) -> bool:
        """The content was judged unsafe (or the check failed), whatever the action."""
        return self.action is not Action.ALLOW or self.failed

    @property
    def codes(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    def raise_if_blocked(self) -> Decision:
        """Raise `GuardBlocked(self)` when the caller must not proceed; else return self."""
        if not self.allowed:
            raise GuardBlocked(self)
        return self

    def summary(self) -> str:
        """One line for logs and exceptions; never contains the checked content."""
        parts = [f"{self.action.value} at {self.hook.value}"]
        if self.tool_name:
            parts.append(f"tool={self.tool_name}")
        if self.categories:
            parts.append("categories=" + ",".join(self.codes))
        if self.verdict is not None and self.verdict.score is not None:
            parts.append(f"score={self.verdict.score:.3f}")
        parts.append(f"rule={self.rule}")
        if self.failed:
            parts.append(f"fail_mode={self.fail_mode}")
        if not self.enforced:
            parts.append("monitor-only")
        return " ".join(parts)

    def replace(self, **changes: Any) -> Decision:
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "hook": self.hook.value,
            "action": self.action.value,
            "allowed": self.allowed,
            "rule": self.rule,
            "categories": list(self.codes),
            "score": self.verdict.score if self.verdict else None,
            "enforced": self.enforced,
            "failed": self.failed,
            "fail_mode": self.fail_mode,
            "error": self.error,
            "latency_ms": round(self.latency_ms, 3),
            "approved": self.approved,
            "tool_name": self.tool_name,
            "findings": [f.rule_id for f in self.findings],
            "prompt_guard_score": self.prompt_guard.score if self.prompt_guard else None,
            "cached": self.cached,
            "neutralized": self.neutralized,
            "windows": self.windows,
            "trimmed_turns": self.trimmed_turns,
            "backend": self.verdict.backend if self.verdict else None,
        }


def _decision_template() -> tuple[dict[str, Any], tuple[tuple[str, Callable[[], Any]], ...]] | None:
    """Decision's fields in order with their defaults (and the fields built by a factory),
    when it is a plain frozen dataclass that `new_decision` can fill; None otherwise."""
    if hasattr(Decision, "__post_init__") or "__slots__" in Decision.__dict__:
        return None  # pragma: no cover - Decision validates or has no __dict__: use __init__
    template: dict[str, Any] = {}
    factories: list[tuple[str, Callable[[], Any]]] = []
    for spec in dataclasses.fields(Decision):
        template[spec.name] = None if spec.default is dataclasses.MISSING else spec.default
        if spec.default_factory is not dataclasses.MISSING:
            factories.append((spec.name, spec.default_factory))
    return template, tuple(factories)


_DECISION_TEMPLATE = _decision_template()


def new_decision(hook: Hook, action: Action, rule: str, **fields: Any) -> Decision:
    """`Decision(hook, action, rule, **fields)`, built by filling its `__dict__` in field order.

    For the Guard's hot path: the generated `__init__` made building the Decision a fifth of a
    whole check (`_frozen.filled`). The object is the same: same class, same fields and values
    (tests/test_guard.py)."""
    if _DECISION_TEMPLATE is None:  # pragma: no cover - see _decision_template
        return Decision(hook, action, rule, **fields)
    template, factories = _DECISION_TEMPLATE
    state = template.copy()
    state["hook"] = hook
    state["action"] = action
    state["rule"] = rule
    state.update(fields)
    if len(state) != len(template):
        unknown = sorted(set(state) - set(template))
        raise TypeError(f"Decision got unexpected fields {unknown}")
    for name, factory in factories:
        if name not in fields:
            state[name] = factory()
    return filled(Decision, state)
