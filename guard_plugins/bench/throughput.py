"""Throughput of `TransformersBackend` by batch size, length bucketing, and the unsafe path.

Runs are *interleaved*: each round runs every unit once, in an order rotated from round to round,
so slow drifts in machine load (shared cores) hit all units alike; results are medians over
rounds, and ratios between units are taken round by round before the median.

Units over the same prompt set (the first `max(batch_sizes)` prompts), the backend configured as
users get it (``max_batch_size=8``):

- ``"1"``, ``"8"``, ``"32"``: calls of that many requests. A call larger than the sub-batch limit
  is sorted by length and cut into sub-batches (length bucketing); a call within the limit runs
  as one sub-batch in arrival order.
- ``"single_sub_batch"``: the same call of 32 with the limit raised to 32 — one sub-batch,
  padded to its longest prompt (or packed, when that pads more than 30%).
- ``"packed"`` / ``"padded"``: the call of 32 with ``packing=True`` (every sub-batch of 8 one
  row, no padding) and ``packing=False`` (every sub-batch left-padded); the default, ``"auto"``,
  chooses per sub-batch.

Length bucketing is measured as the largest call (sorted sub-batches of 8) against calls of 8 in
arrival order: the same sub-batch size, only the grouping differs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from guard_plugins.backends.base import ClassificationRequest
from guard_plugins.bench.measure import median, ratio, summarize
from guard_plugins.bench.settings import BenchContext
from guard_plugins.conversation import Conversation

__all__ = ["SAFE_PATH", "Driver", "measure_throughput", "measure_unsafe_path", "request"]

#: threshold for the safe path: categories are never decoded (score 1.0 does not occur)
SAFE_PATH = 1.0
#: threshold for the unsafe path: categories are always decoded
UNSAFE_PATH = 1e-6
SINGLE = "single_sub_batch"
PADDED = "padded"
PACKED = "packed"
_PACKING = {PADDED: False, PACKED: True}
#: units that make the whole call of the largest size at once
_WHOLE_CALL = (SINGLE, PADDED, PACKED)


def request(conversation: Conversation, threshold: float = SAFE_PATH) -> ClassificationRequest:
    return ClassificationRequest(conversation, threshold=threshold)


class Driver:
    """Calls the backend's async API on one private event loop, as the Guard does (the sync
    wrapper would add a hop through the shared background loop to every call)."""

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self.loop = asyncio.new_event_loop()

    def classify(self, conversations: Sequence[Conversation], threshold: float = SAFE_PATH) -> Any:
        requests = [request(c, threshold) for c in conversations]
        return self.loop.run_until_complete(self.backend.classify_batch(requests))

    def close(self) -> None:
        self.loop.close()


def _run_unit(
    ctx: BenchContext, driver: Driver, unit: str, conversations: Sequence[Conversation]
) -> dict[str, Any]:
    backend = driver.backend
    size = len(conversations) if unit in _WHOLE_CALL else int(unit)
    calls = [conversations[i: i + size] for i in range(0, len(conversations), size)]
    saved, packing = backend.max_batch_size, backend.packing
    if unit == SINGLE:
        backend.max_batch_size = size
    if unit in _PACKING:
        backend.packing = _PACKING[unit]
    backend.stats.reset()
    try:
        start = time.perf_counter()
        phase = f"backend_{unit}" if unit in _WHOLE_CALL else f"backend_b{unit}"
        with ctx.monitor.phase(phase):
            for call in calls:
                driver.classify(call)
        seconds = time.perf_counter() - start
    finally:
        backend.max_batch_size, backend.packing = saved, packing
    limit = size if unit == SINGLE else saved
    stats = backend.stats
    computed, padding = int(stats.tokens_computed), int(stats.padding_tokens)
    return {
        "throughput_cps": len(conversations) / seconds,
        "tokens_per_check": computed / len(conversations),
        "padding_tokens": padding,
        "padding_fraction": ratio(padding, padding + computed),
        "forward_passes": int(stats.forward_passes),
        "calls": len(calls),
        "sub_batch_limit": limit,
    }


def measure_throughput(
    ctx: BenchContext, driver: Driver, conversations: Sequence[Conversation]
) -> dict[str, Any]:
    """Interleaved rounds of every unit; medians, and ratios to unit ``"1"`` per round."""
    sizes = ctx.settings.batch_sizes
    chosen = list(conversations[: max(sizes)])
    limit = int(driver.backend.max_batch_size)
    arrival = str(limit)
    units = [str(b) for b in sizes] + [SINGLE, PACKED, PADDED]
    units += [] if limit in sizes else [arrival]
    runs: dict[str, list[dict[str, Any]]] = {u: [] for u in units}
    for round_index in range(ctx.settings.rounds):
        shift = round_index % len(units)
        for unit in units[shift:] + units[:shift]:
            runs[unit].append(_run_unit(ctx, driver, unit, chosen))
    first = units[0]

    def paired(unit: str, other: str) -> float | None:
        values = [ratio(a["throughput_cps"], b["throughput_cps"])
                  for a, b in zip(runs[unit], runs[other], strict=True)]
        clean = [v for v in values if v is not None]
        return round(median(clean), 3) if clean else None

    by_unit = {}
    for unit, samples in runs.items():
        last = samples[-1]
        by_unit[unit] = {
            "throughput_cps": round(median([s["throughput_cps"] for s in samples]), 3),
            "relative_to_batch_1": paired(unit, first),
            "tokens_per_check": round(last["tokens_per_check"], 1),
            "padding_tokens": last["padding_tokens"],
            "padding_fraction": _round(last["padding_fraction"]),
            "forward_passes": last["forward_passes"],
            "calls": last["calls"],
            "sub_batch_limit": last["sub_batch_limit"],
            "rounds": len(samples),
        }
    largest = str(max(sizes))
    return {
        "checks": len(chosen),
        "units": by_unit,
        "bucketing": {
            "sub_batch_limit": limit,
            "checks": len(chosen),
            "bucketed_padding_tokens": by_unit[largest]["padding_tokens"],
            "arrival_order_padding_tokens": by_unit[arrival]["padding_tokens"],
            "bucketed_padding_fraction": by_unit[largest]["padding_fraction"],
            "arrival_order_padding_fraction": by_unit[arrival]["padding_fraction"],
            "throughput_ratio": paired(largest, arrival),
        },
        "packing": {
            "checks": len(chosen),
            "packed_padding_tokens": by_unit[PACKED]["padding_tokens"],
            "padded_padding_tokens": by_unit[PADDED]["padding_tokens"],
            "padded_padding_fraction": by_unit[PADDED]["padding_fraction"],
            "auto_padding_tokens": by_unit[largest]["padding_tokens"],
            "packed_vs_padded": paired(PACKED, PADDED),
            "auto_vs_padded": paired(largest, PADDED),
        },
    }


def measure_unsafe_path(driver: Driver, conversations: Sequence[Conversation]) -> dict[str, Any]:
    """The same checks on the safe path and decoding their categories (as a flagged check does),
    one at a time, alternating."""
    stats = driver.backend.stats
    seconds: dict[float, list[float]] = {SAFE_PATH: [], UNSAFE_PATH: []}
    tokens: dict[float, int] = {SAFE_PATH: 0, UNSAFE_PATH: 0}
    for conversation in conversations:
        for threshold in (SAFE_PATH, UNSAFE_PATH):
            stats.reset()
            start = time.perf_counter()
            driver.classify([conversation], threshold)
            seconds[threshold].append(time.perf_counter() - start)
            tokens[threshold] += int(stats.tokens_computed)
    n = len(conversations)
    return {
        "threshold": UNSAFE_PATH,
        "checks": n,
        "latency_ms": summarize(seconds[UNSAFE_PATH], 1000).to_dict(1),
        "tokens_per_check": round(tokens[UNSAFE_PATH] / n, 1),
        "safe_path_latency_ms": summarize(seconds[SAFE_PATH], 1000).to_dict(1),
        "safe_path_tokens_per_check": round(tokens[SAFE_PATH] / n, 1),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)
