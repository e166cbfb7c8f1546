"""A static pre-screen for code-interpreter abuse (Llama Guard S14), with no model involved.

`scan(code, language)` parses Python with `ast` and shell with a POSIX lexer, and reports
`Finding`s: fork bombs, sandbox escapes, credential access, reverse shells, download-and-execute,
host destruction, persistence, disabled security controls and obfuscated execution. Strings
that reach ``exec``, ``os.system``, ``bash -c`` or ``python -c`` are decoded statically (never
run) and scanned again. `scan_tool_call` picks the language and code from an agent tool call.

>>> from guard_plugins.codescreen import scan
>>> [(f.rule_id, f.confidence) for f in scan(":(){ :|:& };:", "bash")]
[('SH-FORKBOMB', 'high')]
>>> any(f.blocking for f in scan("import os\\nos.makedirs('out', exist_ok=True)"))
False

Limits (see `Limits`): inputs over 1 MB are cut and reported (``SCREEN-OVERSIZE``); nested code
is followed 4 levels deep and up to 2 MB in total (``SCREEN-NESTING`` beyond that).

Wheels ship these modules compiled with mypyc as well (`COMPILED` says which ones run); the
pure-Python sources behave the same and are used by editable installs.
"""

from __future__ import annotations

from importlib.machinery import EXTENSION_SUFFIXES

from guard_plugins.codescreen import python as _python_scanner
from guard_plugins.codescreen.context import Limits
from guard_plugins.codescreen.findings import Confidence, Finding, Severity, Threat
from guard_plugins.codescreen.rules import RULES, Rule, get_rule
from guard_plugins.codescreen.scanner import LANGUAGES, normalize_language, scan, scan_tool_call

__all__ = [
    "COMPILED",
    "LANGUAGES",
    "RULES",
    "Confidence",
    "Finding",
    "Limits",
    "Rule",
    "Severity",
    "Threat",
    "get_rule",
    "normalize_language",
    "scan",
    "scan_tool_call",
]

# True when the scanners run as mypyc-compiled extension modules (a wheel install).
COMPILED: bool = (_python_scanner.__file__ or "").endswith(tuple(EXTENSION_SUFFIXES))
