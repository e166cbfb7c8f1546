"""Policy validation, defaults and loading from files."""

from __future__ import annotations

from pathlib import Path

import pytest

from guard_plugins import Action, Category, ConfigError, Hook, HookPolicy, Policy


def test_defaults_a_reviewer_would_sign() -> None:
    policy = Policy()
    assert policy.user_input.action is Action.BLOCK
    assert policy.assistant_output.action is Action.REFUSE
    assert policy.tool_call.action is Action.BLOCK
    assert all(policy.for_hook(h).fail_mode == "closed" for h in Hook)
    assert all(len(policy.categories_for(h)) == 14 for h in Hook)
    assert not policy.monitor
    assert not policy.log_content


def test_partial_hook_keeps_its_default_action() -> None:
    policy = Policy.from_dict({"assistant_output": {"threshold": 0.3}})
    assert policy.assistant_output.action is Action.REFUSE
    assert policy.assistant_output.threshold == 0.3


def test_thresholds_and_actions_per_category() -> None:
    hp = HookPolicy(threshold=0.6, thresholds={"s14": 0.2}, actions={"S6": "warn"})
    assert hp.threshold_for(Category.S14) == 0.2
    assert hp.threshold_for("S1") == 0.6
    assert hp.request_threshold == 0.2
    assert hp.action_for("S6") is Action.WARN
    assert hp.action_for(Category.S1) is Action.BLOCK


def test_excluded_categories_leave_the_prompt() -> None:
    policy = Policy.from_dict({"user_input": {"exclude": "S6,S8"}})
    codes = [c.code for c in policy.categories_for("user_input")]
    assert "S6" not in codes and "S8" not in codes and len(codes) == 12


def test_s14_may_run_only_by_explicit_choice(caplog: pytest.LogCaptureFixture) -> None:
    for risky in (
        {"actions": {"S14": "warn"}},
        {"exclude": ["S14"]},
        {"enabled": False},
        {"categories": ["S1"]},
    ):
        with pytest.raises(ConfigError, match="allow_s14_execution"):
            Policy.from_dict({"tool_call": risky})
    with caplog.at_level("WARNING", logger="guard_plugins.policy"):
        policy = Policy.from_dict(
            {"tool_call": {"actions": {"S14": "warn"}}, "allow_s14_execution": True}
        )
    assert policy.tool_call.action_for("S14") is Action.WARN
    assert "allows S14" in caplog.text


def test_s14_require_approval_is_allowed_without_the_switch() -> None:
    policy = Policy.from_dict({"tool_call": {"actions": {"S14": "require_approval"}}})
    assert policy.tool_call.action_for("S14") is Action.REQUIRE_APPROVAL


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"tool_cal": {}}, "tool_cal: unknown key; allowed keys: user_input"),
        (
            {"user_input": {"treshold": 0.3}},
            "user_input.treshold: unknown key; allowed keys: enabled",
        ),
        (
            {"user_input": {"action": "explode"}},
            "'allow', 'warn', 'require_approval', 'refuse' or 'block'",
        ),
        ({"user_input": {"threshold": 2}}, "user_input.threshold"),
        ({"user_input": {"thresholds": {"S1": 0}}}, "threshold for S1"),
        ({"user_input": {"exclude": ["S99"]}}, "unknown category code(s) S99"),
        ({"user_input": {"fail_mode": "ajar"}}, "'closed' or 'open'"),
        ({"monitor": "sometimes"}, "monitor"),
    ],
)
def test_bad_values_name_the_key_and_allowed_values(data: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        Policy.from_dict(data)
    assert fragment in str(info.value)


def test_custom_categories_replace_s1_s14() -> None:
    policy = Policy.from_dict(
        {
            "custom_categories": [{"code": "C1", "name": "Competitors"}],
            "tool_call": {"actions": {"C1": "warn"}},
        }
    )
    assert [c.code for c in policy.categories_for("user_input")] == ["C1"]


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("p.yaml", "monitor: true\ntool_call:\n  threshold: 0.25\n"),
        ("p.toml", "monitor = true\n[tool_call]\nthreshold = 0.25\n"),
        ("p.json", '{"monitor": true, "tool_call": {"threshold": 0.25}}'),
    ],
)
def test_from_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    policy = Policy.from_file(path)
    assert policy.monitor and policy.tool_call.threshold == 0.25


def test_from_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("user_input:\n  actions: {S1: nope}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: .*user_input\.actions\.S1"):
        Policy.from_file(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        Policy.from_file(tmp_path / "missing.yaml")
    weird = tmp_path / "p.ini"
    weird.write_text("x")
    with pytest.raises(ConfigError, match="unknown policy format"):
        Policy.from_file(weird)
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ConfigError, match="cannot parse"):
        Policy.from_file(broken)
