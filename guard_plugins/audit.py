"""Audit events: one structured record per Decision, to `logging` and to registered sinks.

Events carry hook, action, rule, categories, score, latency and a SHA-256 of the checked content;
the content itself only when the policy opts in (`log_content: true`). A sink is any callable
taking the event dict; `JsonlAuditSink` appends JSON lines to a file. When `opentelemetry-api` is
installed, each check is also a span (``guard_plugins.check``) with GenAI-style attributes.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from guard_plugins.decision import Decision
from guard_plugins.policy import Hook

__all__ = ["AuditSink", "JsonlAuditSink", "build_event", "emit", "otel_span", "wanted"]

logger = logging.getLogger("guard_plugins.audit")
AuditSink = Callable[[dict[str, Any]], None]
Recorder = Callable[[Decision], None]


def build_event(decision: Decision, content: str, *, include_content: bool) -> dict[str, Any]:
    event: dict[str, Any] = {"event": "guard_plugins.decision", "ts": time.time()}
    event.update(decision.to_dict())
    event["content_sha256"] = hashlib.sha256(content.encode("utf-8", "surrogatepass")).hexdigest()
    event["content_chars"] = len(content)
    if include_content:
        event["content"] = content
    return event


def wanted(decision: Decision, sinks: list[AuditSink]) -> bool:
    """Whether `emit` would do anything for this decision: a sink, or logging at its level.
    Lets the Guard skip building the event (hashing, to_dict) when nobody would see it."""
    if sinks:
        return True
    allowed = decision.allowed and not decision.failed
    return logger.isEnabledFor(logging.INFO if allowed else logging.WARNING)


def emit(event: dict[str, Any], sinks: list[AuditSink]) -> None:
    """Log the event and hand it to every sink; a failing sink is logged, never raised."""
    level = logging.INFO if event.get("allowed") and not event.get("failed") else logging.WARNING
    if logger.isEnabledFor(level):
        logger.log(level, "guard decision %s", json.dumps(_loggable(event), default=str))
    for sink in sinks:
        try:
            sink(event)
        except Exception:
            logger.exception("audit sink %r failed", sink)


def _loggable(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k != "content"}


class JsonlAuditSink:
    """Append each event as one JSON line to `path` (thread-safe, flushed per event)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def __call__(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, ensure_ascii=False, default=str)
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")

    def __repr__(self) -> str:
        return f"JsonlAuditSink({str(self.path)!r})"


@functools.lru_cache(maxsize=1)
def _trace_api() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        return None
    return trace


def _tracer() -> Any:
    # Looked up per call so a tracer provider configured after import is honoured. With none
    # configured (the API's proxy or no-op provider) spans would be non-recording: skip them.
    api = _trace_api()
    if api is None:
        return None
    provider = api.get_tracer_provider()
    if isinstance(provider, (api.ProxyTracerProvider, api.NoOpTracerProvider)):
        return None
    return provider.get_tracer("guard_plugins")


class _NoSpan:
    """The context manager `otel_span` returns when there is no tracer: records nothing."""

    __slots__ = ()

    def __enter__(self) -> Recorder:
        return _ignore

    def __exit__(self, *exc: object) -> None:
        return None


def _ignore(decision: Decision) -> None:
    return None


_NO_SPAN = _NoSpan()


def otel_span(hook: Hook | str, backend: str) -> contextlib.AbstractContextManager[Recorder]:
    """A span around one check; yields a function that records the Decision on it."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    # The hook's name is read only for a span (an enum's .value is a Python-level descriptor).
    return _span(tracer, hook.value if isinstance(hook, Hook) else hook, backend)


@contextlib.contextmanager
def _span(tracer: Any, hook: str, backend: str) -> Iterator[Recorder]:
    with tracer.start_as_current_span(
        "guard_plugins.check",
        attributes={
            "gen_ai.operation.name": "guardrail",
            "gen_ai.system": "llama_guard",
            "guard_plugins.hook": hook,
            "guard_plugins.backend": backend,
        },
    ) as span:

        def record(decision: Decision) -> None:
            span.set_attribute("guard_plugins.action", decision.action.value)
            span.set_attribute("guard_plugins.allowed", decision.allowed)
            span.set_attribute("guard_plugins.rule", decision.rule)
            span.set_attribute("guard_plugins.categories", list(decision.codes))
            if decision.verdict is not None and decision.verdict.score is not None:
                span.set_attribute("guard_plugins.score", decision.verdict.score)
            if decision.failed:
                span.set_attribute("error.type", decision.error or "error")

        yield record
