"""``guard-plugins bench``: run the benchmark suites, print a table, write a JSON file.

    guard-plugins bench [--model PATH | --build-dev-model] [--quick] [--out FILE.json]
                        [--suites backend,guard,agent,adapters,streaming] [--datasets DIR]

Without ``--model`` the random-weight dev model is used (``bench`` size with the Llama 4
tokenizer; with ``--quick`` the ``tiny`` size with the small built-in tokenizer, which loads in a
fraction of the time), built once into ``$GUARD_PLUGINS_DEV_MODEL_CACHE`` or
``~/.cache/guard-plugins``.
Timings are reported, never asserted: the exit status is 0 whenever the run completed, whether
or not the targets were met.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guard_plugins.bench.measure import machine_info, max_rss_mb
from guard_plugins.bench.report import SCHEMA, evaluate_targets, format_table, write_json
from guard_plugins.bench.settings import SUITES, BenchContext, BenchSettings, stderr_log
from guard_plugins.bench.workloads import DATASETS_ENV, load_prompt_set

__all__ = ["DEFAULT_OUT", "build_parser", "main", "register", "run_bench"]

DEFAULT_OUT = "guard-plugins-bench.json"
_MODEL_SUITES = ("backend", "guard")


def _suites(value: str) -> tuple[str, ...]:
    chosen = tuple(s.strip() for s in value.split(",") if s.strip())
    unknown = [s for s in chosen if s not in SUITES]
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown suite(s) {', '.join(unknown) or '(none)'}; choose from {', '.join(SUITES)}"
        )
    return chosen


def add_arguments(parser: argparse.ArgumentParser) -> None:
    model = parser.add_mutually_exclusive_group()
    model.add_argument("--model", type=Path, help="a local Llama Guard 4 checkpoint directory")
    model.add_argument(
        "--build-dev-model",
        action="store_true",
        help="use the random-weight dev model, building it once into the cache (the default)",
    )
    parser.add_argument(
        "--dev-size", choices=["tiny", "bench"], help="dev model size (default bench; tiny --quick)"
    )
    parser.add_argument("--quick", action="store_true", help="a smoke run for CI (< 1 minute)")
    parser.add_argument(
        "--out", type=Path, default=Path(DEFAULT_OUT), help=f"JSON results (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--suites", type=_suites, default=SUITES, help=f"comma-separated: {','.join(SUITES)}"
    )
    parser.add_argument(
        "--datasets", type=Path, help=f"datasets directory (default ${DATASETS_ENV} or "
        "../shared/datasets); built-in sample prompts when missing"
    )
    parser.add_argument("--device", default="cpu", help="torch device (default cpu)")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--prompts", type=int, help="prompts per workload (overrides the mode's)")
    parser.add_argument("--rounds", type=int, help="throughput rounds (median; overrides)")


def register(subparsers: Any) -> None:
    """Add the ``bench`` subcommand to the ``guard-plugins`` parser."""
    parser = subparsers.add_parser(
        "bench", help="benchmark the backend, guard, agent turn and adapters (CPU)",
        description="Run the benchmark suites (docs/performance.md): print a table on stdout "
        "and write the results as JSON. Timings are reported, never asserted.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guard-plugins bench")
    add_arguments(parser)
    return parser


def _settings(args: argparse.Namespace) -> BenchSettings:
    settings = BenchSettings.quick_settings() if args.quick else BenchSettings.full()
    changes: dict[str, Any] = {}
    if args.dev_size:
        changes["dev_model_size"] = args.dev_size
    if args.prompts:
        changes["prompts_per_workload"] = args.prompts
    if args.rounds:
        changes["rounds"] = args.rounds
    if not changes:
        return settings
    from dataclasses import replace

    return replace(settings, **changes)


def _model_path(args: argparse.Namespace, settings: BenchSettings) -> Path | None:
    if not any(s in _MODEL_SUITES for s in args.suites):
        return None
    if args.model is not None:
        if not args.model.is_dir():
            raise FileNotFoundError(f"--model {args.model} is not a checkpoint directory")
        return Path(args.model)
    from guard_plugins.bench.models import ensure_dev_model

    return ensure_dev_model(
        settings.dev_model_size, stderr_log, builtin_tokenizer=settings.quick
    )


def run_bench(args: argparse.Namespace) -> int:
    """Run the selected suites; print the table; write the JSON document."""
    started = time.time()
    settings = _settings(args)
    prompts = load_prompt_set(args.datasets, settings.prompts_per_workload)
    if prompts.note:
        stderr_log(prompts.note)
    model_path = _model_path(args, settings)
    if model_path is not None and args.threads:
        import torch

        torch.set_num_threads(args.threads)
    ctx = BenchContext(settings, prompts, model_path, device=args.device)
    if prompts.note:
        ctx.notes.append(prompts.note)
    suites: dict[str, Any] = {}
    try:
        with ctx.monitor.running():
            suites = _run_suites(ctx, args.suites)
    finally:
        ctx.close()
    document = _document(args, ctx, suites, started)
    write_json(document, args.out)
    print(format_table(document))
    stderr_log(f"wrote {args.out}")
    return 0


def _run_suites(ctx: BenchContext, chosen: Sequence[str]) -> dict[str, Any]:
    from guard_plugins.bench.adapters_suite import run_adapters_suite
    from guard_plugins.bench.agent_suite import run_agent_suite
    from guard_plugins.bench.guard_suite import run_guard_suite

    suites: dict[str, Any] = {}
    for name in SUITES:
        if name not in chosen:
            suites[name] = {"skipped": "not selected (--suites)"}
            continue
        start = time.perf_counter()
        if name == "backend":
            if ctx.model_path is None:
                suites[name] = {"skipped": "no model"}
                continue
            from guard_plugins.bench.backend_suite import run_backend_suite

            suites[name] = run_backend_suite(ctx)
        elif name == "guard":
            suites[name] = run_guard_suite(ctx, ctx.backend())
        elif name == "agent":
            suites[name] = run_agent_suite(ctx)
        elif name == "streaming":
            from guard_plugins.bench.streaming_suite import run_streaming_suite

            suites[name] = run_streaming_suite(ctx)
        else:
            suites[name] = run_adapters_suite(ctx)
        suites[name]["duration_s"] = round(time.perf_counter() - start, 1)
    return suites


def _document(
    args: argparse.Namespace, ctx: BenchContext, suites: dict[str, Any], started: float
) -> dict[str, Any]:
    model = None
    if ctx.model_path is not None:
        from guard_plugins.bench.models import model_description

        model = model_description(ctx.model_path)
        if model["dev_model"]:
            ctx.notes.append(
                "random-weight dev model: verdicts are meaningless, only the computation is real"
            )
    machine = machine_info()
    if ctx.device != "cpu":
        machine["device"] = ctx.device
    return {
        "schema": SCHEMA,
        "mode": "quick" if ctx.settings.quick else "full",
        "command": _command(args),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": round(time.time() - started, 1),
        "machine": machine,
        "settings": ctx.settings.to_dict(),
        "model": model,
        "datasets": ctx.prompts.describe(),
        "suites": suites,
        "targets": evaluate_targets(suites),
        "memory": {
            "ru_maxrss_mb": round(max_rss_mb(), 1),
            "phase_peak_working_mb": ctx.monitor.peaks_mb(),
            "method": "RSS sampled from /proc/self/statm every 5 ms; peak above the RSS at the "
            "start of each phase (torch CPU memory is invisible to tracemalloc)",
        },
        "notes": ctx.notes,
    }


def _command(args: argparse.Namespace) -> str:
    """The options of this run, written as a command line."""
    parts = ["guard-plugins", "bench"]
    if args.model is not None:
        parts += ["--model", str(args.model)]
    elif args.build_dev_model:
        parts.append("--build-dev-model")
    if args.quick:
        parts.append("--quick")
    for flag in ("dev_size", "datasets", "threads", "prompts", "rounds"):
        value = getattr(args, flag)
        if value:
            parts += ["--" + flag.replace("_", "-"), str(value)]
    if args.device != "cpu":
        parts += ["--device", args.device]
    if tuple(args.suites) != SUITES:
        parts += ["--suites", ",".join(args.suites)]
    parts += ["--out", str(args.out)]
    return " ".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m guard_plugins.bench`` entry point (same as ``guard-plugins bench``)."""
    return run_bench(build_parser().parse_args(argv))
