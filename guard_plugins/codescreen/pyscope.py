"""Name bindings of a Python snippet: aliases, constants, partial strings and taint.

`Scope.qualname` resolves what an expression refers to through imports and aliases
(``import os as x``, ``from os import system as s``, ``s = subprocess``), dynamic lookups with
constant arguments (``__import__("o"+"s")``, ``getattr(os, "sys"+"tem")``,
``importlib.import_module(…)``, ``__builtins__.__dict__["exec"]``, ``sys.modules["os"]``), and
ctypes libraries (every ``ctypes.CDLL(...)`` is ``libc``). A lookup whose name had to be computed
(concatenation, ``chr``, decoding) and lands on something dangerous is reported as obfuscation.

Taint marks values that come from the network (``net``), from the user (``input``) or that hold
the whole environment (``env``); `taint_of` follows them through expressions.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from typing import Final

from guard_plugins.codescreen.paths import UNKNOWN as UNKNOWN_TEXT
from guard_plugins.codescreen.pyconst import Evaluator
from guard_plugins.codescreen.pyvalues import UNKNOWN, PathValue, children

__all__ = ["DANGEROUS_MODULES", "IMPORTERS", "INPUT_SOURCES", "NET_METHODS", "NET_SOURCES", "Scope"]

# `ast` node classes as module constants: compiled by mypyc, each is a C static rather than
# an attribute lookup on the `ast` module at every use.
_Add: Final = ast.Add
_Attribute: Final = ast.Attribute
_BinOp: Final = ast.BinOp
_Call: Final = ast.Call
_Compare: Final = ast.Compare
_Constant: Final = ast.Constant
_Div: Final = ast.Div
_FormattedValue: Final = ast.FormattedValue
_Import: Final = ast.Import
_JoinedStr: Final = ast.JoinedStr
_List: Final = ast.List
_Mod: Final = ast.Mod
_Name: Final = ast.Name
_Starred: Final = ast.Starred
_Subscript: Final = ast.Subscript
_Tuple: Final = ast.Tuple
_expr: Final = ast.expr
_keyword: Final = ast.keyword

_CANONICAL: Final = {"__builtins__": "builtins", "posix": "os", "nt": "os",
                     "__builtin__": "builtins", "posixpath": "os.path",
                     "_posixsubprocess": "subprocess", "commands": "subprocess"}
IMPORTERS: Final = {"__import__", "builtins.__import__", "importlib.import_module",
                     "importlib.__import__", "imp.load_module", "importlib.util.find_spec"}
_CTYPES_LOADERS: Final = {"ctypes.CDLL", "ctypes.cdll.LoadLibrary", "ctypes.PyDLL",
                          "ctypes.LibraryLoader", "ctypes.cdll", "ctypes.CDLL.LoadLibrary",
                          "ctypes.pydll.LoadLibrary"}
DANGEROUS_MODULES: Final = frozenset({"os", "subprocess", "pty", "socket", "ctypes", "shutil",
                                      "builtins", "importlib", "sys", "multiprocessing", "marshal",
                                      "pickle", "pexpect", "asyncio.subprocess", "platform",
                                      "posix"})
_DANGEROUS_ATTRS: Final = frozenset({"exec", "eval", "compile", "system", "popen", "Popen", "fork",
                                     "run", "call", "check_output", "check_call", "getoutput",
                                     "spawn", "execv", "execve", "execl", "execvp", "rmtree",
                                     "remove", "unlink", "setuid", "dup2", "connect", "socket",
                                     "loads", "__import__", "import_module", "getattr", "open",
                                     "kill", "chmod", "environ"})
NET_SOURCES: Final = ("requests.", "httpx.", "urllib.request.urlopen", "urllib3.", "http.client.",
                       "aiohttp.", "urllib.urlopen", "urllib2.urlopen", "socket.", "websocket.",
                       "paramiko.", "telnetlib.", "ftplib.", "pycurl.")
NET_METHODS: Final = frozenset({"recv", "recvfrom", "recv_into", "recvmsg", "makefile", "urlopen"})
INPUT_SOURCES: Final = frozenset({"input", "raw_input", "sys.stdin.read", "sys.stdin.readline",
                                   "sys.stdin.readlines", "sys.argv", "fileinput.input"})
_ENV_SAFE_ATTRS: Final = frozenset({"get", "setdefault", "pop", "__getitem__", "__contains__",
                                    "update", "clear", "putenv", "unsetenv", "__setitem__",
                                    "__delitem__"})
_HOME_SOURCES: Final = frozenset({"pathlib.Path.home", "os.path.expanduser"})
_PATH_JOINS: Final = frozenset({"os.path.join", "pathlib.Path", "pathlib.PurePath",
                                "os.path.expanduser", "os.path.abspath", "os.path.realpath"})
_REFERENCES: Final = (ast.Name, ast.Attribute, ast.Call, ast.Subscript)
_FOLDABLE: Final = {ast.Constant, ast.Name, ast.JoinedStr, ast.BinOp, ast.UnaryOp, ast.Tuple,
                    ast.List, ast.Subscript, ast.ListComp, ast.GeneratorExp, ast.Call}
_PARTIAL: Final = {ast.JoinedStr, ast.BinOp, ast.Call, ast.Subscript}
Report = Callable[[str, int, str], None]


class Scope:
    """Bindings collected in source order; `report(rule, line, detail)` gets obfuscation hits."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.aliases: dict[str, str] = {}
        self.consts: dict[str, object] = {}
        self.taints: dict[str, frozenset[str]] = {}
        self.star_modules: list[str] = []
        self.ev = Evaluator(self.lookup, self.qualname)
        self._names: dict[int, tuple[ast.expr, str | None]] = {}
        self._canonical: dict[str, str] = {}
        self._taint_memo: dict[int, tuple[ast.AST, frozenset[str]]] = {}
        self._statement_nodes: list[ast.AST] | None = None
        self._statement_tainted: bool | None = True

    def new_statement(self, nodes: list[ast.AST] | None = None, may_taint: bool = True) -> None:
        """Forget memoised lookups (bindings may have changed); `nodes` is the next statement.

        When none of `nodes` can carry taint (or the caller knows, `may_taint` False),
        `taint_of` answers without walking.
        """
        self._names.clear()
        self._taint_memo.clear()
        self.ev.forget()
        self._statement_nodes = nodes
        self._statement_tainted = (None if may_taint else False) if nodes is not None else True

    @property
    def statement_tainted(self) -> bool:
        """Whether anything in the current statement can carry taint (computed once)."""
        if self._statement_tainted is None:
            nodes = self._statement_nodes or []
            self._statement_tainted = any(self._may_taint(n) for n in nodes)
        return self._statement_tainted

    def _may_taint(self, node: ast.AST) -> bool:
        cls = type(node)
        if cls is _Name:
            assert isinstance(node, _Name)
            return node.id in self.taints or _maybe_special(node, self.aliases)
        if cls is _Call:
            assert isinstance(node, _Call)
            return bool(self._source_kind(node))
        return cls is _Attribute and getattr(node, "attr", "") in ("environ", "argv")

    def lookup(self, name: str) -> object:
        return self.consts.get(name, UNKNOWN)

    def qualname(self, node: ast.expr, depth: int = 0) -> str | None:
        """Dotted name `node` refers to (``"os.system"``, ``"socket.socket()"``), if known."""
        hit = self._names.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        name = self._qualname(node, depth)
        self._names[id(node)] = (node, name)
        return name

    def _qualname(self, node: ast.expr, depth: int) -> str | None:
        if depth > 40:
            return None
        if isinstance(node, _Name):
            name = self.aliases.get(node.id, node.id)
            if name == node.id and node.id not in self.aliases and self.star_modules:
                for module in self.star_modules:
                    if node.id in _DANGEROUS_ATTRS:
                        name = f"{module}.{node.id}"
            canonical = self._canonical.get(name)
            if canonical is None:
                canonical = self._canonical[name] = _canonical(name)
            return canonical
        cls = type(node)  # parsed nodes are never subclassed: dispatch on the exact type
        if cls is _Attribute:
            assert isinstance(node, _Attribute)
            base = self.qualname(node.value, depth + 1)
            if not base:
                return None
            full = f"{base}.{node.attr}"
            canonical = self._canonical.get(full)
            if canonical is None:
                canonical = self._canonical[full] = _canonical(full)
            return canonical
        if cls is _Call:
            assert isinstance(node, _Call)
            return self._call_qualname(node, depth)
        if cls is _Subscript:
            assert isinstance(node, _Subscript)
            base = self.qualname(node.value, depth + 1)
            key, hidden = self._computed_name(node.slice)
            if base is None or key is None:
                return None
            if base in ("sys.modules", "globals()", "locals()", "builtins.globals()",
                        "builtins.vars()", "vars()"):
                return self._resolved(_canonical(key), node, hidden)
            if base.endswith(".__dict__"):
                return self._resolved(_canonical(f"{base[:-9]}.{key}"), node, hidden)
        return None

    def _call_qualname(self, node: ast.Call, depth: int) -> str | None:
        func = self.qualname(node.func, depth + 1)
        if func is None:
            return None
        if func in IMPORTERS and node.args:
            module, hidden = self._computed_name(node.args[0])
            return self._resolved(_canonical(module), node, hidden) if module else None
        if func in ("getattr", "builtins.getattr") and len(node.args) >= 2:
            base = self.qualname(node.args[0], depth + 1)
            attr, hidden = self._computed_name(node.args[1])
            if not base or not attr:
                return None
            return self._resolved(_canonical(f"{base}.{attr}"), node, hidden)
        if func in ("vars", "builtins.vars") and node.args:
            base = self.qualname(node.args[0], depth + 1)
            return f"{base}.__dict__" if base else None
        if func in _CTYPES_LOADERS or func.startswith("ctypes.cdll."):
            return "libc"
        return f"{func}()"

    def _computed_name(self, node: ast.expr) -> tuple[str | None, bool]:
        """A name given as a string argument, and whether it had to be computed."""
        value, flags = self.ev.evaluate(node)
        if not isinstance(value, str) or not value.replace(".", "").replace("_", "").isalnum():
            return None, False
        return value, bool(flags & {"built", "decoded"})

    def _resolved(self, name: str, node: ast.AST, hidden: bool) -> str:
        if hidden:
            head, _, tail = name.partition(".")
            last = name.rsplit(".", 1)[-1]
            if name in DANGEROUS_MODULES or (head in DANGEROUS_MODULES and (
                    not tail or last in _DANGEROUS_ATTRS)) or last in _DANGEROUS_ATTRS:
                self.report("PY-OBFUSCATED-NAME", getattr(node, "lineno", 0), name)
        return name

    # -- bindings -----------------------------------------------------------------------------

    def bind_import(self, node: ast.Import | ast.ImportFrom) -> None:
        if isinstance(node, _Import):
            for alias in node.names:
                if alias.asname:
                    self.aliases[alias.asname] = _canonical(alias.name)
                else:
                    head = alias.name.split(".", 1)[0]
                    self.aliases[head] = _canonical(head)
            return
        module = _canonical(node.module or "")
        for alias in node.names:
            if alias.name == "*":
                self.star_modules.append(module)
            else:
                self.aliases[alias.asname or alias.name] = _canonical(f"{module}.{alias.name}")

    def bind(self, target: ast.expr, value: ast.expr | None, taint: frozenset[str]) -> None:
        """Record what `target` holds after ``target = value`` (value None: unknown)."""
        if isinstance(target, (_Tuple, _List)):
            values = value.elts if isinstance(value, (_Tuple, _List)) and len(
                value.elts) == len(target.elts) else [None] * len(target.elts)
            for sub_target, sub_value in zip(target.elts, values, strict=True):
                sub_taint = self.taint_of(sub_value) if sub_value is not None else taint
                self.bind(sub_target, sub_value, sub_taint)
            return
        if isinstance(target, _Starred):
            self.bind(target.value, None, taint)
            return
        if not isinstance(target, _Name):
            return
        name = target.id
        resolved: str | None = None
        constant: object = UNKNOWN
        if value is not None:
            cls = type(value)
            if cls in _REFERENCES:
                resolved = self.qualname(value)
            if cls in _FOLDABLE:
                constant = self.ev.value(value)
            if constant is UNKNOWN and cls in _PARTIAL and (
                    not isinstance(value, _Call) or self._partial_call(value)):
                partial = self.partial_text(value)
                constant = UNKNOWN if partial is None else partial
        # `in` then `del`: compiled, both are direct C calls (`pop` is a method lookup).
        if name in self.aliases:
            del self.aliases[name]
        if name in self.consts:
            del self.consts[name]
        if name in self.taints:
            del self.taints[name]
        if resolved is not None:
            self.aliases[name] = resolved
        if constant is not UNKNOWN:
            self.consts[name] = constant
        if taint:
            self.taints[name] = taint

    def _partial_call(self, node: ast.Call) -> bool:
        """Can `_partial` make text of this call whose value is unknown? Only a path builder."""
        func = self.qualname(node.func) or ""
        return func in _HOME_SOURCES or func in _PATH_JOINS

    def partial_text(self, node: ast.expr) -> str | None:
        """A string with `paths.UNKNOWN` where parts cannot be resolved, if any part is known."""
        text = self._partial(node, 0)
        if text is None or text.replace(UNKNOWN_TEXT, "") == "":
            return None
        return text

    def _partial(self, node: ast.expr, depth: int) -> str | None:
        value = self.ev.value(node)
        if isinstance(value, (str, PathValue)):
            return value.path if isinstance(value, PathValue) else value
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if depth > 20:
            return UNKNOWN_TEXT
        if isinstance(node, _JoinedStr):
            return "".join(
                part.value if isinstance(part, _Constant) and isinstance(part.value, str)
                else self._partial(part.value, depth + 1) or UNKNOWN_TEXT
                if isinstance(part, _FormattedValue) else UNKNOWN_TEXT
                for part in node.values)
        if isinstance(node, _BinOp) and isinstance(node.op, (_Add, _Div, _Mod)):
            left = self._partial(node.left, depth + 1) or UNKNOWN_TEXT
            right = self._partial(node.right, depth + 1) or UNKNOWN_TEXT
            if isinstance(node.op, _Mod):
                return left.replace("%s", right, 1)
            return left + ("/" if isinstance(node.op, _Div) else "") + right
        if isinstance(node, _Call):
            func = self.qualname(node.func) or ""
            if (func in _HOME_SOURCES and not node.args) or func == "pathlib.Path.home":
                return "~"
            if func in _PATH_JOINS and node.args:
                parts = [self._partial(a, depth + 1) or UNKNOWN_TEXT for a in node.args]
                return "/".join(p.rstrip("/") if i < len(parts) - 1 else p
                                for i, p in enumerate(parts))
        if isinstance(node, _Subscript) and self.qualname(node.value) == "os.environ":
            key = self.ev.value(node.slice)
            return "~" if key in ("HOME", "USERPROFILE") else UNKNOWN_TEXT
        return UNKNOWN_TEXT

    def taint_of(self, node: ast.expr | None) -> frozenset[str]:
        """Kinds of tainted data `node` may carry: ``net``, ``input``, ``env`` (memoised)."""
        if node is None or not self.statement_tainted:
            return frozenset()
        memo = self._taint_memo
        hit = memo.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        stack: list[tuple[ast.AST, list[ast.AST] | None]] = [(node, None)]
        while stack:
            current, done = stack.pop()
            if done is not None:
                memo[id(current)] = (current, self._combine(current, done))
                continue
            known = memo.get(id(current))
            if known is not None and known[0] is current:
                continue
            kids = children(current)
            stack.append((current, kids))
            stack.extend((kid, None) for kid in kids)
        return memo[id(node)][1]

    def _combine(self, node: ast.AST, children: list[ast.AST]) -> frozenset[str]:
        kinds: set[str] = set()
        if isinstance(node, _Name):
            kinds |= self.taints.get(node.id, frozenset())
        if isinstance(node, _Call):
            kinds |= self._source_kind(node)
        elif _maybe_special(node, self.aliases):
            assert isinstance(node, _expr)
            name = self.qualname(node)
            if name == "os.environ":
                kinds.add("env")
            elif name == "sys.argv":
                kinds.add("input")
        for child in children:
            hit = self._taint_memo.get(id(child))
            if hit is None or not hit[1]:
                continue
            child_kinds = hit[1]
            if "env" in child_kinds and _shields_environ(node, child):
                child_kinds = child_kinds - {"env"}
            kinds |= child_kinds
        return frozenset(kinds)

    def _source_kind(self, call: ast.Call) -> set[str]:
        name = self.qualname(call.func) or ""
        if name.startswith(NET_SOURCES) or name.rsplit(".", 1)[-1] in NET_METHODS:
            return {"net"}
        if name in INPUT_SOURCES:
            return {"input"}
        return set()


def _maybe_special(node: ast.AST, aliases: dict[str, str]) -> bool:
    if isinstance(node, _Attribute):
        return node.attr in ("environ", "argv")
    if isinstance(node, _Name):
        return node.id in ("environ", "argv") or aliases.get(node.id) in ("os.environ", "sys.argv")
    return False


def _shields_environ(parent: ast.AST, child: ast.AST) -> bool:
    """True when `parent` uses one key of the environment `child`, not the whole of it."""
    if not _maybe_special(child, {}) and not isinstance(child, (_Name, _Attribute)):
        return False
    if isinstance(parent, _Subscript) and parent.value is child:
        return True
    if isinstance(parent, _Attribute) and parent.attr in _ENV_SAFE_ATTRS:
        return True
    if isinstance(parent, _Compare) and child in parent.comparators:
        return True
    return isinstance(parent, _keyword) and parent.arg == "env"


def _canonical(name: str) -> str:
    head, dot, tail = name.partition(".")
    head = _CANONICAL.get(head, head)
    full = f"{head}{dot}{tail}"
    if full.startswith("os.path.") or full == "os.path":
        return full
    return _CANONICAL.get(full, full)
