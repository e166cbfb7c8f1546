"""Small images made on the fly for tests (no binary fixtures in the repo)."""

from __future__ import annotations

import io

from PIL import Image


def png_bytes(
    width: int = 40, height: int = 30, color: tuple[int, int, int] = (200, 10, 10)
) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buf, format="PNG")
    return buf.getvalue()


def image_bytes(fmt: str, mode: str = "RGB", size: tuple[int, int] = (32, 24)) -> bytes:
    buf = io.BytesIO()
    color: object = 128 if mode in ("L", "P", "I;16", "I") else tuple([90] * len(mode))
    Image.new(mode, size, color).save(buf, format=fmt)  # type: ignore[arg-type]
    return buf.getvalue()
