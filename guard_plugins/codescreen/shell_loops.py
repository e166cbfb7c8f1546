"""Loop and function bodies in a flattened shell script: fork bombs and unbounded spawning.

The parser flattens compound commands, so this walks the commands with a stack of open frames
(``while``/``until``/``for`` … ``done``, ``name() {`` … ``}``). A function whose body runs itself
in a pipe or in the background is a fork bomb; a ``while true`` loop that starts background jobs
and has no ``break``/``exit``/``return`` spawns without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from guard_plugins.codescreen.shell_parse import Command, program_name

__all__ = ["track_structure"]

_TRUE_CONDITIONS: Final = (["true"], [":"], ["/bin/true"], ["[", "1", "]"], ["1"], ["test", "1"])
_FALSE_CONDITIONS: Final = (["false"], ["/bin/false"])
_SKIP_KEYWORDS: Final = frozenset({"do", "then", "else", "elif", "if", "!", "time", "fi", "esac"})

Report = Callable[..., None]


@dataclass
class _Frame:
    kind: str
    line: int
    name: str = ""
    unbounded: bool = False
    spawns: bool = False
    exits: bool = False
    bomb: bool = False


def track_structure(commands: list[Command], report: Report) -> None:
    """Report SH-FORKBOMB and SH-UNBOUNDED-SPAWN from the command sequence."""
    frames: list[_Frame] = []
    pending_function = ""
    for command in commands:
        words = [w.text for w in command.words]
        if command.funcdef is not None:
            pending_function = program_name(command.funcdef)
            continue
        i = 0
        if words[:1] == ["function"] and len(words) >= 2:
            pending_function = words[1].rstrip("()")
            i = 2
        while i < len(words):
            word = words[i]
            if word == "{":
                frames.append(_Frame("function" if pending_function else "group", command.line,
                                     pending_function))
                pending_function = ""
            elif word in ("while", "until"):
                condition = words[i + 1:]
                forever = condition in (_TRUE_CONDITIONS if word == "while"
                                        else _FALSE_CONDITIONS)
                frames.append(_Frame("loop", command.line, unbounded=forever))
                break
            elif word in ("for", "select"):
                frames.append(_Frame("loop", command.line))
                break
            elif word in ("done", "}"):
                _close(frames, "loop" if word == "done" else "brace", report)
            elif word not in _SKIP_KEYWORDS:
                break
            i += 1
        name = program_name(words[i]) if i < len(words) else ""
        _observe(frames, command, name, report)
    while frames:
        _close(frames, frames[-1].kind if frames[-1].kind == "loop" else "brace", report)


def _observe(frames: list[_Frame], command: Command, name: str, report: Report) -> None:
    pipeline = command.pipeline
    spawning = pipeline.background or len(pipeline.commands) > 1
    if name == "$0" and spawning:
        report("FORKBOMB", command.line, "script re-runs itself")
    for frame in frames:
        if pipeline.background and name:
            frame.spawns = True
        if name in ("break", "exit", "return"):
            frame.exits = True
        if frame.kind == "function" and name == frame.name and spawning:
            frame.bomb = True


def _close(frames: list[_Frame], kind: str, report: Report) -> None:
    for index in range(len(frames) - 1, -1, -1):
        frame = frames[index]
        if (frame.kind == "loop") == (kind == "loop"):
            del frames[index:]
            if frame.bomb:
                report("FORKBOMB", frame.line, frame.name or "function")
            if frame.kind == "loop" and frame.unbounded and frame.spawns and not frame.exits:
                report("UNBOUNDED-SPAWN", frame.line, "background jobs in an endless loop")
            return
