"""Values of the Python constant folder (`UNKNOWN`, `Huge`, `PathValue`) and a fast AST walk.

`walk`/`children` are `ast.walk`/`ast.iter_child_nodes` without the generator overhead and without
the ``Load``/``Store`` context nodes, which the scanners never look at.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

__all__ = ["MAX_BUILD", "MAX_ITEMS", "UNKNOWN", "Huge", "PathValue", "children", "size_of",
           "walk"]

MAX_BUILD = 1_000_000
MAX_ITEMS = 100_000


class _Unknown:
    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()


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


_SCALAR_FIELDS = frozenset({"id", "ctx", "attr", "kind", "arg", "name", "asname", "level",
                            "module", "is_async", "conversion", "type_comment", "simple", "names",
                            "n", "s", "tag"})
_CHILD_FIELDS: dict[type, tuple[str, ...]] = {ast.Constant: ()}


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
                if isinstance(item, ast.AST):
                    out.append(item)
        elif isinstance(value, ast.AST):
            out.append(value)
    return out


def walk(node: ast.AST) -> list[ast.AST]:
    """`node` and all its descendants, breadth first, context markers excluded."""
    out = [node]
    append = out.append
    fields_of = _CHILD_FIELDS
    node_type = ast.AST
    for current in out:  # grows while iterated: breadth first
        cls = type(current)
        if cls is ast.Name or cls is ast.Constant:  # leaves, but for their context
            continue
        fields = fields_of.get(cls)
        if fields is None:
            fields = _child_fields(cls)
        for name in fields:
            value = getattr(current, name, None)
            if type(value) is list:
                for item in value:
                    if isinstance(item, node_type):
                        append(item)
            elif isinstance(value, node_type):
                append(value)
    return out
