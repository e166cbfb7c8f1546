"""The backend seam: one small async protocol every backend implements.

A backend turns `ClassificationRequest`s into `Verdict`s. It owns transport and model work only;
prompt rendering and verdict parsing are shared pure functions (`guard_plugins.prompt`,
`guard_plugins.verdict`), policy lives in the Guard.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import TracebackType
from typing import Any

from typing_extensions import Self

from guard_plugins._sync import run_sync
from guard_plugins.categories import CategoryLike, CategorySpec, parse_category_codes
from guard_plugins.conversation import Conversation, ConversationLike
from guard_plugins.prompt import RenderedPrompt, build_prompt
from guard_plugins.verdict import Verdict

__all__ = ["Backend", "ClassificationRequest", "Closeable"]


@dataclass(frozen=True)
class ClassificationRequest:
    """One conversation to classify, with the categories to list and the unsafe threshold.

    `threshold` is the score at or above which a backend that observes probabilities calls the
    verdict unsafe (and decodes the categories). Backends without probabilities ignore it.
    """

    conversation: Conversation
    categories: tuple[CategoryLike, ...] | None = None
    exclude: tuple[str, ...] = ()
    threshold: float = 0.5
    metadata: dict[str, Any] = field(default_factory=dict, compare=False, hash=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.conversation, Conversation):
            object.__setattr__(self, "conversation", Conversation.of(self.conversation))
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    @classmethod
    def of(
        cls,
        conversation: ConversationLike | ClassificationRequest,
        categories: CategorySpec | None = None,
        exclude: str | Iterable[str] = (),
        threshold: float = 0.5,
    ) -> ClassificationRequest:
        if isinstance(conversation, ClassificationRequest):
            return conversation
        from guard_plugins.categories import resolve_categories

        cats = None if categories is None else resolve_categories(categories)
        return cls(Conversation.of(conversation), cats, parse_category_codes(exclude), threshold)

    @cached_property
    def prompt(self) -> RenderedPrompt:
        """The rendered prompt (computed once per request)."""
        return build_prompt(self.conversation, self.categories, self.exclude)

    def _seed_prompt(self, prompt: RenderedPrompt) -> None:
        # The caller already rendered this exact prompt (fitting does); cached_property storage.
        self.__dict__["prompt"] = prompt

    @property
    def listed(self) -> tuple[CategoryLike, ...]:
        return self.prompt.categories


class Closeable:
    """`aclose()` plus its sync twin and both context-manager protocols, for resource owners."""

    async def aclose(self) -> None:
        """Release connections, threads and model memory held by the object."""

    def close(self) -> None:
        run_sync(self.aclose(), api="aclose()")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Backend(Closeable, abc.ABC):
    """Base class of all backends: implement `classify_batch`; the rest has defaults.

    Backends are async-first; `classify_sync` / `classify_batch_sync` are thin wrappers.
    """

    #: short name recorded in every Verdict (``"transformers"``, ``"openai-compatible"``...)
    name: str = "backend"
    #: the largest prompt (tokens) this backend accepts, or None when unknown
    max_prompt_tokens: int | None = None

    @abc.abstractmethod
    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        """Classify several requests; results in the same order."""

    async def classify(
        self,
        conversation: ConversationLike | ClassificationRequest,
        categories: CategorySpec | None = None,
        exclude: str | Iterable[str] = (),
        threshold: float = 0.5,
    ) -> Verdict:
        request = ClassificationRequest.of(conversation, categories, exclude, threshold)
        (verdict,) = await self.classify_batch([request])
        return verdict

    def classify_sync(
        self,
        conversation: ConversationLike | ClassificationRequest,
        categories: CategorySpec | None = None,
        exclude: str | Iterable[str] = (),
        threshold: float = 0.5,
    ) -> Verdict:
        return run_sync(
            self.classify(conversation, categories, exclude, threshold), api="classify()"
        )

    def classify_batch_sync(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        return run_sync(self.classify_batch(requests), api="classify_batch()")

    def can_classify_inline(self) -> bool:
        """True when `classify_batch_inline` answers in the caller's thread without waiting.

        Only for backends that never suspend (in-process rules, the test doubles): the Guard's
        sync methods then skip the hop to the background loop when its micro-batcher is idle.
        Model and HTTP backends keep the default (False)."""
        return False

    def classify_batch_inline(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        """`classify_batch` run to completion in the caller's thread, with the same outcome
        (verdicts or exception). Only called when `can_classify_inline()` is True."""
        raise NotImplementedError(f"{type(self).__name__} cannot classify inline")

    def count_tokens(self, prompt: RenderedPrompt) -> int | None:
        """Exact prompt length in tokens when the backend can tell, else None."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} name={self.name!r}>"
