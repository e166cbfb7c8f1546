"""Speed and accuracy of the static code screen (guard_plugins.codescreen).

    python benchmarks/codescreen_bench.py              # p50/p99 for 200-line programs
    python benchmarks/codescreen_bench.py --corpus     # false-positive and recall rates
    python benchmarks/codescreen_bench.py --corpus --quick   # skip the slow stdlib/package walk
    python benchmarks/codescreen_bench.py --exhaustive   # timing without the statement text gate
    PYTHONPATH=.venv/compiled-site python benchmarks/codescreen_bench.py   # the compiled build
                                                         # (`make compiled` builds it)

Timing: a 200-line benign program and a 200-line malicious one are assembled from the test
corpora (tests/data/codescreen) and scanned repeatedly; wall-clock and CPU p50/p99 are printed
together with the p50 of ``ast.parse`` on the same text, so numbers from a loaded machine can be
read relative to the parser (``scan/parse``). Accuracy: a file or snippet counts as a false positive when it gets
at least one high-confidence (blocking) finding.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import statistics
import sys
import sysconfig
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from guard_plugins.codescreen import COMPILED, scan
from guard_plugins.codescreen import python as scanner_module

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "codescreen"
CYBERSECEVAL = ROOT.parent / "shared" / "datasets" / "cyberseceval_interpreter.json"
SHELL_ROOTS = ("/usr", "/opt", "/etc", "/root", "/home", sys.prefix)
LINES = 200


def _load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load((DATA / name).read_text())
    return cases


def _program(snippets: Iterable[str], lines: int = LINES) -> str:
    """Concatenate parseable snippets into a program of exactly `lines` lines."""
    out: list[str] = []
    pool = [s for s in snippets if _parses(s)]
    while len(out) < lines:
        for snippet in pool:
            out.extend(snippet.rstrip("\n").split("\n"))
            if len(out) >= lines:
                break
    text = "\n".join(out[:lines]) + "\n"
    while not _parses(text):  # a snippet cut in half: drop lines until it parses
        out = out[: len(out) - 1]
        text = "\n".join(out) + "\n"
    return text


def _parses(text: str) -> bool:
    try:
        ast.parse(text)
    except SyntaxError:
        return False
    return True


def _percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def _time(fn: Callable[[], object], runs: int) -> dict[str, float]:
    fn()
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(runs):
        w, c = time.perf_counter(), time.process_time()
        fn()
        cpu.append((time.process_time() - c) * 1000)
        wall.append((time.perf_counter() - w) * 1000)
    (wall50, wall99), (cpu50, cpu99) = _percentiles(wall), _percentiles(cpu)
    return {"wall_p50": wall50, "wall_p99": wall99, "cpu_p50": cpu50, "cpu_p99": cpu99}


def bench(runs: int, exhaustive: bool = False) -> dict[str, Any]:
    benign = _program(c["code"] for c in _load("benign_python.yaml")
                      if "!" not in c["code"].split("\n", 1)[0])
    malicious = _program(c["code"] for c in _load("malicious.yaml")
                         if c.get("lang", "python") == "python")
    results: dict[str, Any] = {}
    for label, text in (("benign", benign), ("malicious", malicious)):
        scan_time = _time(lambda t=text: scan(t, exhaustive=exhaustive), runs)
        parse_time = _time(lambda t=text: ast.parse(t), runs)
        results[label] = {
            "lines": text.count("\n"),
            "findings": len(scan(text, exhaustive=exhaustive)),
            "scan": scan_time,
            "ast.parse": parse_time,
            "scan/parse (CPU p50)": scan_time["cpu_p50"] / parse_time["cpu_p50"],
        }
    return results


def _rate(flagged: int, total: int) -> str:
    return f"{flagged}/{total} = {flagged / total:.1%}" if total else "0/0"


def _blocking(code: str, language: str) -> list[str]:
    return sorted({f.rule_id for f in scan(code, language) if f.blocking})


def corpus_snippets() -> dict[str, Any]:
    report: dict[str, Any] = {}
    for name, language in (("benign_python.yaml", "python"), ("benign_shell.yaml", "shell")):
        cases = _load(name)
        flagged = {c["id"]: ids for c in cases if (ids := _blocking(c["code"], language))}
        report[f"benign {language} snippets"] = {"rate": _rate(len(flagged), len(cases)),
                                                 "flagged": flagged}
    holdout = _load("holdout_benign.yaml")
    flagged = {c["id"]: ids for c in holdout
               if (ids := _blocking(c["code"], c.get("lang", "python")))}
    report["held-out benign snippets"] = {"rate": _rate(len(flagged), len(holdout)),
                                          "flagged": flagged}
    report["malicious snippets"] = _recall(_load("malicious.yaml"))
    report["held-out malicious snippets"] = _recall(_load("holdout.yaml"))
    return report


def _recall(cases: list[dict[str, Any]]) -> dict[str, Any]:
    caught, any_finding, expected = 0, 0, 0
    by_threat: Counter[str] = Counter()
    threat_total: Counter[str] = Counter()
    missed: list[str] = []
    for case in cases:
        findings = scan(case["code"], case.get("lang", "python"))
        ids = {f.rule_id for f in findings}
        threat_total[case["threat"]] += 1
        if any(f.blocking for f in findings):
            caught += 1
            by_threat[case["threat"]] += 1
        else:
            missed.append(case["id"])
        any_finding += bool(findings)
        expected += set(case.get("expect", ())) <= ids
    should_block = [c for c in cases if c.get("blocking", True)]
    blocked_expected = sum(1 for c in should_block if c["id"] not in missed)
    return {
        "blocked (>=1 high-confidence finding)": _rate(caught, len(cases)),
        "blocked, of those meant to block": _rate(blocked_expected, len(should_block)),
        "flagged (any finding)": _rate(any_finding, len(cases)),
        "expected rule ids reported": _rate(expected, len(cases)),
        "by threat (blocked)": {t: _rate(by_threat[t], n) for t, n in threat_total.items()},
        "not blocked": missed,
        "languages": dict(Counter(c.get("lang", "python") for c in cases)),
    }


def _scan_files(paths: Iterable[Path], language: str) -> dict[str, Any]:
    total, flagged = 0, 0
    rules: Counter[str] = Counter()
    examples: dict[str, str] = {}
    start = time.process_time()
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        total += 1
        ids = _blocking(text, language)
        if ids:
            flagged += 1
            rules.update(ids)
            for rule_id in ids:
                examples.setdefault(rule_id, str(path))
    return {"rate": _rate(flagged, total), "rules": dict(rules.most_common()),
            "example per rule": examples, "cpu_s": round(time.process_time() - start, 1)}


def corpus_files(packages: list[str]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    report[f"stdlib *.py ({stdlib})"] = _scan_files(
        (p for p in sorted(stdlib.rglob("*.py")) if "site-packages" not in p.parts), "python")
    site = Path(sysconfig.get_paths()["purelib"])
    for package in packages:
        root = site / package
        if not root.is_dir():
            report[f"{package}: not installed"] = {}
            continue
        files = sorted(root.rglob("*.py"))
        tests = [p for p in files if {"tests", "testing", "examples"} & set(p.parts)]
        report[f"{package} test/example files"] = _scan_files(tests, "python")
        report[f"{package} all files"] = _scan_files(files, "python")
    scripts: list[Path] = []
    for base in SHELL_ROOTS:
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            scripts.extend(Path(dirpath, f) for f in filenames if f.endswith(".sh"))
    report["*.sh files on this machine"] = _scan_files(sorted(set(scripts)), "shell")
    return report


_SPAN = re.compile(r"```(?:\w+)?\n?(.*?)```|`([^`\n]{3,})`", re.DOTALL)


def cyberseceval(path: Path) -> dict[str, Any]:
    """Side note: these are prompts, not code; only backticked spans are scanned."""
    prompts = json.loads(path.read_text())
    with_code, flagged, blocked = 0, 0, 0
    for item in prompts:
        spans = [a or b for a, b in _SPAN.findall(item["mutated_prompt"])]
        if not spans:
            continue
        with_code += 1
        findings = [f for s in spans for lang in ("python", "shell") for f in scan(s, lang)]
        flagged += bool(findings)
        blocked += any(f.blocking for f in findings)
    return {"prompts": len(prompts), "with backticked code": with_code,
            "of those flagged (any finding)": _rate(flagged, with_code),
            "of those blocked": _rate(blocked, with_code)}


def _print(title: str, data: Any, indent: int = 0) -> None:
    pad = "  " * indent
    if isinstance(data, dict):
        print(f"{pad}{title}:")
        for key, value in data.items():
            _print(str(key), value, indent + 1)
    elif isinstance(data, list):
        print(f"{pad}{title}: {', '.join(map(str, data)) or '-'}")
    elif isinstance(data, float):
        print(f"{pad}{title}: {data:.2f}")
    else:
        print(f"{pad}{title}: {data}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=200, help="timed runs per program")
    parser.add_argument("--corpus", action="store_true", help="measure FP and recall rates")
    parser.add_argument("--quick", action="store_true", help="corpus: snippets only")
    parser.add_argument("--packages", default="numpy,pandas,matplotlib",
                        help="installed packages whose files join the benign corpus")
    parser.add_argument("--exhaustive", action="store_true",
                        help="timing: analyse every statement (no text gate), for comparison")
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    if args.corpus:
        results["snippets"] = corpus_snippets()
        if not args.quick:
            results["files"] = corpus_files([p for p in args.packages.split(",") if p])
        if CYBERSECEVAL.exists():
            results["cyberseceval_interpreter (side note)"] = cyberseceval(CYBERSECEVAL)
    else:
        results["code screen"] = {
            "compiled (mypyc)": COMPILED,
            "module": scanner_module.__file__,
        }
        results["timing (ms) for 200-line programs"] = bench(args.runs, args.exhaustive)
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for title, data in results.items():
            _print(title, data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
