"""What a shell command writes to stdout, as far as the screen cares (`Stream`).

`command_output` answers for one command given what flows into it: downloaders produce
``download``, ``echo``/``printf`` produce ``literal`` text, decoders (``base64 -d``, ``xxd -r -p``,
``rev``, ``gunzip``, rot13 ``tr``) turn literal input into ``decoded`` text statically — or
``decoded-unknown`` when the input is not known — and ``env``/``printenv`` produce ``env``.
`foreign_inline` applies text heuristics to inline code of languages the screen does not parse
(perl, ruby, php, node, awk).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from guard_plugins.codescreen.decoders import BYTE_DECODERS, rot13
from guard_plugins.codescreen.paths import Access
from guard_plugins.codescreen.shell_commands import Invocation, split_options

if TYPE_CHECKING:
    from guard_plugins.codescreen.shell_commands import ShellSink

__all__ = ["Stream", "command_output", "foreign_inline"]

_FILTERS: Final = frozenset({"tee", "cat", "grep", "egrep", "sed", "awk", "head", "tail", "sort",
                             "uniq", "tr", "cut", "gzip", "base64", "xxd", "od", "openssl", "jq",
                             "column", "paste", "fold", "zip", "bzip2", "xz", "python", "python3",
                             "perl"})
_ECHO_ESCAPE: Final = re.compile(r"\\(x[0-9a-fA-F]{1,2}|0[0-7]{0,3}|[0-7]{1,3}|[ntr\\abefv])")
_SIMPLE_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "a": "\a", "b": "\b",
                          "e": "\x1b", "f": "\f", "v": "\v"}
_ROT13_SETS: Final = {("A-Za-z", "N-ZA-Mn-za-m"), ("a-zA-Z", "n-za-mN-ZA-M"),
                      ("a-z", "n-za-m"), ("A-Z", "N-ZA-M")}
_DECOMPRESSORS: Final = {"gunzip": "gzip", "zcat": "gzip", "bunzip2": "bz2", "bzcat": "bz2",
                         "unxz": "lzma", "xzcat": "lzma", "uncompress": "zlib"}


@dataclass(frozen=True)
class Stream:
    """What flows between commands: kind and, for literal or decoded text, the bytes."""

    kind: str
    data: bytes | None = None

    @property
    def text(self) -> str | None:
        return None if self.data is None else self.data.decode("utf-8", "replace")


def _literal(text: str) -> Stream:
    return Stream("literal", text.encode("utf-8", "surrogatepass"))


def _unescape(text: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code[0] in "01234567":
            return chr(int(code, 8) & 0xFF)
        return _SIMPLE_ESCAPES.get(code, code)
    return _ECHO_ESCAPE.sub(one, text)


def _echo(inv: Invocation) -> Stream:
    argv = inv.argv
    escapes = inv.name == "printf"
    while inv.name == "echo" and argv and re.fullmatch(r"-[neE]+", argv[0]):
        escapes = escapes or "e" in argv[0]
        argv = argv[1:]
    if inv.name == "printf" and argv:
        fmt, values = argv[0], argv[1:]
        for value in values:
            fmt = re.sub(r"%[sb]", value.replace("\\", "\\\\"), fmt, count=1)
        argv = [fmt]
    text = " ".join(argv)
    return _literal(_unescape(text) if escapes else text + "\n")


def _decode(name: str, argv: list[str], data: bytes) -> bytes | None:
    if name in ("base64", "base32", "openssl"):
        return BYTE_DECODERS["base32" if name == "base32" else "base64"](data)
    if name == "xxd":
        return BYTE_DECODERS["hex"](data) if "-p" in argv or "-ps" in argv else None
    if name == "rev":
        lines = data.decode("utf-8", "replace").split("\n")
        return "\n".join(line[::-1] for line in lines).encode()
    if name == "tr":
        return rot13(data.decode("utf-8", "replace")).encode()
    if name == "gzip":
        return BYTE_DECODERS["gzip"](data)
    if name in _DECOMPRESSORS:
        return BYTE_DECODERS[_DECOMPRESSORS[name]](data)
    if name in ("bzip2", "xz"):
        return BYTE_DECODERS["bz2" if name == "bzip2" else "lzma"](data)
    return None


def _is_decoder(name: str, argv: list[str]) -> bool:
    flags, positionals = split_options(argv)
    decoding = bool(flags & {"d", "D", "--decode"})
    if name in ("base64", "base32", "gzip", "bzip2", "xz"):
        return decoding
    if name == "xxd":
        return "r" in flags
    if name == "openssl":
        return decoding and bool({"enc", "base64", "-base64", "-a"} & set(argv))
    if name == "tr":
        return tuple(positionals[:2]) in _ROT13_SETS
    return name in ("rev", "uudecode") or name in _DECOMPRESSORS


def _downloader(inv: Invocation, downloaded: set[str]) -> Stream | None:
    argv = inv.argv
    urls = [a for a in argv if re.match(r"^(?:https?|ftp)://", a)]
    url_name = posixpath.basename(urls[0].split("?")[0]) if urls else ""
    if inv.name == "curl":
        for i, arg in enumerate(argv):
            if arg in ("-o", "--output") and i + 1 < len(argv):
                downloaded.add(argv[i + 1].lstrip("./"))
                return None
            if re.fullmatch(r"-[a-zA-Z]*O|--remote-name(?:-all)?", arg):
                downloaded.add(url_name)
                return None
        return Stream("download")
    if inv.name == "wget":
        for i, arg in enumerate(argv):
            target = None
            if re.fullmatch(r"-[a-zA-Z]*O", arg) and i + 1 < len(argv):
                target = argv[i + 1]
            elif re.fullmatch(r"-[a-zA-Z]*O.+", arg) and not arg.startswith("--"):
                target = arg[arg.index("O") + 1:]
            elif arg.startswith("--output-document="):
                target = arg.split("=", 1)[1]
            if target is not None:
                if target in ("-", "/dev/stdout"):
                    return Stream("download")
                downloaded.add(target.lstrip("./"))
                return None
        downloaded.add(url_name)
        return None
    return Stream("download")


def command_output(inv: Invocation, stdin: Stream | None, downloaded: set[str]) -> Stream | None:
    """What `inv` writes to stdout, given `stdin` (None: unknown or nothing interesting)."""
    name, argv = inv.name, inv.argv
    if name in ("curl", "wget", "fetch", "http", "https", "aria2c", "lwp-download", "lwp-request",
                "GET"):
        return _downloader(inv, downloaded)
    if name in ("nc", "ncat", "netcat", "telnet", "socat") or (name == "openssl" and (
            "s_client" in argv)):
        return Stream("network")
    if name in ("echo", "printf"):
        return _echo(inv)
    if name in ("env", "printenv") or (name in ("set", "export", "declare") and not [
            a for a in argv if a not in ("-p", "-x", "-px")]):
        return Stream("env")
    _, positionals = split_options(argv)
    files = positionals if name != "tr" else []
    if name == "cat" and files:
        if any(f.lstrip("./") in downloaded for f in files):
            return Stream("download")
        return Stream("env") if any(f.endswith("/environ") for f in files) else None
    if _is_decoder(name, argv):
        if files and name not in ("openssl",):
            known = any(f.lstrip("./") in downloaded for f in files)
            return Stream("download") if known else Stream("decoded-unknown")
        if stdin is None or stdin.kind == "decoded-unknown":
            return Stream("decoded-unknown")
        if stdin.kind in ("download", "network", "env"):
            return stdin
        decoded = _decode(name, argv, stdin.data or b"")
        return Stream("decoded", decoded) if decoded is not None else Stream("decoded-unknown")
    if stdin is not None and name in _FILTERS and (name != "cat" or not files):
        return stdin if stdin.kind in ("env", "download", "network") or name == "cat" else None
    return None


_SOCKETISH: Final = re.compile(r"socket|fsockopen|TCPSocket|IO::Socket|net\.connect|net\.Socket|"
                               r"/dev/tcp|TCPClient|stream_socket_client", re.IGNORECASE)
_SHELLISH: Final = re.compile(r"/bin/(?:ba|z|da|k)?sh\b|\bsh -i\b|cmd\.exe|\bexec\s*[(\"']|"
                              r"spawn\s*\(|\bsystem\s*\(|popen|proc_open|child_process|"
                              r"shell_exec|dup2|\bexec\s*\{", re.IGNORECASE)
_FORK_LOOP: Final = re.compile(r"fork\s*(?:\(\s*\))?\s*(?:while|until)\b|(?:while|for)\s*\(\s*"
                               r"(?:1|true|;;)\s*\)\s*\{?\s*(?:\w+\s*=\s*)?fork|loop\s*\{\s*fork",
                               re.IGNORECASE)
_EMBEDDED_SHELL: Final = re.compile(r"(?:system|exec|popen|shell_exec|passthru|execSync|"
                                    r"spawnSync|qx)\s*\(?\s*([\"'])(.{1,2000}?)\1|"
                                    r"`([^`]{1,2000})`", re.DOTALL)
_QUOTED: Final = re.compile(r"([\"'])([^\"'\n]{1,500})\1")


def foreign_inline(sink: ShellSink, code: str, line: int) -> None:
    """Text heuristics for inline perl/ruby/php/node/awk code (those languages are not parsed)."""
    if _SOCKETISH.search(code) and _SHELLISH.search(code):
        sink.report("REVSHELL", line, "socket and shell in inline code")
    if _FORK_LOOP.search(code):
        sink.report("FORKBOMB", line, "fork loop in inline code")
    for match in _EMBEDDED_SHELL.finditer(code):
        sink.nested(match.group(2) or match.group(3) or "", "shell", line)
    for match in _QUOTED.finditer(code):
        value = match.group(2)
        if "/" in value:
            sink.access(value, Access.READ, line)
