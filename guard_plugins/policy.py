"""Policy: which categories each hook assesses and what happens when one is flagged. Pure.

Defaults a security reviewer can sign: every category assessed at every hook; ``block`` on user
input, ``refuse`` on assistant output, ``block`` on tool calls and tool results; every hook fails
closed. Letting S14 (Code Interpreter Abuse) code run is an explicit, logged choice
(``allow_s14_execution: true``).

>>> policy = Policy.from_dict({"tool_call": {"threshold": 0.3}, "user_input": {"exclude": ["S6"]}})
>>> policy.for_hook(Hook.TOOL_CALL).action_for(Category.S14)
<Action.BLOCK: 'block'>
"""

from __future__ import annotations

import enum
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from guard_plugins.categories import (
    Category,
    CategoryLike,
    CustomCategory,
    parse_category_codes,
    resolve_categories,
)
from guard_plugins.errors import CategoryError, ConfigError

__all__ = ["Action", "FailMode", "Hook", "HookPolicy", "Policy"]

logger = logging.getLogger("guard_plugins.policy")


class Hook(str, enum.Enum):
    """Where in an application a check happens."""

    USER_INPUT = "user_input"
    ASSISTANT_OUTPUT = "assistant_output"
    TOOL_CALL = "tool_call"
    TOOL_RESULT = "tool_result"

    def __str__(self) -> str:
        return self.value


class Action(str, enum.Enum):
    """What happens to flagged content. Ordered from mildest to strictest."""

    ALLOW = "allow"
    WARN = "warn"
    REQUIRE_APPROVAL = "require_approval"
    REFUSE = "refuse"
    BLOCK = "block"

    @property
    def severity(self) -> int:
        return list(Action).index(self)

    def __str__(self) -> str:
        return self.value


FailMode = Literal["closed", "open"]

_DEFAULT_REFUSALS = {
    Hook.USER_INPUT: "I can't help with that request.",
    Hook.ASSISTANT_OUTPUT: "I can't share that response.",
    Hook.TOOL_CALL: "The tool call was refused by the safety guard ({categories}).",
    Hook.TOOL_RESULT: "The tool's result was withheld by the safety guard ({categories}).",
}
_DEFAULT_ACTIONS = {
    Hook.USER_INPUT: Action.BLOCK,
    Hook.ASSISTANT_OUTPUT: Action.REFUSE,
    Hook.TOOL_CALL: Action.BLOCK,
    Hook.TOOL_RESULT: Action.BLOCK,
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=False)


class HookPolicy(_Strict):
    """Settings of one hook."""

    enabled: bool = True
    categories: tuple[str, ...] | None = None
    """Codes assessed at this hook (None: all). Unlisted codes are left out of the prompt."""
    exclude: tuple[str, ...] = ()
    threshold: float = Field(0.5, gt=0.0, le=1.0)
    thresholds: dict[str, float] = Field(default_factory=dict)
    action: Action = Action.BLOCK
    """Action for a flagged verdict whose categories have no action of their own."""
    actions: dict[str, Action] = Field(default_factory=dict)
    fail_mode: FailMode = "closed"
    timeout: float | None = Field(30.0, gt=0)
    refusal_message: str = ""
    screen_code: bool = True
    """tool_call only: run the static code screen (guard_plugins.codescreen) beside the model."""
    screen_blocks: Literal["high", "any", "never"] = "high"
    """Which screen findings flag S14 on their own: high-confidence ones, any, or none."""
    prompt_guard_threshold: float = Field(0.5, gt=0.0, le=1.0)
    prompt_guard_action: Action = Action.BLOCK

    @field_validator("categories", "exclude", mode="before")
    @classmethod
    def _codes(cls, value: Any) -> Any:
        if value is None:
            return None
        return parse_category_codes(value)

    @field_validator("thresholds", "actions", mode="before")
    @classmethod
    def _upper_keys(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {str(k).strip().upper(): v for k, v in value.items()}
        return value

    @field_validator("thresholds")
    @classmethod
    def _check_thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        for code, threshold in value.items():
            if not 0.0 < threshold <= 1.0:
                raise ValueError(f"threshold for {code} must be in (0, 1], got {threshold}")
        return value

    def action_for(self, category: CategoryLike | str) -> Action:
        code = category.code if isinstance(category, (Category, CustomCategory)) else category
        return self.actions.get(code.upper(), self.action)

    def threshold_for(self, category: CategoryLike | str) -> float:
        code = category.code if isinstance(category, (Category, CustomCategory)) else category
        return self.thresholds.get(code.upper(), self.threshold)

    @property
    def request_threshold(self) -> float:
        """The lowest threshold in play: backends decode categories at or above it."""
        thresholds = self.thresholds
        return min(self.threshold, *thresholds.values()) if thresholds else self.threshold

    def refusal_for(self, hook: Hook, categories: tuple[CategoryLike, ...]) -> str:
        template = self.refusal_message or _DEFAULT_REFUSALS[hook]
        names = ", ".join(_label(c) for c in categories) if categories else "unsafe content"
        return template.replace("{categories}", names)


def _hook_default(hook: Hook) -> HookPolicy:
    return HookPolicy(action=_DEFAULT_ACTIONS[hook])


class CustomCategoryModel(_Strict):
    code: str
    name: str
    description: str = ""


class Policy(_Strict):
    """The whole policy: one `HookPolicy` per hook plus global switches.

    Build it in code (``Policy(tool_call=HookPolicy(threshold=0.3))``), from a dict
    (`from_dict`) or from a YAML/TOML/JSON file (`from_file`). Errors name the key at fault.
    """

    user_input: HookPolicy = Field(default_factory=lambda: _hook_default(Hook.USER_INPUT))
    assistant_output: HookPolicy = Field(
        default_factory=lambda: _hook_default(Hook.ASSISTANT_OUTPUT)
    )
    tool_call: HookPolicy = Field(default_factory=lambda: _hook_default(Hook.TOOL_CALL))
    tool_result: HookPolicy = Field(default_factory=lambda: _hook_default(Hook.TOOL_RESULT))
    monitor: bool = False
    """Shadow mode: decide and log everything, enforce nothing."""
    allow_s14_execution: bool = False
    """Required to configure a tool_call policy under which S14-flagged code may run."""
    custom_categories: tuple[CustomCategoryModel, ...] | None = None
    """Replace S1–S14 with these categories in every prompt (zero-shot policies)."""
    approval_timeout: float = Field(300.0, gt=0)
    log_content: bool = False
    """Put message text into audit events (off: events carry codes, scores and hashes only)."""
    max_context_turns: int | None = Field(None, ge=0)
    """Preceding turns sent with the assessed one (None: as many as fit the backend's budget)."""
    max_prompt_tokens: int | None = Field(None, gt=0)
    """Override the backend's token budget (for shortening long conversations)."""

    @model_validator(mode="before")
    @classmethod
    def _hook_defaults(cls, data: Any) -> Any:
        # A hook given partially keeps that hook's own default action.
        if isinstance(data, Mapping):
            data = dict(data)
            for hook in Hook:
                value = data.get(hook.value)
                if isinstance(value, Mapping) and "action" not in value:
                    data[hook.value] = {"action": _DEFAULT_ACTIONS[hook], **value}
        return data

    @model_validator(mode="after")
    def _check(self) -> Policy:
        known = {c.code for c in self.categories()}
        for hook in Hook:
            hp = self.for_hook(hook)
            for field_name, codes in (
                ("categories", hp.categories or ()),
                ("exclude", hp.exclude),
                ("thresholds", tuple(hp.thresholds)),
                ("actions", tuple(hp.actions)),
            ):
                unknown = [c for c in codes if c not in known]
                if unknown:
                    raise ValueError(
                        f"{hook.value}.{field_name}: unknown category code(s) {', '.join(unknown)};"
                        f" allowed: {', '.join(sorted(known, key=_code_order))}"
                    )
        tool = self.tool_call
        s14_runs = (
            not tool.enabled
            or tool.action_for("S14").severity < Action.REQUIRE_APPROVAL.severity
            or "S14" in tool.exclude
            or (tool.categories is not None and "S14" not in tool.categories)
        ) and "S14" in known
        if s14_runs and not self.allow_s14_execution:
            raise ValueError(
                "tool_call: this policy would let code flagged S14 (Code Interpreter Abuse) run; "
                "set allow_s14_execution: true to make that choice explicit"
            )
        if s14_runs:
            logger.warning("policy allows S14-flagged tool calls to execute (allow_s14_execution)")
        return self

    def for_hook(self, hook: Hook | str) -> HookPolicy:
        hook = Hook(hook)
        if hook is Hook.USER_INPUT:
            return self.user_input
        if hook is Hook.ASSISTANT_OUTPUT:
            return self.assistant_output
        if hook is Hook.TOOL_CALL:
            return self.tool_call
        return self.tool_result

    def categories(self) -> tuple[CategoryLike, ...]:
        if self.custom_categories is None:
            return tuple(Category)
        return tuple(CustomCategory(c.code, c.name, c.description) for c in self.custom_categories)

    def categories_for(self, hook: Hook | str) -> tuple[CategoryLike, ...]:
        """The categories a hook's prompt lists (before the image rule drops S14)."""
        hp = self.for_hook(hook)
        chosen = self.categories()
        if hp.categories is not None:
            chosen = tuple(c for c in chosen if c.code in hp.categories)
        try:
            return resolve_categories(chosen, hp.exclude)
        except CategoryError as exc:
            raise ConfigError(f"{Hook(hook).value}: {exc}") from exc

    # -- loading ----------------------------------------------------------------------------

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Policy:
        if not isinstance(data, Mapping):
            raise ConfigError(f"a policy must be a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(dict(data))
        except ValidationError as exc:
            raise ConfigError(_explain(exc)) from None

    @classmethod
    def from_file(cls, path: str | Path) -> Policy:
        """Load a policy from YAML (.yaml/.yml), TOML (.toml) or JSON (.json)."""
        file = Path(path)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read policy file {file}: {exc.strerror or exc}") from exc
        suffix = file.suffix.lower()
        try:
            if suffix in (".yaml", ".yml"):
                import yaml

                data = yaml.safe_load(text) or {}
            elif suffix == ".toml":
                data = _load_toml(text)
            elif suffix == ".json":
                data = json.loads(text)
            else:
                raise ConfigError(
                    f"{file}: unknown policy format {suffix!r}; use .yaml, .toml or .json"
                )
        except ConfigError:
            raise
        except Exception as exc:
            raise ConfigError(f"{file}: cannot parse: {exc}") from exc
        try:
            return cls.from_dict(data)
        except ConfigError as exc:
            raise ConfigError(f"{file}: {exc}") from None


def _label(category: CategoryLike) -> str:
    name = category.short_name if isinstance(category, Category) else category.name
    return f"{category.code} {name}"


def _load_toml(text: str) -> Any:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - Python 3.10
        import tomli as tomllib
    return tomllib.loads(text)


def _code_order(code: str) -> tuple[int, str]:
    digits = code[1:]
    return (int(digits) if digits.isdigit() else 999, code)


def _explain(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(p) for p in error["loc"]) or "policy"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            parent = error["loc"][:-1]
            model: type[BaseModel] = Policy if len(parent) == 0 else HookPolicy
            allowed = ", ".join(model.model_fields)
            message = f"unknown key; allowed keys: {allowed}"
        problems.append(f"{where}: {message}")
    return "invalid policy: " + "; ".join(problems)
