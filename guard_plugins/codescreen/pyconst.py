"""Safe constant folding over Python ASTs: what a string, number or path evaluates to, statically.

`Evaluator.value` folds literals, names bound to constants, ``+ * % ** << [] [::-1]``, f-strings,
comprehensions over constants, and a whitelist of pure decoders (`pydecode`). Nothing is ever
executed: every operation is re-implemented on known values with size caps, and anything else is
`UNKNOWN`. A sequence that would exceed `MAX_BUILD` is not built: it becomes `Huge(length)`, which
is how memory bombs (``" " * 10**12``) are recognised. `Evaluator.flags` records whether the last
value went through a decoder (``decoded``) or was assembled from pieces (``built``).
"""

from __future__ import annotations

import ast
import math
import operator
import re
from collections.abc import Callable
from typing import Final

from guard_plugins.codescreen.pydecode import (
    KNOWN_FUNCTIONS,
    KNOWN_METHODS,
    call_builtin,
    call_method,
)
from guard_plugins.codescreen.pyvalues import (
    MAX_BUILD,
    MAX_ITEMS,
    UNKNOWN,
    Huge,
    PathValue,
    size_of,
)

__all__ = ["Evaluator"]

# `ast` node classes as module constants: compiled by mypyc, each is a C static rather than
# an attribute lookup on the `ast` module at every use.
_Add: Final = ast.Add
_Attribute: Final = ast.Attribute
_BinOp: Final = ast.BinOp
_Call: Final = ast.Call
_Constant: Final = ast.Constant
_Div: Final = ast.Div
_FormattedValue: Final = ast.FormattedValue
_GeneratorExp: Final = ast.GeneratorExp
_Invert: Final = ast.Invert
_JoinedStr: Final = ast.JoinedStr
_LShift: Final = ast.LShift
_List: Final = ast.List
_ListComp: Final = ast.ListComp
_Mod: Final = ast.Mod
_Mult: Final = ast.Mult
_Name: Final = ast.Name
_Pow: Final = ast.Pow
_Slice: Final = ast.Slice
_Starred: Final = ast.Starred
_Subscript: Final = ast.Subscript
_Tuple: Final = ast.Tuple
_UAdd: Final = ast.UAdd
_USub: Final = ast.USub
_UnaryOp: Final = ast.UnaryOp

_MAX_DEPTH: Final = 60
_MAX_NODES: Final = 20_000
_MAX_INT_BITS: Final = 4096
_MAX_REENTRY: Final = 8


_MODULE_CONSTANTS: Final[dict[str, object]] = {
    "os.sep": "/", "os.path.sep": "/", "os.curdir": ".", "os.pardir": "..", "os.linesep": "\n",
    "os.devnull": "/dev/null", "sys.executable": "python3",
}
_CONSTANT_ATTRS: Final = frozenset(name.rsplit(".", 1)[-1] for name in _MODULE_CONSTANTS)
_BINOPS: Final[dict[type[ast.operator], Callable[[object, object], object]]] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod, ast.BitOr: operator.or_, ast.BitAnd: operator.and_,
    ast.BitXor: operator.xor, ast.RShift: operator.rshift, ast.Div: operator.truediv,
}
_SAFE_PERCENT: Final = re.compile(
    r"%(?:\([^)]{0,40}\))?[-#0 +]*(?:\d{0,3})?(?:\.\d{0,3})?[sdirxXoc%]")


class Evaluator:
    """Folds expressions using `lookup(name)` for bound names and `qualname(expr)` for callees."""

    def __init__(self, lookup: Callable[[str], object],
                 qualname: Callable[[ast.expr], str | None]) -> None:
        self.lookup = lookup
        self.qualname = qualname
        self.flags: set[str] = set()
        self._nodes = 0
        self._scopes: list[dict[str, object]] = []
        self._reentry = 0
        self._memo: dict[int, tuple[ast.expr, object, frozenset[str]]] = {}

    def value(self, node: ast.expr) -> object:
        """The constant value of `node`, or UNKNOWN; `flags` tells how it was obtained."""
        value, self.flags = self.evaluate(node)
        return value

    def forget(self) -> None:
        """Drop memoised results (bindings are about to change)."""
        self._memo.clear()

    def evaluate(self, node: ast.expr) -> tuple[object, set[str]]:
        """Re-entrant: the value of `node` and the flags of that evaluation (memoised)."""
        if type(node) is _Constant and self._reentry < _MAX_REENTRY:  # as `_eval` would fold it
            constant = node.value
            return (constant if isinstance(constant, (str, bytes, int, float)) else UNKNOWN), set()
        hit = self._memo.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1], set(hit[2])
        value, flags = self._evaluate(node)
        self._memo[id(node)] = (node, value, frozenset(flags))
        return value, flags

    def _evaluate(self, node: ast.expr) -> tuple[object, set[str]]:
        saved = (self.flags, self._nodes, self._scopes)
        self.flags, self._nodes, self._scopes = set(), 0, []
        self._reentry += 1
        try:
            if self._reentry > _MAX_REENTRY:
                return UNKNOWN, set()
            return self._eval(node, 0), self.flags
        except (ArithmeticError, ValueError, TypeError, IndexError, KeyError, MemoryError,
                RecursionError, UnicodeError, AttributeError):
            return UNKNOWN, self.flags
        finally:
            self._reentry -= 1
            self.flags, self._nodes, self._scopes = saved

    def text(self, node: ast.expr) -> str | None:
        """The value as text if it is a string, bytes or path."""
        value = self.value(node)
        if isinstance(value, PathValue):
            return value.path
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        return value if isinstance(value, str) else None

    def _eval(self, node: ast.expr, depth: int) -> object:
        self._nodes += 1
        if depth > _MAX_DEPTH or self._nodes > _MAX_NODES:
            return UNKNOWN
        d = depth + 1
        cls = type(node)  # parsed nodes are never subclassed: dispatch on the exact type
        if cls is _Constant:
            value = node.value  # type: ignore[attr-defined]
            return value if isinstance(value, (str, bytes, int, float)) else UNKNOWN
        if cls is _Name:
            name = node.id  # type: ignore[attr-defined]
            for scope in reversed(self._scopes):
                if name in scope:
                    return scope[name]
            return self.lookup(name)
        if cls is _Attribute:
            assert isinstance(node, _Attribute)
            if node.attr not in _CONSTANT_ATTRS:
                return UNKNOWN
            return _MODULE_CONSTANTS.get(self.qualname(node) or "", UNKNOWN)
        if cls is _Call:
            assert isinstance(node, _Call)
            return self._call(node, d)
        if cls is _JoinedStr:
            assert isinstance(node, _JoinedStr)
            return self._fstring(node, d)
        if cls is _Tuple or cls is _List:
            assert isinstance(node, (_Tuple, _List))
            if len(node.elts) > MAX_ITEMS:
                return UNKNOWN
            items = tuple(self._eval(e, d) for e in node.elts)
            return UNKNOWN if any(i is UNKNOWN for i in items) else items
        if cls is _BinOp:
            assert isinstance(node, _BinOp)
            return self._binop(node, d)
        if cls is _UnaryOp:
            assert isinstance(node, _UnaryOp)
            operand = self._eval(node.operand, d)
            if isinstance(node.op, _USub) and isinstance(operand, (int, float)):
                return -operand
            if isinstance(node.op, _UAdd) and isinstance(operand, (int, float)):
                return operand
            if isinstance(node.op, _Invert) and isinstance(operand, int):
                return ~operand
            return UNKNOWN
        if cls is _Subscript:
            assert isinstance(node, _Subscript)
            return self._subscript(node, d)
        if cls is _ListComp or cls is _GeneratorExp:
            assert isinstance(node, (_ListComp, _GeneratorExp))
            return self._comprehension(node, d)
        return UNKNOWN

    def _fstring(self, node: ast.JoinedStr, d: int) -> object:
        parts: list[str] = []
        for part in node.values:
            if isinstance(part, _Constant) and isinstance(part.value, str):
                parts.append(part.value)
                continue
            if not isinstance(part, _FormattedValue) or part.format_spec is not None:
                return UNKNOWN
            value = self._eval(part.value, d)
            if isinstance(value, PathValue):
                value = value.path
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                return UNKNOWN
            parts.append(repr(value) if part.conversion == ord("r") else str(value))
        self.flags.add("built")
        return "".join(parts)

    def _binop(self, node: ast.BinOp, d: int) -> object:
        left = self._eval(node.left, d)
        right = self._eval(node.right, d)
        if left is UNKNOWN or right is UNKNOWN:
            return UNKNOWN
        op = node.op
        if isinstance(op, _Mult):
            return self._multiply(left, right)
        if isinstance(op, _Pow):
            return _power(left, right)
        if isinstance(op, _LShift):
            if isinstance(left, int) and isinstance(right, int) and right >= 0:
                return left << right if right <= _MAX_INT_BITS else Huge(1 << 62)
            return UNKNOWN
        if isinstance(op, _Div) and isinstance(left, PathValue):
            if isinstance(right, str):
                return PathValue(left.path.rstrip("/") + "/" + right)
            return UNKNOWN
        if isinstance(op, _Add) and (isinstance(left, Huge) or isinstance(right, Huge)):
            return Huge((size_of(left) or 0) + (size_of(right) or 0))
        if isinstance(left, (Huge, PathValue)) or isinstance(right, (Huge, PathValue)):
            return UNKNOWN
        if isinstance(op, _Mod) and isinstance(left, str):
            if _SAFE_PERCENT.sub("", left).count("%"):
                return UNKNOWN
            if any(len(m.group(0)) > 12 for m in _SAFE_PERCENT.finditer(left)):
                return UNKNOWN
        fn = _BINOPS.get(type(op))
        if fn is None:
            return UNKNOWN
        if isinstance(op, _Add):
            sizes = (size_of(left) or 0) + (size_of(right) or 0)
            if sizes > MAX_BUILD:
                return Huge(sizes)
            if isinstance(left, (str, bytes)):
                self.flags.add("built")
        result = fn(left, right)
        return result if size_of(result) is None or (size_of(result) or 0) <= MAX_BUILD else UNKNOWN

    def _multiply(self, left: object, right: object) -> object:
        if isinstance(left, int) and not isinstance(right, int):
            left, right = right, left
        if isinstance(right, Huge) and isinstance(left, (str, bytes, tuple, Huge)):
            return Huge(right.size * max(1, size_of(left) or 1))
        if not isinstance(right, int) or isinstance(right, bool):
            return UNKNOWN
        if isinstance(left, (int, float)) and not isinstance(left, bool):
            result = left * right
            if isinstance(result, int) and result.bit_length() > _MAX_INT_BITS:
                return Huge(1 << 62)
            return result
        length = size_of(left)
        if length is None:
            return UNKNOWN
        total = length * max(right, 0)
        if total > MAX_BUILD or isinstance(left, Huge):
            return Huge(total)
        self.flags.add("built")
        assert isinstance(left, (str, bytes, tuple))
        return left * right

    def _subscript(self, node: ast.Subscript, d: int) -> object:
        base = self._eval(node.value, d)
        if not isinstance(base, (str, bytes, tuple)):
            return UNKNOWN
        index = node.slice
        if isinstance(index, _Slice):
            parts: list[int | None] = []
            for part in (index.lower, index.upper, index.step):
                bound = None if part is None else self._eval(part, d)
                if bound is not None and not isinstance(bound, int):
                    return UNKNOWN
                parts.append(bound)
            self.flags.add("built")
            return base[slice(*parts)]
        key = self._eval(index, d)
        if isinstance(key, int) and not isinstance(key, bool):
            return base[key]
        return UNKNOWN

    def _comprehension(self, node: ast.ListComp | ast.GeneratorExp, d: int) -> object:
        if len(node.generators) != 1:
            return UNKNOWN
        gen = node.generators[0]
        if not isinstance(gen.target, _Name) or gen.is_async:
            return UNKNOWN
        iterable = self._eval(gen.iter, d)
        if isinstance(gen.iter, _Call) and isinstance(iterable, tuple) and (
                self.qualname(gen.iter.func) in ("range", "builtins.range")):
            # Only the size of a range matters (memory bombs), not its items.
            return self._sized(node, gen.target.id, iterable, d)
        if isinstance(iterable, (str, bytes)):
            iterable = tuple(iterable)
        if not isinstance(iterable, tuple) or len(iterable) > MAX_ITEMS:
            return Huge(iterable.size) if isinstance(iterable, Huge) else UNKNOWN
        out: list[object] = []
        scope: dict[str, object] = {}
        self._scopes.append(scope)
        try:
            for item in iterable:
                scope[gen.target.id] = item
                if all(self._eval(cond, d) not in (UNKNOWN, False, 0, "") for cond in gen.ifs):
                    value = self._eval(node.elt, d)
                    if value is UNKNOWN:
                        return UNKNOWN
                    out.append(value)
        finally:
            self._scopes.pop()
        self.flags.add("built")
        return tuple(out)

    def _sized(self, node: ast.ListComp | ast.GeneratorExp, target: str,
               items: tuple[object, ...], d: int) -> object:
        """A comprehension over a range: Huge when items × element size is enormous."""
        if not items or isinstance(node, _GeneratorExp):
            return UNKNOWN
        self._scopes.append({target: items[0]})
        try:
            element = self._eval(node.elt, d)
        finally:
            self._scopes.pop()
        total = len(items) * (size_of(element) or 1)
        return Huge(total) if total > MAX_BUILD else UNKNOWN

    def _call(self, node: ast.Call, d: int) -> object:
        if any(isinstance(a, _Starred) for a in node.args) or any(
                k.arg is None for k in node.keywords):
            return UNKNOWN
        func = node.func
        if isinstance(func, _Attribute) and func.attr in KNOWN_METHODS:
            name = self.qualname(func)
            module_call = name is not None and "()" not in name and _is_module_path(name)
            receiver = UNKNOWN if module_call else self._eval(func.value, d)
            if receiver is not UNKNOWN:
                args = [self._eval(a, d) for a in node.args]
                kwargs = {k.arg: self._eval(k.value, d) for k in node.keywords if k.arg}
                return call_method(receiver, func.attr, args, kwargs, self.flags)
        name = self.qualname(func)
        if name is None or name.removeprefix("builtins.") not in KNOWN_FUNCTIONS:
            return UNKNOWN
        if name in ("map", "builtins.map") and len(node.args) == 2 and isinstance(
                node.args[0], _Name):
            items = self._eval(node.args[1], d)
            return call_builtin("map", [node.args[0].id, items], {}, self.flags)
        args = [self._eval(a, d) for a in node.args]
        kwargs = {k.arg: self._eval(k.value, d) for k in node.keywords if k.arg}
        return call_builtin(name, args, kwargs, self.flags)


def _is_module_path(name: str) -> bool:
    return name.split(".", 1)[0] in {"base64", "binascii", "codecs", "zlib", "gzip", "bz2",
                                     "lzma", "bytes", "bytearray", "os", "pathlib", "str",
                                     "builtins", "posixpath", "numpy", "np", "operator"}


def _power(base: object, exp: object) -> object:
    if not isinstance(base, (int, float)) or not isinstance(exp, (int, float)):
        return UNKNOWN
    if isinstance(base, int) and isinstance(exp, int) and exp >= 0:
        if abs(base) > 1 and exp * math.log2(abs(base)) > _MAX_INT_BITS:
            return Huge(1 << 62)
        return base ** exp
    try:
        result = float(base) ** float(exp)
    except (OverflowError, ZeroDivisionError):
        return UNKNOWN
    return result if isinstance(result, float) and math.isfinite(result) else UNKNOWN
