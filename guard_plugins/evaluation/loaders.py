"""Labelled data for the evaluation harness: `EvalExample`, `Dataset`, CSV / JSON-lines loaders.

Loaders take a path (data is never bundled) and return a `Dataset`: examples in file order plus the
number of rows skipped and why. Ids are prefixed with the dataset's name (``xstest:17``), so several
datasets can be evaluated together. The public datasets' loaders are in `formats`.

>>> ds = load_csv("labelled.csv", text_col="prompt", label_col="label")   # doctest: +SKIP
>>> len(ds), ds.positives                                                  # doctest: +SKIP
(120, 40)
"""

from __future__ import annotations

import csv
import gzip
import json
import random
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TextIO

from guard_plugins.errors import GuardError

__all__ = [
    "DEFAULT_POSITIVE_VALUES",
    "Dataset",
    "DatasetError",
    "EvalExample",
    "load_csv",
    "load_jsonl",
    "select",
]

DEFAULT_POSITIVE_VALUES = ("unsafe", "1", "true", "yes", "flagged", "harmful")


class DatasetError(GuardError, ValueError):
    """A dataset file is missing, malformed, or lacks a required column."""


@dataclass(frozen=True)
class EvalExample:
    """One labelled item: `text` is what the hook assesses; `unsafe` the gold label.

    `categories` are the expected S-codes of a positive (may be empty when the dataset has no
    mapping); `prompt` is an optional preceding user turn (for ``assistant_output``/``tool_call``).
    """

    id: str
    text: str
    unsafe: bool
    categories: tuple[str, ...] = ()
    source: str = ""
    prompt: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Dataset:
    """Examples in file order, the dataset's name and path, and skipped-row counts by reason."""

    name: str
    examples: tuple[EvalExample, ...]
    path: str = ""
    skipped: Mapping[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    def __iter__(self) -> Iterator[EvalExample]:
        return iter(self.examples)

    @property
    def positives(self) -> int:
        return sum(e.unsafe for e in self.examples)

    @property
    def negatives(self) -> int:
        return len(self.examples) - self.positives

    def category_counts(self) -> dict[str, int]:
        counts = Counter(code for e in self.examples if e.unsafe for code in e.categories)
        return dict(sorted(counts.items(), key=lambda kv: code_key(kv[0])))

    def merge(self, other: Dataset) -> Dataset:
        """Both datasets' examples (ids must stay unique) under the name ``a+b``."""
        skipped = Counter(self.skipped)
        skipped.update(other.skipped)
        return build_dataset(
            f"{self.name}+{other.name}",
            Path(f"{self.path};{other.path}"),
            [*self.examples, *other.examples],
            skipped,
        )


def code_key(code: str) -> tuple[int, str]:
    digits = code[1:]
    return (int(digits) if digits.isdigit() else 999, code)


def build_dataset(
    name: str, path: Path | str, examples: list[EvalExample], skipped: Counter[str]
) -> Dataset:
    seen: set[str] = set()
    for example in examples:
        if example.id in seen:
            raise DatasetError(f"{path}: duplicate id {example.id!r}; ids must be unique")
        seen.add(example.id)
    return Dataset(name, tuple(examples), str(path), {k: v for k, v in skipped.items() if v})


def open_text(path: Path) -> TextIO:
    if not path.is_file():
        raise DatasetError(f"dataset file not found: {path}")
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open_text(path) as handle:
        return list(csv.DictReader(handle))


def json_lines(path: Path, skipped: Counter[str]) -> Iterator[tuple[int, Any]]:
    with open_text(path) as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError:
                skipped["invalid_json"] += 1


def require_column(row: Mapping[str, Any], column: str, path: Path) -> None:
    if column not in row:
        raise DatasetError(f"{path}: no column {column!r}; columns: {', '.join(map(str, row))}")


# -- generic formats --------------------------------------------------------------------------


def _parse_label(value: Any, positive_values: Sequence[str]) -> bool:
    if isinstance(value, bool):
        return value
    return str(value).strip().lower() in {p.lower() for p in positive_values}


def _parse_codes(value: Any) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    items = value if isinstance(value, list) else str(value).replace(";", ",").split(",")
    return tuple(dict.fromkeys(str(i).strip().upper() for i in items if str(i).strip()))


def _generic(
    name: str,
    file: Path,
    rows: Iterable[tuple[int, Mapping[str, Any]]],
    skipped: Counter[str],
    text_col: str,
    label_col: str,
    category_col: str | None,
    id_col: str | None,
    prompt_col: str | None,
    positive_values: Sequence[str],
) -> Dataset:
    examples = []
    named = [c for c in (text_col, label_col, category_col, id_col, prompt_col) if c is not None]
    seen: set[str] = set()
    for number, row in rows:
        if not isinstance(row, Mapping):
            skipped["not_an_object"] += 1
            continue
        seen.update(row)
        text, label = row.get(text_col), row.get(label_col)
        if not isinstance(text, str) or not text.strip():
            skipped["empty_text"] += 1
            continue
        if label is None or label == "":
            skipped["missing_label"] += 1
            continue
        unsafe = _parse_label(label, positive_values)
        codes = _parse_codes(row.get(category_col)) if category_col and unsafe else ()
        prompt = row.get(prompt_col) if prompt_col else None
        ident = str(row.get(id_col, number)) if id_col else str(number)
        examples.append(
            EvalExample(
                f"{name}:{ident}", text, unsafe, codes, name, str(prompt) if prompt else None
            )
        )
    missing = [c for c in named if c not in seen]
    if missing and seen:
        raise DatasetError(
            f"{file}: no column {', '.join(map(repr, missing))}; columns: {', '.join(sorted(seen))}"
        )
    return build_dataset(name, file, examples, skipped)


def load_csv(
    path: str | Path,
    text_col: str = "text",
    label_col: str = "label",
    category_col: str | None = None,
    *,
    id_col: str | None = None,
    prompt_col: str | None = None,
    positive_values: Sequence[str] = DEFAULT_POSITIVE_VALUES,
) -> Dataset:
    """A CSV file with a text column and a label column (``positive_values`` mean unsafe).

    `category_col` holds expected S-codes (``"S1,S10"``); ids default to the row number.
    """
    file = Path(path)
    rows = enumerate(csv_rows(file), 1)
    return _generic(
        file.stem,
        file,
        rows,
        Counter(),
        text_col,
        label_col,
        category_col,
        id_col,
        prompt_col,
        positive_values,
    )


def load_jsonl(
    path: str | Path,
    text_col: str = "text",
    label_col: str = "label",
    category_col: str | None = None,
    *,
    id_col: str | None = None,
    prompt_col: str | None = None,
    positive_values: Sequence[str] = DEFAULT_POSITIVE_VALUES,
) -> Dataset:
    """JSON lines (optionally gzip) with the same options as `load_csv`; labels may be bools."""
    file = Path(path)
    skipped: Counter[str] = Counter()
    name = file.name.split(".")[0]
    return _generic(
        name,
        file,
        json_lines(file, skipped),
        skipped,
        text_col,
        label_col,
        category_col,
        id_col,
        prompt_col,
        positive_values,
    )


def select(
    dataset: Dataset, *, limit: int | None = None, sample: int | None = None, seed: int = 0
) -> Dataset:
    """A random `sample` (reproducible with `seed`, file order kept), then the first `limit`."""
    examples = list(dataset.examples)
    if sample is not None and sample < len(examples):
        chosen = sorted(random.Random(seed).sample(range(len(examples)), sample))
        examples = [examples[i] for i in chosen]
    if limit is not None:
        examples = examples[: max(limit, 0)]
    return replace(dataset, examples=tuple(examples))
