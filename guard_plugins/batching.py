"""Verdict cache and micro-batching between the Guard and its backend.

- `VerdictCache`: bounded LRU keyed on (prompt text, image hashes, threshold); thread-safe.
  The prompt text includes the category list, so different policies never share verdicts.
- `MicroBatcher`: concurrent checks on one event loop are sent to the backend together. While a
  batch runs, new requests queue and form the next batch, so a lone caller pays no waiting time
  and a busy backend sees full batches. Identical in-flight requests share one classification.
  If a batch fails, its requests are retried one by one so each caller gets its own outcome. A
  caller cancelled while waiting is dropped without disturbing the others.
- `MicroBatcher.classify_inline` is the idle direct call made from a sync caller's own thread,
  for backends that answer without waiting (`Backend.can_classify_inline`): it claims the
  background loop's batcher state exactly as a direct call on that loop does, so callers arriving
  there meanwhile queue up and are drained afterwards.
- `MicroBatcher.classify_now` is the same idle direct call for an async caller on its own loop:
  the backend's coroutine is stepped in place (no timeout scope, no extra coroutine layers), and
  only if it does wait after all does the rest run under the hook's timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Iterator, Sequence
from dataclasses import dataclass, field

from guard_plugins._await import drive, within_deadline
from guard_plugins._sync import portal_loop
from guard_plugins.backends.base import Backend, ClassificationRequest
from guard_plugins.verdict import Verdict

__all__ = ["MicroBatcher", "VerdictCache", "request_key"]


def request_key(request: ClassificationRequest) -> Hashable:
    images = request.conversation.images
    hashes = tuple(img.sha256 for img in images) if images else ()
    return (request.prompt.text, hashes, request.threshold)


class VerdictCache:
    """A bounded, thread-safe LRU of verdicts."""

    def __init__(self, maxsize: int = 4096) -> None:
        self.maxsize = maxsize
        self._data: OrderedDict[Hashable, Verdict] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Verdict | None:
        with self._lock:
            verdict = self._data.get(key)
            if verdict is None:
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return verdict

    def put(self, key: Hashable, verdict: Verdict) -> None:
        if self.maxsize <= 0:
            return
        with self._lock:
            self._data[key] = verdict
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


@dataclass
class _LoopState:
    pending: OrderedDict[Hashable, tuple[ClassificationRequest, list[asyncio.Future[Verdict]]]] = (
        field(default_factory=OrderedDict)
    )
    draining: bool = False
    task: asyncio.Task[None] | None = None
    gathering: int = 0


class MicroBatcher:
    """Groups concurrent classifications into backend batches (see module docstring)."""

    def __init__(self, backend: Backend, *, max_batch_size: int = 16, window_s: float = 0.0):
        if max_batch_size < 1:
            raise ValueError("max_batch_size must be >= 1")
        self.backend = backend
        self.max_batch_size = max_batch_size
        self.window_s = window_s
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        # The loop last asked about and its state: almost every call is on the same loop (the
        # portal's, for sync callers). A weak reference, as in `_states`.
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], _LoopState] | None = None
        # Guards the idle check-and-claim against a sync caller's inline call in another thread.
        self._claim = threading.Lock()
        self._inline_thread: int | None = None
        self.batches: int = 0
        self.requests: int = 0

    def _state(self, loop: asyncio.AbstractEventLoop) -> _LoopState:
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        with self._lock:
            state = self._states.get(loop)
            if state is None:
                state = self._states[loop] = _LoopState()
        self._last = (weakref.ref(loop), state)
        return state

    async def submit(self, request: ClassificationRequest) -> Verdict:
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        with self._claim:
            direct = not state.draining and not state.pending and not state.gathering
            if direct:
                state.draining = True
            else:
                future: asyncio.Future[Verdict] = loop.create_future()
                key = request_key(request)
                if key in state.pending:
                    state.pending[key][1].append(future)
                else:
                    state.pending[key] = (request, [future])
                if not state.draining:
                    state.draining = True
                    state.task = loop.create_task(self._drain(state))
        if direct:
            return await self._direct(request, state, loop)
        return await future

    def classify_inline(self, request: ClassificationRequest) -> Verdict | None:
        """Classify in this thread when the backend can and the background loop's batcher is
        idle; None otherwise (then submit on that loop). For sync callers off that loop."""
        if not self.backend.can_classify_inline():
            return None
        loop = portal_loop()
        state = self._state(loop)
        with self._claim:
            if state.draining or state.pending or state.gathering:
                return None
            state.draining = True
            self._inline_thread = threading.get_ident()
        self.batches += 1
        self.requests += 1
        try:
            verdicts = self.backend.classify_batch_inline([request])
        finally:
            with self._claim:
                self._inline_thread = None
                if state.pending:  # callers queued on the loop meanwhile: drain them there
                    loop.call_soon_threadsafe(self._start_drain, state, loop)
                else:
                    state.draining = False
        return self._single(verdicts)

    async def classify_now(
        self, request: ClassificationRequest, timeout: float | None
    ) -> Verdict | None:
        """`submit`'s direct call for a backend that can classify inline, from a caller on its
        own loop: None when this loop's batcher is busy (then `submit`). The backend's coroutine
        is stepped here; if it suspends after all, the rest runs within `timeout`, counted from
        the start (a coroutine that never suspends cannot be timed out by the loop anyway)."""
        loop = asyncio.get_running_loop()
        state = self._state(loop)
        with self._claim:
            if state.draining or state.pending or state.gathering:
                return None
            state.draining = True
        deadline = None if timeout is None else loop.time() + timeout
        self.batches += 1
        self.requests += 1
        try:
            coro = self.backend.classify_batch([request])
            try:
                first = coro.send(None)
            except StopIteration as done:
                verdicts = done.value
            else:
                verdicts = await within_deadline(drive(coro, started=first), deadline)
        finally:
            self._release(state, loop)
        return self._single(verdicts)

    def _single(self, verdicts: Sequence[Verdict]) -> Verdict:
        if len(verdicts) != 1:
            raise RuntimeError(
                f"backend {self.backend.name} returned {len(verdicts)} verdicts for 1"
            )
        return verdicts[0]

    def classifying_inline_here(self) -> bool:
        """True inside an inline classification made by this thread (a re-entrant sync check
        from the backend itself, which on the loop would be refused rather than deadlock)."""
        return self._inline_thread == threading.get_ident()

    def _start_drain(self, state: _LoopState, loop: asyncio.AbstractEventLoop) -> None:
        state.task = loop.create_task(self._drain(state))

    @contextlib.contextmanager
    def gathering(self) -> Iterator[None]:
        """Requests submitted while this is open queue up (no direct call when idle), so a
        `Guard.acheck_many` reaches the backend as one batch."""
        state = self._state(asyncio.get_running_loop())
        state.gathering += 1
        try:
            yield
        finally:
            state.gathering -= 1

    async def _direct(
        self, request: ClassificationRequest, state: _LoopState, loop: asyncio.AbstractEventLoop
    ) -> Verdict:
        # An idle backend serves a lone caller at once; callers arriving meanwhile queue up and
        # are drained as batches when this call returns. `submit` has set state.draining.
        self.batches += 1
        self.requests += 1
        try:
            verdicts = await self.backend.classify_batch([request])
        finally:
            self._release(state, loop)
        return self._single(verdicts)

    def _release(self, state: _LoopState, loop: asyncio.AbstractEventLoop) -> None:
        """End a direct call: drain the callers that queued meanwhile, or go idle."""
        with self._claim:
            if state.pending:
                state.task = loop.create_task(self._drain(state))
            else:
                state.draining = False

    async def _drain(self, state: _LoopState) -> None:
        try:
            # Yield once (or wait the window) so callers gathered together share a batch.
            await asyncio.sleep(self.window_s)
            while state.pending:
                batch: list[tuple[ClassificationRequest, list[asyncio.Future[Verdict]]]] = []
                while state.pending and len(batch) < self.max_batch_size:
                    _, (request, futures) = state.pending.popitem(last=False)
                    live = [f for f in futures if not f.done()]
                    if live:
                        batch.append((request, live))
                if batch:
                    await self._run(batch)
        finally:
            with self._claim:
                state.draining = False
                if state.pending:  # arrived after the loop ended: start another drain
                    state.draining = True
                    state.task = asyncio.get_running_loop().create_task(self._drain(state))

    async def _run(
        self, batch: list[tuple[ClassificationRequest, list[asyncio.Future[Verdict]]]]
    ) -> None:
        self.batches += 1
        self.requests += len(batch)
        try:
            verdicts = await self.backend.classify_batch([request for request, _ in batch])
            if len(verdicts) != len(batch):
                raise RuntimeError(
                    f"backend {self.backend.name} returned {len(verdicts)} verdicts for "
                    f"{len(batch)} requests"
                )
        except Exception as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            for request, futures in batch:  # isolate the failure: one by one
                try:
                    (verdict,) = await self.backend.classify_batch([request])
                except Exception as single_exc:
                    _fail(futures, single_exc)
                else:
                    _resolve(futures, verdict)
            return
        except asyncio.CancelledError:
            for _, futures in batch:
                for f in futures:
                    if not f.done():
                        f.cancel()
            raise
        for (_, futures), verdict in zip(batch, verdicts, strict=True):
            _resolve(futures, verdict)


def _resolve(futures: list[asyncio.Future[Verdict]], verdict: Verdict) -> None:
    for f in futures:
        if not f.done():
            f.set_result(verdict)


def _fail(futures: list[asyncio.Future[Verdict]], exc: BaseException) -> None:
    for f in futures:
        if not f.done():
            f.set_exception(exc)
