"""Values of the Python constant folder (`UNKNOWN`, `Huge`, `PathValue`) and a fast AST walk.

`walk`/`children` are `ast.walk`/`ast.iter_child_nodes` without the generator overhead and without
the ``Load``/``Store`` context nodes, which the scanners never look at.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Final

__all__ = ["MAX_BUILD", "MAX_ITEMS", "UNKNOWN", "Huge", "PathValue", "children", "size_of",
           "walk"]

# `ast` node classes as module constants: compiled by mypyc, each is a C static rather than
# an attribute lookup on the `ast` module at every use.
_AST: Final = ast.AST
_Constant: Final = ast.Constant
_Name: Final = ast.Name

MAX_BUILD: Final = 1_000_000
MAX_ITEMS: Final = 100_000


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True)
class Huge:
    """A value too large to build: a sequence of `size` items or an integer of at least `size`."""

    size: int


@dataclass(frozen=True)
class PathValue:
    """A `pathlib.Path` whose string is known (``~`` stands for the home directory)."""

    path: str


def size_of(value: object) -> int | None:
    """Length of a sequence value (or the size of a `Huge`), None for other values."""
    if isinstance(value, Huge):
        return value.size
    if isinstance(value, (str, bytes, tuple)):
        return len(value)
    return None


_SCALAR_FIELDS: Final = frozenset({"id", "ctx", "attr", "kind", "arg", "name", "asname", "level",
                                   "module", "is_async", "conversion", "type_comment", "simple",
                                   "names", "n", "s", "tag"})
_CHILD_FIELDS: Final[dict[type, tuple[str, ...]]] = {ast.Constant: ()}


def _child_fields(cls: type) -> tuple[str, ...]:
    fields = tuple(f for f in getattr(cls, "_fields", ()) if f not in _SCALAR_FIELDS)
    _CHILD_FIELDS[cls] = fields
    return fields


def children(node: ast.AST) -> list[ast.AST]:
    """Direct child nodes, context markers excluded."""
    cls = type(node)
    fields = _CHILD_FIELDS.get(cls)
    if fields is None:
        fields = _child_fields(cls)
    out: list[ast.AST] = []
    for name in fields:
        value = getattr(node, name, None)
        if type(value) is list:
            for item in value:
                if isinstance(item, _AST):
                    out.append(item)
        elif isinstance(value, _AST):
            out.append(value)
    return out


def walk(node: ast.AST) -> list[ast.AST]:
    """`node` and all its descendants, breadth first, context markers excluded."""
    out = [node]
    fields_of = _CHILD_FIELDS
    node_type = _AST
    for current in out:  # grows while iterated: breadth first
        cls = type(current)
        if cls is _Name or cls is _Constant:  # leaves, but for their context
            continue
        fields = fields_of.get(cls)
        if fields is None:
            fields = _child_fields(cls)
        for name in fields:
            value = getattr(current, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, node_type):
                        out.append(item)
            elif isinstance(value, node_type):
                out.append(value)
    return out
