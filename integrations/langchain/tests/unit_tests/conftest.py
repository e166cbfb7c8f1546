"""Fixtures of the LangChain integration tests: a keyword-driven FunctionBackend guard."""

from __future__ import annotations

import base64

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
