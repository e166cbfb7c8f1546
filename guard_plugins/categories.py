"""The Llama Guard 4 hazard taxonomy (S1–S14) and custom categories.

`Category` is the built-in taxonomy. `CustomCategory` lets a zero-shot policy replace the list.
`resolve_categories` turns what a caller passes (codes, enums, custom definitions, mappings) into
the ordered tuple the prompt lists, with exclusions applied.
"""

from __future__ import annotations

import enum
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Union

from guard_plugins.errors import CategoryError

__all__ = [
    "DEFAULT_CATEGORIES",
    "Category",
    "CategoryLike",
    "CustomCategory",
    "parse_category_codes",
    "resolve_categories",
]

_SHORT_NAMES = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex Crimes",
    "S4": "Child Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}

_CARD_NAMES = {
    **_SHORT_NAMES,
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S11": "Suicide & Self-Harm",
}


class Category(str, enum.Enum):
    """A Llama Guard 4 hazard category. The value is the code the model emits (``"S14"``).

    >>> Category.S14.short_name
    'Code Interpreter Abuse'
    >>> Category("S9") is Category.S9
    True
    """

    S1 = "S1"
    S2 = "S2"
    S3 = "S3"
    S4 = "S4"
    S5 = "S5"
    S6 = "S6"
    S7 = "S7"
    S8 = "S8"
    S9 = "S9"
    S10 = "S10"
    S11 = "S11"
    S12 = "S12"
    S13 = "S13"
    S14 = "S14"

    @property
    def code(self) -> str:
        return self.value

    @property
    def short_name(self) -> str:
        """The name used in the prompt (``"Sex Crimes"``)."""
        return _SHORT_NAMES[self.value]

    @property
    def card_name(self) -> str:
        """The name used in the model card (``"Sex-Related Crimes"``)."""
        return _CARD_NAMES[self.value]

    def prompt_line(self) -> str:
        return f"{self.value}: {self.short_name}."

    def __str__(self) -> str:
        return self.value


_CODE_RE = re.compile(r"^[A-Z][A-Za-z0-9_]{0,15}$")


@dataclass(frozen=True)
class CustomCategory:
    """A category for zero-shot policies: a code the model answers with, a name, a description.

    >>> CustomCategory("C1", "Competitors", "Messages that name a competitor.").prompt_line()
    'C1: Competitors.\\nMessages that name a competitor.'
    """

    code: str
    name: str
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.code, str) or not _CODE_RE.match(self.code):
            raise CategoryError(
                f"custom category code {self.code!r} must start with a capital letter and hold "
                "at most 16 letters, digits or underscores (for example 'S15' or 'C1')"
            )
        name = self.name.strip() if isinstance(self.name, str) else ""
        if not name or "\n" in name:
            raise CategoryError(f"custom category {self.code}: name must be one non-empty line")
        if not isinstance(self.description, str):
            raise CategoryError(f"custom category {self.code}: description must be a string")
        object.__setattr__(self, "name", name.rstrip("."))
        object.__setattr__(self, "description", self.description.strip())

    def prompt_line(self) -> str:
        line = f"{self.code}: {self.name}."
        return f"{line}\n{self.description}" if self.description else line

    def __str__(self) -> str:
        return self.code


CategoryLike = Union[Category, CustomCategory]
DEFAULT_CATEGORIES: tuple[Category, ...] = tuple(Category)

CategorySpec = Union[
    str, Category, CustomCategory, Iterable[str | Category | CustomCategory], Mapping[str, str]
]


def _one(item: str | Category | CustomCategory) -> CategoryLike:
    if isinstance(item, (Category, CustomCategory)):
        return item
    if isinstance(item, str):
        code = item.strip().upper()
        try:
            return Category(code)
        except ValueError:
            raise CategoryError(
                f"unknown category code {item!r}; built-in codes are S1..S14 "
                "(define others with CustomCategory)"
            ) from None
    raise CategoryError(f"a category must be a code, Category or CustomCategory, not {item!r}")


def parse_category_codes(spec: str | Iterable[str] | None) -> tuple[str, ...]:
    """Parse ``"S1,S9"`` / ``["S1", "s9"]`` into normalised codes (upper-case, de-duplicated)."""
    if spec is None:
        return ()
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    codes: list[str] = []
    for item in items:
        if not isinstance(item, (str, Category)):
            raise CategoryError(f"category codes must be strings, got {item!r}")
        code = str(item).strip().upper()
        if code and code not in codes:
            codes.append(code)
    return tuple(codes)


def resolve_categories(
    categories: CategorySpec | None = None,
    exclude: str | Iterable[str] = (),
    *,
    has_image: bool = False,
) -> tuple[CategoryLike, ...]:
    """The ordered categories a prompt lists.

    `categories` is None (S1–S14), codes, `Category`/`CustomCategory` objects, or a mapping
    ``{code: name}``. `exclude` drops codes; an unknown excluded code is an error, not a no-op.
    S14 is dropped when the conversation holds an image, as the official template does.
    """
    if (categories is None or isinstance(categories, tuple)) and isinstance(exclude, tuple):
        try:
            return _resolve_cached(categories, exclude, has_image)
        except TypeError:  # unhashable items: resolve without the cache
            pass
    return _resolve(categories, exclude, has_image)


@functools.lru_cache(maxsize=256)
def _resolve_cached(
    categories: tuple[CategoryLike | str, ...] | None, exclude: tuple[str, ...], has_image: bool
) -> tuple[CategoryLike, ...]:
    return _resolve(categories, exclude, has_image)


def _resolve(
    categories: CategorySpec | None, exclude: str | Iterable[str], has_image: bool
) -> tuple[CategoryLike, ...]:
    if categories is None:
        chosen: list[CategoryLike] = list(DEFAULT_CATEGORIES)
    elif isinstance(categories, Mapping):
        chosen = [_from_mapping_item(code, value) for code, value in categories.items()]
    elif isinstance(categories, (str, Category, CustomCategory)):
        chosen = [
            _one(c)
            for c in (categories.split(",") if isinstance(categories, str) else [categories])
        ]
    else:
        chosen = [_one(c) for c in categories]
    seen: set[str] = set()
    for cat in chosen:
        if cat.code in seen:
            raise CategoryError(f"category {cat.code} is listed twice")
        seen.add(cat.code)
    excluded = parse_category_codes(exclude)
    unknown = [code for code in excluded if code not in seen]
    if unknown:
        raise CategoryError(
            f"cannot exclude {', '.join(unknown)}: not among the listed categories "
            f"({', '.join(c.code for c in chosen)})"
        )
    result = tuple(
        c for c in chosen if c.code not in excluded and not (has_image and c is Category.S14)
    )
    if not result:
        raise CategoryError("no categories left to assess after exclusions")
    return result


def _from_mapping_item(code: str, value: str) -> CategoryLike:
    if not isinstance(code, str):
        raise CategoryError(f"category code {code!r} must be a string")
    normalized = code.strip().upper()
    if normalized in Category.__members__ and value in (None, "", _SHORT_NAMES[normalized]):
        return Category(normalized)
    name, _, description = str(value).partition("\n")
    return CustomCategory(code.strip(), name, description)
