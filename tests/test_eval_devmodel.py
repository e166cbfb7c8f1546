"""The evaluation harness on the tiny random-weight dev model (TransformersBackend): real
scores flow into the sweep and plots. Its verdicts are meaningless; only the plumbing is tested."""

from __future__ import annotations

import asyncio
import importlib.util
import io
import json
from pathlib import Path
from typing import Any

import pytest

from guard_plugins import Guard
from guard_plugins.evaluation.harness import parse_eval_args, run_eval_command

pytestmark = pytest.mark.model

XSTEST = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "xstest_prompts.csv"


def test_eval_xstest_on_the_dev_model(tiny_backend: Any, tmp_path: Path) -> None:
    if not XSTEST.is_file():
        pytest.skip(f"{XSTEST} is not available")
    out = tmp_path / "out"
    argv = ["--format", "xstest", str(XSTEST), "--limit", "5", "--out", str(out)]
    stdout = io.StringIO()
    code = run_eval_command(
        parse_eval_args([*argv, "--no-progress"]),
        lambda: Guard(tiny_backend),
        stdout=stdout,
        stderr=io.StringIO(),
    )
    assert code == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["scored"] == 5 and report["counts"]["errors"] == 0
    assert report["config"]["backend"] == "transformers"
    sweep = report["metrics"]["sweep"]
    assert sweep["scored"] == 5 and sweep["unscored"] == 0
    records = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert all(0.0 <= r["score"] <= 1.0 for r in records)
    assert all(r["flagged"] == (r["score"] >= 0.5) for r in records)
    assert (out / "roc_curve.png").is_file() and (out / "pr_curve.png").is_file()
    assert "overall" in stdout.getvalue()
    # a rerun reuses every result
    again = run_eval_command(
        parse_eval_args([*argv, "--no-progress"]),
        lambda: Guard(tiny_backend),
        stdout=io.StringIO(),
        stderr=io.StringIO(),
    )
    assert again == 0
    report2 = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report2["timing"]["checked_now"] == 0
    assert report2["metrics"] == report["metrics"]


def test_example_script_runs_on_the_dev_model(
    tiny_model_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not XSTEST.is_file():
        pytest.skip(f"{XSTEST} is not available")
    script = Path(__file__).resolve().parents[1] / "examples" / "eval_xstest.py"
    spec = importlib.util.spec_from_file_location("eval_xstest_example", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("GUARD_PLUGINS_MODEL", str(tiny_model_dir))
    monkeypatch.delenv("GUARD_PLUGINS_ENDPOINT", raising=False)
    out = tmp_path / "example"
    argv = ["--limit", "4", "--out", str(out), "--data", str(XSTEST)]
    assert asyncio.run(module.main(argv)) == 0
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["scored"] == 4


def test_guard_plugins_eval_command(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    if not XSTEST.is_file():
        pytest.skip(f"{XSTEST} is not available")
    from guard_plugins.cli import main

    out = tmp_path / "cli"
    argv = ["eval", "--format", "xstest", str(XSTEST), "--sample", "3", "--out", str(out)]
    assert main([*argv, "--model", str(tiny_model_dir), "--no-progress", "--no-plots"]) == 0
    assert "overall" in capsys.readouterr().out
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["counts"]["scored"] == 3 and report["config"]["model"]
    assert not (out / "roc_curve.png").exists()
