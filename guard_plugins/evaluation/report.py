"""The evaluation report: ``report.json`` (everything, with counts), ``report.md`` (tables)
and a compact text table for the terminal. Pure apart from `write_report`."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from guard_plugins.categories import Category
from guard_plugins.evaluation.loaders import Dataset
from guard_plugins.evaluation.metrics import EvalMetrics, Outcome, compute_metrics
from guard_plugins.evaluation.runner import EvalRecord, RunResult

__all__ = [
    "ATTRIBUTIONS",
    "REFERENCES",
    "build_report",
    "format_table",
    "outcomes",
    "render_markdown",
    "write_report",
]

#: Dataset attributions (source repository and license), by loader name.
ATTRIBUTIONS: dict[str, str] = {
    "xstest": "XSTest, Röttger et al. 2024 (paul-rottger/exaggerated-safety), CC-BY-4.0",
    "ailuminate": "MLCommons AILuminate v1.0 demo prompt set (mlcommons/ailuminate), CC-BY-4.0",
    "cyberseceval-interpreter": "CyberSecEval interpreter prompts (meta-llama/PurpleLlama), MIT",
    "cyberseceval-frr": "CyberSecEval MITRE false-refusal prompts (meta-llama/PurpleLlama), MIT",
    "openai-moderation": "OpenAI moderation samples-1680 (openai/moderation-api-release), MIT",
}

#: Published figures to compare with (see docs/evaluation.md for their caveats).
REFERENCES: dict[str, str] = {
    "openai-moderation": "Llama Guard 4-12B, prompt classification: F1 73.5 "
    "(Qwen3Guard technical report, Table 2)",
    "cyberseceval-interpreter": "Llama Guard 3-8B model card, code interpreter abuse: "
    "F1 0.885, FPR 0.125 (Meta's internal test set, not CyberSecEval)",
    "cyberseceval-frr": "Llama Guard 3-8B model card, code interpreter abuse: "
    "F1 0.885, FPR 0.125 (Meta's internal test set, not CyberSecEval)",
}


def outcomes(dataset: Dataset, records: Sequence[EvalRecord]) -> list[Outcome]:
    """Outcomes of the examples that have a successful record; gold labels from the dataset."""
    by_id = {r.id: r for r in records if r.error is None and r.flagged is not None}
    return [
        Outcome(e.unsafe, bool(r.flagged), e.categories, r.categories, r.score)
        for e in dataset
        if (r := by_id.get(e.id)) is not None
    ]


def _percentile(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def build_report(
    dataset: Dataset,
    result: RunResult,
    *,
    config: Mapping[str, Any],
    target_fpr: float = 0.05,
    metrics: EvalMetrics | None = None,
) -> dict[str, Any]:
    """The whole report as JSON-ready data. Everything outside ``timing`` is deterministic."""
    records = list(result.records)
    if metrics is None:
        metrics = compute_metrics(outcomes(dataset, records), target_fpr=target_fpr)
    labels = {e.id: e.unsafe for e in dataset}
    errors = [r for r in records if r.error is not None]
    actions: dict[str, Counter[str]] = {"unsafe": Counter(), "safe": Counter()}
    for r in records:
        if r.action is not None:
            actions["unsafe" if labels[r.id] else "safe"][r.action] += 1
    latencies = [r.latency_ms for r in records if r.error is None]
    sources = sorted({e.source for e in dataset if e.source})
    return {
        "dataset": {
            "name": dataset.name,
            "path": dataset.path,
            "examples": len(dataset),
            "positives": dataset.positives,
            "negatives": dataset.negatives,
            "skipped_rows": dict(dataset.skipped),
            "expected_categories": dataset.category_counts(),
            "sources": sources,
        },
        "config": {**config, "target_fpr": target_fpr},
        "counts": {
            "examples": len(dataset),
            "results": len(records),
            "scored": len(records) - len(errors),
            "errors": len(errors),
            "not_run": len(dataset) - len(records),
            "error_kinds": dict(Counter(r.error.split(":", 1)[0] for r in errors if r.error)),
            "unreadable_result_lines": result.unreadable_lines,
            "actions": {k: dict(sorted(v.items())) for k, v in actions.items()},
        },
        "metrics": metrics.to_dict(),
        "references": {s: REFERENCES[s] for s in sources if s in REFERENCES},
        "attributions": {s: ATTRIBUTIONS[s] for s in sources if s in ATTRIBUTIONS},
        "timing": {
            "wall_s": round(result.wall_s, 3),
            "checked_now": result.checked,
            "reused": result.reused,
            "latency_ms_mean": sum(latencies) / len(latencies) if latencies else None,
            "latency_ms_p50": _percentile(latencies, 0.5),
            "latency_ms_p95": _percentile(latencies, 0.95),
        },
    }


def _rate(rate: Mapping[str, Any]) -> str:
    value = rate["value"]
    shown = "—" if value is None else f"{value:.3f}"
    return f"{shown} ({rate['num']}/{rate['den']})"


def _avg(avg: Mapping[str, Any]) -> str:
    value = avg["value"]
    return f"{'—' if value is None else f'{value:.3f}'} [{avg['n']} cat.]"


def _name(code: str) -> str:
    return Category(code).short_name if code in Category.__members__ else code


def _rows(report: Mapping[str, Any]) -> list[list[str]]:
    """Overall, macro and per-category rows: label, R, FPR, P, F1, cat. acc., n+, n−."""
    m = report["metrics"]
    o, macro = m["overall"], m["macro"]
    rows = [
        [
            "overall",
            *(_rate(o[k]) for k in ("recall", "fpr", "precision", "f1")),
            _rate(m["category_accuracy"]),
            str(o["positives"]),
            str(o["negatives"]),
        ],
        ["macro", *(_avg(macro[k]) for k in ("recall", "fpr", "precision", "f1")), "", "", ""],
    ]
    for c in m["per_category"]:
        rows.append(
            [
                f"{c['code']} {_name(c['code'])}",
                *(_rate(c[k]) for k in ("recall", "fpr", "precision", "f1")),
                _rate(c["category_accuracy"]),
                str(c["positives"]),
                str(c["negatives"]),
            ]
        )
    return rows


_HEADER = ["", "R", "FPR", "P", "F1", "cat. acc.", "n+", "n−"]


def format_table(report: Mapping[str, Any]) -> str:
    """A compact, aligned text table (overall, macro, per category) plus the sweep summary."""
    rows = [_HEADER, *_rows(report)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADER))]
    lines = [
        "  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    lines.append(_sweep_line(report))
    counts = report["counts"]
    if counts["errors"] or counts["not_run"]:
        lines.append(f"errors: {counts['errors']}  not run: {counts['not_run']}")
    return "\n".join(lines)


def _sweep_line(report: Mapping[str, Any]) -> str:
    m = report["metrics"]
    sweep, at = m["sweep"], m["at_target_fpr"]
    if not sweep["scored"]:
        return f"threshold sweep: no scores ({sweep['unscored']} results without a score)"
    auroc = "—" if sweep["auroc"] is None else f"{sweep['auroc']:.3f}"
    text = f"AUROC {auroc} over {sweep['scored']} scored ({sweep['unscored']} without score)"
    if at is None:
        return text + f"; no threshold meets FPR <= {m['target_fpr']}"
    return (
        text + f"; FPR <= {m['target_fpr']}: threshold {at['threshold']:.4f} "
        f"(R {at['recall']:.3f}, FPR {at['fpr']:.3f}, TP {at['tp']}, FP {at['fp']})"
    )


def render_markdown(report: Mapping[str, Any], plots: Sequence[str] = ()) -> str:
    d, cfg, counts = report["dataset"], report["config"], report["counts"]
    model = f" (`{cfg['model']}`)" if cfg.get("model") else ""
    out = [
        f"# Guard evaluation: {d['name']}",
        "",
        f"Backend `{cfg.get('backend')}`{model}, hook `{cfg.get('hook')}`, "
        f"verdict threshold {cfg.get('threshold')}. {d['examples']} examples "
        f"({d['positives']} unsafe, {d['negatives']} safe); {counts['scored']} scored, "
        f"{counts['errors']} errors, {counts['not_run']} not run.",
    ]
    if d["skipped_rows"]:
        skipped = ", ".join(f"{k}: {v}" for k, v in d["skipped_rows"].items())
        out.append(f"Rows skipped by the loader: {skipped}.")
    table = [_HEADER, ["---"] * len(_HEADER), *_rows(report)]
    out += ["", "## Metrics (value (numerator/denominator))", ""]
    out += ["| " + " | ".join(r) + " |" for r in table]
    m = report["metrics"]
    out += [
        "",
        "Per category: that category's positives against all negatives. Macro: categories "
        "weighted equally. Category accuracy: flagged positives naming an expected code.",
    ]
    if m["positives_without_category"]:
        out.append(f"Positives without an expected S-code: {m['positives_without_category']}.")
    out += ["", "## Threshold sweep over Verdict.score", "", _sweep_line(report) + "."]
    out += [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    out += ["", "## Policy actions (counted apart from the metrics)", ""]
    out += [
        "| gold label | " + " | ".join(f"{k}" for k in ("action", "count")) + " |",
        "| --- | --- | --- |",
    ]
    for label, by_action in counts["actions"].items():
        out += [f"| {label} | {a} | {n} |" for a, n in by_action.items()]
    if counts["error_kinds"]:
        out += ["", "## Errors", ""]
        out += [f"- {kind}: {n}" for kind, n in counts["error_kinds"].items()]
    if report["references"]:
        out += ["", "## Published reference figures", ""]
        out += [f"- {text}" for text in dict.fromkeys(report["references"].values())]
    if report["attributions"]:
        out += ["", "## Data", ""]
        out += [f"- {text}" for text in report["attributions"].values()]
    return "\n".join(out) + "\n"


def write_report(
    report: Mapping[str, Any], out_dir: str | Path, plots: Sequence[str] = ()
) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md``; returns their paths."""
    out = Path(out_dir)
    json_path, md_path = out / "report.json", out / "report.md"
    json_path.write_text(
        json.dumps(report, indent=2, ensure_ascii=False, allow_nan=False) + "\n", encoding="utf-8"
    )
    md_path.write_text(render_markdown(report, plots), encoding="utf-8")
    return json_path, md_path
