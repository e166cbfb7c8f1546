"""Fixtures for the LlamaIndex integration tests (helpers live in llamaindex_support)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guard_plugins import Guard
from llama_index.core import Settings
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.base import BaseEvent
from llamaindex_support import EventCollector, Recorder, make_guard


@pytest.fixture
def guarded() -> tuple[Guard, Recorder]:
    return make_guard()


@pytest.fixture
def decision_events() -> Iterator[list[BaseEvent]]:
    collector = EventCollector(events=[])
    root = get_dispatcher()
    root.add_event_handler(collector)
    try:
        yield collector.events
    finally:
        root.event_handlers.remove(collector)


@pytest.fixture(autouse=True)
def _clean_settings() -> Iterator[None]:
    yield
    Settings._callback_manager = None


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Record (and refuse) every outbound connection attempt."""
    attempts: list[Any] = []

    def refuse(self: socket.socket, address: Any, *args: Any) -> None:
        attempts.append(address)
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# -- the tiny dev model (TransformersBackend; random weights: tests assert plumbing only) ------


@pytest.fixture(scope="session")
def dev_model_dir() -> Path:
    """The tiny dev model, built once into the shared cache the core tests and benchmarks use
    (``$GUARD_PLUGINS_DEV_MODEL_CACHE/tiny``, else ``~/.cache/guard-plugins/dev-model-tiny``)."""
    for module in ("torch", "torchvision", "transformers"):
        pytest.importorskip(module, reason="the guard-plugins[transformers] extra is not installed")
    from guard_plugins.devmodel import ensure_dev_model

    return ensure_dev_model("tiny")


@pytest.fixture(scope="session")
def dev_backend(dev_model_dir: Path) -> Iterator[Any]:
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend.from_pretrained(
        dev_model_dir, device="cpu", local_files_only=True
    )
    yield backend
    backend.close()
