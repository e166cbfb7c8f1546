"""The run's results: targets checked, the JSON document, and the compact stdout table.

JSON schema ``guard-plugins-bench/1`` (docs/performance.md documents every field)::

    {"schema", "mode", "command", "started_at", "duration_s", "machine", "settings",
     "model" | null, "datasets", "suites": {"backend", "guard", "agent", "adapters"},
     "targets": [{"name", "metric", "value", "target", "comparison", "met"}],
     "memory": {"ru_maxrss_mb", "phase_peak_working_mb"}, "notes": [...]}

Every suite key is always present; a suite that did not run is ``{"skipped": reason}``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["SCHEMA", "evaluate_targets", "format_table", "write_json"]

SCHEMA = "guard-plugins-bench/1"

# (name, JSON path, comparison, target)
_TARGETS: tuple[tuple[str, tuple[str, ...], str, float], ...] = (
    ("throughput vs baseline", ("backend", "ratios", "throughput_best"), ">=", 4.0),
    ("tokens computed per check vs baseline", ("backend", "ratios", "tokens_per_check"), "<=", 0.4),
    (
        "tokens computed per check vs baseline, conversations checked turn by turn",
        ("backend", "ratios", "sessions_tokens_per_check"),
        "<=",
        0.4,
    ),
    ("single-check latency p50 vs baseline", ("backend", "ratios", "latency_p50"), "<=", 0.6),
    (
        "agent reply turn, speculative input check, vs unguarded",
        ("agent", "turns", "reply", "speculative", "ratio_to_unguarded"),
        "<=",
        1.2,
    ),
)


def _get(data: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = data
    for key in path:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def evaluate_targets(suites: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each target with its measured value and whether it is met (None: not measured)."""
    targets = []
    for name, path, comparison, target in _TARGETS:
        value = _get(suites, path)
        met = None
        if isinstance(value, (int, float)) and not math.isnan(value):
            met = value >= target if comparison == ">=" else value <= target
        targets.append({
            "name": name,
            "metric": "suites." + ".".join(path),
            "value": value,
            "target": target,
            "comparison": comparison,
            "met": met,
        })
    return targets


def write_json(document: Mapping[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def _f(value: Any, digits: int = 1) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        return f"{value:.{digits}f}"
    return str(value)


def _rows(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = [title]
    for row in table:
        rest = zip(row[1:], widths[1:], strict=True)
        cells = [row[0].ljust(widths[0])] + [c.rjust(w) for c, w in rest]
        lines.append("  " + "  ".join(cells))
    return lines


def _backend_lines(suite: Mapping[str, Any]) -> list[str]:
    base, ours, ratios = suite["baseline"], suite["backend"], suite["ratios"]
    off = suite["prefix_cache_off"]
    rows = [
        ["single check p50 (ms)", _f(base["latency_ms"]["p50"]), _f(ours["latency_ms"]["p50"]),
         _f(off["latency_ms"]["p50"]), _f(ratios["latency_p50"], 2)],
        ["single check p99 (ms)", _f(base["latency_ms"]["p99"]), _f(ours["latency_ms"]["p99"]),
         _f(off["latency_ms"]["p99"]), _f(ratios["latency_p99"], 2)],
        ["tokens computed / check", _f(base["tokens_per_check"]), _f(ours["tokens_per_check"]),
         _f(off["tokens_per_check"]), _f(ratios["tokens_per_check"], 2)],
    ]
    rows.append(["throughput, phase A (checks/s)", _f(base["throughput_cps"], 2),
                 _f(ours["phase_a_throughput_cps"], 2), _f(off["throughput_cps"], 2),
                 _f(ratio_of(ours["phase_a_throughput_cps"], base["throughput_cps"]), 2)])
    for size, cps in ours["throughput_cps"].items():
        rows.append([f"throughput batch {size} (checks/s)", "", _f(cps, 2), "",
                     _f(ratios["throughput"][size], 2)])
    rows.append(["peak working RSS, one check (MB)", _f(base["peak_working_rss_mb"]),
                 _f(ours["peak_working_rss_mb"]), _f(off["peak_working_rss_mb"]), ""])
    largest = list(ours["by_batch"])[-1]
    single = suite["single_sub_batch"]
    rows.append([f"batch {largest} as one sub-batch (checks/s)", "",
                 _f(single["throughput_cps"], 2), "", ""])
    rows.append([f"peak working RSS, batch {largest} (MB)", "",
                 _f(ours["by_batch"][largest]["peak_working_rss_mb"]), "", ""])
    rows.append(["  ... as one sub-batch (MB)", "", _f(single["peak_working_rss_mb"]), "", ""])
    packing = suite.get("packing")
    if packing:
        rows.append([f"batch {largest} always packed (checks/s)", "",
                     _f(packing["packed"]["throughput_cps"], 2), "", ""])
        rows.append([f"batch {largest} always padded (checks/s)", "",
                     _f(packing["padded"]["throughput_cps"], 2), "", ""])
    sessions = suite.get("sessions")
    if sessions:
        s_base, s_ours = sessions["baseline"], sessions["backend"]
        rows.append(["sessions: tokens / check", _f(s_base["tokens_per_check"]),
                     _f(s_ours["tokens_per_check"]), "", _f(sessions["tokens_ratio"], 2)])
        rows.append(["sessions: check p50 (ms)", _f(s_base["latency_ms"]["p50"]),
                     _f(s_ours["latency_ms"]["p50"]), "", _f(sessions["latency_p50_ratio"], 2)])
    bucket = suite["length_bucketing"]
    lines = _rows("backend (baseline = release-notes generate(); ours = TransformersBackend)",
                  ["", "baseline", "ours", "no prefix", "ours/base"], rows)
    lines.append(
        f"  weights {_f(suite['weights_mb'])} MB each; length bucketing, {bucket['checks']} checks "
        f"in sub-batches of {bucket['sub_batch_limit']}: padding "
        f"{bucket['bucketed_padding_tokens']} tokens sorted vs "
        f"{bucket['arrival_order_padding_tokens']} in arrival order, "
        f"{_f(bucket['throughput_ratio'], 2)}x throughput"
    )
    if packing:
        lines.append(
            f"  packing: batch {largest} pads {packing['padded_padding_tokens']} tokens padded, "
            f"{packing['packed_padding_tokens']} packed, {packing['auto_padding_tokens']} auto; "
            f"throughput packed/padded {_f(packing['packed_vs_padded'], 2)}x, "
            f"auto/padded {_f(packing['auto_vs_padded'], 2)}x"
        )
    if sessions:
        lines.append(
            f"  sessions: {sessions['checks']} checks of {sessions['sessions']} conversations, "
            f"turn by turn; {sessions['conversation_hits']} reused an earlier check's KV"
        )
    return lines


def ratio_of(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def _guard_lines(suite: Mapping[str, Any]) -> list[str]:
    rows = []
    for name in ("simulated", "model"):
        entry = suite.get(name, {})
        if "skipped" in entry:
            continue
        rows.append([f"{name}: {entry['checks']} checks", _f(entry["sequential_s"], 3),
                     _f(entry["concurrent_s"], 3), _f(entry["speedup"], 2),
                     _f(entry["mean_backend_batch"])])
    return _rows("guard micro-batching (acheck_input, cache off)",
                 ["", "sequential s", "concurrent s", "speedup", "mean batch"], rows)


def _agent_lines(suite: Mapping[str, Any]) -> list[str]:
    lat = suite["latencies_ms"]
    rows = []
    for turn, strategies in suite["turns"].items():
        for strategy, entry in strategies.items():
            rows.append([f"{turn} / {strategy}", _f(entry["wall_ms"]), _f(entry["expected_ms"]),
                         _f(entry["ratio_to_unguarded"], 3), _f(entry["model_time_ms"])])
    title = (f"agent turn (model {lat['model_call']:.0f} ms, guard {lat['guard_check']:.0f} ms, "
             f"tool {lat['tool_run']:.0f} ms)")
    return _rows(title, ["", "wall ms", "expected", "x unguarded", "model ms"], rows)


def _adapter_lines(suite: Mapping[str, Any]) -> list[str]:
    rows = [[f"core {hook}", "", _f(s["p50"]), _f(s["p99"]), ""]
            for hook, s in suite["core"].items()]
    for name in ("langchain", "llamaindex"):
        entry = suite.get(name, {})
        if "skipped" in entry:
            rows.append([f"{name}: skipped ({entry['skipped']})", "", "", "", ""])
            continue
        for key, value in entry.items():
            if isinstance(value, Mapping) and "overhead_us_p50" in value:
                rows.append([f"{name} {key} ({value['hooks_per_call']} hooks)",
                             _f(value["plain_us"]["p50"]), _f(value["guarded_us"]["p50"]),
                             _f(value["guarded_us"]["p99"]), _f(value["overhead_us_p50"])])
    return _rows("guard overhead per call, zero-latency backend (us)",
                 ["", "plain p50", "p50", "p99", "added p50"], rows)


def _streaming_lines(suite: Mapping[str, Any]) -> list[str]:
    rows = []
    for way in ("unguarded", "incremental", "whole_reply"):
        entry = suite[way]
        rows.append([way, _f(entry["first_chunk_ms"]), _f(entry["last_chunk_ms"]),
                     _f(entry["total_ratio_to_unguarded"], 3), str(entry["checks"])])
    title = (f"streamed reply ({suite['reply_words']} words, {_f(suite['word_ms'])} ms each; "
             f"guard {_f(suite['guard_check_ms'])} ms per check)")
    return _rows(title, ["", "first chunk ms", "last chunk ms", "x unguarded", "checks"], rows)


def format_table(document: Mapping[str, Any]) -> str:
    """The compact human-readable summary printed on stdout."""
    model = document.get("model") or {}
    machine = document["machine"]
    head = (f"guard-plugins bench ({document['mode']}): model "
            f"{Path(model['path']).name if model else 'none'}"
            f"{' (random-weight dev model)' if model.get('dev_model') else ''}; "
            f"{machine.get('cpu_count')} CPUs, torch threads {machine.get('torch_threads', '-')}; "
            f"prompts: {document['datasets']['origin']}")
    lines = [head]
    render = {"backend": _backend_lines, "guard": _guard_lines, "agent": _agent_lines,
              "adapters": _adapter_lines, "streaming": _streaming_lines}
    for name, suite in document["suites"].items():
        lines.append("")
        if "skipped" in suite:
            lines.append(f"{name}: skipped ({suite['skipped']})")
            continue
        lines.extend(render[name](suite))
    lines.append("")
    lines.append("targets")
    for target in document["targets"]:
        status = {True: "met", False: "NOT met", None: "not measured"}[target["met"]]
        lines.append(f"  {target['name']}: {_f(target['value'], 3)} "
                     f"(target {target['comparison']} {target['target']}) {status}")
    for note in document.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
