"""Shared pytest fixtures. Keep each group in clearly named functions."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# -- the real Llama 4 tokenizer and the tiny dev model (TransformersBackend tests) ------------

REPO_ROOT = Path(__file__).resolve().parents[1]


def real_tokenizer_dir() -> Path:
    """``$GUARD_PLUGINS_TOKENIZER``, else ``../shared/llama4-tokenizer`` next to the repository."""
    env = os.environ.get("GUARD_PLUGINS_TOKENIZER")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "llama4-tokenizer"


def _require_model_deps() -> None:
    """Skip (with the reason) unless torch, torchvision and transformers are importable."""
    pytest.importorskip("torch", reason="the transformers extra (torch) is not installed")
    pytest.importorskip("torchvision", reason="the transformers extra (torchvision) is not installed")
    pytest.importorskip("transformers", reason="the transformers extra is not installed")


@pytest.fixture(scope="session")
def real_tokenizer_path() -> Path:
    path = real_tokenizer_dir()
    if not (path / "tokenizer.json").is_file():
        pytest.skip(f"the real Llama 4 tokenizer is not at {path} (set GUARD_PLUGINS_TOKENIZER)")
    return path


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dev model, built once per session (or reused from $GUARD_PLUGINS_DEV_MODEL_CACHE)."""
    _require_model_deps()
    from guard_plugins.devmodel import build_dev_model, ensure_dev_model

    if not os.environ.get("GUARD_PLUGINS_DEV_MODEL_CACHE"):
        return build_dev_model(tmp_path_factory.mktemp("dev-model") / "tiny", size="tiny")
    return ensure_dev_model("tiny")


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path) -> Iterator[Any]:
    """A TransformersBackend on the tiny dev model (CPU, float32, prefix cache on). Shared:
    reset `stats` before asserting on them."""
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend.from_pretrained(tiny_model_dir, device="cpu", local_files_only=True)
    yield backend
    backend.close()
