"""Run the async core from synchronous code without `asyncio.run` in library code.

Synchronous entry points submit their coroutine to one long-lived event loop on a daemon thread
(a "portal"). Calling a sync entry point from inside a running event loop on the same thread would
deadlock, so it raises instead and points at the async twin.
"""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

__all__ = ["on_portal_thread", "portal_loop", "run_sync"]

T = TypeVar("T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None


def portal_loop() -> asyncio.AbstractEventLoop:
    """The shared background loop sync calls run on (started on first use)."""
    global _loop, _thread
    loop, thread = _loop, _thread
    if loop is not None and thread is not None and not loop.is_closed() and thread.is_alive():
        return loop  # the common case, without taking the lock
    with _lock:
        if _loop is None or _loop.is_closed() or _thread is None or not _thread.is_alive():
            loop = asyncio.new_event_loop()
            thread = threading.Thread(
                target=_serve, args=(loop,), name="guard-plugins-sync", daemon=True
            )
            thread.start()
            _loop, _thread = loop, thread
        return _loop


def on_portal_thread() -> bool:
    """True when called from code the portal loop is running (a sync call there must not block)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return running is _loop


def _serve(loop: asyncio.AbstractEventLoop) -> None:
    asyncio.set_event_loop(loop)
    loop.run_forever()


def run_sync(coro: Coroutine[Any, Any, T], *, api: str = "the async method") -> T:
    """Run `coro` to completion from synchronous code and return its result."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    loop = portal_loop()
    if running is loop:
        coro.close()
        raise RuntimeError(f"sync call made on the guard's own loop; await {api} instead")
    if running is not None:
        # Blocking a running loop's thread is allowed but stalls it; the async twin is better.
        pass
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    return future.result()


@atexit.register
def _shutdown() -> None:
    loop = _loop
    if loop is not None and not loop.is_closed():
        loop.call_soon_threadsafe(loop.stop)
