"""Evaluation harness: run a Guard over labelled datasets and report how well it classifies.

- `loaders`: `EvalExample`, `Dataset`, loaders for CSV / JSON lines and the built-in public sets.
- `runner`: bounded-concurrency checks, results appended to ``results.jsonl``, resumable.
- `metrics`: recall / FPR / precision / F1 with counts, per category, macro, threshold sweep.
- `report`, `plots`: ``report.json``, ``report.md``, ``pr_curve.png``, ``roc_curve.png``.
- `harness`: `evaluate` and the ``guard-plugins eval`` command.

>>> from guard_plugins.evaluation import evaluate, load_xstest        # doctest: +SKIP
>>> report = await evaluate(guard, load_xstest("xstest_prompts.csv"), "out")  # doctest: +SKIP

See docs/evaluation.md.
"""

from __future__ import annotations

from guard_plugins.evaluation.formats import (
    FORMATS,
    load_ailuminate,
    load_cyberseceval_frr,
    load_cyberseceval_interpreter,
    load_dataset,
    load_openai_moderation,
    load_xstest,
)
from guard_plugins.evaluation.harness import (
    EvalReport,
    add_eval_arguments,
    arun_eval_command,
    evaluate,
    run_eval_command,
)
from guard_plugins.evaluation.loaders import (
    Dataset,
    DatasetError,
    EvalExample,
    load_csv,
    load_jsonl,
    select,
)
from guard_plugins.evaluation.metrics import EvalMetrics, Outcome, Rate, compute_metrics
from guard_plugins.evaluation.runner import EvalRecord, RunResult, run_eval

__all__ = [
    "FORMATS",
    "Dataset",
    "DatasetError",
    "EvalExample",
    "EvalMetrics",
    "EvalRecord",
    "EvalReport",
    "Outcome",
    "Rate",
    "RunResult",
    "add_eval_arguments",
    "arun_eval_command",
    "compute_metrics",
    "evaluate",
    "load_ailuminate",
    "load_csv",
    "load_cyberseceval_frr",
    "load_cyberseceval_interpreter",
    "load_dataset",
    "load_jsonl",
    "load_openai_moderation",
    "load_xstest",
    "run_eval",
    "run_eval_command",
    "select",
]
