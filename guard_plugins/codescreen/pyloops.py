"""Loops in Python snippets: fork bombs, unbounded spawning and growth, delete-everything walks.

A loop is unbounded when it is ``while <true constant>`` or iterates ``itertools.count()``,
``itertools.cycle``, ``itertools.repeat(x)`` or ``iter(int, 1)``, and its body has no ``break``,
``return``, ``raise``, ``next()`` or exit call outside nested loops and functions. Bodies that
block (sleep, accept, recv, queue get, input, ``await``) are paced by something external, and a
loop inside ``try``/``except`` may end by exception, so growth and spawning there are reported with
low confidence. ``for`` loops over ``os.walk``/``glob``/``Path.rglob`` of a root-like directory
that delete files are destructive.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from guard_plugins.codescreen.findings import Confidence, Severity
from guard_plugins.codescreen.paths import Access, is_root_like, normalize
from guard_plugins.codescreen.pyvalues import UNKNOWN, children

if TYPE_CHECKING:
    from guard_plugins.codescreen.python import PythonScanner

__all__ = ["FORKS", "SPAWN_CONSTRUCTORS", "SPAWN_PREFIXES", "check_loop", "check_self_replication"]

# `ast` node classes as module constants: compiled by mypyc, each is a C static rather than
# an attribute lookup on the `ast` module at every use.
_Add: Final = ast.Add
_AsyncFor: Final = ast.AsyncFor
_AsyncFunctionDef: Final = ast.AsyncFunctionDef
_Attribute: Final = ast.Attribute
_AugAssign: Final = ast.AugAssign
_Await: Final = ast.Await
_Break: Final = ast.Break
_Call: Final = ast.Call
_ClassDef: Final = ast.ClassDef
_For: Final = ast.For
_FunctionDef: Final = ast.FunctionDef
_If: Final = ast.If
_IfExp: Final = ast.IfExp
_JoinedStr: Final = ast.JoinedStr
_Lambda: Final = ast.Lambda
_List: Final = ast.List
_ListComp: Final = ast.ListComp
_Mult: Final = ast.Mult
_Name: Final = ast.Name
_Raise: Final = ast.Raise
_Return: Final = ast.Return
_Tuple: Final = ast.Tuple
_While: Final = ast.While

FORKS: Final = frozenset({"os.fork", "os.forkpty", "pty.fork"})
SPAWN_PREFIXES: Final = ("threading.Thread(", "multiprocessing.Process(", "multiprocessing.Pool(",
                          "_thread.start_new_thread", "thread.start_new_thread", "subprocess.Popen",
                          "os.spawn", "os.posix_spawn", "concurrent.futures.ThreadPoolExecutor(",
                          "concurrent.futures.ProcessPoolExecutor(", "multiprocessing.get_context(",
                          "threading.Timer(", "asyncio.create_subprocess")
SPAWN_CONSTRUCTORS: Final = ("threading.Thread", "multiprocessing.Process", "threading.Timer",
                              "multiprocessing.get_context")
_EXITS: Final = frozenset({"sys.exit", "exit", "quit", "os._exit", "os.abort", "next"})
_BLOCKING: Final = frozenset({"sleep", "accept", "recv", "recvfrom", "get", "wait", "join", "input",
                              "select", "poll", "readline", "read", "serve_forever", "communicate",
                              "wait_for", "acquire", "getch", "urlopen", "result", "get_nowait"})
_GROWTH: Final = frozenset({"append", "extend", "add", "insert", "appendleft", "put", "write"})
_CONSTANT_FACTORIES: Final = frozenset({"int", "float", "str", "bytes", "list", "dict", "tuple",
                                        "bool", "object", "set"})
_UNBOUNDED_ITERS: Final = frozenset({"itertools.count", "itertools.cycle", "count", "cycle"})
_WALKS: Final = frozenset({"os.walk", "os.listdir", "os.scandir", "glob.glob", "glob.iglob",
                           "os.fwalk"})
_PATH_WALKS: Final = frozenset({"rglob", "glob", "iterdir", "walk"})
_DELETES: Final = frozenset({"os.remove", "os.unlink", "os.rmdir", "shutil.rmtree",
                             "os.removedirs"})


def _body_nodes(loop: ast.While | ast.For | ast.AsyncFor) -> Iterator[tuple[ast.AST, bool]]:
    """Nodes of the loop body with a flag: inside a nested loop. Skips nested functions."""
    stack: list[tuple[ast.AST, bool]] = [(stmt, False) for stmt in loop.body]
    while stack:
        node, nested = stack.pop()
        yield node, nested
        if isinstance(node, (_FunctionDef, _AsyncFunctionDef, _ClassDef, _Lambda)):
            continue
        inner = nested or isinstance(node, (_While, _For, _AsyncFor))
        stack.extend((child, inner) for child in children(node))


def _unbounded(scan: PythonScanner, loop: ast.While | ast.For | ast.AsyncFor) -> bool:
    if isinstance(loop, _While):
        value = scan.scope.ev.value(loop.test)
        return value is not UNKNOWN and bool(value) and not isinstance(value, tuple)
    if not isinstance(loop.iter, _Call):
        return False
    name = scan.scope.qualname(loop.iter.func) or ""
    if name in _UNBOUNDED_ITERS:
        return True
    if name in ("itertools.repeat", "repeat") and len(loop.iter.args) == 1:
        return True
    if name in ("iter", "builtins.iter") and len(loop.iter.args) == 2:
        # iter(int, 1) never meets its sentinel; iter(f.read, b"") does.
        first = loop.iter.args[0]
        return isinstance(first, _Name) and first.id in _CONSTANT_FACTORIES
    return False


def check_loop(scan: PythonScanner, loop: ast.While | ast.For | ast.AsyncFor,
               guarded: bool = False) -> None:
    """Report resource-exhaustion and destructive-walk findings for one loop.

    `guarded`: the loop sits in a ``try`` with handlers, so an exception may end it.
    """
    if isinstance(loop, (_For, _AsyncFor)):
        _check_walk_delete(scan, loop)
    if not _unbounded(scan, loop):
        return
    blocking = False
    forks: list[int] = []
    spawns: list[int] = []
    growth: list[int] = []
    for node, nested in _body_nodes(loop):
        if (isinstance(node, _Break) and not nested) or isinstance(
                node, (_Return, _Raise)):
            return  # the loop can end: nothing to report
        if isinstance(node, _Await):
            blocking = True
        elif isinstance(node, _AugAssign) and _grows(scan, node):
            growth.append(node.lineno)
        elif isinstance(node, _Call):
            name = scan.scope.qualname(node.func) or ""
            short = name.rsplit(".", 1)[-1] if name else getattr(node.func, "attr", "")
            if name in _EXITS:
                return
            if name in FORKS:
                forks.append(node.lineno)
            elif name.startswith(SPAWN_PREFIXES) and (short in ("start", "submit", "map",
                                                                 "apply_async") or
                                                       not name.endswith(")")):
                spawns.append(node.lineno)
            elif short in _BLOCKING:
                blocking = True
            elif short in _GROWTH and isinstance(node.func, _Attribute):
                growth.append(node.lineno)
    confidence: Confidence = "low" if blocking or guarded else "high"
    if forks:
        scan.report("FORKBOMB", loop.lineno, "fork() in an endless loop")
    elif spawns:
        scan.report("UNBOUNDED-SPAWN", loop.lineno, "threads or processes in an endless loop",
                    confidence=confidence)
    if growth and not forks:
        scan.report("MEMORY-GROWTH", loop.lineno, "growth in an endless loop",
                    confidence=confidence, severity=Severity.MEDIUM if blocking else None)


def _grows(scan: PythonScanner, node: ast.AugAssign) -> bool:
    """``x += <sequence>`` (a list, a string) grows; ``counter += 1`` does not."""
    if not isinstance(node.op, (_Add, _Mult)):
        return False
    if isinstance(node.value, (_List, _ListComp, _JoinedStr, _Tuple)):
        return True
    value = scan.scope.ev.value(node.value)
    if isinstance(value, (str, bytes, tuple)):
        return True
    current = scan.scope.consts.get(node.target.id) if isinstance(node.target, _Name) else None
    return isinstance(current, (str, bytes, tuple))


def _check_walk_delete(scan: PythonScanner, loop: ast.For | ast.AsyncFor) -> None:
    it = loop.iter
    if not isinstance(it, _Call):
        return
    name = scan.scope.qualname(it.func) or ""
    target: str | None = None
    if name in _WALKS and it.args:
        target = scan.scope.partial_text(it.args[0])
    elif isinstance(it.func, _Attribute) and it.func.attr in _PATH_WALKS:
        target = scan.scope.partial_text(it.func.value)
    if target is None:
        return
    prefix = target.split("*", 1)[0]
    root = normalize(prefix.rstrip("/") or ("/" if prefix.startswith("/") else "."))
    if not is_root_like(root):
        return
    for node, _nested in _body_nodes(loop):
        if isinstance(node, _Call):
            callee = scan.scope.qualname(node.func) or ""
            attr = node.func.attr if isinstance(node.func, _Attribute) else ""
            if callee in _DELETES or attr in ("unlink", "rmdir", "rmtree"):
                scan.access(root, Access.DELETE_TREE, loop.lineno)
                return


def check_self_replication(scan: PythonScanner,
                           func: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
    """A function that forks and calls itself, or starts itself as a thread/process target."""
    name = func.name
    forks = recurses = spawns_self = guarded = False
    stack: list[ast.AST] = list(func.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (_FunctionDef, _AsyncFunctionDef, _ClassDef, _Lambda)):
            continue
        if isinstance(node, (_If, _While, _Return, _Raise, _IfExp)):
            guarded = True
        if isinstance(node, _Call):
            callee = scan.scope.qualname(node.func) or ""
            if callee in FORKS:
                forks = True
            elif isinstance(node.func, _Name) and node.func.id == name:
                recurses = True
            elif callee.startswith(SPAWN_PREFIXES) or callee.startswith(SPAWN_CONSTRUCTORS):
                spawns_self = spawns_self or any(
                    k.arg == "target" and isinstance(k.value, _Name) and k.value.id == name
                    for k in node.keywords)
        stack.extend(children(node))
    if (forks and recurses) or spawns_self:
        scan.report("FORKBOMB", func.lineno, f"{name} replicates itself",
                    confidence="low" if guarded else "high")
