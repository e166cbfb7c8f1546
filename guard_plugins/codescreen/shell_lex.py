"""A quote-aware POSIX shell lexer: words, operators, substitutions, here-documents.

Word splitting and quote removal follow POSIX (``shlex.split`` gives the same words on text with
no operators; the test suite checks that property). On top of what `shlex` does, the lexer knows
control operators and redirections (``;``, ``&&``, ``|``, ``2>&1``, ``>&``), newlines as command
separators, ``$(…)``, backticks, ``<(…)``, ``$'…'`` and here-documents. A substitution becomes an
`UNKNOWN` character in the word's text and its body is kept in `Token.substs` for a nested scan.

The lexer never raises: unterminated quotes and substitutions run to the end of the input.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from guard_plugins.codescreen.paths import UNKNOWN

__all__ = ["Subst", "Token", "tokenize"]

_OPERATORS: Final = (
    "&>>", "<<<", "<<-", "&&", "||", ";;", "|&", ">>", ">|", ">&", "&>", "<&", "<>", "<<",
    ";", "&", "|", "(", ")", "<", ">",
)
# A run of characters the lexer copies one by one into the current word (no quote, escape,
# substitution, operator, blank or comment start): copied in one step instead.
_PLAIN: Final = re.compile(r"[^\\ \t\r\n#'\"$`;&|()<>]+")
_ANSI_ESCAPES: Final = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "e": "\x1b",
                        "f": "\f", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?"}


@dataclass(frozen=True)
class Subst:
    """A command or process substitution inside a word (``$(…)``, backticks, ``<(…)``)."""

    kind: str
    body: str
    line: int


@dataclass
class Token:
    """A word (``op`` False) or an operator. `quoted` is True if any part of a word was quoted."""

    text: str
    line: int
    op: bool = False
    quoted: bool = False
    substs: list[Subst] = field(default_factory=list)
    heredoc: str | None = None

    def is_op(self, *texts: str) -> bool:
        return self.op and (not texts or self.text in texts)


class _Lexer:
    def __init__(self, text: str) -> None:
        self.s = text
        self.n = len(text)
        self.i = 0
        self.line = 1
        self.tokens: list[Token] = []
        self.pending_heredocs: list[tuple[Token, str, bool]] = []
        self._reset_word()

    def _reset_word(self) -> None:
        self.buf: list[str] = []
        self.in_word = False
        self.quoted = False
        self.substs: list[Subst] = []
        self.word_line = self.line

    def _start_word(self) -> None:
        if not self.in_word:
            self.in_word = True
            self.word_line = self.line

    def _end_word(self) -> None:
        if self.in_word:
            self.tokens.append(Token("".join(self.buf), self.word_line, False, self.quoted,
                                     self.substs))
            if len(self.tokens) >= 2 and self.tokens[-2].is_op("<<", "<<-"):
                delim = self.tokens[-1]
                self.pending_heredocs.append((delim, delim.text, self.tokens[-2].text == "<<-"))
        self._reset_word()

    def run(self) -> list[Token]:
        s = self.s
        plain = _PLAIN.match
        while self.i < self.n:
            c = s[self.i]
            if c == "\\" and self.i + 1 < self.n:
                nxt = s[self.i + 1]
                self.i += 2
                if nxt == "\n":
                    self.line += 1
                    continue
                self._start_word()
                self.quoted = True
                self.buf.append(nxt)
            elif c in " \t\r":
                self._end_word()
                self.i += 1
            elif c == "\n":
                self._end_word()
                self.tokens.append(Token("\n", self.line, op=True))
                self.i += 1
                self.line += 1
                self._read_heredocs()
            elif c == "#" and not self.in_word:
                end = s.find("\n", self.i)
                self.i = self.n if end < 0 else end
            elif c == "'":
                self._start_word()
                self.quoted = True
                end = s.find("'", self.i + 1)
                end = self.n if end < 0 else end
                self._append_raw(s[self.i + 1:end])
                self.i = end + 1
            elif c == "$" and s.startswith("$'", self.i):
                self._start_word()
                self.quoted = True
                self._ansi_c()
            elif c == '"':
                self._start_word()
                self.quoted = True
                self._double_quoted()
            elif c == "$" or c == "`":
                self._start_word()
                self._dollar_or_backtick()
            elif c in "<>" and s.startswith("(", self.i + 1) and not self.in_word:
                self._start_word()
                kind = "process_in" if c == "<" else "process_out"
                self._substitution(self.i + 2, kind)
            elif c in ";&|()<>":
                self._operator()
            else:
                self._start_word()
                run = plain(s, self.i)
                if run is None:  # `#` inside a word
                    self.buf.append(c)
                    self.i += 1
                else:
                    self.buf.append(run.group())
                    self.i = run.end()
        self._end_word()
        return self.tokens

    def _append_raw(self, text: str) -> None:
        self.buf.append(text)
        self.line += text.count("\n")

    def _operator(self) -> None:
        s = self.s
        op = next(o for o in _OPERATORS if s.startswith(o, self.i))
        if op[0] in "<>" and self.in_word and not self.quoted and "".join(self.buf).isdigit():
            op = "".join(self.buf) + op
            self._reset_word()
        else:
            self._end_word()
        self.tokens.append(Token(op, self.line, op=True))
        self.i += len(op) - (len(op) - len(op.lstrip("0123456789")))

    def _ansi_c(self) -> None:
        s, i = self.s, self.i + 2
        out: list[str] = []
        while i < self.n and s[i] != "'":
            if s[i] == "\\" and i + 1 < self.n:
                i, ch = _ansi_escape(s, i + 1)
                out.append(ch)
                continue
            out.append(s[i])
            i += 1
        self._append_raw("".join(out))
        self.i = i + 1

    def _double_quoted(self) -> None:
        s = self.s
        self.i += 1
        while self.i < self.n and s[self.i] != '"':
            c = s[self.i]
            if c == "\\" and self.i + 1 < self.n and s[self.i + 1] in '$`"\\\n':
                if s[self.i + 1] != "\n":
                    self.buf.append(s[self.i + 1])
                else:
                    self.line += 1
                self.i += 2
            elif c in "$`":
                self._dollar_or_backtick()
            else:
                self._append_raw(c)
                self.i += 1
        self.i += 1

    def _dollar_or_backtick(self) -> None:
        s = self.s
        if s[self.i] == "`":
            end = self.i + 1
            while end < self.n and s[end] != "`":
                end += 2 if s[end] == "\\" else 1
            body = s[self.i + 1:end].replace("\\`", "`")
            self._add_subst("backtick", body)
            self.i = end + 1
        elif s.startswith("$((", self.i):
            self._substitution(self.i + 3, "arith", depth=2)
        elif s.startswith("$(", self.i):
            self._substitution(self.i + 2, "command")
        elif s.startswith("${", self.i):
            end = s.find("}", self.i)
            end = self.n - 1 if end < 0 else end
            self._append_raw(s[self.i:end + 1])
            self.i = end + 1
        else:
            self.buf.append("$")
            self.i += 1

    def _substitution(self, start: int, kind: str, depth: int = 1) -> None:
        end = _matching_paren(self.s, start, depth)
        self._add_subst(kind, self.s[start:end])
        self.i = end + depth

    def _add_subst(self, kind: str, body: str) -> None:
        self.substs.append(Subst(kind, body, self.line))
        self.buf.append(UNKNOWN)
        self.line += body.count("\n")

    def _read_heredocs(self) -> None:
        s = self.s
        for token, delim, strip_tabs in self.pending_heredocs:
            lines: list[str] = []
            while self.i < self.n:
                end = s.find("\n", self.i)
                end = self.n if end < 0 else end
                raw = s[self.i:end]
                self.i = end + 1
                self.line += 1
                if (raw.lstrip("\t") if strip_tabs else raw) == delim:
                    break
                lines.append(raw)
            token.heredoc = "\n".join(lines)
        self.pending_heredocs = []


def _ansi_escape(s: str, i: int) -> tuple[int, str]:
    c = s[i]
    if c in _ANSI_ESCAPES:
        return i + 1, _ANSI_ESCAPES[c]
    for prefix, width, base in (("x", 2, 16), ("u", 4, 16), ("U", 8, 16)):
        if c == prefix:
            digits = _take(s, i + 1, width, "0123456789abcdefABCDEF")
            if digits:
                return i + 1 + len(digits), _chr(int(digits, base))
    if c in "01234567":
        digits = _take(s, i, 3, "01234567")
        return i + len(digits), _chr(int(digits, 8))
    return i + 1, "\\" + c


def _take(s: str, i: int, width: int, allowed: str) -> str:
    j = i
    while j < len(s) and j - i < width and s[j] in allowed:
        j += 1
    return s[i:j]


def _chr(code: int) -> str:
    return chr(code) if code < 0x110000 else "?"


def _matching_paren(s: str, i: int, depth: int) -> int:
    """Index of the ``)`` closing a substitution that starts at `i` (quote-aware)."""
    n = len(s)
    level = depth
    while i < n:
        c = s[i]
        if c == "\\":
            i += 2
            continue
        if c == "'":
            end = s.find("'", i + 1)
            i = n if end < 0 else end + 1
            continue
        if c == '"':
            i += 1
            while i < n and s[i] != '"':
                i += 2 if s[i] == "\\" else 1
            i += 1
            continue
        if c == "(":
            level += 1
        elif c == ")":
            level -= 1
            if level < depth:
                return i
        i += 1
    return n


def tokenize(text: str) -> list[Token]:
    """The tokens of a shell script. Never raises."""
    return _Lexer(text).run()
