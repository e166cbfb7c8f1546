"""Which Python statements the scanner must analyse: a cheap text test before the AST work.

Every rule needs a name from the rule tables (``os``, ``system``, ``environ``, ``open``, …), a
name already bound to something interesting (a constant, tainted data, an open file, an alias of a
dangerous module), or a literal that could spell a path, a size or an escape (``/``, ``~``, ``\\``,
``%``, ``*``, long numbers, metadata hosts). `Gate` reads the source lines of a statement's own
expressions and classifies it:

* `FULL`: it mentions such a thing, so every check runs;
* `BIND`: it only binds names, so the bindings are recorded (constants may matter later) but no
  call is checked;
* `SKIP`: nothing to check and nothing to bind.

The vocabulary is collected from the rule tables themselves (`trigger_words`) plus `INLINE_WORDS`,
the names the checks compare inline; tests keep both complete and compare gated scans with
exhaustive ones. Non-ASCII source is never gated: identifiers are NFKC-normalised by the parser, so
the text may not show the name the AST holds.
"""

from __future__ import annotations

import ast
import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from itertools import accumulate
from types import ModuleType
from typing import Final

from guard_plugins.codescreen.paths import METADATA_ANCHORS, METADATA_HOSTS

__all__ = ["INLINE_WORDS", "SECONDARY_TABLES", "Gate", "trigger_words"]

# Names the checks compare inline (not in a module-level table).
INLINE_WORDS: Final = frozenset({
    "__dict__", "argv", "connect_ex", "create_connection", "create_server", "environ",
    "globals", "hardlink_to", "iter", "killpg", "libc", "locals", "modules", "read_bytes",
    "read_text", "repeat", "symlink_to", "syscall", "touch", "urlretrieve", "vars", "while",
    "write_bytes", "write_text",
})
# Tables consulted only once another trigger is present (a dynamic lookup, an env taint, an
# endless loop, a call already checked), or holding no names at all.
SECONDARY_TABLES: Final = frozenset({
    "DANGEROUS_MODULES", "_BLOCKING", "_BODY_FIELDS", "_CHILD_ENV", "_CONSTANT_FACTORIES",
    "_ENV_PROPAGATORS", "_ENV_SAFE_ATTRS", "_GROWTH", "_PUBLIC_DIRS", "_SHELL_NAMES",
    "_SCALAR_FIELDS", "_CHILD_FIELDS", "_STR_METHODS",
})
_WORD: Final = re.compile(r"[A-Za-z_]\w*")
_HOT_CHARS: Final = "/~\\%*"
# Every character but [A-Za-z0-9_] and newlines becomes a space: `str.split` then yields the
# words of each line much faster than `_WORD.findall` (the same words once leading digits go).
_SEPARATORS: Final = {c: " " for c in range(128) if not (chr(c).isalnum() or chr(c) in "_\n")}
_DIGITS: Final = "0123456789"
_OPERATORS: Final = re.compile(r"<<|:=")
_CONCATENATION: Final = re.compile(r"""['"]\s*\+|['"]\s+[rRbBuUfF]*['"]""")  # "169." + "254…"
_LONG_NUMBER: Final = re.compile(r"[0-9][0-9_]{5}")
_RADIX_NUMBER: Final = re.compile(r"0[xXoObB][0-9a-fA-F_]{5}")
# On lowered text: much faster than IGNORECASE.
_METADATA: Final = re.compile(METADATA_HOSTS.lower())
_COMPOUND: Final = frozenset({ast.For, ast.AsyncFor, ast.While, ast.If, ast.With, ast.AsyncWith,
                              ast.Try, ast.TryStar, ast.FunctionDef, ast.AsyncFunctionDef,
                              ast.ClassDef, ast.Match})
_DECORATED: Final = frozenset({ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef})


def trigger_words(namespaces: Iterable[ModuleType | Mapping[str, object]]) -> frozenset[str]:
    """The names a call or statement must mention before the rule tables of `namespaces` match.

    Exact-match tables (sets, dict keys) need the last part of each dotted name (``system`` of
    ``os.system``: an alias or import spelling the module differently still ends in it); prefix
    tables (tuples) need the first part of a module prefix (``requests.``, ``http.client.``) and
    the last part of the others. Dict values, `SECONDARY_TABLES` and dunders are not names.
    """
    words: set[str] = set()
    for namespace in namespaces:
        tables = vars(namespace) if isinstance(namespace, ModuleType) else namespace
        for name, table in tables.items():
            if name.startswith("__") or name in SECONDARY_TABLES:
                continue
            if isinstance(table, (frozenset, set, dict)):
                entries, prefixes = list(table), False
            elif isinstance(table, tuple):
                entries, prefixes = list(table), True
            else:
                continue
            for entry in entries:
                if not isinstance(entry, str):
                    continue
                parts = _WORD.findall(entry)
                if prefixes and entry.endswith("."):
                    words.add(parts[0])  # an import or alias always spells the first part
                elif parts:
                    words.add(parts[-1])
    return frozenset(words)


def _identifiers(words: list[str]) -> list[str]:
    """`words` as `_WORD` finds them: leading digits dropped, all-digit words gone."""
    out: list[str] = []
    for word in words:
        if word[0] in _DIGITS:
            word = word.lstrip(_DIGITS)
            if not word:
                continue
        out.append(word)
    return out


class Gate:
    """The words of each source line, or None for a line that mentions something a rule uses."""

    def __init__(self, text: str, triggers: frozenset[str]) -> None:
        # Lines as the parser counts them: a lone CR ends a line too.
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        self._text_lines = text.split("\n")
        self._word_lines = text.translate(_SEPARATORS).split("\n")
        self._triggers = triggers
        self._lines: dict[int, tuple[list[str], bool]] = {}  # index: words, hot (on demand)
        # Patterns that may span lines are found in the whole text, the rest line by line.
        lowered = text.lower()
        found = [(lowered, _CONCATENATION)]
        if "<<" in text or ":=" in text:
            found.append((text, _OPERATORS))
        if "0x" in lowered or "0o" in lowered or "0b" in lowered:
            found.append((lowered, _RADIX_NUMBER))
        if any(anchor in lowered for anchor in METADATA_ANCHORS):
            found.append((lowered, _METADATA))
        self._hot_lines: set[int] = set()
        ends: list[int] | None = None
        for haystack, pattern in found:
            for match in pattern.finditer(haystack):
                if ends is None:
                    ends = list(accumulate(len(line) + 1 for line in self._text_lines))
                first = bisect_right(ends, match.start())
                self._hot_lines.update(range(first, bisect_right(ends, match.end() - 1) + 1))

    def _line(self, index: int) -> tuple[list[str], bool]:
        line = self._lines.get(index)
        if line is None:
            text = self._text_lines[index]
            words = self._word_lines[index].split()
            for word in words:
                if word[0] in _DIGITS:  # `1e5`, `0x1f`: _WORD reads `e5`, `x1f`, nothing of `10`
                    words = _identifiers(words)
                    break
            triggers = self._triggers
            hot = index in self._hot_lines or any(word in triggers for word in words) or any(
                char in text for char in _HOT_CHARS) or _LONG_NUMBER.search(text) is not None
            line = self._lines[index] = (words, hot)
        return line

    def words(self, first: int, last: int) -> tuple[list[str], bool]:
        """Words on lines `first`..`last` (1-based) and whether one of those lines is hot."""
        first, last = max(first, 1), min(last, len(self._text_lines))
        if first == last:
            return self._line(first - 1)
        found: list[str] = []
        hot = False
        for index in range(first - 1, last):
            words, line_hot = self._line(index)
            found += words
            hot = hot or line_hot
        return found, hot

    def header(self, node: ast.stmt) -> tuple[list[str], bool]:
        """Words of the statement's own expressions (a compound statement's header), and hot."""
        if type(node) not in _COMPOUND:
            first = node.lineno
            if node.end_lineno == first and 0 < first <= len(self._text_lines):
                # most statements: one line, memoised
                return self._lines.get(first - 1) or self._line(first - 1)
            return self.words(first, node.end_lineno or first)
        first = node.lineno
        decorators = getattr(node, "decorator_list", None) if type(node) in _DECORATED else None
        if decorators:
            first = min(first, *(d.lineno for d in decorators))
        body = getattr(node, "body", None)
        last = max(node.lineno, body[0].lineno - 1) if body else node.end_lineno or first
        return self.words(first, last)

    def whole(self, node: ast.stmt) -> list[str]:
        """All words of the statement, body included."""
        first = node.lineno
        decorators = getattr(node, "decorator_list", None) if type(node) in _DECORATED else None
        if decorators:
            first = min(first, *(d.lineno for d in decorators))
        return self.words(first, node.end_lineno or first)[0]
