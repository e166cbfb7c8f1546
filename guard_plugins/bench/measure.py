"""Measurement helpers: latency summaries, resident-memory peaks, machine description.

Memory is resident set size (RSS), not tracemalloc: torch's CPU allocations bypass Python's
allocator, so tracemalloc would not see them. `RssMonitor` samples ``/proc/self/statm`` from a
background thread and records, per labelled phase, the highest RSS seen above the RSS at the
phase's start (the phase's working memory); ``ru_maxrss`` (the process's high-water mark) is
reported alongside, and so is each phase's absolute peak RSS. Where ``/proc`` is missing, only
``ru_maxrss`` deltas are available.
"""

from __future__ import annotations

import math
import os
import platform
import resource
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

__all__ = [
    "RssMonitor",
    "Summary",
    "current_rss_mb",
    "machine_info",
    "max_rss_mb",
    "median",
    "percentile",
    "ratio",
    "summarize",
]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
_MB = 1024 * 1024


def percentile(values: Sequence[float], q: float) -> float:
    """The `q`-th percentile (0–100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """numerator / denominator, or None when either is missing or the denominator is 0."""
    if numerator is None or denominator is None or not denominator:
        return None
    if math.isnan(numerator) or math.isnan(denominator):
        return None
    return numerator / denominator


@dataclass(frozen=True)
class Summary:
    """p50 / p99 / mean / min / max of `n` samples, in the unit the caller chose."""

    n: int
    p50: float
    p99: float
    mean: float
    min: float
    max: float

    def to_dict(self, digits: int = 3) -> dict[str, float | int]:
        return {
            "n": self.n,
            "p50": round(self.p50, digits),
            "p99": round(self.p99, digits),
            "mean": round(self.mean, digits),
            "min": round(self.min, digits),
            "max": round(self.max, digits),
        }


def summarize(values: Sequence[float], scale: float = 1.0) -> Summary:
    """Summary of `values` multiplied by `scale` (e.g. 1000 for seconds → ms)."""
    scaled = [v * scale for v in values]
    if not scaled:
        return Summary(0, math.nan, math.nan, math.nan, math.nan, math.nan)
    return Summary(
        len(scaled),
        percentile(scaled, 50),
        percentile(scaled, 99),
        sum(scaled) / len(scaled),
        min(scaled),
        max(scaled),
    )


def current_rss_mb() -> float | None:
    """Resident set size now (Linux ``/proc``), or None where it cannot be read."""
    try:
        with open("/proc/self/statm", encoding="ascii") as statm:
            return int(statm.read().split()[1]) * _PAGE / _MB
    except (OSError, ValueError, IndexError):
        return None


def max_rss_mb() -> float:
    """The process's peak RSS so far (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / _MB if sys.platform == "darwin" else peak / 1024


class RssMonitor:
    """Samples RSS every `interval_s` and keeps each phase's peak above its starting RSS.

    >>> monitor = RssMonitor()
    >>> with monitor.running(), monitor.phase("work"):
    ...     data = bytearray(50 * 1024 * 1024)
    >>> monitor.peaks_mb()["work"] >= 0
    True
    """

    def __init__(self, interval_s: float = 0.005) -> None:
        self.interval_s = interval_s
        self._label: str | None = None
        self._base = 0.0
        self._peak = 0.0
        self._peaks: dict[str, float] = {}
        self._absolute: dict[str, float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @contextmanager
    def running(self) -> Iterator[RssMonitor]:
        self._stop.clear()
        self._thread = threading.Thread(target=self._sample, name="bench-rss", daemon=True)
        self._thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            self._thread.join()
            self._thread = None

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._observe()

    def _observe(self) -> None:
        rss = current_rss_mb()
        if rss is None:
            return
        with self._lock:
            if self._label is not None:
                self._peak = max(self._peak, rss)

    @contextmanager
    def phase(self, label: str) -> Iterator[None]:
        """Record the peak working memory of the enclosed code under `label` (max over uses)."""
        start_rss = current_rss_mb()
        start_max = max_rss_mb()
        with self._lock:
            self._label = label
            self._base = start_rss if start_rss is not None else 0.0
            self._peak = self._base
        try:
            yield
        finally:
            self._observe()
            with self._lock:
                # Without /proc only the growth of the high-water mark is known.
                extra = (
                    max_rss_mb() - start_max if start_rss is None else self._peak - self._base
                )
                self._peaks[label] = max(self._peaks.get(label, 0.0), extra)
                top = self._peak if start_rss is not None else max_rss_mb()
                self._absolute[label] = max(self._absolute.get(label, 0.0), top)
                self._label = None

    def peaks_mb(self) -> dict[str, float]:
        """Per phase: the highest RSS above the RSS at the phase's start."""
        with self._lock:
            return {k: round(v, 1) for k, v in self._peaks.items()}

    def absolute_peaks_mb(self) -> dict[str, float]:
        """Per phase: the highest RSS of the whole process seen during the phase."""
        with self._lock:
            return {k: round(v, 1) for k, v in self._absolute.items()}


def machine_info() -> dict[str, Any]:
    """Where the numbers come from: CPU, load, Python and library versions."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": _load_average(),
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    for module in ("torch", "transformers"):
        imported = sys.modules.get(module)
        if imported is not None:
            info[module] = getattr(imported, "__version__", "?")
    torch = sys.modules.get("torch")
    if torch is not None:
        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = bool(torch.cuda.is_available())
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None
