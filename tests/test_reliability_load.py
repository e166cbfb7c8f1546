"""Load through the real backends: the tiny dev model in-process and the loopback HTTP server.

Rows of the generated reliability table (docs/reliability.md)."""

from __future__ import annotations

import asyncio
import resource
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from guard_plugins import Guard, Policy

reliability = pytest.mark.reliability


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.model
@reliability(
    "load",
    "tiny dev model in-process: 1,000 asyncio tasks + 32 threads x 16 checks, micro-batching on",
    "each caller gets the verdict of its own content",
)
def test_tiny_model_under_concurrent_load(tiny_backend: Any, record_property: Any) -> None:
    texts = [f"message number {i}: " + "lorem ipsum " * (i % 5) for i in range(40)]
    guard = Guard(tiny_backend, Policy(monitor=True), cache_size=0, max_batch_size=16)
    reference = {t: guard.check_input(t).verdict.score for t in texts}  # type: ignore[union-attr]
    scores = sorted(s for s in reference.values() if s is not None)
    # Distinct contents must be distinguishable by score for the routing proof to mean anything
    # (batched and one-by-one scores agree to ~1e-8 in float32; contents differ by >= 1e-5).
    distinct = {
        t
        for t in texts
        if all(
            abs(reference[t] - reference[u]) > 1e-5  # type: ignore[operator]
            for u in texts
            if u != t
        )
    }
    assert len(distinct) >= 10 and len(scores) == len(texts)

    def matches(text: str, score: float | None) -> bool:
        return score is not None and abs(score - reference[text]) < 1e-6  # type: ignore[operator]

    async def tasks() -> list[bool]:
        async def one(i: int) -> bool:
            text = texts[i % len(texts)]
            decision = await guard.acheck_input(text)
            return matches(text, decision.verdict.score if decision.verdict else None)

        return list(await asyncio.gather(*(one(i) for i in range(1000))))

    def threaded(i: int) -> bool:
        text = texts[(i * 7) % len(texts)]
        decision = guard.check_input(text)
        return matches(text, decision.verdict.score if decision.verdict else None)

    rss_before = _rss_mb()
    start = time.perf_counter()
    with ThreadPoolExecutor(max_workers=32) as pool:
        async_part = pool.submit(asyncio.run, tasks())
        thread_results = list(pool.map(threaded, range(32 * 16)))
        task_results = async_part.result(timeout=900)
    elapsed = time.perf_counter() - start
    assert all(task_results) and all(thread_results)
    record_property(
        "figures",
        f"1,512 checks in {elapsed:.1f}s ({1512 / elapsed:.0f}/s), "
        f"{guard.batcher.batches} backend batches, max RSS +{_rss_mb() - rss_before:.0f} MB",
    )


@reliability(
    "load",
    "loopback HTTP server: 10,000 checks from 32 threads + 1,000 concurrent tasks",
    "every caller gets exactly its own verdict, no deadlock",
)
def test_http_backend_under_load(record_property: Any) -> None:
    pytest.importorskip("httpx")
    from guard_plugins.backends.openai_compatible import OpenAICompatibleBackend
    from guard_plugins.loopback import LoopbackServer, RuleEngine

    with LoopbackServer(RuleEngine.keywords({"attack": "S1"})) as server:
        backend = OpenAICompatibleBackend(server.base_url, server.model, max_connections=16)
        guard = Guard(backend, cache_size=0)

        def text(kind: str, i: int, every: int) -> str:
            return f"{kind} {i}" + (" attack" if i % every == 0 else "")

        def threaded(i: int) -> bool:
            return guard.check_input(text("thread", i, 7)).allowed is (i % 7 != 0)

        async def tasks() -> list[bool]:
            async def one(i: int) -> bool:
                return (await guard.acheck_input(text("task", i, 5))).allowed is (i % 5 != 0)

            return list(await asyncio.gather(*(one(i) for i in range(1000))))

        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=32) as pool:
            async_part = pool.submit(asyncio.run, tasks())
            thread_results = list(pool.map(threaded, range(10_000)))
            task_results = async_part.result(timeout=900)
        elapsed = time.perf_counter() - start
        backend.close()
        assert all(thread_results) and len(thread_results) == 10_000
        assert all(task_results) and len(task_results) == 1000
        requests = server.hits
    record_property(
        "figures",
        f"11,000 checks in {elapsed:.1f}s over {requests} HTTP requests "
        f"({11_000 / elapsed:.0f} checks/s)",
    )
