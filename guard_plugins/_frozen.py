"""Frozen dataclass instances built without their generated `__init__` (hot paths only)."""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["filled"]

T = TypeVar("T")


def filled(cls: type[T], fields: dict[str, Any]) -> T:
    """An instance of the frozen dataclass `cls` whose attributes are `fields` (every field, in
    field order), as `cls(**fields)` would make it when `cls` has no `__post_init__`.

    The generated `__init__` sets each field through `object.__setattr__`, which is a measurable
    share of a check for the objects every check builds (`Decision`, `RenderedPrompt`)."""
    instance = object.__new__(cls)
    object.__setattr__(instance, "__dict__", fields)
    return instance
