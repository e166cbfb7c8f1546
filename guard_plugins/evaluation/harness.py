"""`evaluate` (run + report + plots) and the ``guard-plugins eval`` command.

The CLI registers the command in two lines; it owns the options that build the Guard
(``--model``, ``--endpoint``, ...) and passes a factory::

    add_eval_arguments(subparsers.add_parser("eval", help="evaluate on a labelled dataset"))
    ...
    return run_eval_command(args, lambda: build_guard(args))

>>> report = await evaluate(guard, load_xstest(path), "out", limit=...)    # doctest: +SKIP
>>> print(report.table())                                                 # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from guard_plugins._sync import portal_loop
from guard_plugins.errors import GuardError
from guard_plugins.evaluation.formats import FORMATS, load_dataset
from guard_plugins.evaluation.loaders import DEFAULT_POSITIVE_VALUES, Dataset, DatasetError, select
from guard_plugins.evaluation.metrics import EvalMetrics, compute_metrics
from guard_plugins.evaluation.plots import write_plots
from guard_plugins.evaluation.report import build_report, format_table, outcomes, write_report
from guard_plugins.evaluation.runner import run_eval
from guard_plugins.guard import Guard
from guard_plugins.policy import Hook

__all__ = [
    "EvalReport",
    "add_eval_arguments",
    "arun_eval_command",
    "evaluate",
    "load_from_args",
    "run_eval_command",
]

HOOKS = ("user_input", "assistant_output", "tool_call", "tool_result")


@dataclass(frozen=True)
class EvalReport:
    """What `evaluate` wrote: the report data, the metrics and the files."""

    data: dict[str, Any]
    metrics: EvalMetrics
    out_dir: Path
    files: tuple[Path, ...]

    def table(self) -> str:
        return format_table(self.data)


async def evaluate(
    guard: Guard,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    hook: Hook | str = Hook.USER_INPUT,
    target_fpr: float = 0.05,
    concurrency: int = 16,
    tool_name: str = "python",
    retry_errors: bool = True,
    fresh: bool = False,
    plots: bool = True,
    progress: bool = False,
) -> EvalReport:
    """Run `guard` over `dataset` (resuming from `out_dir`), then write ``report.json``,
    ``report.md`` and, when scores exist and matplotlib is installed, the PR/ROC plots."""
    hook = Hook(hook)
    result = await run_eval(
        guard,
        dataset,
        out_dir,
        hook=hook,
        concurrency=concurrency,
        tool_name=tool_name,
        retry_errors=retry_errors,
        fresh=fresh,
        progress=progress,
    )
    metrics = compute_metrics(outcomes(dataset, result.records), target_fpr=target_fpr)
    source = getattr(guard.backend, "source", None)
    config = {
        "hook": hook.value,
        "backend": guard.backend.name,
        "model": source if isinstance(source, str) else None,
        "threshold": guard.policy.for_hook(hook).request_threshold,
        "flagged_means": "decision.verdict.unsafe",
    }
    data = build_report(dataset, result, config=config, target_fpr=target_fpr, metrics=metrics)
    files: list[Path] = []
    if plots:
        files = write_plots(
            metrics.sweep, out_dir, operating=metrics.overall, at_target=metrics.at_target
        )
    json_path, md_path = write_report(data, out_dir, [p.name for p in files])
    return EvalReport(data, metrics, Path(out_dir), (json_path, md_path, *files))


# -- the CLI command ---------------------------------------------------------------------------


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the eval-specific arguments (the Guard's own options are the CLI's)."""
    parser.add_argument(
        "data",
        nargs="+",
        metavar="DATA",
        help="dataset file(s); FORMAT=PATH gives one file its own format (several files are "
        "evaluated together, ids are prefixed with the dataset name)",
    )
    parser.add_argument(
        "--format",
        dest="data_format",
        choices=sorted(FORMATS),
        default=None,
        help="loader for DATA (default: csv / jsonl from the file extension)",
    )
    parser.add_argument("--text-col", default="text", help="csv/jsonl: text column")
    parser.add_argument("--label-col", default="label", help="csv/jsonl: label column")
    parser.add_argument("--category-col", default=None, help="csv/jsonl: expected S-codes")
    parser.add_argument("--id-col", default=None, help="csv/jsonl: id column (default row)")
    parser.add_argument(
        "--prompt-col",
        default=None,
        help="csv/jsonl: preceding user turn (for --hook assistant_output / tool_call)",
    )
    parser.add_argument(
        "--positive-values",
        default=",".join(DEFAULT_POSITIVE_VALUES),
        help="csv/jsonl: comma-separated label values meaning unsafe",
    )
    parser.add_argument(
        "--missing-labels",
        choices=("negative", "skip"),
        default="negative",
        help="openai-moderation: read an absent label as 0, or skip undetermined rows",
    )
    parser.add_argument("--hook", choices=HOOKS, default="user_input", help="hook to check at")
    parser.add_argument(
        "--tool-name", default="python", help="tool name for --hook tool_call / tool_result"
    )
    parser.add_argument("--out", default=None, help="output directory (default guard-eval/NAME)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N examples")
    parser.add_argument("--sample", type=int, default=None, help="random sample of N examples")
    parser.add_argument("--seed", type=int, default=0, help="seed for --sample")
    parser.add_argument("--target-fpr", type=float, default=0.05, help="FPR for the threshold")
    parser.add_argument("--concurrency", type=int, default=16, help="checks in flight")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results in OUT")
    parser.add_argument(
        "--no-retry-errors",
        dest="retry_errors",
        action="store_false",
        help="on resume, keep rows that failed instead of checking them again",
    )
    parser.add_argument("--no-plots", dest="plots", action="store_false", help="skip PNGs")
    parser.add_argument("--no-progress", dest="progress", action="store_false")


def _one_dataset(spec: str, args: argparse.Namespace) -> Dataset:
    fmt, sep, path = spec.partition("=")
    if not sep or fmt not in FORMATS:
        fmt, path = args.data_format or "", spec
    if not fmt:
        name = Path(path).name.lower()
        fmt = "csv" if name.endswith(".csv") else "jsonl" if ".jsonl" in name else ""
        if not fmt:
            raise DatasetError(f"cannot tell the format of {path}; pass --format")
    options: dict[str, Any] = {}
    if fmt in ("csv", "jsonl"):
        options = {
            "text_col": args.text_col,
            "label_col": args.label_col,
            "category_col": args.category_col,
            "id_col": args.id_col,
            "prompt_col": args.prompt_col,
            "positive_values": tuple(v for v in args.positive_values.split(",") if v),
        }
    elif fmt == "openai-moderation":
        options = {"missing": args.missing_labels}
    return load_dataset(fmt, path, **options)


def load_from_args(args: argparse.Namespace) -> Dataset:
    """The datasets named on the command line, merged, with --sample / --limit applied."""
    datasets = [_one_dataset(spec, args) for spec in args.data]
    dataset = datasets[0]
    for other in datasets[1:]:
        dataset = dataset.merge(other)
    return select(dataset, limit=args.limit, sample=args.sample, seed=args.seed)


def _prepare(
    args: argparse.Namespace, build_guard: Callable[[], Guard], err: TextIO
) -> tuple[Dataset, Guard] | int:
    try:
        return load_from_args(args), build_guard()
    except (GuardError, OSError, ValueError) as exc:
        print(f"guard-plugins eval: {exc}", file=err)
        return 2


async def _run(
    args: argparse.Namespace, dataset: Dataset, guard: Guard, out: TextIO, err: TextIO
) -> int:
    out_dir = Path(args.out) if args.out else Path("guard-eval") / dataset.name
    try:
        report = await evaluate(
            guard,
            dataset,
            out_dir,
            hook=args.hook,
            target_fpr=args.target_fpr,
            concurrency=args.concurrency,
            tool_name=args.tool_name,
            retry_errors=args.retry_errors,
            fresh=args.fresh,
            plots=args.plots,
            progress=args.progress,
        )
    except (GuardError, OSError) as exc:
        print(f"guard-plugins eval: {exc}", file=err)
        return 2
    print(report.table(), file=out)
    if args.plots and report.metrics.sweep.points and len(report.files) == 2:
        print("note: PR/ROC plots skipped: pip install 'guard-plugins[eval]'", file=err)
    print(f"report: {out_dir / 'report.md'}  results: {out_dir / 'results.jsonl'}", file=out)
    counts = report.data["counts"]
    if counts["errors"]:
        print(f"{counts['errors']} example(s) failed: see 'error' in results.jsonl", file=err)
    return 1 if len(dataset) and not counts["scored"] else 0


async def arun_eval_command(
    args: argparse.Namespace,
    build_guard: Callable[[], Guard],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The ``eval`` command, async. Exit status: 0 done (failed rows are reported, not fatal),
    1 nothing could be scored, 2 bad arguments, data or guard configuration."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    prepared = _prepare(args, build_guard, err)
    if isinstance(prepared, int):
        return prepared
    return await _run(args, *prepared, out, err)


def run_eval_command(
    args: argparse.Namespace,
    build_guard: Callable[[], Guard],
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
) -> int:
    """The ``eval`` command for a synchronous CLI. Data and guard are prepared on the calling
    thread, the run goes on the library's background loop. Ctrl-C stops it (exit 130);
    rerunning the same command resumes."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    prepared = _prepare(args, build_guard, err)
    if isinstance(prepared, int):
        return prepared
    finished = threading.Event()

    async def run() -> int:
        try:
            return await _run(args, *prepared, out, err)
        finally:
            finished.set()

    future = asyncio.run_coroutine_threadsafe(run(), portal_loop())
    try:
        return future.result()
    except KeyboardInterrupt:
        future.cancel()
        finished.wait(timeout=30)  # let the workers stop and the results file close
        print("\ninterrupted: finished rows are in results.jsonl; rerun to resume", file=err)
        return 130


def parse_eval_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse eval arguments alone (tests and the example script)."""
    parser = argparse.ArgumentParser(prog="guard-plugins eval")
    add_eval_arguments(parser)
    return parser.parse_args(list(argv))
