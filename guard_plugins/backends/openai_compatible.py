"""Llama Guard 4 behind an OpenAI-compatible endpoint: vLLM, SGLang, TGI, llama.cpp, hosted APIs.

Two modes:

- ``"completions"`` (default; vLLM and other self-hosted servers): the prompt is rendered here by
  `render_prompt` and sent to ``/v1/completions`` with ``logprobs`` — exact control of categories,
  custom categories and tool-call rendering, and `Verdict.score` is P(unsafe) as in-process.
  A batch goes out as one request with a list of prompts. Requests with images go through
  ``/v1/chat/completions`` (the completions endpoint cannot take images) unless
  ``images_via_chat=False``, which makes them a `ConfigError`.
- ``"chat"`` (hosted providers that only expose chat): one message per turn with content parts,
  images as data URLs; exclusions sent as ``chat_template_kwargs`` when ``send_template_kwargs``
  and always enforced client-side; ``score`` from ``top_logprobs`` when the provider returns them,
  None when it does not.

Thresholds (when a score exists): unsafe iff ``score >= request.threshold``. Text "unsafe" with a
lower score → safe (categories dropped, `raw` kept). Text "safe" with a score at or above the
threshold → unsafe; completions mode then asks for the categories by teacher-forcing
``"\\n\\nunsafe\\n"`` after the prompt; chat mode cannot, so the categories stay empty.

>>> backend = OpenAICompatibleBackend("http://127.0.0.1:8000", "meta-llama/Llama-Guard-4-12B")
>>> backend                                              # doctest: +ELLIPSIS
<OpenAICompatibleBackend base_urls=['http://127.0.0.1:8000/v1'] model=... mode='completions' ...>

Transport behaviour (retries, failover, coalescing, errors) is described in `_http_transport`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from guard_plugins.backends._endpoint_config import (
    PROVIDERS,
    Mode,
    ProviderName,
    display_url,
    normalize_base_url,
    options_from_env,
    resolve_api_key,
)
from guard_plugins.backends._openai_format import (
    Generation,
    LogprobsStyle,
    chat_messages,
    chat_payload,
    completions_payload,
    parse_chat_response,
    parse_completions_response,
    template_kwargs,
    verdict_score,
)
from guard_plugins.backends.base import Backend, ClassificationRequest
from guard_plugins.errors import (
    BackendHTTPError,
    ConfigError,
    MissingDependencyError,
    VerdictParseError,
)
from guard_plugins.verdict import Verdict, parse_verdict

try:
    from guard_plugins.backends._http_transport import HTTPTransport, TransportStats
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    if getattr(exc, "name", None) in ("httpx", "httpcore", "anyio", "h11"):
        raise MissingDependencyError("httpx", "http") from exc
    raise

__all__ = ["OpenAICompatibleBackend", "TransportStats"]

logger = logging.getLogger("guard_plugins.backends.openai_compatible")
T = TypeVar("T")
_FORCED = "\n\nunsafe\n"


class OpenAICompatibleBackend(Backend):
    """Llama Guard 4 served over the OpenAI HTTP protocol (see the module docstring).

    >>> backend = OpenAICompatibleBackend.for_provider("groq")      # doctest: +SKIP
    >>> replicas = ["http://gpu1:8000", "http://gpu2:8000"]
    >>> backend = OpenAICompatibleBackend(replicas, "meta-llama/Llama-Guard-4-12B")
    >>> verdict = backend.classify_sync("How do I make a bomb?")    # doctest: +SKIP
    """

    name = "openai-compatible"

    def __init__(
        self,
        base_url: str | Sequence[str],
        model: str,
        *,
        api_key: str | None = None,
        mode: Mode = "completions",
        timeout: float = 30.0,
        max_retries: int = 2,
        max_connections: int = 32,
        logprobs: bool = True,
        top_logprobs: int = 5,
        logprobs_style: LogprobsStyle = "openai",
        send_template_kwargs: bool = True,
        send_categories: bool = False,
        images_via_chat: bool = True,
        batch_prompts: bool = True,
        max_batch_size: int = 64,
        coalesce: bool = True,
        backoff: float = 0.25,
        retry_after_cap: float = 30.0,
        cooldown: float = 5.0,
        deadline: float | None = None,
        headers: dict[str, str] | None = None,
        max_prompt_tokens: int | None = None,
    ) -> None:
        urls = [base_url] if isinstance(base_url, str) else list(base_url)
        if not urls:
            raise ConfigError("base_url: at least one endpoint URL is required")
        try:
            self.base_urls = tuple(normalize_base_url(u) for u in urls)
        except ValueError as exc:
            raise ConfigError(f"base_url: {exc}") from None
        if not isinstance(model, str) or not model.strip():
            raise ConfigError("model: the served model name is required")
        if mode not in ("completions", "chat"):
            raise ConfigError(f"mode must be 'completions' or 'chat', not {mode!r}")
        if timeout <= 0 or max_retries < 0 or max_connections < 1 or max_batch_size < 1:
            raise ConfigError(
                "timeout must be > 0, max_retries >= 0, max_connections and max_batch_size >= 1"
            )
        if not 0 <= top_logprobs <= 20:
            raise ConfigError(f"top_logprobs must be between 0 and 20, not {top_logprobs}")
        self.model = model.strip()
        self.mode: Mode = mode
        self.timeout = timeout
        self.logprobs = logprobs and top_logprobs > 0
        self.top_logprobs = top_logprobs
        self.logprobs_style: LogprobsStyle = logprobs_style
        self.send_template_kwargs = send_template_kwargs
        self.send_categories = send_categories
        self.images_via_chat = images_via_chat
        self.batch_prompts = batch_prompts
        self.max_batch_size = max_batch_size
        self.max_prompt_tokens = max_prompt_tokens
        self._has_key = bool(api_key)
        request_headers = {"Accept": "application/json", **(headers or {})}
        if api_key:
            request_headers["Authorization"] = f"Bearer {api_key}"
        self._transport = HTTPTransport(
            self.base_urls,
            headers=request_headers,
            timeout=timeout,
            max_retries=max_retries,
            max_connections=max_connections,
            backoff=backoff,
            retry_after_cap=retry_after_cap,
            cooldown=cooldown,
            deadline=deadline,
            coalesce=coalesce,
        )
        self._warned_no_logprobs = False

    # -- construction helpers -------------------------------------------------------------------

    @classmethod
    def for_provider(
        cls, provider: ProviderName, api_key: str | None = None, **overrides: Any
    ) -> OpenAICompatibleBackend:
        """A preset for a hosted provider; the key defaults to its conventional variable."""
        preset = PROVIDERS.get(provider)
        if preset is None:
            raise ConfigError(f"unknown provider {provider!r}; known: {', '.join(PROVIDERS)}")
        key = api_key if api_key is not None else resolve_api_key(preset.api_key_env, True)
        options: dict[str, Any] = {**preset.options, **overrides}
        return cls(preset.base_url, options.pop("model", preset.model), api_key=key, **options)

    @classmethod
    def from_options(
        cls,
        endpoint: str | Sequence[str] | None = None,
        model: str | None = None,
        *,
        api_key_env: str | None = None,
        mode: str | None = None,
        timeout: float | None = None,
        **overrides: Any,
    ) -> OpenAICompatibleBackend:
        """Build from CLI-style options, each missing one taken from ``GUARD_PLUGINS_*``.

        `endpoint` is one URL, a comma-separated list, a list, or a provider name
        (``together``, ``groq``...). Invalid values raise `ConfigError` naming the option.
        """
        opts = options_from_env(endpoint, model, api_key_env, mode, timeout)
        if opts.provider is not None:
            extra: dict[str, Any] = {**opts.extra, **overrides}
            if opts.model:
                extra["model"] = opts.model
            if opts.mode_given:
                extra["mode"] = opts.mode
            if opts.timeout is not None:
                extra["timeout"] = opts.timeout
            return cls.for_provider(opts.provider, opts.api_key, **extra)
        kwargs: dict[str, Any] = {**opts.extra, **overrides}
        if opts.timeout is not None:
            kwargs["timeout"] = opts.timeout
        return cls(opts.urls, opts.model, api_key=opts.api_key, mode=opts.mode, **kwargs)

    @classmethod
    def from_env(cls, **overrides: Any) -> OpenAICompatibleBackend:
        """Build from ``GUARD_PLUGINS_ENDPOINT``, ``GUARD_PLUGINS_ENDPOINT_MODEL``, ... only."""
        return cls.from_options(**overrides)

    # -- Backend --------------------------------------------------------------------------------

    @property
    def stats(self) -> TransportStats:
        return self._transport.stats

    async def classify_batch(self, requests: Sequence[ClassificationRequest]) -> list[Verdict]:
        if not requests:
            return []
        start = time.perf_counter()
        completions: list[int] = []
        chats: list[int] = []
        for i, request in enumerate(requests):
            _ = request.prompt  # bad input fails before any I/O
            if self.mode == "chat" or request.conversation.has_images:
                if self.mode == "completions" and not self.images_via_chat:
                    raise ConfigError(
                        "completions mode cannot send images (vLLM's /v1/completions takes text "
                        "only): use mode='chat' or images_via_chat=True"
                    )
                self._chat_kwargs(request)  # custom categories without opt-in fail early
                chats.append(i)
            else:
                completions.append(i)
        results: list[Verdict | None] = [None] * len(requests)

        async def run_completions() -> None:
            batch = [requests[i] for i in completions]
            for i, verdict in zip(
                completions, await self._classify_completions(batch, start), strict=True
            ):
                results[i] = verdict

        async def run_chat(i: int) -> None:
            results[i] = await self._classify_chat(requests[i], start)

        jobs: list[Awaitable[None]] = [run_chat(i) for i in chats]
        if completions:
            jobs.append(run_completions())
        await _gather(jobs)
        return [v for v in results if v is not None]

    async def aclose(self) -> None:
        await self._transport.aclose()

    def __repr__(self) -> str:
        key = "***" if self._has_key else None
        return (
            f"<{type(self).__name__} base_urls={[display_url(u) for u in self.base_urls]!r} "
            f"model={self.model!r} "
            f"mode={self.mode!r} api_key={key}>"
        )

    # -- completions mode -----------------------------------------------------------------------

    async def _classify_completions(
        self, requests: Sequence[ClassificationRequest], start: float
    ) -> list[Verdict]:
        prompts = [r.prompt.text for r in requests]
        generations = await self._complete(prompts, self.logprobs)
        verdicts: list[Verdict] = []
        needs_codes: list[int] = []
        for i, (request, generation) in enumerate(zip(requests, generations, strict=True)):
            verdict, missing = self._verdict(request, generation, start)
            verdicts.append(verdict)
            if missing:
                needs_codes.append(i)
        if needs_codes:
            forced = await self._complete([prompts[i] + _FORCED for i in needs_codes], False)
            for i, generation in zip(needs_codes, forced, strict=True):
                verdicts[i] = _with_forced_codes(verdicts[i], requests[i], generation.text)
        return verdicts

    async def _complete(self, prompts: list[str], logprobs: bool) -> list[Generation]:
        """Generations for `prompts`: unique prompts only, in chunks of `max_batch_size`."""
        unique = list(dict.fromkeys(prompts))
        size = self.max_batch_size if self.batch_prompts else 1
        chunks = [unique[i:i + size] for i in range(0, len(unique), size)]
        answers = await _gather([self._complete_chunk(c, logprobs) for c in chunks])
        by_prompt = {
            p: g
            for chunk, gens in zip(chunks, answers, strict=True)
            for p, g in zip(chunk, gens, strict=True)
        }
        return [by_prompt[p] for p in prompts]

    async def _complete_chunk(self, prompts: list[str], logprobs: bool) -> list[Generation]:
        def body() -> dict[str, Any]:
            top = self.top_logprobs if (logprobs and self.logprobs) else None
            return completions_payload(self.model, prompts, top_logprobs=top)

        data, url = await self._post("/completions", body)
        return parse_completions_response(data, len(prompts), display_url(url))

    # -- chat mode ------------------------------------------------------------------------------

    def _chat_kwargs(self, request: ClassificationRequest) -> dict[str, Any]:
        return template_kwargs(
            request.listed,
            has_images=request.conversation.has_images,
            send_exclusions=self.send_template_kwargs,
            send_categories=self.send_categories,
        )

    async def _classify_chat(self, request: ClassificationRequest, start: float) -> Verdict:
        messages = chat_messages(request.conversation.turns())
        kwargs = self._chat_kwargs(request)

        def body() -> dict[str, Any]:
            return chat_payload(
                self.model,
                messages,
                top_logprobs=self.top_logprobs if self.logprobs else None,
                logprobs_style=self.logprobs_style,
                kwargs=kwargs,
            )

        data, url = await self._post("/chat/completions", body)
        verdict, _ = self._verdict(request, parse_chat_response(data, display_url(url)), start)
        return verdict

    # -- shared ---------------------------------------------------------------------------------

    async def _post(
        self, path: str, body: Callable[[], dict[str, Any]]
    ) -> tuple[Any, str]:
        """POST, dropping logprobs once for good if the server rejects them (Groq: HTTP 400)."""
        payload = body()
        try:
            return await self._transport.post_json(path, payload)
        except BackendHTTPError as exc:
            asked = bool(payload.get("logprobs"))
            if not (asked and exc.status_code == 400 and "logprob" in exc.body.lower()):
                raise
            if self.logprobs:
                self.logprobs = False
                logger.warning(
                    "%s rejected logprobs (HTTP 400); continuing without: scores will be None",
                    exc.url,
                )
            return await self._transport.post_json(path, body())

    def _verdict(
        self, request: ClassificationRequest, generation: Generation, start: float
    ) -> tuple[Verdict, bool]:
        """The thresholded verdict, and whether its categories still have to be decoded."""
        score = verdict_score(generation.top_logprobs)
        if score is None and self.logprobs and not self._warned_no_logprobs:
            self._warned_no_logprobs = True
            logger.warning("the endpoint returned no usable logprobs: Verdict.score is None")
        verdict = parse_verdict(
            generation.text,
            request.listed,
            score=score,
            role=request.prompt.role,
            backend=self.name,
            latency_ms=(time.perf_counter() - start) * 1000,
        )
        if score is None:
            return verdict, False
        if verdict.unsafe and score < request.threshold:
            return verdict.replace(safe=True, categories=()), False
        said_safe = verdict.safe and not verdict.ignored_categories
        if said_safe and score >= request.threshold:
            return verdict.replace(safe=False), True
        return verdict, False


def _with_forced_codes(verdict: Verdict, request: ClassificationRequest, text: str) -> Verdict:
    """Categories from the teacher-forced continuation; unreadable codes leave them empty."""
    try:
        forced = parse_verdict("unsafe\n" + text, request.listed)
    except VerdictParseError:
        return verdict
    return verdict.replace(
        safe=forced.safe,
        categories=forced.categories,
        ignored_categories=forced.ignored_categories,
    )


async def _gather(jobs: Sequence[Awaitable[T]]) -> list[T]:
    """Like `asyncio.gather`, but the first failure cancels the other jobs before it propagates."""
    if len(jobs) == 1:
        return [await jobs[0]]
    tasks = [asyncio.ensure_future(job) for job in jobs]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise

