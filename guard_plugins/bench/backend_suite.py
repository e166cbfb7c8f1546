"""Suite ``backend``: the release-notes baseline against `TransformersBackend`, same checkpoint.

Phase A (latency, paired): for every prompt, in rotating order, one baseline check, one backend
check with the prefix KV cache and one without it, each on its own. Interleaving means the three
see the same machine load, which matters on shared cores; ratios are taken within the phase.

Phase B (throughput): the same prompts through `classify_batch` in calls of 1, 8 and 32
(`rounds` times, median). A call never holds more than the backend's batch limit, so these are
batches in arrival order. Length bucketing only acts when one call holds more requests than the
limit: the ``length_bucketing`` run sends all prompts in one call with a limit of 8, and is
compared with the arrival-order calls of 8 (padding and time).

Tokens computed per check come from the backend's own counters (`BackendStats`): every position
run through the decoder, category decoding included, padding excluded (reported separately).

Requests use threshold 1.0, so categories are never decoded: the *safe path*, the work that
matches the baseline's three generated tokens (a random-weight dev model would otherwise call a
random share of prompts unsafe). The cost of a flagged check — categories decoded, up to 20
more positions — is measured separately (``unsafe_path``, threshold 1e-6: always decoded).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from guard_plugins.backends.base import ClassificationRequest
from guard_plugins.bench.measure import RssMonitor, current_rss_mb, median, ratio, summarize
from guard_plugins.bench.models import BASELINE_NEW_TOKENS, HFBaseline
from guard_plugins.bench.settings import BenchContext
from guard_plugins.conversation import Conversation

__all__ = ["run_backend_suite"]

Item = tuple[str, Conversation]
SAFE_PATH = 1.0
UNSAFE_PATH = 1e-6
UNSAFE_SAMPLE = 6


def _request(conversation: Conversation, threshold: float = SAFE_PATH) -> ClassificationRequest:
    return ClassificationRequest(conversation, threshold=threshold)


def _load(monitor: RssMonitor, label: str, factory: Callable[[], Any]) -> tuple[Any, float | None]:
    before = current_rss_mb()
    with monitor.phase(label):
        loaded = factory()
    after = current_rss_mb()
    weights = None if before is None or after is None else round(after - before, 1)
    return loaded, weights


def run_backend_suite(ctx: BenchContext) -> dict[str, Any]:
    """Run both phases and return the suite's JSON section."""
    import importlib

    transformers: Any = importlib.import_module("transformers")
    if ctx.model_path is None:
        return {"skipped": "no model: pass --model PATH or --build-dev-model"}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # generate()'s advice on flags is noise here
    try:
        return _run(ctx)
    finally:
        transformers.logging.set_verbosity(verbosity)


def _run(ctx: BenchContext) -> dict[str, Any]:
    settings, monitor, path = ctx.settings, ctx.monitor, ctx.model_path
    assert path is not None
    items = ctx.prompts.interleaved()
    batch_sizes = settings.batch_sizes
    ctx.log(f"backend: loading {path.name} twice (baseline and backend) on {ctx.device}")
    import torch  # noqa: F401 - imported before the loads so their RSS excludes the libraries

    backend, backend_load = _load(monitor, "load_backend", ctx.backend)
    processor = getattr(getattr(backend, "encoder", None), "processor", None)
    baseline, baseline_load = _load(
        monitor, "load_baseline", lambda: HFBaseline(path, ctx.device, processor)
    )
    try:
        prompt_info = _prompt_info(backend, baseline, items)
        # Warm up: kernels, and the prefix cache for both roles (a one-time cost per process).
        driver = _Driver(backend)
        driver.classify([_request(c) for c in _one_per_role(items)])
        baseline.check(items[0][1])
        ctx.log(f"backend: phase A, {len(items)} prompts x (baseline, prefix cache on, off)")
        latency = _phase_a(ctx, driver, baseline, items)
        ctx.log(f"backend: phase B, throughput at batch {', '.join(map(str, batch_sizes))}")
        throughput = _phase_b(ctx, driver, items)
        bucketing = _bucketing_run(ctx, driver, items)
        unsafe_path = _unsafe_path(driver, items[:UNSAFE_SAMPLE])
        driver.close()
    finally:
        baseline.close()  # the backend stays loaded for the guard suite (ctx.close() frees it)
    peaks, absolute = monitor.peaks_mb(), monitor.absolute_peaks_mb()
    base_cps = latency["baseline"]["throughput_cps"]
    ours = latency["backend"]
    result: dict[str, Any] = {
        "prompts": prompt_info,
        "baseline": {
            "method": "render_prompt + processor, then model.generate(max_new_tokens="
            f"{BASELINE_NEW_TOKENS}, do_sample=False), one message at a time",
            **latency["baseline"],
            "load_rss_mb": baseline_load,
            "peak_working_rss_mb": peaks.get("baseline"),
        },
        "backend": {
            "method": "TransformersBackend.classify_batch (prefix cache on)",
            "threshold": SAFE_PATH,
            "latency_ms": ours["latency_ms"],
            "tokens_per_check": ours["tokens_per_check"],
            "decoded_fraction": ours["decoded_fraction"],
            "throughput_cps": {str(b): throughput[b]["throughput_cps"] for b in batch_sizes},
            "by_batch": {
                str(b): {
                    **throughput[b],
                    "peak_working_rss_mb": peaks.get(f"backend_b{b}"),
                    "peak_process_rss_mb": absolute.get(f"backend_b{b}"),
                }
                for b in batch_sizes
            },
            "phase_a_throughput_cps": ours["throughput_cps"],
            "load_rss_mb": backend_load,
            "peak_working_rss_mb": peaks.get("backend_b1"),
            "prefix_tokens": prompt_info.pop("prefix_tokens"),
        },
        "prefix_cache_off": {
            **latency["prefix_off"],
            "peak_working_rss_mb": peaks.get("backend_b1_no_prefix"),
        },
        "length_bucketing": bucketing,
        "unsafe_path": unsafe_path,
        "by_workload": latency["by_workload"],
        "memory_note": "load_rss_mb: RSS added by loading (weights and, for the backend, the "
        "processor the baseline shares; torch already imported); peak_working_rss_mb: highest "
        "RSS above the RSS at the start of a check (activations, KV cache, logits); both models "
        "live in one process",
    }
    result["ratios"] = {
        "throughput": {
            str(b): _r(throughput[b]["throughput_cps"], base_cps) for b in batch_sizes
        },
        "throughput_best": _r(max(throughput[b]["throughput_cps"] for b in batch_sizes), base_cps),
        "tokens_per_check": _r(ours["tokens_per_check"], latency["baseline"]["tokens_per_check"]),
        "latency_p50": _r(ours["latency_ms"]["p50"], latency["baseline"]["latency_ms"]["p50"]),
        "latency_p99": _r(ours["latency_ms"]["p99"], latency["baseline"]["latency_ms"]["p99"]),
        "latency_paired_median": latency["paired_latency_ratio"],
        "prefix_cache_tokens": _r(
            ours["tokens_per_check"], latency["prefix_off"]["tokens_per_check"]
        ),
        "prefix_cache_latency_p50": _r(
            ours["latency_ms"]["p50"], latency["prefix_off"]["latency_ms"]["p50"]
        ),
    }
    return result


class _Driver:
    """Calls the backend's async API on one private event loop, as the Guard does (the sync
    wrapper would add a hop through the shared background loop to every call)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.loop = asyncio.new_event_loop()

    def classify(self, requests: list[ClassificationRequest]) -> Any:
        return self.loop.run_until_complete(self.backend.classify_batch(requests))

    def close(self) -> None:
        self.loop.close()


def _r(a: float | None, b: float | None) -> float | None:
    value = ratio(a, b)
    return None if value is None else round(value, 3)


def _one_per_role(items: Sequence[Item]) -> list[Conversation]:
    seen: dict[str, Conversation] = {}
    for _, conversation in items:
        seen.setdefault(conversation.assessed_role, conversation)
    return list(seen.values())


def _prompt_info(backend: Any, baseline: HFBaseline, items: Sequence[Item]) -> dict[str, Any]:
    lengths: dict[str, list[int]] = {}
    mismatched = 0
    for kind, conversation in items:
        ids = backend.prompt_token_ids(conversation)
        mismatched += ids != baseline.prompt_ids(conversation)
        lengths.setdefault(kind, []).append(len(ids))
    prefixes = {}
    for conversation in _one_per_role(items):
        prompt = ClassificationRequest(conversation).prompt
        prefixes[prompt.role] = len(backend.encoder.encode_text(prompt.prefix))
    every = [n for values in lengths.values() for n in values]
    return {
        "count": len(items),
        "mean_prompt_tokens": round(sum(every) / len(every), 1),
        "mean_prompt_tokens_by_workload": {
            k: round(sum(v) / len(v), 1) for k, v in lengths.items()
        },
        "baseline_ids_identical": mismatched == 0,
        "prefix_tokens": prefixes,
    }


def _phase_a(
    ctx: BenchContext, driver: _Driver, baseline: HFBaseline, items: Sequence[Item]
) -> dict[str, Any]:
    backend = driver.backend
    stats = backend.stats
    runs: dict[str, list[tuple[str, float, int, int]]] = {"baseline": [], "on": [], "off": []}

    def ours(conversation: Conversation, prefix_cache: bool) -> tuple[float, int, int]:
        backend.prefix_cache = prefix_cache
        stats.reset()
        start = time.perf_counter()
        with ctx.monitor.phase("backend_b1" if prefix_cache else "backend_b1_no_prefix"):
            driver.classify([_request(conversation)])
        seconds = time.perf_counter() - start
        backend.prefix_cache = True
        return seconds, int(stats.tokens_computed), int(stats.decoded_checks)

    for index, (kind, conversation) in enumerate(items):
        for step in range(3):
            which = ("baseline", "on", "off")[(index + step) % 3]
            if which == "baseline":
                with ctx.monitor.phase("baseline"):
                    check = baseline.check(conversation)
                runs["baseline"].append((kind, check.seconds, check.tokens_computed, 0))
            else:
                runs[which].append((kind, *ours(conversation, which == "on")))
    return {
        "baseline": _latency_block(runs["baseline"]),
        "backend": _latency_block(runs["on"]),
        "prefix_off": _latency_block(runs["off"]),
        "paired_latency_ratio": round(
            median([o[1] / b[1] for o, b in zip(runs["on"], runs["baseline"], strict=True)]), 3
        ),
        "by_workload": _by_workload(runs["baseline"], runs["on"]),
    }


def _latency_block(runs: Sequence[tuple[str, float, int, int]]) -> dict[str, Any]:
    seconds = [r[1] for r in runs]
    return {
        "latency_ms": summarize(seconds, 1000).to_dict(1),
        "throughput_cps": round(len(runs) / sum(seconds), 3),
        "tokens_per_check": round(sum(r[2] for r in runs) / len(runs), 1),
        "decoded_fraction": round(sum(r[3] for r in runs) / len(runs), 3),
    }


def _by_workload(
    base: Sequence[tuple[str, float, int, int]], ours: Sequence[tuple[str, float, int, int]]
) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for kind in dict.fromkeys(r[0] for r in base):
        b = [r for r in base if r[0] == kind]
        o = [r for r in ours if r[0] == kind]
        b_tokens = sum(r[2] for r in b) / len(b)
        o_tokens = sum(r[2] for r in o) / len(o)
        b_p50 = median([r[1] * 1000 for r in b])
        o_p50 = median([r[1] * 1000 for r in o])
        result[kind] = {
            "n": len(b),
            "baseline_latency_ms_p50": round(b_p50, 1),
            "backend_latency_ms_p50": round(o_p50, 1),
            "baseline_tokens_per_check": round(b_tokens, 1),
            "backend_tokens_per_check": round(o_tokens, 1),
            "latency_ratio": _r(o_p50, b_p50),
            "tokens_ratio": _r(o_tokens, b_tokens),
        }
    return result


def _phase_b(
    ctx: BenchContext, driver: _Driver, items: Sequence[Item]
) -> dict[int, dict[str, Any]]:
    backend = driver.backend
    stats = backend.stats
    conversations = [c for _, c in items]
    samples: dict[int, list[dict[str, Any]]] = {b: [] for b in ctx.settings.batch_sizes}
    for _ in range(ctx.settings.rounds):
        for size in ctx.settings.batch_sizes:
            chunks = [conversations[i: i + size] for i in range(0, len(conversations), size)]
            stats.reset()
            start = time.perf_counter()
            with ctx.monitor.phase(f"backend_b{size}"):
                for chunk in chunks:
                    driver.classify([_request(c) for c in chunk])
            seconds = time.perf_counter() - start
            computed = int(stats.tokens_computed)
            samples[size].append({
                "throughput_cps": len(conversations) / seconds,
                "tokens_per_check": computed / len(conversations),
                "padding_tokens": int(stats.padding_tokens),
                "computed_tokens": computed,
                "forward_passes": int(stats.forward_passes),
                "calls": len(chunks),
                "largest_call": max(len(c) for c in chunks),
            })
    return {size: _median_sample(runs) for size, runs in samples.items()}


def _median_sample(runs: list[dict[str, Any]]) -> dict[str, Any]:
    chosen = sorted(runs, key=lambda r: r["throughput_cps"])[len(runs) // 2]
    return {
        **chosen,
        "throughput_cps": round(median([r["throughput_cps"] for r in runs]), 3),
        "tokens_per_check": round(chosen["tokens_per_check"], 1),
        "rounds": len(runs),
    }


def _unsafe_path(driver: _Driver, items: Sequence[Item]) -> dict[str, Any]:
    backend = driver.backend
    """Checks that decode their categories (as a flagged check does), one at a time."""
    stats = backend.stats
    seconds: list[float] = []
    tokens = 0
    for _, conversation in items:
        stats.reset()
        start = time.perf_counter()
        driver.classify([_request(conversation, UNSAFE_PATH)])
        seconds.append(time.perf_counter() - start)
        tokens += int(stats.tokens_computed)
    return {
        "threshold": UNSAFE_PATH,
        "latency_ms": summarize(seconds, 1000).to_dict(1),
        "tokens_per_check": round(tokens / len(items), 1),
    }


def _bucketing_run(ctx: BenchContext, driver: _Driver, items: Sequence[Item]) -> dict[str, Any]:
    backend = driver.backend
    """All prompts in one call (limit 8: the backend sorts by length) vs calls of 8 in order."""
    conversations = [c for _, c in items]
    limit, saved = 8, backend.max_batch_size
    stats = backend.stats
    runs: dict[str, dict[str, Any]] = {}
    try:
        backend.max_batch_size = limit
        for mode in ("arrival_order", "bucketed"):
            calls = (
                [conversations[i: i + limit] for i in range(0, len(conversations), limit)]
                if mode == "arrival_order" else [conversations]
            )
            stats.reset()
            start = time.perf_counter()
            for call in calls:
                driver.classify([_request(c) for c in call])
            seconds = time.perf_counter() - start
            computed, padding = int(stats.tokens_computed), int(stats.padding_tokens)
            runs[mode] = {
                "seconds": round(seconds, 3),
                "throughput_cps": round(len(conversations) / seconds, 3),
                "padding_tokens": padding,
                "computed_tokens": computed,
                "padding_fraction": _r(padding, padding + computed),
            }
    finally:
        backend.max_batch_size = saved
    return {
        "batch_limit": limit,
        "checks": len(conversations),
        **runs,
        "padding_ratio": _r(runs["bucketed"]["padding_tokens"],
                            runs["arrival_order"]["padding_tokens"]),
        "speedup": _r(runs["bucketed"]["throughput_cps"], runs["arrival_order"]["throughput_cps"]),
    }
