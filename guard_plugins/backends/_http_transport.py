"""HTTP transport of `OpenAICompatibleBackend`: pooling, retries, failover, coalescing.

One `HTTPTransport` per backend. It POSTs JSON and returns JSON; it knows nothing about Llama Guard.

- **One httpx client per event loop.** An `httpx.AsyncClient` belongs to the loop it first ran on;
  the sync wrappers run on the portal loop and users run on their own, so clients (with their
  connection limit and in-flight table) are kept per loop, weakly, and `aclose()` closes them all.
- **Concurrency** is bounded per loop by a semaphore of `max_connections` (requests queue there, not
  in httpx's pool, so queueing never counts against the timeout).
- **Coalescing**: identical concurrent POSTs (same path and body) share one HTTP call.
- **Retries** (connect errors, dropped connections, 429, 5xx) with exponential backoff and jitter,
  honouring ``Retry-After`` (capped), all inside an overall deadline. A timed-out attempt is not
  repeated on the same replica (it would only double the wait) but fails over to another one.
- **Replicas**: round-robin start, failover to the next on a retryable failure, a failed replica is
  skipped for `cooldown` seconds. Every replica failing raises `BackendUnavailable`.

Errors (all `BackendError`)::

    BackendUnavailable   connect error / dropped connection after retries; every replica failed
    BackendTimeout       an attempt exceeded `timeout` (and no other replica was left)
    BackendHTTPError     error status (non-retryable, or retries exhausted): status, body, URL
    BackendError         2xx reply that is not JSON

Messages carry the status, a body excerpt and the URL without credentials or query; never headers.
"""

from __future__ import annotations

import asyncio
import email.utils
import itertools
import json
import logging
import random
import threading
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from guard_plugins.backends._endpoint_config import display_url
from guard_plugins.errors import BackendError, BackendHTTPError, BackendTimeout, BackendUnavailable

__all__ = ["HTTPTransport", "TransportStats"]

logger = logging.getLogger("guard_plugins.backends.openai_compatible")
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_EXCERPT = 500


@dataclass
class TransportStats:
    """Counters for tests and benchmarks."""

    calls: int = 0
    """Logical POSTs requested by the backend (before coalescing)."""
    http_requests: int = 0
    """HTTP attempts actually sent (after coalescing, including retries)."""
    coalesced: int = 0
    retries: int = 0
    failovers: int = 0


@dataclass
class _LoopState:
    client: httpx.AsyncClient
    semaphore: asyncio.Semaphore
    inflight: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    waiters: dict[str, int] = field(default_factory=dict)


class _Failure(Exception):
    """An attempt failed; `error` is what to raise if nothing else works."""

    def __init__(self, error: BackendError, *, retryable: bool, retry_after: float | None = None):
        super().__init__(str(error))
        self.error = error
        self.retryable = retryable
        self.retry_after = retry_after


class HTTPTransport:
    """POST JSON to one of several replicas (see the module docstring)."""

    def __init__(
        self,
        base_urls: Sequence[str],
        *,
        headers: Mapping[str, str],
        timeout: float,
        max_retries: int,
        max_connections: int,
        backoff: float = 0.25,
        backoff_max: float = 5.0,
        retry_after_cap: float = 30.0,
        cooldown: float = 5.0,
        deadline: float | None = None,
        coalesce: bool = True,
    ) -> None:
        self.base_urls = tuple(base_urls)
        self._targets = [_target(u) for u in self.base_urls]
        self._headers = dict(headers)
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_connections = max_connections
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.retry_after_cap = retry_after_cap
        self.cooldown = cooldown
        self.deadline = deadline if deadline is not None else timeout * (max_retries + 1) + 1.0
        self.coalesce = coalesce
        self.stats = TransportStats()
        self._down_until = [0.0] * len(self.base_urls)
        self._round_robin = itertools.count()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self.closed = False

    # -- per-loop clients -----------------------------------------------------------------------

    def _state(self) -> _LoopState:
        if self.closed:
            raise BackendError("the backend is closed")
        loop = asyncio.get_running_loop()
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                limits = httpx.Limits(
                    max_connections=self.max_connections,
                    max_keepalive_connections=self.max_connections,
                )
                client = httpx.AsyncClient(
                    headers=self._headers,
                    limits=limits,
                    timeout=httpx.Timeout(self.timeout, pool=None),
                    follow_redirects=False,
                )
                state = _LoopState(client, asyncio.Semaphore(self.max_connections))
                self._states[loop] = state
            return state

    async def aclose(self) -> None:
        """Close every loop's client: this loop's directly, running loops' via their thread."""
        self.closed = True
        with self._lock:
            states = list(self._states.items())
            self._states.clear()
        current = asyncio.get_running_loop()
        for loop, state in states:
            if loop is current:
                await state.client.aclose()
            elif loop.is_running() and not loop.is_closed():
                future = asyncio.run_coroutine_threadsafe(state.client.aclose(), loop)
                try:
                    await asyncio.wait_for(asyncio.wrap_future(future), 5.0)
                except (asyncio.TimeoutError, RuntimeError):
                    # That loop's thread is blocked (e.g. on us): its sockets close with it.
                    future.cancel()
            # A stopped or closed loop cannot run the close; its sockets go with the loop.

    # -- requests -------------------------------------------------------------------------------

    async def post_json(self, path: str, body: Mapping[str, Any]) -> tuple[Any, str]:
        """POST `body` to ``{replica}{path}``; return (decoded JSON, URL that answered)."""
        state = self._state()
        self.stats.calls += 1
        if not self.coalesce:
            return await self._post_with_retries(state, path, body)
        key = path + "\0" + json.dumps(body, sort_keys=True, separators=(",", ":"))
        return await self._coalesced(state, key, lambda: self._post_with_retries(state, path, body))

    async def _coalesced(
        self, state: _LoopState, key: str, start: Callable[[], Awaitable[tuple[Any, str]]]
    ) -> tuple[Any, str]:
        future = state.inflight.get(key)
        if future is None:
            future = asyncio.ensure_future(start())
            state.inflight[key] = future
            future.add_done_callback(lambda _: state.inflight.pop(key, None))
        else:
            self.stats.coalesced += 1
        state.waiters[key] = state.waiters.get(key, 0) + 1
        try:
            result: tuple[Any, str] = await asyncio.shield(future)
            return result
        finally:
            left = state.waiters[key] - 1
            if left:
                state.waiters[key] = left
            else:
                del state.waiters[key]
                if not future.done():  # every waiter gave up (cancelled): stop the request
                    future.cancel()

    def _plan(self) -> list[int]:
        count = len(self.base_urls)
        start = next(self._round_robin) % count
        order = [(start + i) % count for i in range(count)]
        now = time.monotonic()
        healthy = [i for i in order if self._down_until[i] <= now]
        cooling = sorted((i for i in order if self._down_until[i] > now),
                         key=lambda i: self._down_until[i])
        return healthy + cooling

    async def _post_with_retries(
        self, state: _LoopState, path: str, body: Mapping[str, Any]
    ) -> tuple[Any, str]:
        deadline = time.monotonic() + self.deadline
        plan = self._plan()
        replicas = len(plan)
        budget = self.max_retries + replicas
        timed_out: set[int] = set()
        failed: set[int] = set()
        retry_at: dict[int, float] = {}
        last: _Failure | None = None
        attempt = 0
        position = 0
        while attempt < budget:
            eligible = [i for i in plan if i not in timed_out]
            if not eligible:
                break
            replica = eligible[position % len(eligible)]
            if replica in failed:  # back on a replica that already failed: wait first
                delay = self._delay(attempt, retry_at.get(replica))
                if time.monotonic() + delay >= deadline:
                    break
                self.stats.retries += 1
                await asyncio.sleep(delay)
            elif last is not None:
                self.stats.failovers += 1
                logger.warning("failing over from a replica after: %s", last.error)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            root, query, auth = self._targets[replica]
            url = root + path + (f"?{query}" if query else "")
            try:
                result = await self._attempt(
                    state, url, body, min(self.timeout, remaining), auth
                )
            except _Failure as failure:
                if not failure.retryable:
                    raise failure.error from failure.error.__cause__
                last = failure
                failed.add(replica)
                if isinstance(failure.error, BackendTimeout):
                    timed_out.add(replica)
                now = time.monotonic()
                if failure.retry_after is not None:
                    retry_at[replica] = now + failure.retry_after
                self._down_until[replica] = now + max(self.cooldown, failure.retry_after or 0.0)
                logger.debug("attempt %d failed: %s", attempt + 1, failure.error)
                attempt += 1
                position += 1
                continue
            self._down_until[replica] = 0.0
            return result, url
        if last is None:
            raise BackendTimeout(f"no time left to contact {display_url(self.base_urls[plan[0]])}")
        if replicas > 1 and len(failed) == replicas:
            raise BackendUnavailable(
                f"all {replicas} replicas failed ({attempt} attempts); last error: {last.error}"
            ) from last.error
        raise last.error from last.error.__cause__

    def _delay(self, attempt: int, retry_at: float | None) -> float:
        """Wait before going back to a replica: its ``Retry-After`` (capped), else backoff."""
        if retry_at is not None:
            return min(max(0.0, retry_at - time.monotonic()), self.retry_after_cap)
        rounds = attempt // max(1, len(self.base_urls))
        base = min(self.backoff_max, self.backoff * 2.0 ** max(0, rounds - 1))
        return base * random.uniform(0.5, 1.5)

    async def _attempt(
        self,
        state: _LoopState,
        url: str,
        body: Mapping[str, Any],
        timeout: float,
        auth: httpx.BasicAuth | None,
    ) -> Any:
        where = display_url(url)
        async with state.semaphore:
            self.stats.http_requests += 1
            try:
                response = await asyncio.wait_for(
                    state.client.post(
                        url,
                        json=body,
                        auth=auth if auth is not None else httpx.USE_CLIENT_DEFAULT,
                        timeout=httpx.Timeout(timeout, pool=None),
                    ),
                    timeout,
                )
            except (asyncio.TimeoutError, httpx.TimeoutException) as exc:
                error: BackendError = BackendTimeout(
                    f"no answer from {where} within {timeout:.3g} s"
                )
                error.__cause__ = exc
                raise _Failure(error, retryable=True) from exc
            except (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError,
                    httpx.WriteError, httpx.CloseError) as exc:
                error = BackendUnavailable(f"cannot reach {where}: {type(exc).__name__}: {exc}")
                error.__cause__ = exc
                raise _Failure(error, retryable=True) from exc
            except httpx.HTTPError as exc:
                error = BackendUnavailable(f"request to {where} failed: {type(exc).__name__}")
                error.__cause__ = exc
                raise _Failure(error, retryable=False) from exc
        if response.status_code >= 400:
            status = response.status_code
            http_error = BackendHTTPError(status, response.text[:_EXCERPT], where)
            raise _Failure(
                http_error,
                retryable=status in _RETRYABLE_STATUS,
                retry_after=_retry_after(response.headers.get("retry-after")),
            )
        try:
            return response.json()
        except ValueError as exc:
            error = BackendError(
                f"malformed JSON from {where} (HTTP {response.status_code}): "
                f"{response.text[:_EXCERPT]!r}"
            )
            error.__cause__ = exc
            raise _Failure(error, retryable=False) from exc


def _target(base_url: str) -> tuple[str, str, httpx.BasicAuth | None]:
    """(root URL without credentials or query, query, basic auth from the URL's user info).

    Credentials leave the URL because httpx logs request URLs verbatim.
    """
    parts = urlsplit(base_url)
    auth = None
    if parts.username is not None or parts.password is not None:
        auth = httpx.BasicAuth(unquote(parts.username or ""), unquote(parts.password or ""))
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), parts.query, auth


def _retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP date), else None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, float(when.timestamp()) - time.time())
