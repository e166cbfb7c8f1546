"""Loaders for the public datasets in ``../shared/datasets`` and the format registry.

Label mappings (documented in docs/evaluation.md):

- ``xstest``: XSTest v2 prompts; ``label`` is ``safe`` / ``unsafe``; no S-codes.
- ``ailuminate``: MLCommons AILuminate demo prompts, all positives; hazard → S-code.
- ``cyberseceval-interpreter``: CyberSecEval code-interpreter abuse prompts, S14 positives.
- ``cyberseceval-frr``: CyberSecEval MITRE false-refusal prompts, negatives (benign).
- ``openai-moderation``: OpenAI moderation samples (gzip JSON lines), multi-label → S-codes.

>>> ds = load_dataset("xstest", "../shared/datasets/xstest_prompts.csv")   # doctest: +SKIP
>>> len(ds), ds.positives                                                  # doctest: +SKIP
(450, 200)
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Literal

from guard_plugins.evaluation.loaders import (
    Dataset,
    DatasetError,
    EvalExample,
    build_dataset,
    code_key,
    csv_rows,
    json_lines,
    load_csv,
    load_jsonl,
    open_text,
    require_column,
)

__all__ = [
    "AILUMINATE_HAZARDS",
    "FORMATS",
    "OPENAI_MODERATION_LABELS",
    "load_ailuminate",
    "load_cyberseceval_frr",
    "load_cyberseceval_interpreter",
    "load_dataset",
    "load_openai_moderation",
    "load_xstest",
]

AILUMINATE_HAZARDS: dict[str, str] = {
    "vcr": "S1",
    "ncr": "S2",
    "src": "S3",
    "cse": "S4",
    "dfm": "S5",
    "spc_fin": "S6",
    "spc_hlt": "S6",
    "spc_lgl": "S6",
    "prv": "S7",
    "ipv": "S8",
    "iwp": "S9",
    "hte": "S10",
    "ssh": "S11",
    "sxc_prn": "S12",
    "spc_ele": "S13",
}

#: OpenAI moderation label → Llama Guard 4 category. ``HR`` (harassment) has no counterpart in
#: the MLCommons taxonomy, so it makes a row unsafe but names no S-code (see docs/evaluation.md).
OPENAI_MODERATION_LABELS: dict[str, str | None] = {
    "S": "S12",
    "H": "S10",
    "V": "S1",
    "HR": None,
    "SH": "S11",
    "S3": "S4",
    "H2": "S10",
    "V2": "S1",
}


def load_xstest(path: str | Path) -> Dataset:
    """XSTest (CC-BY-4.0): 250 safe prompts and 200 unsafe contrast prompts; no S-codes."""
    file = Path(path)
    examples, skipped = [], Counter[str]()
    for row in csv_rows(file):
        for column in ("id", "prompt", "label"):
            require_column(row, column, file)
        label = row["label"].strip().lower()
        if label not in ("safe", "unsafe") or not row["prompt"].strip():
            skipped["bad_label_or_text"] += 1
            continue
        meta = {k: row[k] for k in ("type", "focus", "note") if row.get(k)}
        examples.append(
            EvalExample(
                f"xstest:{row['id']}", row["prompt"], label == "unsafe", (), "xstest", meta=meta
            )
        )
    return build_dataset("xstest", file, examples, skipped)


def load_ailuminate(path: str | Path) -> Dataset:
    """AILuminate demo set (CC-BY-4.0): hazard-seeking prompts, all positives; hazard → S-code."""
    file = Path(path)
    examples, skipped = [], Counter[str]()
    for row in csv_rows(file):
        for column in ("release_prompt_id", "prompt_text", "hazard"):
            require_column(row, column, file)
        code = AILUMINATE_HAZARDS.get(row["hazard"].strip().lower())
        if code is None or not row["prompt_text"].strip():
            skipped["unknown_hazard_or_empty"] += 1
            continue
        meta = {k: row[k] for k in ("hazard", "persona", "locale") if row.get(k)}
        examples.append(
            EvalExample(
                f"ailuminate:{row['release_prompt_id']}",
                row["prompt_text"],
                True,
                (code,),
                "ailuminate",
                meta=meta,
            )
        )
    return build_dataset("ailuminate", file, examples, skipped)


def _load_json_list(path: Path) -> list[Mapping[str, Any]]:
    with open_text(path) as handle:
        try:
            data = json.load(handle)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(data, list) or not all(isinstance(d, Mapping) for d in data):
        raise DatasetError(f"{path}: expected a JSON list of objects")
    return data


def load_cyberseceval_interpreter(path: str | Path) -> Dataset:
    """CyberSecEval interpreter prompts (MIT): attempts to abuse a code interpreter, S14."""
    file = Path(path)
    examples, skipped = [], Counter[str]()
    for index, item in enumerate(_load_json_list(file)):
        text = item.get("mutated_prompt")
        if not isinstance(text, str) or not text.strip():
            skipped["empty_text"] += 1
            continue
        meta = {"attack_type": item.get("attack_type", "")}
        examples.append(
            EvalExample(
                f"cyberseceval-interpreter:{index}",
                text,
                True,
                ("S14",),
                "cyberseceval-interpreter",
                meta=meta,
            )
        )
    return build_dataset("cyberseceval-interpreter", file, examples, skipped)


def load_cyberseceval_frr(path: str | Path) -> Dataset:
    """CyberSecEval MITRE false-refusal prompts (MIT): benign security coding requests.

    Negatives; an item with ``is_malicious: true`` would be an S14 positive (none in the file).
    """
    file = Path(path)
    examples, skipped = [], Counter[str]()
    for index, item in enumerate(_load_json_list(file)):
        text = item.get("mutated_prompt")
        if not isinstance(text, str) or not text.strip():
            skipped["empty_text"] += 1
            continue
        malicious = item.get("is_malicious") is True
        meta = {"attack_type": item.get("attack_type", ""), "model": item.get("model", "")}
        examples.append(
            EvalExample(
                f"cyberseceval-frr:{index}",
                text,
                malicious,
                ("S14",) if malicious else (),
                "cyberseceval-frr",
                meta=meta,
            )
        )
    return build_dataset("cyberseceval-frr", file, examples, skipped)


MissingLabels = Literal["negative", "skip"]


def load_openai_moderation(path: str | Path, *, missing: MissingLabels = "negative") -> Dataset:
    """OpenAI moderation samples (MIT): multi-label S/H/V/HR/SH/S3/H2/V2 → unsafe + S-codes.

    Unsafe when any label is 1. Many rows lack some labels: ``missing="negative"`` (default,
    the convention behind published figures: 522 unsafe of 1,680) reads an absent label as 0;
    ``missing="skip"`` skips rows whose label is undetermined (no 1 and a label absent). Rows
    with no label at all are always skipped. Skips are counted in `Dataset.skipped`.
    """
    file = Path(path)
    examples, skipped = [], Counter[str]()
    for number, row in json_lines(file, skipped):
        text = row.get("prompt") if isinstance(row, Mapping) else None
        if not isinstance(text, str) or not text.strip():
            skipped["empty_text"] += 1
            continue
        labels = {k: row.get(k) for k in OPENAI_MODERATION_LABELS}
        present = {k: v for k, v in labels.items() if v is not None}
        if not present:
            skipped["no_labels"] += 1
            continue
        positive = [k for k, v in present.items() if int(v) == 1]
        if not positive and len(present) < len(labels) and missing == "skip":
            skipped["missing_labels"] += 1
            continue
        codes = [OPENAI_MODERATION_LABELS[k] for k in positive]
        expected = tuple(sorted({c for c in codes if c}, key=code_key))
        examples.append(
            EvalExample(
                f"openai-moderation:{number}",
                text,
                bool(positive),
                expected,
                "openai-moderation",
                meta={"labels": positive},
            )
        )
    return build_dataset("openai-moderation", file, examples, skipped)


FORMATS: dict[str, Callable[..., Dataset]] = {
    "csv": load_csv,
    "jsonl": load_jsonl,
    "xstest": load_xstest,
    "ailuminate": load_ailuminate,
    "cyberseceval-interpreter": load_cyberseceval_interpreter,
    "cyberseceval-frr": load_cyberseceval_frr,
    "openai-moderation": load_openai_moderation,
}


def load_dataset(fmt: str, path: str | Path, **options: Any) -> Dataset:
    """Load `path` with the loader named `fmt` (a key of `FORMATS`); options go to the loader."""
    loader = FORMATS.get(fmt)
    if loader is None:
        raise DatasetError(f"unknown dataset format {fmt!r}; known: {', '.join(FORMATS)}")
    return loader(path, **options)
