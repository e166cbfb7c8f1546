"""Fixtures of the LangChain integration tests: a keyword-driven FunctionBackend guard."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guard_plugins import Guard, Policy
from guard_plugins.testing import FunctionBackend
from langchain_support import keyword_verdict, png_bytes


@pytest.fixture
def backend() -> FunctionBackend:
    return FunctionBackend(keyword_verdict)


@pytest.fixture
def guard(backend: FunctionBackend) -> Guard:
    return Guard(backend, cache_size=0)


@pytest.fixture
def refusing_guard(backend: FunctionBackend) -> Guard:
    """User input refused (not blocked), so refusals come back in the chain's shape."""
    return Guard(backend, Policy.from_dict({"user_input": {"action": "refuse"}}), cache_size=0)


@pytest.fixture
def png_b64() -> str:
    return base64.b64encode(png_bytes()).decode("ascii")


# -- the tiny dev model (TransformersBackend; random weights: tests assert plumbing only) -------


@pytest.fixture(scope="session")
def dev_model_dir() -> Path:
    """The tiny dev model, built once into the shared cache (``$GUARD_PLUGINS_DEV_MODEL_CACHE``,
    else ``~/.cache/guard-plugins``) that the core tests and benchmarks use too."""
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
