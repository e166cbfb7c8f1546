"""Every Python block in README.md and docs/ runs, with the model pointed at the tiny dev model
through GUARD_PLUGINS_MODEL (the one documented switch). A block that cannot run offline is
preceded by an HTML comment ``<!-- no-run: reason -->``, which this extractor honours."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(
    r"(?P<marker><!--\s*no-run:(?P<reason>[^>]*)-->\s*\n)?^```python\n(?P<code>.*?)^```",
    re.S | re.M,
)


def python_blocks(path: Path) -> list[tuple[int, str, str | None]]:
    text = path.read_text(encoding="utf-8")
    out = []
    for m in BLOCK.finditer(text):
        line = text[: m.start("code")].count("\n") + 1
        reason = m.group("reason").strip() if m.group("marker") else None
        out.append((line, m.group("code"), reason))
    return out


def test_the_extractor_sees_blocks_and_markers() -> None:
    blocks = python_blocks(ROOT / "README.md")
    assert any(reason is None for _, _, reason in blocks)
    assert any(reason for _, _, reason in blocks)


@pytest.mark.model
@pytest.mark.parametrize("path", DOCS, ids=[p.name for p in DOCS])
def test_python_blocks_run(
    path: Path, dev_model_env: str, capsys: pytest.CaptureFixture[str]
) -> None:
    blocks = python_blocks(path)
    runnable = [(line, code) for line, code, reason in blocks if reason is None]
    if not runnable:
        pytest.skip(f"{path.name} has no runnable Python blocks")
    namespace: dict[str, object] = {"__name__": f"docs_{path.stem}"}
    for line, code in runnable:
        try:
            exec(compile(code, f"{path.name}:{line}", "exec"), namespace)
        except Exception as exc:
            raise AssertionError(f"{path.name} block at line {line} failed: {exc!r}") from exc


@pytest.fixture
def dev_model_env(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("GUARD_PLUGINS_MODEL", str(tiny_model_dir))
    monkeypatch.delenv("GUARD_PLUGINS_ENDPOINT", raising=False)
    monkeypatch.delenv("GUARD_PLUGINS_POLICY", raising=False)
    return str(tiny_model_dir)
