"""The evaluation runner end to end on FunctionBackends with known answers: metrics computed by
hand, errors recorded per row, resumability after an interruption, reports and plots, the CLI."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from guard_plugins import Category, Guard, Verdict
from guard_plugins.conversation import Conversation
from guard_plugins.errors import BackendUnavailable, ConfigError
from guard_plugins.evaluation import Dataset, EvalExample, EvalRecord, evaluate, run_eval
from guard_plugins.evaluation.cli import build_guard, register
from guard_plugins.evaluation.harness import parse_eval_args, run_eval_command
from guard_plugins.evaluation.runner import read_results
from guard_plugins.testing import FunctionBackend

# text -> the backend's answer; the gold label and expected codes are in DATASET.
ANSWERS: dict[str, Any] = {
    "pos-hit": Verdict(False, (Category.S1,), 0.9),  # TP, names S1
    "pos-wrong-code": Verdict(False, (Category.S2,), 0.8),  # TP, names S2 (expected S1)
    "pos-missed": Verdict(True, (), 0.3),  # FN
    "pos-s10": Verdict(False, (Category.S10,), 0.7),  # TP, names S10
    "neg-fp": Verdict(False, (Category.S1,), 0.6),  # FP
    "neg-1": Verdict(True, (), 0.2),  # TN
    "neg-2": Verdict(True, (), 0.1),  # TN
    "neg-crash": RuntimeError("backend bug"),  # error row: fail-closed decision
    "pos-down": BackendUnavailable("connection refused"),  # error row: fail-closed decision
}
DATASET = Dataset(
    "toy",
    (
        EvalExample("toy:0", "pos-hit", True, ("S1",)),
        EvalExample("toy:1", "pos-wrong-code", True, ("S1",)),
        EvalExample("toy:2", "pos-missed", True, ("S10",)),
        EvalExample("toy:3", "pos-s10", True, ("S10",)),
        EvalExample("toy:4", "neg-fp", False),
        EvalExample("toy:5", "neg-1", False),
        EvalExample("toy:6", "neg-2", False),
        EvalExample("toy:7", "neg-crash", False),
        EvalExample("toy:8", "pos-down", True, ("S1",)),
        EvalExample("toy:9", "   ", False),  # error row: the Guard raises ConversationError
    ),
)


def answer(conversation: Conversation) -> Verdict:
    result = ANSWERS[conversation.turns()[-1].text]
    if isinstance(result, Exception):
        raise result
    assert isinstance(result, Verdict)
    return result


def guard(**kwargs: Any) -> Guard:
    return Guard(FunctionBackend(answer, **kwargs))


def deterministic(report: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in report.items() if k != "timing"}


async def test_metrics_match_hand_computed_values(tmp_path: Path) -> None:
    report = await evaluate(guard(), DATASET, tmp_path, target_fpr=0.05)
    m = report.data["metrics"]
    o = m["overall"]
    assert (o["tp"], o["fp"], o["tn"], o["fn"]) == (3, 1, 2, 1)
    assert o["recall"] == {"value": 0.75, "num": 3, "den": 4}
    assert o["fpr"]["num"] == 1 and o["fpr"]["den"] == 3
    assert o["precision"]["value"] == 0.75
    assert o["f1"] == {"value": 0.75, "num": 6, "den": 8}
    assert m["category_accuracy"] == {"value": pytest.approx(2 / 3), "num": 2, "den": 3}
    s1, s10 = m["per_category"]
    assert (s1["code"], s1["tp"], s1["fn"], s1["fp"], s1["tn"]) == ("S1", 2, 0, 1, 2)
    assert s1["f1"]["num"] == 4 and s1["f1"]["den"] == 5
    assert (s10["code"], s10["tp"], s10["fn"]) == ("S10", 1, 1)
    assert s10["f1"]["value"] == 0.5
    assert m["macro"]["recall"] == {"value": 0.75, "n": 2}
    assert m["macro"]["f1"]["value"] == pytest.approx((0.8 + 0.5) / 2)
    assert m["macro"]["precision"]["value"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert m["sweep"]["auroc"] == pytest.approx(11 / 12)
    assert m["at_target_fpr"]["threshold"] == 0.7
    counts = report.data["counts"]
    assert (counts["scored"], counts["errors"], counts["not_run"]) == (7, 3, 0)
    assert counts["error_kinds"] == {
        "RuntimeError": 1,
        "BackendUnavailable": 1,
        "ConversationError": 1,
    }
    # fail-closed decisions are errors for the metrics but their actions are counted
    assert counts["actions"] == {
        "unsafe": {"allow": 1, "block": 4},
        "safe": {"allow": 2, "block": 2},
    }
    names = sorted(p.name for p in report.files)
    assert names == ["pr_curve.png", "report.json", "report.md", "roc_curve.png"]
    for png in ("pr_curve.png", "roc_curve.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    on_disk = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))
    assert deterministic(on_disk) == deterministic(report.data)
    markdown = (tmp_path / "report.md").read_text(encoding="utf-8")
    assert "| overall | 0.750 (3/4) | 0.333 (1/3) | 0.750 (3/4) | 0.750 (6/8) |" in markdown
    assert "| S10 Hate | 0.500 (1/2) |" in markdown
    assert "![roc_curve](roc_curve.png)" in markdown
    assert "RuntimeError: 1" in markdown


async def test_results_file_records_every_row(tmp_path: Path) -> None:
    await run_eval(guard(), DATASET, tmp_path)
    records, bad = read_results(tmp_path / "results.jsonl")
    assert bad == 0 and sorted(records) == sorted(e.id for e in DATASET)
    hit = records["toy:0"]
    assert (hit.label, hit.flagged, hit.score, hit.categories) == (True, True, 0.9, ("S1",))
    assert hit.action == "block" and hit.rule == "category:S1" and hit.error is None
    crash = records["toy:7"]
    assert crash.flagged is None and crash.error == "RuntimeError: backend bug"
    assert crash.action == "block" and crash.rule == "fail_closed:RuntimeError"
    raised = records["toy:9"]
    assert raised.action is None and raised.error is not None
    assert raised.error.startswith("ConversationError: ")
    down = records["toy:8"]
    assert down.action == "block" and down.error is not None
    assert down.error.startswith("BackendUnavailable")
    text = (tmp_path / "results.jsonl").read_text(encoding="utf-8")
    assert "pos-hit" not in text  # the checked text is never written


async def test_concurrent_checks_are_micro_batched(tmp_path: Path) -> None:
    backend = FunctionBackend(lambda c: "safe", delay=0.01)
    examples = tuple(EvalExample(f"b:{i}", f"text {i}", False) for i in range(40))
    result = await run_eval(Guard(backend), Dataset("b", examples), tmp_path, concurrency=8)
    assert result.checked == 40 and max(backend.batch_sizes) > 1
    assert len(backend.requests) == 40


class Stop(Exception):
    pass


class StopAfter:
    """A progress sink that interrupts the run after `n` results (like Ctrl-C would)."""

    def __init__(self, n: int) -> None:
        self.n = n

    def advance(self, record: EvalRecord) -> None:
        self.n -= 1
        if self.n <= 0:
            raise Stop

    def close(self) -> None:
        return None


async def test_resume_after_interruption_equals_uninterrupted_run(tmp_path: Path) -> None:
    full = await evaluate(guard(), DATASET, tmp_path / "full", plots=False)
    out = tmp_path / "resumed"
    with pytest.raises(Stop):
        await run_eval(guard(), DATASET, out, concurrency=2, progress=lambda t, d: StopAfter(3))
    first, _ = read_results(out / "results.jsonl")
    assert 3 <= len(first) < len(DATASET)
    backend = FunctionBackend(answer)
    resumed = await evaluate(Guard(backend), DATASET, out, plots=False)
    lines = (out / "results.jsonl").read_text(encoding="utf-8").splitlines()
    ids = [json.loads(line)["id"] for line in lines]
    done_first = {i for i, r in first.items() if r.error is None}
    # rows finished in the first run were not checked again; failed rows were retried once
    checked_again = {r.conversation.turns()[-1].text for r in backend.requests}
    assert not checked_again & {e.text for e in DATASET if e.id in done_first}
    assert all(ids.count(i) == 1 for i in done_first)
    assert len(ids) == len(set(ids)) + sum(1 for r in first.values() if r.error)
    assert deterministic(resumed.data) == deterministic(full.data)
    assert resumed.data["timing"]["reused"] == len(done_first)


async def test_resume_after_backend_outage_and_limit(tmp_path: Path) -> None:
    full = await evaluate(guard(), DATASET, tmp_path / "full", plots=False)
    out = tmp_path / "out"

    def outage(conversation: Conversation) -> Verdict:
        raise BackendUnavailable("down")

    # run 1: the first three examples only; run 2: the backend is down for the rest
    await run_eval(guard(), Dataset("toy", DATASET.examples[:3]), out)
    down = await evaluate(Guard(FunctionBackend(outage)), DATASET, out, plots=False)
    assert down.data["counts"]["errors"] == len(DATASET) - 3
    kept = await evaluate(guard(), DATASET, out, plots=False, retry_errors=False)
    assert kept.data["counts"]["errors"] == len(DATASET) - 3
    healed = await evaluate(guard(), DATASET, out, plots=False)
    assert deterministic(healed.data) == deterministic(full.data)
    records, _ = read_results(out / "results.jsonl")
    assert len(records) == len(DATASET)


async def test_report_covers_only_the_selected_examples(tmp_path: Path) -> None:
    await run_eval(guard(), DATASET, tmp_path)
    small = Dataset("toy", DATASET.examples[:2])
    report = await evaluate(guard(), small, tmp_path, plots=False)
    assert report.data["counts"]["results"] == 2
    assert report.data["metrics"]["overall"]["tp"] == 2
    assert report.data["timing"]["checked_now"] == 0


async def test_partial_last_line_is_ignored(tmp_path: Path) -> None:
    await run_eval(guard(), Dataset("toy", DATASET.examples[:2]), tmp_path)
    with (tmp_path / "results.jsonl").open("a", encoding="utf-8") as handle:
        handle.write('{"id": "toy:2", "lab')
    result = await run_eval(guard(), DATASET, tmp_path)
    assert result.unreadable_lines == 1 and result.checked == len(DATASET) - 2


async def test_other_configuration_refused_unless_fresh(tmp_path: Path) -> None:
    await run_eval(guard(), DATASET, tmp_path)
    with pytest.raises(ConfigError, match="hook"):
        await run_eval(guard(), DATASET, tmp_path, hook="assistant_output")
    result = await run_eval(guard(), DATASET, tmp_path, hook="assistant_output", fresh=True)
    assert result.checked == len(DATASET)


async def test_hooks_build_the_matching_conversation(tmp_path: Path) -> None:
    backend = FunctionBackend(lambda c: "safe")
    example = EvalExample("h:1", "print(1)", False, prompt="write code")
    data = Dataset("h", (example,))
    for hook in ("assistant_output", "tool_call"):
        await run_eval(Guard(backend), data, tmp_path / hook, hook=hook)
    reply, call = backend.requests
    assert [t.role for t in reply.conversation.turns()] == ["User", "Agent"]
    assert reply.conversation.turns()[-1].text == "print(1)"
    assert "Tool call: python" in call.conversation.turns()[-1].text


async def test_unscored_backend_skips_sweep_and_plots(tmp_path: Path) -> None:
    backend = FunctionBackend(lambda c: "unsafe\nS1" if "pos" in c.turns()[-1].text else "safe")
    data = Dataset("toy", DATASET.examples[:7])
    report = await evaluate(Guard(backend), data, tmp_path)
    sweep = report.data["metrics"]["sweep"]
    assert (sweep["scored"], sweep["unscored"], sweep["auroc"]) == (0, 7, None)
    assert report.data["metrics"]["at_target_fpr"] is None
    assert not (tmp_path / "roc_curve.png").exists()
    assert "no scores" in report.table()


def test_command_sync_entry_point(tmp_path: Path) -> None:
    data = tmp_path / "toy.jsonl"
    rows = [{"text": e.text, "label": e.unsafe, "cats": list(e.categories)} for e in DATASET]
    rows[-1]["text"] = "neg-1"  # the loader would skip the blank row
    data.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    args = parse_eval_args(
        [str(data), "--category-col", "cats", "--out", str(out), "--no-progress"]
    )
    stdout, stderr = io.StringIO(), io.StringIO()
    assert run_eval_command(args, guard, stdout=stdout, stderr=stderr) == 0
    table = stdout.getvalue()
    assert "overall" in table and "0.750 (3/4)" in table and "S10 Hate" in table
    assert "2 example(s) failed" in stderr.getvalue()
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert report["metrics"]["overall"]["f1"]["value"] == 0.75
    # everything fails: exit 1; bad data: exit 2
    broken = Guard(FunctionBackend(lambda c: "not a verdict"))
    args = parse_eval_args([str(data), "--out", str(tmp_path / "b"), "--no-progress"])
    assert run_eval_command(args, lambda: broken, stdout=stdout, stderr=stderr) == 1
    args = parse_eval_args([str(tmp_path / "absent.csv"), "--no-progress"])
    assert run_eval_command(args, guard, stdout=stdout, stderr=stderr) == 2
    assert "not found" in stderr.getvalue()


def test_registration_in_the_main_cli(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    built: list[argparse.Namespace] = []

    def add_backend_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model")

    def build_backend(args: argparse.Namespace) -> FunctionBackend:
        built.append(args)
        return FunctionBackend(answer)

    register(sub, add_backend_options, build_backend)
    args = parser.parse_args(["eval", "x.csv", "--model", "m", "--threshold", "0.3"])
    g = build_guard(args, build_backend)
    assert g.policy.user_input.threshold == 0.3 and built[0].model == "m"
    assert g.policy.tool_call.threshold == 0.5
    args = parser.parse_args(["eval", "x.csv", "--hook", "tool_call", "--threshold", "0.2"])
    assert build_guard(args, build_backend).policy.tool_call.threshold == 0.2
    assert callable(args.func)


def test_sync_command_from_a_running_loop(tmp_path: Path) -> None:
    data = tmp_path / "a.csv"
    data.write_text("text,label\npos-hit,unsafe\nneg-1,safe\n", encoding="utf-8")

    async def inside() -> int:  # e.g. a notebook: the run goes to the library's own loop
        args = parse_eval_args([str(data), "--out", str(tmp_path / "o"), "--no-progress"])
        return run_eval_command(args, guard, stdout=io.StringIO(), stderr=io.StringIO())

    assert asyncio.run(inside()) == 0
    report = json.loads((tmp_path / "o" / "report.json").read_text(encoding="utf-8"))
    assert report["metrics"]["overall"]["accuracy"]["value"] == 1.0


async def test_one_run_per_output_directory(tmp_path: Path) -> None:
    slow = Guard(FunctionBackend(answer, delay=0.2))
    first = asyncio.ensure_future(run_eval(slow, DATASET, tmp_path, concurrency=1))
    await asyncio.sleep(0.05)
    with pytest.raises(ConfigError, match="another evaluation"):
        await run_eval(guard(), DATASET, tmp_path)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    result = await run_eval(guard(), DATASET, tmp_path)  # the lock was released
    assert result.reused + result.checked == len(DATASET)


def test_plots_skipped_without_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    data = tmp_path / "a.csv"
    data.write_text("text,label\npos-hit,unsafe\nneg-1,safe\n", encoding="utf-8")
    args = parse_eval_args([str(data), "--out", str(tmp_path / "o"), "--no-progress"])
    stderr = io.StringIO()
    assert run_eval_command(args, guard, stdout=io.StringIO(), stderr=stderr) == 0
    assert "pip install 'guard-plugins[eval]'" in stderr.getvalue()
    assert "guard-plugins[eval]" in caplog.text
    assert not (tmp_path / "o" / "pr_curve.png").exists()
    assert (tmp_path / "o" / "report.md").exists()
