"""Pure, bounded decoders the screen may apply to constant data (never to code it runs).

Every function returns None instead of raising, and no output exceeds `MAX_DECODED` bytes:
decompression is done with an output limit, so a decompression bomb costs at most that much.
These are the only transformations the screen ever applies to the text it screens.
"""

from __future__ import annotations

import base64
import binascii
import bz2
import codecs
import lzma
import re
import zlib
from collections.abc import Callable
from typing import Final

__all__ = ["BYTE_DECODERS", "MAX_DECODED", "as_text", "decode_codec", "rot13", "unhex"]

MAX_DECODED: Final = 1_000_000
_HEX_NOISE: Final = re.compile(r"\\x|0x|[\s:,]")


def _bounded(fn: Callable[[bytes], bytes]) -> Callable[[bytes], bytes | None]:
    def run(data: bytes) -> bytes | None:
        try:
            out = fn(data)
        except (ValueError, TypeError, binascii.Error, zlib.error, OSError, lzma.LZMAError,
                EOFError, OverflowError, MemoryError):
            return None
        return out if len(out) <= MAX_DECODED else None
    return run


def _b64(data: bytes) -> bytes:
    cleaned = re.sub(rb"\s", b"", data)
    cleaned += b"=" * (-len(cleaned) % 4)
    return base64.b64decode(cleaned, altchars=b"-_" if b"-" in data or b"_" in data else None)


def _inflate_with(wbits: int) -> Callable[[bytes], bytes]:
    def run(data: bytes) -> bytes:
        return zlib.decompressobj(wbits).decompress(data, MAX_DECODED + 1)
    return run


def _bz2(data: bytes) -> bytes:
    return bz2.BZ2Decompressor().decompress(data, MAX_DECODED + 1)


def _lzma(data: bytes) -> bytes:
    return lzma.LZMADecompressor().decompress(data, MAX_DECODED + 1)


def unhex_bytes(data: bytes) -> bytes:
    return bytes.fromhex(_HEX_NOISE.sub("", data.decode("ascii")))


BYTE_DECODERS: Final[dict[str, Callable[[bytes], bytes | None]]] = {
    "base64": _bounded(_b64),
    "base32": _bounded(lambda d: base64.b32decode(re.sub(rb"\s", b"", d), casefold=True)),
    "base16": _bounded(lambda d: base64.b16decode(re.sub(rb"\s", b"", d), casefold=True)),
    "a85": _bounded(base64.a85decode),
    "b85": _bounded(base64.b85decode),
    "hex": _bounded(unhex_bytes),
    "zlib": _bounded(_inflate_with(zlib.MAX_WBITS | 32)),
    "raw_deflate": _bounded(_inflate_with(-zlib.MAX_WBITS)),
    "gzip": _bounded(_inflate_with(zlib.MAX_WBITS | 16)),
    "bz2": _bounded(_bz2),
    "lzma": _bounded(_lzma),
    "uu": _bounded(binascii.a2b_uu),
    "quopri": _bounded(binascii.a2b_qp),
}

_CODEC_ALIASES: Final = {
    "rot13": "rot13", "rot_13": "rot13", "rot-13": "rot13",
    "hex": "hex", "hex_codec": "hex", "base64": "base64", "base_64": "base64",
    "base64_codec": "base64", "zlib": "zlib", "zip": "zlib", "zlib_codec": "zlib",
    "bz2": "bz2", "bz2_codec": "bz2", "uu": "uu", "uu_codec": "uu", "quopri": "quopri",
    "quopri_codec": "quopri",
}
_TEXT_ENCODINGS: Final = frozenset({"utf-8", "utf8", "ascii", "latin-1", "latin1", "iso-8859-1",
                                    "utf-16", "utf-16-le", "utf-16-be", "utf-32", "cp1252",
                                    "unicode_escape", "raw_unicode_escape", "utf_8", "us-ascii"})


def unhex(text: str) -> bytes | None:
    return BYTE_DECODERS["hex"](text.encode("latin-1", "replace"))


def rot13(text: str) -> str:
    return codecs.encode(text, "rot13")


def as_text(data: bytes, encoding: str = "utf-8") -> str | None:
    """`data` decoded with a plain text encoding (replacement characters on errors)."""
    enc = encoding.lower().replace("_", "-") if encoding else "utf-8"
    if enc.replace("-", "_") in ("unicode_escape", "raw_unicode_escape"):
        enc = enc.replace("-", "_")
    if enc not in _TEXT_ENCODINGS and enc.replace("-", "_") not in _TEXT_ENCODINGS:
        return None
    try:
        return data.decode(enc, errors="replace")
    except (LookupError, UnicodeError, ValueError):
        return None


def decode_codec(value: str | bytes, codec: str) -> str | bytes | None:
    """``codecs.decode(value, codec)`` for the codecs in the whitelist, else None."""
    name = _CODEC_ALIASES.get(codec.lower())
    if name == "rot13":
        return rot13(value) if isinstance(value, str) else None
    if name is not None:
        data = value.encode("latin-1", "replace") if isinstance(value, str) else value
        return BYTE_DECODERS[name](data)
    if isinstance(value, bytes):
        return as_text(value, codec)
    return None
