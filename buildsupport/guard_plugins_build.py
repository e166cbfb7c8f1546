"""PEP 517 build backend: setuptools, with the code screen compiled by mypyc in wheels.

`guard_plugins.codescreen` is plain, strictly typed Python. A wheel build (``pip install .``,
``python -m build``) also compiles it with mypyc, which scans about twice as fast; the ``.py``
sources stay in the wheel and are what runs wherever the compiled modules are absent. Editable
installs (``pip install -e .``) and sdists stay pure Python, so edits to the sources take effect
without a rebuild. ``GUARD_PLUGINS_PURE_PYTHON=1`` keeps a wheel pure Python too; a wheel build
that cannot compile (no C compiler, mypyc error) warns and falls back to pure Python.

`setup.py` reads the decision from ``GUARD_PLUGINS_COMPILE``, which only `build_wheel` sets.
"""

from __future__ import annotations

import os
from typing import Any

from setuptools import build_meta as _setuptools
from setuptools.build_meta import (
    build_editable,
    build_sdist,
    get_requires_for_build_editable,
    get_requires_for_build_sdist,
    prepare_metadata_for_build_editable,
    prepare_metadata_for_build_wheel,
)

__all__ = [
    "build_editable",
    "build_sdist",
    "build_wheel",
    "get_requires_for_build_editable",
    "get_requires_for_build_sdist",
    "get_requires_for_build_wheel",
    "prepare_metadata_for_build_editable",
    "prepare_metadata_for_build_wheel",
]

# The mypy release line whose mypyc the sources are checked with (ci/constraints.txt pins one).
MYPYC_REQUIREMENT = "mypy>=1.15,<3"


def compile_requested() -> bool:
    return os.environ.get("GUARD_PLUGINS_PURE_PYTHON", "").strip().lower() in ("", "0", "false")


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    requires = list(_setuptools.get_requires_for_build_wheel(config_settings))
    if compile_requested():
        requires.append(MYPYC_REQUIREMENT)
    return requires


def build_wheel(
    wheel_directory: str,
    config_settings: dict[str, Any] | None = None,
    metadata_directory: str | None = None,
) -> str:
    if compile_requested():
        os.environ["GUARD_PLUGINS_COMPILE"] = "1"
    try:
        return _setuptools.build_wheel(wheel_directory, config_settings, metadata_directory)
    finally:
        os.environ.pop("GUARD_PLUGINS_COMPILE", None)
