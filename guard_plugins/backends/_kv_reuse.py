"""Reusable attention KV of prompts already computed (for `TransformersBackend`).

Two stores, both holding per-layer (key, value) tensors of shape ``(1, heads, length, dim)``:

- the template prefix of a role and category list (everything through
  ``<BEGIN CONVERSATION>\\n``), the same for every check with them;
- the conversations of recent checks: successive checks of one conversation share the prompt up
  to the turns already checked, so a new check computes only its new turns and the closing lines.

KV at a position depends only on the tokens up to it, so any prompt starting with the same ids
can reuse it. No torch import here: the tensors are opaque.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ConversationCache", "KVEntry", "common_prefix_length"]


@dataclass
class KVEntry:
    """The KV of `ids` (one tensor pair per decoder layer); `key` is its template prefix."""

    ids: tuple[int, ...]
    kv: list[tuple[Any, Any]]
    key: str = ""


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Length of the longest common prefix of two id sequences (binary search, C-level compares)."""
    a, b = tuple(a), tuple(b)
    n = min(len(a), len(b))
    if a[:n] == b[:n]:
        return n
    low, high = 0, n  # a[:low] == b[:low] and a[:high] != b[:high]
    while high - low > 1:
        middle = (low + high) // 2
        if a[:middle] == b[:middle]:
            low = middle
        else:
            high = middle
    return low


class ConversationCache:
    """KV of recently checked text prompts, found by the longest common token prefix.

    Bounded by `max_tokens` positions in total, least recently used out first. An entry whose ids
    start a newer entry's ids is dropped: the newer one serves every prompt the older could. Used
    from the backend's single worker thread only.
    """

    def __init__(self, max_tokens: int) -> None:
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        self.max_tokens = max_tokens
        self._entries: OrderedDict[int, KVEntry] = OrderedDict()
        self._tokens = 0
        self._next = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def tokens(self) -> int:
        """Positions held."""
        return self._tokens

    def match(self, key: str, ids: Sequence[int], minimum: int) -> tuple[KVEntry | None, int]:
        """The entry sharing the most leading ids with `ids` (more than `minimum`), and how many."""
        best: tuple[int, KVEntry] | None = None
        length = minimum
        wanted = tuple(ids)
        for handle, entry in self._entries.items():
            if entry.key != key:
                continue
            shared = common_prefix_length(entry.ids, wanted)
            if shared > length:
                best, length = (handle, entry), shared
        if best is None:
            return None, 0
        self._entries.move_to_end(best[0])
        return best[1], length

    def add(self, entry: KVEntry) -> None:
        """Store `entry`, dropping entries it extends, then the least recently used over budget."""
        if not entry.ids or len(entry.ids) > self.max_tokens:
            return
        for handle, old in list(self._entries.items()):
            if old.key == entry.key and entry.ids[: len(old.ids)] == old.ids:
                self._remove(handle)
        self._entries[self._next] = entry
        self._next += 1
        self._tokens += len(entry.ids)
        while self._tokens > self.max_tokens:
            self._remove(next(iter(self._entries)))

    def resize(self, max_tokens: int) -> None:
        """Change the budget, evicting the least recently used entries that no longer fit."""
        if max_tokens < 0:
            raise ValueError("max_tokens must be >= 0")
        self.max_tokens = max_tokens
        while self._tokens > max_tokens:
            self._remove(next(iter(self._entries)))

    def clear(self) -> None:
        self._entries.clear()
        self._tokens = 0

    def _remove(self, handle: int) -> None:
        self._tokens -= len(self._entries.pop(handle).ids)
