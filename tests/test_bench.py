"""``guard-plugins bench --quick``: the JSON document's structure (never its timings).

Timings on shared CI machines are noise; these tests check that every suite ran and reported the
documented fields, plus facts that do not depend on the clock (token counts, which checks were
released, which targets were evaluated).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from guard_plugins import cli
from guard_plugins.bench import SCHEMA, SUITES

SUMMARY_KEYS = {"n", "p50", "p99", "mean", "min", "max"}


def _run(tmp_path: Path, *args: str) -> dict[str, Any]:
    out = tmp_path / "bench.json"
    assert cli.main(["bench", "--quick", *args, "--out", str(out)]) == 0
    document: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return document


def _check_backend(suite: dict[str, Any]) -> None:
    baseline, ours = suite["baseline"], suite["backend"]
    assert set(baseline["latency_ms"]) == SUMMARY_KEYS
    assert set(ours["latency_ms"]) == SUMMARY_KEYS
    assert set(ours["throughput_cps"]) == {"1", "8", "32"}
    assert set(suite["ratios"]["throughput"]) == {"1", "8", "32"}
    for key in ("throughput_best", "tokens_per_check", "latency_p50", "latency_p99",
                "latency_paired_median", "prefix_cache_tokens"):
        assert isinstance(suite["ratios"][key], float), key
    assert suite["prompts"]["baseline_ids_identical"] is True
    assert set(suite["by_workload"]) == {"short", "long", "multi_turn"}
    # Token counts are exact, not timings: the prefix cache skips the shared prefix, the baseline
    # runs the whole prompt plus two decode steps.
    prefix = min(ours["prefix_tokens"].values())
    assert prefix > 100
    mean_prompt = suite["prompts"]["mean_prompt_tokens"]
    assert baseline["tokens_per_check"] == pytest.approx(mean_prompt + 2, abs=0.1)
    assert suite["prefix_cache_off"]["tokens_per_check"] == pytest.approx(mean_prompt + 1, abs=0.1)
    assert ours["tokens_per_check"] < suite["prefix_cache_off"]["tokens_per_check"] - 100
    assert ours["decoded_fraction"] == 0.0  # threshold 1.0: the safe path
    unsafe = suite["unsafe_path"]
    assert unsafe["tokens_per_check"] >= unsafe["safe_path_tokens_per_check"] + 3  # unsafe, \n, code
    # Packed rows carry no padding; the same call in padded sub-batches does.
    packing = suite["packing"]
    assert packing["packed_padding_tokens"] == 0 < packing["padded_padding_tokens"]
    assert packing["auto_padding_tokens"] <= packing["padded_padding_tokens"]
    # Conversations checked turn by turn reuse what earlier checks of them computed.
    sessions = suite["sessions"]
    assert sessions["checks"] == 4 * sessions["sessions"] > 0
    assert sessions["conversation_hits"] == 2 * sessions["sessions"]
    saved = sessions["baseline"]["tokens_per_check"] - sessions["backend"]["tokens_per_check"]
    assert saved > prefix  # at least the template prefix, and earlier turns on reuse
    assert sessions["tokens_ratio"] == suite["ratios"]["sessions_tokens_per_check"]
    for entry in [*ours["by_batch"].values(), suite["single_sub_batch"], packing["packed"],
                  packing["padded"]]:
        assert {"throughput_cps", "relative_to_batch_1", "padding_tokens", "sub_batch_limit",
                "peak_working_rss_mb"} <= set(entry)


def _check_agent(suite: dict[str, Any]) -> None:
    turns = suite["turns"]
    assert set(turns["reply"]) == {"unguarded", "sequential", "speculative"}
    assert set(turns["tool"]) == {"unguarded", "sequential", "speculative",
                                  "speculative_tool_result"}
    for strategies in turns.values():
        for entry in strategies.values():
            assert {"wall_ms", "expected_ms", "ratio_to_unguarded", "model_time_ms",
                    "released"} <= set(entry)
    assert all(e["released"] for t in ("reply", "tool") for e in turns[t].values())
    assert not any(e["released"] for e in turns["blocked"].values())
    assert turns["blocked"]["sequential"]["model_time_ms"] == 0.0  # the model never ran


@pytest.mark.model
def test_quick_run_reports_every_suite(tmp_path: Path, tiny_model_dir: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    document = _run(tmp_path, "--model", str(tiny_model_dir))
    assert document["schema"] == SCHEMA
    assert document["mode"] == "quick"
    assert list(document["suites"]) == list(SUITES)
    assert document["model"]["dev_model"] is True
    assert {"cpu_count", "python", "torch"} <= set(document["machine"])
    _check_backend(document["suites"]["backend"])

    guard = document["suites"]["guard"]
    for name in ("simulated", "model"):
        assert {"checks", "sequential_s", "concurrent_s", "speedup",
                "mean_backend_batch"} <= set(guard[name])
    assert guard["simulated"]["mean_backend_batch"] > 1  # concurrent checks were batched

    _check_agent(document["suites"]["agent"])

    adapters = document["suites"]["adapters"]
    assert set(adapters["core"]) >= {"user_input", "assistant_output", "tool_call", "tool_result"}
    assert all(set(s) == SUMMARY_KEYS for s in adapters["core"].values())
    for name in ("langchain", "llamaindex"):
        entry = adapters[name]
        assert "skipped" in entry or "import" in entry

    streaming = document["suites"]["streaming"]
    if "skipped" not in streaming:
        for way in ("unguarded", "incremental", "whole_reply"):
            assert {"first_chunk_ms", "last_chunk_ms", "checks",
                    "total_ratio_to_unguarded"} <= set(streaming[way])
        # The incremental screen checks sentence by sentence, then the whole reply once more.
        assert streaming["unguarded"]["checks"] == 0 and streaming["whole_reply"]["checks"] == 1
        assert streaming["incremental"]["checks"] >= 3

    targets = document["targets"]
    assert len(targets) == 5
    assert all(t["met"] in (True, False) for t in targets)  # every target was measured
    assert "phase_peak_working_mb" in document["memory"]
    printed = capsys.readouterr().out
    assert "targets" in printed and "backend" in printed


def test_without_model_or_datasets(tmp_path: Path) -> None:
    document = _run(tmp_path, "--suites", "agent", "--datasets", str(tmp_path / "missing"))
    assert document["model"] is None
    assert document["datasets"]["origin"] == "builtin"
    assert any("built-in sample prompts" in note for note in document["notes"])
    assert document["suites"]["backend"] == {"skipped": "not selected (--suites)"}
    _check_agent(document["suites"]["agent"])
    statuses = {t["name"]: t["met"] for t in document["targets"]}
    assert statuses["throughput vs baseline"] is None  # not measured, not failed


def test_unknown_suite_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--suites", "backend,nope"])
    assert exc.value.code == 2
    assert "nope" in capsys.readouterr().err
