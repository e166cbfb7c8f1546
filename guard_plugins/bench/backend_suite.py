"""Suite ``backend``: the release-notes baseline against `TransformersBackend`, same checkpoint.

Phase A (latency, paired): for every prompt, in rotating order, one baseline check, one backend
check with the prefix KV cache and one without it, each on its own. Interleaving means the three
see the same machine load (shared cores drift by 2x over minutes); latency ratios, tokens per
check and the batch-1 throughput ratio come from this phase.

Phase B (`guard_plugins.bench.throughput`): interleaved rounds of calls of 1, 8 and 32 (the
backend as configured by default: sub-batches of at most 8, a larger call sorted by length) and
of the call of 32 as one padded sub-batch. Its throughput ratio to the baseline is chained through
batch 1: ``(batch-N / batch-1, same rounds) x (batch-1 / baseline, phase A)``, so no ratio spans
minutes of drift.

Phases A and B run with the conversation cache off, so every prompt is computed as if seen for
the first time (repeated prompts would otherwise be free). Phase C, *sessions*, checks four-turn
conversations the way an application does, every turn as it arrives with the conversation so far,
with the conversation cache on: the baseline recomputes the whole conversation each time, the
backend only what follows the turns it already checked under the same role.

Requests use threshold 1.0, so categories are never decoded: the *safe path*, the work that
matches the baseline's three generated tokens (a random-weight dev model would otherwise call a
random share of prompts unsafe). The cost of a flagged check is reported as ``unsafe_path``.
Tokens computed come from the backend's own counters (`BackendStats`): every position run through
the decoder, category decoding included, padding excluded (reported separately).
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Sequence
from typing import Any

from guard_plugins.bench.measure import median, ratio, summarize
from guard_plugins.bench.models import BASELINE_NEW_TOKENS, HFBaseline
from guard_plugins.bench.settings import BenchContext
from guard_plugins.bench.throughput import (
    SAFE_PATH,
    Driver,
    measure_throughput,
    measure_unsafe_path,
    request,
)
from guard_plugins.conversation import Conversation

__all__ = ["run_backend_suite"]

Item = tuple[str, Conversation]
UNSAFE_SAMPLE = 6
Run = tuple[str, float, int, int]  # workload, seconds, tokens computed, decoded checks


def run_backend_suite(ctx: BenchContext) -> dict[str, Any]:
    """Run both phases and return the suite's JSON section."""
    if ctx.model_path is None:
        return {"skipped": "no model: pass --model PATH or --build-dev-model"}
    transformers: Any = importlib.import_module("transformers")
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # generate()'s advice on flags is noise here
    try:
        return _run(ctx)
    finally:
        transformers.logging.set_verbosity(verbosity)


def _run(ctx: BenchContext) -> dict[str, Any]:
    path = ctx.model_path
    assert path is not None
    items = ctx.prompts.interleaved()
    ctx.log(f"backend: loading {path.name} twice (baseline and backend) on {ctx.device}")
    backend = ctx.backend()
    processor = getattr(getattr(backend, "encoder", None), "processor", None)
    baseline = HFBaseline(path, ctx.device, processor)
    driver = Driver(backend)
    try:
        prompt_info = _prompt_info(backend, baseline, items)
        weights_mb = round(baseline.weight_bytes() / 2**20, 1)
        conversation_cache = int(backend.conversation_cache_tokens)
        backend.conversation_cache_tokens = 0  # phases A and B: every prompt cold
        # Warm up: kernels, and the prefix cache for both roles (a one-time cost per process).
        driver.classify(_one_per_role(items))
        baseline.check(items[0][1])
        ctx.log(f"backend: phase A, {len(items)} prompts x (baseline, prefix cache on, off)")
        latency = _phase_a(ctx, driver, baseline, items)
        ctx.log(f"backend: phase B, {ctx.settings.rounds} interleaved round(s) of batches "
                f"{', '.join(map(str, ctx.settings.batch_sizes))} and one unbucketed batch")
        throughput = measure_throughput(ctx, driver, [c for _, c in items])
        unsafe_path = measure_unsafe_path(driver, [c for _, c in items[:UNSAFE_SAMPLE]])
        checks = ctx.prompts.session_checks()
        ctx.log(f"backend: phase C, {len(checks)} checks of {len(ctx.prompts.sessions)} "
                "conversations, turn by turn (baseline, backend)")
        sessions = _phase_sessions(driver, baseline, checks, conversation_cache)
    finally:
        driver.close()
        baseline.close()  # the backend stays loaded for the guard suite (ctx.close() frees it)
    result = _assemble(ctx, prompt_info, weights_mb, latency, throughput, unsafe_path)
    result["sessions"] = sessions
    result["ratios"]["sessions_tokens_per_check"] = sessions["tokens_ratio"]
    return result


def _assemble(
    ctx: BenchContext,
    prompt_info: dict[str, Any],
    weights_mb: float,
    latency: dict[str, Any],
    throughput: dict[str, Any],
    unsafe_path: dict[str, Any],
) -> dict[str, Any]:
    peaks, absolute = ctx.monitor.peaks_mb(), ctx.monitor.absolute_peaks_mb()
    base, ours, off = latency["baseline"], latency["backend"], latency["prefix_off"]
    batch_1 = ratio(ours["throughput_cps"], base["throughput_cps"])  # paired, phase A
    units = throughput["units"]
    sizes = [str(b) for b in ctx.settings.batch_sizes]
    chained = {
        b: _r((units[b]["relative_to_batch_1"] or 0.0) * batch_1 if batch_1 else None)
        for b in sizes
    }
    for b in sizes:
        units[b]["peak_working_rss_mb"] = peaks.get(f"backend_b{b}")
        units[b]["peak_process_rss_mb"] = absolute.get(f"backend_b{b}")
    units["single_sub_batch"]["peak_working_rss_mb"] = peaks.get("backend_single_sub_batch")
    for unit in ("packed", "padded"):
        units[unit]["peak_working_rss_mb"] = peaks.get(f"backend_{unit}")
    return {
        "prompts": prompt_info,
        "weights_mb": weights_mb,
        "baseline": {
            "method": "render_prompt + processor, then model.generate(max_new_tokens="
            f"{BASELINE_NEW_TOKENS}, do_sample=False), one message at a time",
            **base,
            "lm_head_positions_per_check": BASELINE_NEW_TOKENS,
            "peak_working_rss_mb": peaks.get("baseline"),
        },
        "backend": {
            "method": "TransformersBackend.classify_batch, prefix cache on, safe path",
            "threshold": SAFE_PATH,
            **{k: v for k, v in ours.items() if k != "throughput_cps"},
            "phase_a_throughput_cps": ours["throughput_cps"],
            "lm_head_positions_per_check": 1,
            "throughput_cps": {b: units[b]["throughput_cps"] for b in sizes},
            "by_batch": {b: units[b] for b in sizes},
            "peak_working_rss_mb": peaks.get("backend_b1"),
            "prefix_tokens": prompt_info.pop("prefix_tokens"),
        },
        "prefix_cache_off": {**off, "peak_working_rss_mb": peaks.get("backend_b1_no_prefix")},
        "single_sub_batch": units["single_sub_batch"],
        "length_bucketing": throughput["bucketing"],
        "packing": {**throughput["packing"], "packed": units["packed"], "padded": units["padded"]},
        "unsafe_path": unsafe_path,
        "by_workload": latency["by_workload"],
        "ratios": {
            "throughput": chained,
            "throughput_best": max((v for v in chained.values() if v is not None), default=None),
            "tokens_per_check": _r(ratio(ours["tokens_per_check"], base["tokens_per_check"])),
            "latency_p50": _r(ratio(ours["latency_ms"]["p50"], base["latency_ms"]["p50"])),
            "latency_p99": _r(ratio(ours["latency_ms"]["p99"], base["latency_ms"]["p99"])),
            "latency_paired_median": latency["paired_latency_ratio"],
            "prefix_cache_tokens": _r(ratio(ours["tokens_per_check"], off["tokens_per_check"])),
            "prefix_cache_latency_p50": _r(
                ratio(ours["latency_ms"]["p50"], off["latency_ms"]["p50"])
            ),
        },
        "memory_note": "weights_mb: parameter bytes of the checkpoint (each of the two models); "
        "peak_working_rss_mb: highest RSS above the RSS at the start of a check or call "
        "(activations, KV cache, logits); peak_process_rss_mb: whole process (both models)",
    }


def _r(value: float | None) -> float | None:
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
        prompt = request(conversation).prompt
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
    ctx: BenchContext, driver: Driver, baseline: HFBaseline, items: Sequence[Item]
) -> dict[str, Any]:
    backend = driver.backend
    stats = backend.stats
    runs: dict[str, list[Run]] = {"baseline": [], "on": [], "off": []}

    def ours(conversation: Conversation, prefix_cache: bool) -> tuple[float, int, int]:
        backend.prefix_cache = prefix_cache
        stats.reset()
        start = time.perf_counter()
        try:
            with ctx.monitor.phase("backend_b1" if prefix_cache else "backend_b1_no_prefix"):
                driver.classify([conversation])
        finally:
            backend.prefix_cache = True
        return time.perf_counter() - start, int(stats.tokens_computed), int(stats.decoded_checks)

    for index, (kind, conversation) in enumerate(items):
        for step in range(3):
            which = ("baseline", "on", "off")[(index + step) % 3]
            if which == "baseline":
                with ctx.monitor.phase("baseline"):
                    check = baseline.check(conversation)
                runs["baseline"].append((kind, check.seconds, check.tokens_computed, 0))
            else:
                runs[which].append((kind, *ours(conversation, which == "on")))
    paired = [o[1] / b[1] for o, b in zip(runs["on"], runs["baseline"], strict=True)]
    return {
        "baseline": _latency_block(runs["baseline"]),
        "backend": _latency_block(runs["on"]),
        "prefix_off": _latency_block(runs["off"]),
        "paired_latency_ratio": round(median(paired), 3),
        "by_workload": _by_workload(runs["baseline"], runs["on"]),
    }


def _phase_sessions(
    driver: Driver, baseline: HFBaseline, checks: Sequence[tuple[int, Conversation]], size: int
) -> dict[str, Any]:
    """Each session's turns in order through the baseline and the backend (conversation cache
    of `size` positions, started empty), alternating which goes first from session to session."""
    backend = driver.backend
    stats = backend.stats
    backend.conversation_cache_tokens = 0  # resizing to 0 empties it
    backend.conversation_cache_tokens = size
    runs: dict[str, list[Run]] = {"baseline": [], "backend": []}
    hits = 0
    for session, conversation in checks:
        for which in (("baseline", "backend") if session % 2 == 0 else ("backend", "baseline")):
            if which == "baseline":
                check = baseline.check(conversation)
                runs["baseline"].append(("sessions", check.seconds, check.tokens_computed, 0))
                continue
            stats.reset()
            start = time.perf_counter()
            driver.classify([conversation])
            seconds = time.perf_counter() - start
            hits += int(stats.conversation_hits)
            runs["backend"].append(
                ("sessions", seconds, int(stats.tokens_computed), int(stats.decoded_checks))
            )
    base, ours = _latency_block(runs["baseline"]), _latency_block(runs["backend"])
    return {
        "sessions": len({s for s, _ in checks}),
        "checks": len(checks),
        "conversation_cache_tokens": size,
        "conversation_hits": hits,
        "baseline": base,
        "backend": ours,
        "tokens_ratio": _r(ratio(ours["tokens_per_check"], base["tokens_per_check"])),
        "latency_p50_ratio": _r(ratio(ours["latency_ms"]["p50"], base["latency_ms"]["p50"])),
        "throughput_ratio": _r(ratio(ours["throughput_cps"], base["throughput_cps"])),
    }


def _latency_block(runs: Sequence[Run]) -> dict[str, Any]:
    seconds = [r[1] for r in runs]
    return {
        "latency_ms": summarize(seconds, 1000).to_dict(1),
        "throughput_cps": round(len(runs) / sum(seconds), 3),
        "tokens_per_check": round(sum(r[2] for r in runs) / len(runs), 1),
        "decoded_fraction": round(sum(r[3] for r in runs) / len(runs), 3),
    }


def _by_workload(base: Sequence[Run], ours: Sequence[Run]) -> dict[str, Any]:
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
            "latency_ratio": _r(ratio(o_p50, b_p50)),
            "tokens_ratio": _r(ratio(o_tokens, b_tokens)),
            "throughput_ratio": _r(ratio(sum(r[1] for r in b), sum(r[1] for r in o))),
        }
    return result
