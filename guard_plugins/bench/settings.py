"""Run settings (full vs ``--quick``) and the context handed to every suite."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from guard_plugins.bench.measure import RssMonitor
from guard_plugins.bench.workloads import PromptSet

__all__ = ["SUITES", "BenchContext", "BenchSettings", "stderr_log"]

#: every suite, in the order they run
SUITES = ("backend", "guard", "agent", "adapters", "streaming")


@dataclass(frozen=True)
class BenchSettings:
    """How much work each suite does. `full()` for the recorded numbers, `quick()` for CI."""

    quick: bool
    dev_model_size: str
    prompts_per_workload: int
    batch_sizes: tuple[int, ...]
    rounds: int
    guard_concurrency_model: int
    guard_concurrency_simulated: int
    guard_simulated_delay_s: float
    agent_time_scale: float
    agent_repetitions: int
    overhead_iterations: int
    model_call_s: float = 0.8
    guard_check_s: float = 0.15
    tool_run_s: float = 0.0

    @classmethod
    def full(cls) -> BenchSettings:
        return cls(
            quick=False,
            dev_model_size="bench",
            prompts_per_workload=12,
            batch_sizes=(1, 8, 32),
            rounds=3,
            guard_concurrency_model=16,
            guard_concurrency_simulated=32,
            guard_simulated_delay_s=0.05,
            agent_time_scale=1.0,
            agent_repetitions=5,
            overhead_iterations=2000,
        )

    @classmethod
    def quick_settings(cls) -> BenchSettings:
        return cls(
            quick=True,
            dev_model_size="tiny",
            prompts_per_workload=4,
            batch_sizes=(1, 8, 32),
            rounds=1,
            guard_concurrency_model=8,
            guard_concurrency_simulated=32,
            guard_simulated_delay_s=0.01,
            agent_time_scale=0.1,
            agent_repetitions=2,
            overhead_iterations=100,
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data


_START = time.perf_counter()


def stderr_log(message: str) -> None:
    print(f"[bench {time.perf_counter() - _START:6.1f}s] {message}", file=sys.stderr, flush=True)


@dataclass
class BenchContext:
    """What a suite needs: settings, workloads, the model (if any), a memory monitor, a log."""

    settings: BenchSettings
    prompts: PromptSet
    model_path: Path | None
    device: str = "cpu"
    monitor: RssMonitor = field(default_factory=RssMonitor)
    log: Callable[[str], None] = stderr_log
    notes: list[str] = field(default_factory=list)
    _backend: Any = field(default=None, repr=False)

    def backend(self) -> Any:
        """The run's `TransformersBackend`, loaded on first use and shared by the suites."""
        if self._backend is None and self.model_path is not None:
            from guard_plugins.bench.models import load_backend

            self._backend = load_backend(self.model_path, self.device)
        return self._backend

    @property
    def backend_loaded(self) -> bool:
        return self._backend is not None

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None
