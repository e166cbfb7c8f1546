"""Benchmarks: ``guard-plugins bench`` (docs/performance.md).

Suites: ``backend`` (the release-notes ``generate()`` baseline against `TransformersBackend` on
the same checkpoint), ``guard`` (micro-batching of concurrent checks), ``agent`` (speculative
input checks in a simulated agent turn) and ``adapters`` (per-hook overhead with a zero-latency
backend). Nothing here is imported by the library itself; torch is imported only by the model
suites.
"""

from __future__ import annotations

from guard_plugins.bench.cli import main, register, run_bench
from guard_plugins.bench.report import SCHEMA
from guard_plugins.bench.settings import SUITES, BenchSettings

__all__ = ["SCHEMA", "SUITES", "BenchSettings", "main", "register", "run_bench"]
