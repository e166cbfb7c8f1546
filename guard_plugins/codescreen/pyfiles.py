"""File access from Python: which calls read, write or delete which paths.

`check_files` covers ``open``/``os.open`` (write when the mode or flags say so), ``os.remove``,
``shutil.rmtree``/``copy``/``move``, ``os.chmod`` (setuid bits), ``os.symlink`` and
`pathlib.Path` methods; every path goes through `paths.classify_path` with the access kind.
`write_target` finds the file a ``.write()`` goes to, for the exfiltration checks.
"""

from __future__ import annotations

import ast
from typing import TYPE_CHECKING, Final

from guard_plugins.codescreen.paths import Access
from guard_plugins.codescreen.pyvalues import PathValue

if TYPE_CHECKING:
    from guard_plugins.codescreen.python import PythonScanner

__all__ = ["check_files", "path_receiver", "text_of", "write_target"]

# `ast` node classes as module constants: compiled by mypyc, each is a C static rather than
# an attribute lookup on the `ast` module at every use.
_Attribute: Final = ast.Attribute
_BinOp: Final = ast.BinOp
_Call: Final = ast.Call
_Div: Final = ast.Div
_Name: Final = ast.Name

_DELETE: Final = {"os.remove": Access.DELETE, "os.unlink": Access.DELETE, "os.rmdir": Access.DELETE,
                  "os.removedirs": Access.DELETE_TREE, "shutil.rmtree": Access.DELETE_TREE}
_COPY: Final = frozenset({"shutil.copy", "shutil.copy2", "shutil.copyfile", "shutil.copytree",
                          "shutil.move", "os.rename", "os.replace", "os.renames", "os.symlink",
                          "os.link", "shutil.copymode", "shutil.copystat"})
_MOVES: Final = frozenset({"shutil.move", "os.rename", "os.replace", "os.renames"})
_WRITE_FIRST: Final = frozenset({"os.chmod", "os.lchmod", "os.chown", "os.lchown", "shutil.chown",
                                 "os.truncate", "os.mknod", "os.utime"})

def text_of(scan: PythonScanner, node: ast.expr) -> str | None:
    """The string, bytes or path `node` evaluates to, or its partial text."""
    value = scan.scope.ev.value(node)
    if isinstance(value, (str, bytes, PathValue)):
        return value.path if isinstance(value, PathValue) else (
            value.decode("utf-8", "replace") if isinstance(value, bytes) else value)
    return scan.scope.partial_text(node)


def path_receiver(scan: PythonScanner, node: ast.expr) -> str | None:
    value = scan.scope.ev.value(node)
    if isinstance(value, PathValue):
        return value.path
    name = scan.scope.qualname(node) or ""
    divided = isinstance(node, _BinOp) and isinstance(node.op, _Div)
    if name.startswith("pathlib.") or divided:
        return scan.scope.partial_text(node)
    return None


def check_files(scan: PythonScanner, call: ast.Call, name: str) -> None:
    args, line = call.args, call.lineno
    if name in ("open", "io.open", "codecs.open", "os.open", "gzip.open") and args:
        path = text_of(scan, args[0])
        if path is not None:
            scan.access(path, Access.WRITE if _writes(scan, call, name) else Access.READ, line)
    elif name in _DELETE and args:
        path = text_of(scan, args[0])
        if path is not None:
            scan.access(path, _DELETE[name], line)
    elif name in _COPY and len(args) >= 2:
        source, dest = text_of(scan, args[0]), text_of(scan, args[1])
        if source is not None:
            scan.access(source, Access.DELETE_TREE if name in _MOVES else Access.READ, line)
        if dest is not None:
            scan.access(dest, Access.WRITE, line)
    elif name in _WRITE_FIRST and args:
        path = text_of(scan, args[0])
        if path is not None:
            scan.access(path, Access.WRITE, line)
        if name in ("os.chmod", "os.lchmod") and len(args) > 1:
            mode = scan.scope.ev.value(args[1])
            if isinstance(mode, int) and mode & 0o6000:
                scan.report("SETUID", line, f"chmod {oct(mode)}")
    elif name == "urllib.request.urlretrieve" and len(args) >= 2:
        dest = text_of(scan, args[1])
        if dest:
            scan.state.downloaded.add(dest.rsplit("/", 1)[-1])
    elif isinstance(call.func, _Attribute):
        _check_path_method(scan, call)


def _writes(scan: PythonScanner, call: ast.Call, name: str) -> bool:
    if name == "os.open":
        flags = {n.attr for a in call.args[1:2] for n in ast.walk(a)
                 if isinstance(n, _Attribute)}
        return bool(flags & {"O_WRONLY", "O_RDWR", "O_APPEND", "O_CREAT", "O_TRUNC"})
    mode_node = call.args[1] if len(call.args) > 1 else next(
        (k.value for k in call.keywords if k.arg == "mode"), None)
    mode = scan.scope.ev.value(mode_node) if mode_node is not None else "r"
    return isinstance(mode, str) and any(c in mode for c in "wax+")


def _check_path_method(scan: PythonScanner, call: ast.Call) -> None:
    assert isinstance(call.func, _Attribute)
    attr, line = call.func.attr, call.lineno
    if attr not in ("write_text", "write_bytes", "touch", "symlink_to", "hardlink_to", "chmod",
                    "unlink", "rmdir", "rename", "replace", "read_text", "read_bytes", "open"):
        return
    path = path_receiver(scan, call.func.value)
    if path is None:
        return
    if attr in ("unlink", "rmdir"):
        scan.access(path, Access.DELETE, line)
    elif attr in ("rename", "replace"):
        scan.access(path, Access.DELETE, line)
        target = text_of(scan, call.args[0]) if call.args else None
        if target:
            scan.access(target, Access.WRITE, line)
    elif attr in ("read_text", "read_bytes") or (
            attr == "open" and not _writes(scan, call, "open")):
        scan.access(path, Access.READ, line)
    else:
        scan.access(path, Access.WRITE, line)
        if attr == "chmod" and call.args:
            mode = scan.scope.ev.value(call.args[0])
            if isinstance(mode, int) and mode & 0o6000:
                scan.report("SETUID", line, f"chmod {oct(mode)}")


def write_target(scan: PythonScanner, call: ast.Call, short: str) -> str | None:
    if short == "dump" and len(call.args) >= 2:
        receiver: ast.expr = call.args[1]
    elif isinstance(call.func, _Attribute):
        receiver = call.func.value
    else:
        return None
    if isinstance(receiver, _Name):
        return scan.state.file_paths.get(receiver.id)
    if isinstance(receiver, _Call) and receiver.args:
        return text_of(scan, receiver.args[0])
    return path_receiver(scan, receiver)
