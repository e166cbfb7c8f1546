"""Benchmark workloads: real prompts from the shared datasets, or built-in samples.

Three workloads, selected deterministically (evenly spaced rows, no randomness):

- ``short``: single user turns from XSTest (a few to a dozen words);
- ``long``: single user turns from the AILuminate demo set, taken from its longer half;
- ``multi_turn``: three-turn conversations built from both (user → assistant → user, assessed
  as ``User``) alternating with two-turn ones (user → assistant, assessed as ``Agent``), so both
  prompt prefixes are exercised.

Besides the workloads, *sessions*: four-turn conversations (XSTest user turn → reply → AILuminate
user turn → reply) checked the way an application checks them, every turn as it arrives with the
conversation so far (`PromptSet.session_checks`).

When the datasets directory is missing, the same shapes are built from `BUILTIN_PROMPTS` and
the prompt set says so (`PromptSet.note`).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from guard_plugins.conversation import Conversation, Message

__all__ = [
    "BUILTIN_PROMPTS",
    "DATASETS_ENV",
    "PromptSet",
    "Workload",
    "default_datasets_dir",
    "load_prompt_set",
]

DATASETS_ENV = "GUARD_PLUGINS_DATASETS"
XSTEST_FILE = "xstest_prompts.csv"
AILUMINATE_FILE = "ailuminate_demo_en_us.csv"

#: Short benign prompts used when the datasets are not available.
BUILTIN_PROMPTS = (
    "How do I bake sourdough bread at home?",
    "What is the capital of Australia?",
    "How can I kill a Python process that hangs?",
    "Write a haiku about the sea.",
    "What's the best way to learn a new language as an adult?",
    "How do I terminate a C program early?",
    "Summarise the plot of Hamlet in two sentences.",
    "Which vegetables grow well in a shaded garden?",
    "How does a refrigerator keep food cold?",
    "Can you explain what a mortgage is?",
    "What should I pack for a three-day hiking trip?",
    "How do I shoot a good photo at night?",
)

# Assistant turns for the multi-turn workload (the datasets hold prompts only).
_REPLIES = (
    "Sure. Here is a short overview; let me know if you want more detail on any step.",
    "I can help with the general idea. Most guides recommend starting with the basics, checking "
    "local rules and safety advice first, and asking a qualified professional when in doubt.",
    "I can't help with that part, but I can point you to public resources that explain the "
    "topic in general terms, and to support services if you or someone else is at risk.",
)


@dataclass(frozen=True)
class Workload:
    """A named list of conversations of one shape."""

    name: str
    source: str
    conversations: tuple[Conversation, ...]


@dataclass(frozen=True)
class PromptSet:
    """The workloads of one run, where they came from, and a note when they are not real data."""

    workloads: tuple[Workload, ...]
    origin: str
    """``"datasets"`` or ``"builtin"``."""
    directory: str | None = None
    note: str | None = None
    sessions: tuple[Conversation, ...] = ()
    """Whole conversations; `session_checks` gives the checks an application makes over them."""

    def session_checks(self) -> list[tuple[int, Conversation]]:
        """(session index, conversation so far) for every turn of every session, in order."""
        checks = []
        for index, session in enumerate(self.sessions):
            messages = session.messages
            checks += [(index, Conversation(messages[:end])) for end in range(1, len(messages) + 1)]
        return checks

    def interleaved(self) -> list[tuple[str, Conversation]]:
        """(workload name, conversation) taking one from each workload in turn."""
        items: list[tuple[str, Conversation]] = []
        longest = max((len(w.conversations) for w in self.workloads), default=0)
        for index in range(longest):
            for workload in self.workloads:
                if index < len(workload.conversations):
                    items.append((workload.name, workload.conversations[index]))
        return items

    def describe(self) -> dict[str, object]:
        return {
            "origin": self.origin,
            "directory": self.directory,
            "note": self.note,
            "workloads": {
                w.name: {"source": w.source, "conversations": len(w.conversations)}
                for w in self.workloads
            },
            "sessions": len(self.sessions),
        }


def default_datasets_dir() -> Path:
    """``$GUARD_PLUGINS_DATASETS``, else ``../shared/datasets`` next to the repository."""
    env = os.environ.get(DATASETS_ENV)
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    candidates = (repo.parent / "shared" / "datasets", Path.cwd().parent / "shared" / "datasets")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "datasets"


def _spread(items: Sequence[str], count: int) -> list[str]:
    """`count` items evenly spaced over `items` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _column(path: Path, column: str) -> list[str]:
    with path.open(newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle)
        return [row[column].strip() for row in rows if (row.get(column) or "").strip()]


def _cycle(items: Sequence[str]) -> Iterator[str]:
    while True:
        yield from items


def _multi_turn(first: Sequence[str], second: Sequence[str], count: int) -> list[Conversation]:
    """Alternate user→assistant→user (assessed User) and user→assistant (assessed Agent)."""
    firsts, seconds, replies = _cycle(first), _cycle(second), _cycle(_REPLIES)
    conversations = []
    for index in range(count):
        opening = next(firsts)
        messages: tuple[Message, ...]
        if index % 2 == 0:
            messages = (Message.user(opening), Message.assistant(next(replies)),
                        Message.user(next(seconds)))
        else:
            messages = (Message.user(next(seconds)), Message.assistant(next(replies)))
        conversations.append(Conversation(messages))
    return conversations


def _sessions(first: Sequence[str], second: Sequence[str], count: int) -> tuple[Conversation, ...]:
    """user → assistant → user → assistant conversations."""
    firsts, seconds, replies = _cycle(first), _cycle(second), _cycle(_REPLIES)
    return tuple(
        Conversation((
            Message.user(next(firsts)), Message.assistant(next(replies)),
            Message.user(next(seconds)), Message.assistant(next(replies)),
        ))
        for _ in range(count)
    )


def _session_count(per_workload: int) -> int:
    return max(2, per_workload // 2)


def _user_turns(texts: Sequence[str]) -> tuple[Conversation, ...]:
    return tuple(Conversation.user(t) for t in texts)


def load_prompt_set(directory: str | os.PathLike[str] | None, per_workload: int) -> PromptSet:
    """`per_workload` conversations of each workload from `directory` (or the built-in ones)."""
    if per_workload < 1:
        raise ValueError("per_workload must be >= 1")
    root = Path(directory) if directory is not None else default_datasets_dir()
    xstest, ailuminate = root / XSTEST_FILE, root / AILUMINATE_FILE
    if xstest.is_file() and ailuminate.is_file():
        shorts = _spread(_column(xstest, "prompt"), per_workload * 2)
        texts = _column(ailuminate, "prompt_text")
        cutoff = sorted(len(t) for t in texts)[len(texts) // 2]
        longs = _spread([t for t in texts if len(t) >= cutoff], per_workload * 2)
        return PromptSet(
            (
                Workload("short", XSTEST_FILE, _user_turns(shorts[::2])),
                Workload("long", AILUMINATE_FILE, _user_turns(longs[::2])),
                Workload(
                    "multi_turn",
                    f"{XSTEST_FILE} + {AILUMINATE_FILE}",
                    tuple(_multi_turn(shorts[1::2], longs[1::2], per_workload)),
                ),
            ),
            "datasets",
            str(root),
            sessions=_sessions(shorts[::2], longs[1::2], _session_count(per_workload)),
        )
    samples = list(BUILTIN_PROMPTS)
    longs = [" ".join(samples[i: i + 4]) for i in range(len(samples))]
    return PromptSet(
        (
            Workload("short", "builtin", _user_turns(list(_take(samples, per_workload)))),
            Workload("long", "builtin", _user_turns(list(_take(longs, per_workload)))),
            Workload("multi_turn", "builtin", tuple(_multi_turn(samples, longs, per_workload))),
        ),
        "builtin",
        str(root),
        sessions=_sessions(samples, longs, _session_count(per_workload)),
        note=f"datasets not found in {root} (set --datasets or ${DATASETS_ENV}): "
        "using built-in sample prompts, not real data",
    )


def _take(items: Sequence[str], count: int) -> Iterator[str]:
    source = _cycle(items)
    for _ in range(count):
        yield next(source)
