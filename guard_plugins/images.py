"""Image input: read, validate and normalise images before they reach a backend.

Rules (documented in docs/security.md):

- Sources: raw bytes, base64 text, ``data:`` URLs, file paths, PIL images. ``http(s)://`` URLs are
  refused unless the caller fetches them (``ImagePart.from_bytes``) or enables a fetcher.
- The pixel count is checked from the header *before* decoding (decompression bombs):
  at most `MAX_IMAGE_PIXELS`; zero-sized images are refused.
- The whole image is decoded once at construction, so truncated or corrupt files fail early with
  an `ImageError` instead of inside the model.
- Animated images (GIF, WebP, APNG): the first frame is assessed. Every mode (CMYK, 16-bit,
  palette, alpha) is converted to RGB; transparency is composited on white.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard_plugins.errors import ImageError

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage

__all__ = ["ALLOWED_FORMATS", "MAX_IMAGE_BYTES", "MAX_IMAGE_PIXELS", "ImagePart", "load_image"]

MAX_IMAGE_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 20 * 1024 * 1024
ALLOWED_FORMATS = frozenset({"PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF"})
_DATA_URL = re.compile(r"^data:(?P<mime>[\w/+.-]*)(?P<params>(;[^,;]*)*?)(?P<b64>;base64)?,", re.I)
_BASE64_CHARS = re.compile(r"^[A-Za-z0-9+/=\s_-]+$")


@dataclass(frozen=True)
class ImagePart:
    """A validated image in a message. Build it with `ImagePart.load(source)`.

    >>> part = ImagePart.load(Path("photo.png"))      # doctest: +SKIP
    >>> part.width, part.height, part.format          # doctest: +SKIP
    (640, 480, 'PNG')
    """

    data: bytes = field(repr=False)
    format: str
    width: int
    height: int
    frames: int = 1

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @classmethod
    def load(cls, source: Any) -> ImagePart:
        return load_image(source)

    @classmethod
    def from_bytes(cls, data: bytes) -> ImagePart:
        return _validate(bytes(data))

    def to_pil(self) -> PILImage:
        """The first frame as an RGB PIL image (alpha composited on white)."""
        from PIL import Image

        with Image.open(io.BytesIO(self.data)) as img:
            img.seek(0)
            return _to_rgb(img)

    def data_url(self) -> str:
        """A ``data:`` URL for HTTP backends: PNG/JPEG/GIF/WebP as given, other formats as PNG."""
        if self.format in {"PNG", "JPEG", "GIF", "WEBP"}:
            mime, payload = f"image/{self.format.lower()}", self.data
        else:
            buf = io.BytesIO()
            self.to_pil().save(buf, format="PNG")
            mime, payload = "image/png", buf.getvalue()
        return f"data:{mime};base64,{base64.b64encode(payload).decode('ascii')}"


def load_image(source: Any) -> ImagePart:
    """Turn any supported image source into a validated `ImagePart`."""
    if isinstance(source, ImagePart):
        return source
    if isinstance(source, (bytes, bytearray, memoryview)):
        return _validate(bytes(source))
    if isinstance(source, Path):
        return _from_path(source)
    if isinstance(source, str):
        return _from_string(source)
    if _is_pil(source):
        buf = io.BytesIO()
        try:
            source.save(buf, format="PNG")
        except Exception as exc:
            raise ImageError(f"cannot encode the PIL image: {exc}") from exc
        return _validate(buf.getvalue())
    raise ImageError(
        f"unsupported image source of type {type(source).__name__}: pass bytes, a base64 or data: "
        "URL string, a file path or a PIL image"
    )


def _from_string(text: str) -> ImagePart:
    stripped = text.strip()
    lowered = stripped[:16].lower()
    if lowered.startswith("data:"):
        return _validate(_decode_data_url(stripped))
    if lowered.startswith(("http://", "https://")):
        from guard_plugins.fetch import current_image_fetcher

        fetcher = current_image_fetcher()
        if fetcher is None:
            raise ImageError(
                "image URLs are not fetched by default: download the image and pass its bytes, "
                "or enable fetching with guard_plugins.fetch.configure_image_fetching("
                "ImageFetcher(allowed_hosts=[...]))"
            )
        return _validate(fetcher.fetch(stripped))
    if lowered.startswith("file:"):
        raise ImageError("file: URLs are refused; pass a filesystem path instead")
    if "://" in stripped[:32]:
        raise ImageError(f"unsupported image URL scheme in {stripped[:32]!r}")
    if len(stripped) > 512 and _BASE64_CHARS.match(stripped[:4096]):
        return _validate(_b64decode(stripped))
    if os.path.exists(stripped):
        return _from_path(Path(stripped))
    if _BASE64_CHARS.match(stripped[:4096]) and len(stripped) % 4 == 0 and len(stripped) >= 16:
        return _validate(_b64decode(stripped))
    raise ImageError("image string is neither an existing file path, a data: URL nor base64")


def _from_path(path: Path) -> ImagePart:
    try:
        size = path.stat().st_size
        if size > MAX_IMAGE_BYTES:
            raise ImageError(f"image file is {size} bytes; the limit is {MAX_IMAGE_BYTES}")
        return _validate(path.read_bytes())
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc


def _decode_data_url(url: str) -> bytes:
    match = _DATA_URL.match(url)
    if not match:
        raise ImageError("malformed data: URL (expected data:<mime>;base64,<payload>)")
    if not match.group("b64"):
        raise ImageError("data: URLs must be base64-encoded (data:<mime>;base64,...)")
    mime = match.group("mime").lower()
    if mime and not mime.startswith("image/"):
        raise ImageError(f"data: URL has media type {mime!r}, not an image")
    return _b64decode(url[match.end() :])


def _b64decode(payload: str) -> bytes:
    compact = re.sub(r"\s+", "", payload)
    if len(compact) > MAX_IMAGE_BYTES * 4 // 3 + 4:
        raise ImageError(f"base64 image is larger than {MAX_IMAGE_BYTES} bytes")
    try:
        if "-" in compact or "_" in compact:
            return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
        return base64.b64decode(compact, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(f"invalid base64 image data: {exc}") from exc


def _validate(data: bytes) -> ImagePart:
    if not data:
        raise ImageError("image data is empty")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageError(f"image is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES}")
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError as exc:  # pillow is a core dependency; this is a broken install
        raise ImageError("pillow is required to read images: pip install pillow") from exc
    try:
        with Image.open(io.BytesIO(data)) as img:
            fmt = (img.format or "").upper()
            if fmt not in ALLOWED_FORMATS:
                raise ImageError(
                    f"image format {fmt or 'unknown'} is not supported; "
                    f"allowed: {', '.join(sorted(ALLOWED_FORMATS))}"
                )
            width, height = img.size
            if width <= 0 or height <= 0:
                raise ImageError(f"image has no pixels ({width}x{height})")
            if width * height > MAX_IMAGE_PIXELS:
                raise ImageError(
                    f"image is {width}x{height} = {width * height} pixels; "
                    f"the limit is {MAX_IMAGE_PIXELS} (decompression-bomb guard)"
                )
            frames = int(getattr(img, "n_frames", 1) or 1)
            img.seek(0)
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError("image data is not a recognised image format") from exc
    except Image.DecompressionBombError as exc:
        raise ImageError(f"image refused as a decompression bomb: {exc}") from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise ImageError(f"image is corrupt or truncated: {exc}") from exc
    return ImagePart(data=data, format=fmt, width=width, height=height, frames=frames)


def _to_rgb(img: PILImage) -> PILImage:
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        img = img.point(lambda v: v / 256).convert("L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB")


def _is_pil(obj: Any) -> bool:
    try:
        from PIL import Image
    except ImportError:
        return False
    return isinstance(obj, Image.Image)
