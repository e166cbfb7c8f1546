"""Compiled code screen for wheels (see buildsupport/guard_plugins_build.py); metadata lives in
pyproject.toml. Without ``GUARD_PLUGINS_COMPILE=1`` (set by the backend's `build_wheel` only) this
builds the pure-Python package."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from setuptools import setup
from setuptools.command.build_ext import build_ext

HERE = Path(__file__).resolve().parent
SCREEN = Path("guard_plugins") / "codescreen"


class OptionalBuildExt(build_ext):
    """Compile the screen if possible; otherwise warn and ship the pure-Python modules only."""

    def run(self) -> None:
        try:
            super().run()
        except Exception as error:  # a compiler or mypyc failure must not fail the install
            for output in self.get_outputs():
                Path(output).unlink(missing_ok=True)
            self.extensions = []
            print(
                f"warning: guard-plugins: compiling the code screen failed ({error}); "
                "the pure-Python code screen is installed instead",
                file=sys.stderr,
            )


def compiled_modules() -> list[Any]:
    if os.environ.get("GUARD_PLUGINS_COMPILE") != "1":
        return []
    try:
        from mypyc.build import mypycify
    except ImportError as error:
        print(
            f"warning: guard-plugins: mypyc unavailable ({error}); pure-Python build",
            file=sys.stderr,
        )
        return []
    sources = sorted(str(p) for p in SCREEN.glob("*.py") if p.name != "__init__.py")
    config = str(Path("buildsupport") / "mypyc.ini")
    try:
        return list(
            mypycify(
                ["--config-file", config, *sources],
                opt_level="3",
                # The screen's asserts only narrow types after an exact-type dispatch.
                strip_asserts=True,
                group_name="guard_plugins_codescreen",
            )
        )
    except (Exception, SystemExit) as error:  # mypy reports type errors by exiting
        print(f"warning: guard-plugins: mypyc failed ({error}); pure-Python build", file=sys.stderr)
        return []


os.chdir(HERE)
setup(ext_modules=compiled_modules(), cmdclass={"build_ext": OptionalBuildExt})
