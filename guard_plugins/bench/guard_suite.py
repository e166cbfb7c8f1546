"""Suite ``guard``: micro-batching of concurrent checks in the `Guard`, measured under load.

N concurrent ``guard.acheck_input`` calls against the same N one after the other, through the
real Guard pipeline (fitting, policy, audit) with the verdict cache off, so every check reaches
the backend. Two backends:

- ``simulated``: `FunctionBackend(delay=d)`, a fixed cost per backend call whatever the batch size
  — the shape of a GPU forward pass, where a batch of 16 costs little more than one;
- ``model``: the `TransformersBackend` on the run's model (CPU: compute-bound, so batching
  saves much less there than on a GPU; reported as measured).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from guard_plugins.backends.base import Backend
from guard_plugins.bench.measure import median, ratio, summarize
from guard_plugins.bench.settings import BenchContext
from guard_plugins.conversation import Conversation
from guard_plugins.guard import Guard
from guard_plugins.testing import FunctionBackend

__all__ = ["measure_micro_batching", "run_guard_suite"]


def run_guard_suite(ctx: BenchContext, model_backend: Backend | None) -> dict[str, Any]:
    """The suite's JSON section (``model`` is skipped with a note when no model is loaded)."""
    settings = ctx.settings
    users = [c for _, c in ctx.prompts.interleaved() if c.assessed_role == "User"]
    simulated_n = settings.guard_concurrency_simulated
    ctx.log(f"guard: {simulated_n} concurrent vs sequential checks, simulated backend")
    simulated = asyncio.run(
        measure_micro_batching(
            FunctionBackend(lambda _: "safe", delay=settings.guard_simulated_delay_s),
            _take(users, simulated_n),
            rounds=3,
        )
    )
    simulated["backend"] = f"FunctionBackend(delay={settings.guard_simulated_delay_s})"
    result: dict[str, Any] = {"simulated": simulated}
    if model_backend is None:
        result["model"] = {"skipped": "no model loaded (suite backend not run or no --model)"}
        return result
    model_n = min(settings.guard_concurrency_model, len(users))
    ctx.log(f"guard: {model_n} concurrent vs sequential checks on the model")
    model = asyncio.run(measure_micro_batching(model_backend, users[:model_n], rounds=1))
    model["backend"] = f"TransformersBackend({ctx.model_path.name if ctx.model_path else ''})"
    result["model"] = model
    return result


def _take(items: Sequence[Conversation], count: int) -> list[Conversation]:
    # Distinct texts so that the batcher's in-flight de-duplication does not merge them.
    out = []
    for i in range(count):
        base = items[i % len(items)]
        out.append(base if i < len(items) else Conversation.user(f"{base.turns()[-1].text} ({i})"))
    return out


async def measure_micro_batching(
    backend: Backend, conversations: Sequence[Conversation], *, rounds: int
) -> dict[str, Any]:
    """Wall time of N checks sequentially vs concurrently (median over `rounds`)."""
    guard = Guard(backend, cache_size=0)
    await guard.acheck_input(conversations[0])  # warm-up (prefix cache, kernels)
    sequential: list[float] = []
    concurrent: list[float] = []
    concurrent_latencies: list[float] = []
    batch_sizes: list[float] = []
    batches: list[int] = []
    for round_index in range(rounds):
        order = ("sequential", "concurrent") if round_index % 2 == 0 else (
            "concurrent", "sequential"
        )
        for mode in order:
            if mode == "sequential":
                start = time.perf_counter()
                for conversation in conversations:
                    await guard.acheck_input(conversation)
                sequential.append(time.perf_counter() - start)
                continue
            before, requests = guard.batcher.batches, guard.batcher.requests
            start = time.perf_counter()
            decisions = await asyncio.gather(*(guard.acheck_input(c) for c in conversations))
            concurrent.append(time.perf_counter() - start)
            concurrent_latencies.extend((d.latency_ms or 0.0) / 1000 for d in decisions)
            made = guard.batcher.batches - before
            batches.append(made)
            batch_sizes.append((guard.batcher.requests - requests) / max(made, 1))
    n = len(conversations)
    seq, conc = median(sequential), median(concurrent)
    return {
        "checks": n,
        "rounds": rounds,
        "guard_max_batch_size": guard.batcher.max_batch_size,
        "sequential_s": round(seq, 4),
        "concurrent_s": round(conc, 4),
        "sequential_cps": round(n / seq, 2),
        "concurrent_cps": round(n / conc, 2),
        "speedup": round(ratio(seq, conc) or 0.0, 2),
        "mean_backend_batch": round(median(batch_sizes), 1),
        "backend_batches": int(median(batches)),
        "concurrent_check_latency_ms": summarize(concurrent_latencies, 1000).to_dict(1),
    }
