"""Every script in examples/ runs offline on the tiny dev model (GUARD_PLUGINS_MODEL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))
#: examples that read a dataset from ../shared (not part of the repository)
NEEDS = {"eval_xstest.py": ROOT.parent / "shared" / "datasets" / "xstest_prompts.csv"}


@pytest.mark.model
@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_on_the_dev_model(script: Path, tiny_model_dir: Path, tmp_path: Path) -> None:
    needed = NEEDS.get(script.name)
    if needed is not None and not needed.is_file():
        pytest.skip(f"{script.name} reads {needed}, which is not here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GUARD_PLUGINS_ENDPOINT")}
    env.update(GUARD_PLUGINS_MODEL=str(tiny_model_dir), PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, f"{script.name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert proc.stdout.strip(), f"{script.name} printed nothing"
