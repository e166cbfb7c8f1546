"""The whitelist of pure functions and methods the constant folder may apply to known values.

`call_builtin(qualified_name, args, kwargs, flags)` and `call_method(receiver, name, …)` return
the result or `UNKNOWN`. They implement decoders (base64, hex, zlib, rot13, …), string building
(``chr``, ``join``, ``replace``, ``reversed``) and path building (``os.path.join``, ``Path``)
on values that are already known; sizes are capped and nothing user-supplied is ever called.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from typing import Final

from guard_plugins.codescreen.decoders import BYTE_DECODERS, as_text, decode_codec, rot13
from guard_plugins.codescreen.pyvalues import (
    MAX_BUILD,
    MAX_ITEMS,
    UNKNOWN,
    Huge,
    PathValue,
    size_of,
)

__all__ = ["KNOWN_FUNCTIONS", "KNOWN_METHODS", "call_builtin", "call_method"]

_DECODER_CALLS: Final = {
    "base64.b64decode": "base64", "base64.standard_b64decode": "base64",
    "base64.urlsafe_b64decode": "base64", "base64.decodebytes": "base64",
    "base64.decodestring": "base64", "binascii.a2b_base64": "base64",
    "base64.b32decode": "base32", "base64.b16decode": "base16", "base64.a85decode": "a85",
    "base64.b85decode": "b85", "binascii.unhexlify": "hex", "binascii.a2b_hex": "hex",
    "bytes.fromhex": "hex", "bytearray.fromhex": "hex", "zlib.decompress": "zlib",
    "gzip.decompress": "gzip", "bz2.decompress": "bz2", "lzma.decompress": "lzma",
    "binascii.a2b_uu": "uu", "quopri.decodestring": "quopri",
}
KNOWN_FUNCTIONS: Final = frozenset(_DECODER_CALLS) | {
    "map", "codecs.decode", "codecs.encode", "chr", "ord", "str", "int", "len", "range", "bytes",
    "bytearray", "reversed", "list", "tuple", "os.path.join", "posixpath.join",
    "os.path.expanduser", "os.path.expandvars", "os.path.normpath", "os.path.abspath",
    "os.path.realpath", "os.fspath", "pathlib.Path", "pathlib.PosixPath", "pathlib.PurePath",
    "pathlib.PurePosixPath", "pathlib.Path.home", "os.getenv", "os.environ.get",
}
_HOME_NAMES: Final = {"HOME", "USERPROFILE"}
_SIMPLE_FORMAT: Final = re.compile(r"\{(\d*)\}")
_STR_METHODS: Final[dict[str, Callable[..., object]]] = {
    "lower": str.lower, "upper": str.upper, "strip": str.strip, "lstrip": str.lstrip,
    "rstrip": str.rstrip, "swapcase": str.swapcase, "title": str.title,
    "capitalize": str.capitalize, "casefold": str.casefold,
}


def _as_bytes(value: object) -> bytes | None:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("latin-1", "replace")
    return None


def _path_text(value: object) -> str | None:
    if isinstance(value, PathValue):
        return value.path
    return value if isinstance(value, str) else None


def _join_paths(args: list[object]) -> object:
    parts = [_path_text(a) for a in args]
    if not parts or any(p is None for p in parts):
        return UNKNOWN
    return posixpath.join(*[p for p in parts if p is not None])


def _sequence_call(name: str, args: list[object], flags: set[str]) -> object:
    arg = args[0] if args else ()
    if isinstance(arg, Huge):
        return arg
    if name == "range":
        ints = [a for a in args if isinstance(a, int) and not isinstance(a, bool)]
        if len(ints) != len(args) or not 1 <= len(ints) <= 3:
            return UNKNOWN
        span = range(*ints)
        return Huge(len(span)) if len(span) > MAX_ITEMS else tuple(span)
    if name in ("bytes", "bytearray"):
        if isinstance(arg, int) and not isinstance(arg, bool):
            return Huge(arg) if arg > MAX_BUILD else bytes(max(arg, 0))
        if isinstance(arg, tuple) and all(isinstance(i, int) and 0 <= i < 256 for i in arg):
            flags.add("built")
            return bytes(arg)
        if isinstance(arg, str) and len(args) > 1 and isinstance(args[1], str):
            return arg.encode(args[1], "replace") if args[1].lower() in (
                "utf-8", "utf8", "ascii", "latin-1", "latin1") else UNKNOWN
        return arg if isinstance(arg, bytes) else UNKNOWN
    if not isinstance(arg, (str, bytes, tuple)):
        return UNKNOWN
    if name == "reversed":
        flags.add("built")
        return tuple(arg)[::-1]
    return tuple(arg) if name in ("list", "tuple") else UNKNOWN


def call_builtin(name: str, args: list[object], kwargs: dict[str, object],
                 flags: set[str]) -> object:
    """A whitelisted function applied to known arguments, or UNKNOWN."""
    name = name.removeprefix("builtins.")
    if name == "map" and len(args) == 2 and isinstance(args[1], (tuple, str, bytes)):
        fn = {"chr": chr, "str": str, "ord": ord}.get(str(args[0]))
        if fn is None:
            return UNKNOWN
        flags.add("built")
        return tuple(fn(i) for i in args[1])  # type: ignore[operator]
    if any(a is UNKNOWN for a in args) or any(v is UNKNOWN for v in kwargs.values()):
        return UNKNOWN
    if name in _DECODER_CALLS and args:
        data = _as_bytes(args[0])
        if data is None:
            return UNKNOWN
        flags.add("decoded")
        out = BYTE_DECODERS[_DECODER_CALLS[name]](data)
        return UNKNOWN if out is None else out
    if name in ("codecs.decode", "codecs.encode") and args and isinstance(args[0], (str, bytes)):
        codec = args[1] if len(args) > 1 else kwargs.get("encoding", "utf-8")
        if not isinstance(codec, str):
            return UNKNOWN
        if name == "codecs.encode":
            return rot13(args[0]) if codec.replace("_", "").lower() == "rot13" and isinstance(
                args[0], str) else UNKNOWN
        flags.add("decoded")
        decoded = decode_codec(args[0], codec)
        return UNKNOWN if decoded is None else decoded
    if name == "chr" and args and isinstance(args[0], int) and 0 <= args[0] < 0x110000:
        flags.add("built")
        return chr(args[0])
    if name == "ord" and args and isinstance(args[0], str) and len(args[0]) == 1:
        return ord(args[0])
    if name == "str" and len(args) == 1 and isinstance(args[0], (str, int, float)):
        return str(args[0])
    if name == "str" and len(args) == 2 and isinstance(args[0], bytes):
        return as_text(args[0], str(args[1])) or UNKNOWN
    if name == "int" and args and isinstance(args[0], str) and len(args[0]) < 200:
        base = args[1] if len(args) > 1 and isinstance(args[1], int) else 10
        return int(args[0], base)
    if name == "len" and args and isinstance(args[0], (str, bytes, tuple, Huge)):
        return args[0].size if isinstance(args[0], Huge) else len(args[0])
    if name in ("range", "bytes", "bytearray", "reversed", "list", "tuple"):
        return _sequence_call(name, args, flags)
    return _path_call(name, args)


def _path_call(name: str, args: list[object]) -> object:
    if name in ("os.path.join", "posixpath.join"):
        return _join_paths(args)
    if name in ("os.path.expanduser", "os.path.expandvars", "os.path.normpath",
                "os.path.abspath", "os.path.realpath", "os.fspath") and args:
        return _path_text(args[0]) or UNKNOWN
    if name in ("pathlib.Path", "pathlib.PosixPath", "pathlib.PurePath", "pathlib.PurePosixPath"):
        joined = _join_paths(args) if args else "."
        return PathValue(joined) if isinstance(joined, str) else UNKNOWN
    if name in ("pathlib.Path.home", "os.path.expanduser.home"):
        return PathValue("~")
    if name in ("os.getenv", "os.environ.get") and args and args[0] in _HOME_NAMES:
        return "~"
    return UNKNOWN


# Every method name `call_method` may answer for (any other gives UNKNOWN).
KNOWN_METHODS: Final = frozenset(_STR_METHODS) | {
    "joinpath", "__truediv__", "expanduser", "resolve", "absolute", "home", "join", "decode",
    "hex", "encode", "replace", "format", "split",
}


def call_method(receiver: object, name: str, args: list[object], kwargs: dict[str, object],
                flags: set[str]) -> object:
    """A whitelisted method of a known str, bytes or path value, or UNKNOWN."""
    if any(a is UNKNOWN for a in args) or any(v is UNKNOWN for v in kwargs.values()):
        return UNKNOWN
    if isinstance(receiver, PathValue):
        if name in ("joinpath", "__truediv__"):
            joined = _join_paths([receiver.path, *args])
            return PathValue(joined) if isinstance(joined, str) else UNKNOWN
        if name in ("expanduser", "resolve", "absolute"):
            return receiver
        return PathValue("~") if name == "home" else UNKNOWN
    if name == "join" and isinstance(receiver, (str, bytes)) and len(args) == 1:
        items = args[0]
        if isinstance(items, (str, bytes)):
            items = tuple(items[i:i + 1] for i in range(len(items)))
        if not isinstance(items, tuple) or not all(type(i) is type(receiver) for i in items):
            return UNKNOWN
        if sum(size_of(i) or 0 for i in items) + len(receiver) * len(items) > MAX_BUILD:
            return UNKNOWN
        flags.add("built")
        if isinstance(receiver, str):
            return receiver.join(i for i in items if isinstance(i, str))
        return receiver.join(i for i in items if isinstance(i, bytes))
    if isinstance(receiver, bytes):
        if name == "decode":
            encoding = args[0] if args else kwargs.get("encoding", "utf-8")
            return as_text(receiver, str(encoding)) or UNKNOWN
        if name == "hex":
            return receiver.hex()
        receiver_text: object = receiver.decode("latin-1")
        out = call_method(receiver_text, name, args, kwargs, flags)
        return out.encode("latin-1", "replace") if isinstance(out, str) else out
    if not isinstance(receiver, str):
        return UNKNOWN
    return _str_method(receiver, name, args, kwargs, flags)


def _str_method(text: str, name: str, args: list[object], kwargs: dict[str, object],
                flags: set[str]) -> object:
    if name in _STR_METHODS and all(isinstance(a, str) for a in args) and len(args) <= 1:
        return _STR_METHODS[name](text, *args)
    if name == "encode":
        encoding = args[0] if args else kwargs.get("encoding", "utf-8")
        if isinstance(encoding, str) and encoding.lower().replace("_", "-") in (
                "utf-8", "utf8", "ascii", "latin-1", "latin1"):
            return text.encode(encoding, "replace")
        return UNKNOWN
    if name == "replace" and len(args) >= 2 and all(isinstance(a, str) for a in args[:2]):
        old, new = str(args[0]), str(args[1])
        if old and len(text) // len(old) * max(len(new), 1) > MAX_BUILD:
            return UNKNOWN
        flags.add("built")
        return text.replace(old, new)
    if name == "format" and not kwargs and all(isinstance(a, (str, int)) for a in args):
        if _SIMPLE_FORMAT.sub("", text).count("{"):
            return UNKNOWN
        counter = iter(range(len(args)))

        def field(match: re.Match[str]) -> str:
            index = int(match.group(1)) if match.group(1) else next(counter, len(args))
            return str(args[index]) if index < len(args) else ""
        flags.add("built")
        return _SIMPLE_FORMAT.sub(field, text)
    if name == "split" and len(args) <= 1 and all(isinstance(a, str) and a for a in args):
        return tuple(text.split(*args))  # type: ignore[arg-type]
    return UNKNOWN
