"""Shared pytest fixtures. Keep each group in clearly named functions."""

from __future__ import annotations

import os
import shutil
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


def _cached_dev_model_ok(path: Path) -> bool:
    from guard_plugins.devmodel import DEV_MODEL_FORMAT, dev_model_info, expected_tokenizer_source

    info = dev_model_info(path)
    return (
        info is not None
        and info.get("format") == DEV_MODEL_FORMAT
        and info.get("size") == "tiny"
        and info.get("seed") == 0
        and info.get("tokenizer") == expected_tokenizer_source(None)
        and (path / "model.safetensors").is_file()
    )


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny dev model, built once per session (or reused from $GUARD_PLUGINS_DEV_MODEL_CACHE)."""
    _require_model_deps()
    from guard_plugins.devmodel import build_dev_model

    cache = os.environ.get("GUARD_PLUGINS_DEV_MODEL_CACHE")
    if not cache:
        return build_dev_model(tmp_path_factory.mktemp("dev-model") / "tiny", size="tiny")
    target = Path(cache) / "tiny"
    if _cached_dev_model_ok(target):
        return target
    staging = Path(cache) / f".tiny-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    build_dev_model(staging, size="tiny")
    shutil.rmtree(target, ignore_errors=True)
    try:
        staging.rename(target)
    except OSError:  # another session won the race; its copy is equivalent
        shutil.rmtree(staging, ignore_errors=True)
    return target


@pytest.fixture(scope="session")
def tiny_backend(tiny_model_dir: Path) -> Iterator[Any]:
    """A TransformersBackend on the tiny dev model (CPU, float32, prefix cache on). Shared:
    reset `stats` before asserting on them."""
    from guard_plugins.backends.transformers import TransformersBackend

    backend = TransformersBackend.from_pretrained(tiny_model_dir, device="cpu", local_files_only=True)
    yield backend
    backend.close()
