"""Shell tokens → simple commands: argv words, redirections, pipelines, function definitions.

This is deliberately shallow: compound commands (``if``, ``while``, ``{ … }``) are flattened into
the simple commands they contain, with their keyword left as the first word so the scanner can
track loop and function bodies. `unwrap` strips assignments and wrapper commands (``sudo``,
``env``, ``nohup``, ``timeout``, ``xargs``, …) to find the program that really runs.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from typing import Final

from guard_plugins.codescreen.shell_lex import Token

__all__ = ["Command", "Pipeline", "Unwrapped", "split_commands", "unwrap"]

_SEPARATORS: Final = frozenset({";", "\n", "&&", "||", ";;", "&", "(", ")"})
_ASSIGNMENT: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(?:\[[^\]]*\])?\+?=")
RESERVED: Final = frozenset({"if", "then", "else", "elif", "do", "while", "until", "!", "{", "}",
                             "time", "fi", "done", "esac", "in", "coproc"})
# Wrappers and how many option words take a value (so the wrapped program is found).
_WRAPPERS: Final[dict[str, frozenset[str]]] = {
    "sudo": frozenset({"-u", "-g", "-C", "-p", "-h", "-r", "-t", "-U", "-D", "-R", "-T"}),
    "doas": frozenset({"-u", "-C"}),
    "pkexec": frozenset({"--user"}),
    "runuser": frozenset({"-u", "-g", "-G"}),
    "env": frozenset({"-u", "--unset", "-C", "--chdir", "-S", "--split-string"}),
    "nohup": frozenset(), "exec": frozenset({"-a"}), "time": frozenset(), "command": frozenset(),
    "builtin": frozenset(), "setsid": frozenset(), "stdbuf": frozenset(), "nice": frozenset({"-n"}),
    "ionice": frozenset({"-c", "-n", "-p"}), "timeout": frozenset({"-s", "-k", "--signal"}),
    "xargs": frozenset({"-I", "-n", "-P", "-d", "-E", "-L", "-s", "-a"}),
    "busybox": frozenset(), "chroot": frozenset(), "nsenter": frozenset(), "unshare": frozenset(),
    "watch": frozenset({"-n", "-d"}), "proxychains": frozenset(), "proxychains4": frozenset(),
    "torsocks": frozenset(), "caffeinate": frozenset(),
}
_POSITIONAL_WRAPPERS: Final = {"timeout": 1, "chroot": 1}
PRIVILEGE_WRAPPERS: Final = frozenset({"sudo", "doas", "pkexec", "runuser"})


@dataclass
class Pipeline:
    commands: list[Command] = field(default_factory=list)
    background: bool = False


@dataclass
class Command:
    """A simple command: its words, its redirections ``(operator, target)`` and where it is."""

    words: list[Token]
    redirs: list[tuple[str, Token]]
    line: int
    pipeline: Pipeline
    funcdef: str | None = None

    @property
    def first(self) -> str:
        return self.words[0].text if self.words else ""


@dataclass
class Unwrapped:
    """The program a command really runs: name (basename), argument words, what wrapped it."""

    name: str
    args: list[Token]
    wrappers: list[tuple[str, list[str]]]
    assignments: list[tuple[str, str]]
    keywords: list[str]

    @property
    def argv(self) -> list[str]:
        return [a.text for a in self.args]


def split_commands(tokens: list[Token]) -> list[Command]:
    """Commands in source order; each knows its pipeline (shared object) and redirections."""
    commands: list[Command] = []
    pipeline = Pipeline()
    current = Command([], [], 0, pipeline)
    i, n = 0, len(tokens)

    def close(end_pipeline: bool) -> None:
        nonlocal current, pipeline
        if current.words or current.redirs or current.funcdef:
            current.line = current.line or (current.words[0].line if current.words else 0)
            commands.append(current)
            pipeline.commands.append(current)
        if end_pipeline:
            pipeline = Pipeline()
        current = Command([], [], 0, pipeline)

    while i < n:
        tok = tokens[i]
        if not tok.op:
            current.words.append(tok)
            current.line = current.line or tok.line
        elif (tok.text == "(" and len(current.words) in (1, 2) and i + 1 < n
              and tokens[i + 1].is_op(")")):
            name = current.words[-1].text
            current.words = []
            current.funcdef = name
            current.line = tok.line
            close(True)
            i += 1
        elif tok.text in _SEPARATORS:
            if tok.text == "&":
                pipeline.background = True
            close(True)
        elif tok.text in ("|", "|&"):
            close(False)
        else:
            target = tokens[i + 1] if i + 1 < n and not tokens[i + 1].op else Token("", tok.line)
            current.redirs.append((tok.text, target))
            current.line = current.line or tok.line
            i += 1 if target.text or target.heredoc is not None else 0
        i += 1
    close(True)
    return commands


def program_name(word: str) -> str:
    return posixpath.basename(word.lstrip("\\")) if word else ""


def unwrap(words: list[Token]) -> Unwrapped:
    """Strip keywords, assignments and wrappers; return the program and its arguments."""
    keywords: list[str] = []
    assignments: list[tuple[str, str]] = []
    wrappers: list[tuple[str, list[str]]] = []
    i, n = 0, len(words)
    while i < n:
        word = words[i]
        text = word.text
        if text in RESERVED and not word.quoted:
            keywords.append(text)
            i += 1
            continue
        match = _ASSIGNMENT.match(text)
        if match:
            name, _, value = text.partition("=")
            assignments.append((name.rstrip("+"), value))
            i += 1
            continue
        name = program_name(text)
        if name not in _WRAPPERS or (name == "env" and _env_is_dump(words[i + 1:])):
            return Unwrapped(name, words[i + 1:], wrappers, assignments, keywords)
        i += 1
        options: list[str] = []
        takes_value = _WRAPPERS[name]
        while i < n and words[i].text.startswith("-") and words[i].text != "-":
            options.append(words[i].text)
            if words[i].text in takes_value and i + 1 < n:
                options.append(words[i + 1].text)
                i += 1
            i += 1
            if options[-1] == "--":
                break
        skip = _POSITIONAL_WRAPPERS.get(name, 0)
        options.extend(w.text for w in words[i:i + skip])
        i += skip
        if name == "su":
            break
        wrappers.append((name, options))
    return Unwrapped("", [], wrappers, assignments, keywords)


def _env_is_dump(rest: list[Token]) -> bool:
    """``env`` with nothing but options and assignments after it prints the environment."""
    return all(w.text.startswith("-") or _ASSIGNMENT.match(w.text) for w in rest)
