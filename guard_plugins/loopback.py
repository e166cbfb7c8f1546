"""A small OpenAI-compatible HTTP server on 127.0.0.1, for tests and examples.

`LoopbackServer` speaks ``/v1/completions``, ``/v1/chat/completions``, ``/v1/models`` and
``/health`` over real HTTP/1.1 with keep-alive, on an ephemeral port, from its own thread and event
loop. Answers come from an *engine* (see `guard_plugins._loopback_engines`)::

    engine(prompt: str, images: list[ImagePart], max_tokens: int, top_logprobs: int)
        -> (text, top_logprobs_per_position)   # or an object with .text and .top_logprobs

Completions requests pass the raw prompt; chat requests are rendered here with `build_prompt`
(honouring ``chat_template_kwargs``), as vLLM's chat template would. `RuleEngine` answers from a
function of the last turn; `backend_engine` generates greedily with an in-process backend;
`VerdictEngine` emulates grammar-constrained decoding with one. Faults are scripted per test with
`LoopbackServer.inject` (`Fault`).

>>> from guard_plugins.backends import OpenAICompatibleBackend
>>> with LoopbackServer(RuleEngine.keywords({"attack": "S1"})) as server:
...     with OpenAICompatibleBackend(server.base_url, server.model) as backend:
...         backend.classify_sync("plan an attack").codes
('S1',)
"""

from __future__ import annotations

import asyncio
import inspect
import json
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Union

from guard_plugins._loopback_engines import (
    RuleEngine,
    TopLogprobs,
    VerdictEngine,
    backend_engine,
    last_turn_text,
    listed_codes,
    request_from_prompt,
    synthetic_output,
)
from guard_plugins.conversation import Conversation
from guard_plugins.errors import GuardError
from guard_plugins.images import ImagePart
from guard_plugins.prompt import build_prompt

__all__ = [
    "Engine",
    "Fault",
    "LoopbackServer",
    "RecordedRequest",
    "RuleEngine",
    "VerdictEngine",
    "backend_engine",
    "last_turn_text",
    "listed_codes",
    "request_from_prompt",
    "synthetic_output",
]

EngineOutput = Union[tuple[str, TopLogprobs], Any]
Engine = Callable[[str, list[ImagePart], int, int], Union[EngineOutput, Awaitable[EngineOutput]]]


# -- faults ---------------------------------------------------------------------------------------

FaultKind = Literal["delay", "status", "drop", "malformed_json", "missing_logprobs", "text"]


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour, consumed by the next generation request (FIFO)."""

    kind: FaultKind
    seconds: float = 0.0
    status: int = 500
    body: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    text: str = ""
    p_unsafe: float | None = None

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        """Answer normally, but only after `seconds`."""
        return cls("delay", seconds=seconds)

    @classmethod
    def error(cls, status: int = 500, body: str = "", retry_after: str | None = None) -> Fault:
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return cls("status", status=status, body=body or f"scripted error {status}",
                   headers=headers)

    @classmethod
    def drop(cls) -> Fault:
        """Read the request, then close the connection without answering."""
        return cls("drop")

    @classmethod
    def malformed_json(cls) -> Fault:
        return cls("malformed_json")

    @classmethod
    def missing_logprobs(cls) -> Fault:
        return cls("missing_logprobs")

    @classmethod
    def answer(cls, text: str, p_unsafe: float | None = None) -> Fault:
        """Answer `text` instead of the engine (logprobs synthesised when `p_unsafe` is given)."""
        return cls("text", text=text, p_unsafe=p_unsafe)


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    body: Any
    authorization: str | None = field(repr=False)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


# -- the server -----------------------------------------------------------------------------------


class LoopbackServer:
    """An OpenAI-compatible server on 127.0.0.1 (see the module docstring).

    `hits` counts generation requests, `prompts` the prompts given to the engine, `requests` the
    decoded bodies; `open_connections` / `connections` the TCP connections (now / ever).
    """

    def __init__(
        self,
        engine: Engine | None = None,
        *,
        model: str = "llama-guard-4-dev",
        api_key: str | None = None,
        reject_logprobs: bool = False,
        honour_template_kwargs: bool = True,
    ) -> None:
        self.engine: Engine = engine or RuleEngine.keywords({"attack": "S1"})
        self.model = model
        self.api_key = api_key
        self.reject_logprobs = reject_logprobs
        self.honour_template_kwargs = honour_template_kwargs
        self.faults: deque[Fault] = deque()
        self.hits = 0
        self.prompts: list[str] = []
        self.requests: list[RecordedRequest] = []
        self.open_connections = 0
        self.connections = 0
        self.port = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def inject(self, *faults: Fault) -> None:
        self.faults.extend(faults)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no TCP connection is open; True if that happened within `timeout`."""
        end = time.monotonic() + timeout
        while self.open_connections and time.monotonic() < end:
            time.sleep(0.01)
        return self.open_connections == 0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> LoopbackServer:
        loop = asyncio.new_event_loop()
        started = threading.Event()
        self._loop = loop
        self._thread = threading.Thread(
            target=self._run, args=(loop, started), name="loopback-openai", daemon=True
        )
        self._thread.start()
        if not started.wait(10) or not self.port:
            raise RuntimeError("the loopback server did not start")
        return self

    def _run(self, loop: asyncio.AbstractEventLoop, started: threading.Event) -> None:
        asyncio.set_event_loop(loop)
        try:
            self._server = loop.run_until_complete(
                asyncio.start_server(self._connection, "127.0.0.1", 0)
            )
            self.port = self._server.sockets[0].getsockname()[1]
        finally:
            started.set()
        loop.run_forever()
        loop.run_until_complete(self._shutdown())
        loop.close()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(10)

    def __enter__(self) -> LoopbackServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- HTTP/1.1 -------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        self._writers.add(writer)
        self.open_connections += 1
        self.connections += 1
        try:
            while True:
                request_line = await reader.readline()
                if not request_line.strip():
                    break
                method, target, _ = request_line.decode("latin-1").split(" ", 2)
                headers: dict[str, str] = {}
                while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0") or 0)
                body = await reader.readexactly(length) if length else b""
                reply = await self._respond(method, target.split("?")[0], headers, body)
                if reply is None:  # scripted drop
                    break
                status, payload, extra = reply
                writer.write(_encode(status, payload, extra))
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        except asyncio.CancelledError:
            pass  # shutdown; ending normally keeps asyncio.streams from logging the cancellation
        finally:
            self.open_connections -= 1
            self._writers.discard(writer)
            writer.close()
            if task is not None:
                self._tasks.discard(task)

    async def _respond(
        self, method: str, path: str, headers: Mapping[str, str], raw: bytes
    ) -> tuple[int, bytes, Sequence[tuple[str, str]]] | None:
        if method == "GET" and path == "/health":
            return 200, b"", ()
        if method == "GET" and path == "/v1/models":
            models = {"object": "list", "data": [{"id": self.model, "object": "model"}]}
            return 200, _json(models), ()
        if path not in ("/v1/completions", "/v1/chat/completions"):
            return 404, _error(404, f"no route {method} {path}"), ()
        if method != "POST":
            return 405, _error(405, "use POST"), ()
        self.hits += 1
        auth = headers.get("authorization")
        fault = self.faults.popleft() if self.faults else None
        if fault is not None and fault.kind == "delay":
            await asyncio.sleep(fault.seconds)
        if fault is not None and fault.kind == "drop":
            return None
        if fault is not None and fault.kind == "status":
            return fault.status, fault.body.encode(), fault.headers
        if fault is not None and fault.kind == "malformed_json":
            return 200, b'{"choices": [{"text": "safe"', ()
        try:
            body = json.loads(raw)
            self.requests.append(RecordedRequest(path, body, auth))
            if self.api_key is not None and auth != f"Bearer {self.api_key}":
                raise _HTTPError(401, "invalid or missing API key")
            if not isinstance(body, dict) or body.get("model") != self.model:
                raise _HTTPError(404, "the model does not exist")
            if self.reject_logprobs and body.get("logprobs"):
                raise _HTTPError(400, "'logprobs' is not supported with this model")
            if path == "/v1/completions":
                answer = await self._completions(body, fault)
            else:
                answer = await self._chat(body, fault)
        except _HTTPError as exc:
            return exc.status, _error(exc.status, exc.message), ()
        except (ValueError, GuardError) as exc:
            return 400, _error(400, f"{type(exc).__name__}: {exc}"), ()
        return 200, _json(answer), ()

    # -- OpenAI endpoints -----------------------------------------------------------------------

    async def _generate(
        self, prompt: str, images: list[ImagePart], body: Mapping[str, Any], top: int,
        fault: Fault | None,
    ) -> tuple[str, TopLogprobs | None]:
        max_tokens = int(body.get("max_tokens") or 16)
        self.prompts.append(prompt)
        result: Any = self.engine(prompt, images, max_tokens, top)
        if inspect.isawaitable(result):
            result = await result
        text, tops = (result.text, result.top_logprobs) if hasattr(result, "text") else result
        if fault is not None and fault.kind == "text":
            text, tops = fault.text, None
            if fault.p_unsafe is not None:
                tops = synthetic_output(text, fault.p_unsafe, top)[1]
        if fault is not None and fault.kind == "missing_logprobs":
            tops = None
        return text, (tops if top else None)

    async def _completions(self, body: Mapping[str, Any], fault: Fault | None) -> dict[str, Any]:
        prompts = body.get("prompt")
        prompts = [prompts] if isinstance(prompts, str) else prompts
        if not isinstance(prompts, list) or not all(isinstance(p, str) for p in prompts):
            raise _HTTPError(400, "'prompt' must be a string or a list of strings")
        top = int(body.get("logprobs") or 0)
        choices = []
        for index, prompt in enumerate(prompts):
            text, tops = await self._generate(prompt, [], body, top, fault)
            choice: dict[str, Any] = {"index": index, "text": text, "finish_reason": "stop"}
            if tops is not None:
                choice["logprobs"] = {
                    "tokens": [_argmax(p) for p in tops],
                    "token_logprobs": [dict(p)[_argmax(p)] for p in tops],
                    "top_logprobs": [dict(p) for p in tops],
                    "text_offset": list(range(len(tops))),
                }
            elif fault is None or fault.kind != "missing_logprobs":
                choice["logprobs"] = None
            choices.append(choice)
        return {"id": f"cmpl-{self.hits}", "object": "text_completion", "created": int(time.time()),
                "model": self.model, "choices": choices}

    async def _chat(self, body: Mapping[str, Any], fault: Fault | None) -> dict[str, Any]:
        conversation = Conversation.from_openai(body.get("messages") or [])
        kwargs = body.get("chat_template_kwargs") or {}
        if not self.honour_template_kwargs:
            kwargs = {}
        prompt = build_prompt(
            conversation, kwargs.get("categories"), kwargs.get("excluded_category_keys") or ()
        )
        logprobs = body.get("logprobs")
        top = int(body.get("top_logprobs") or 0) if logprobs is True else int(logprobs or 0)
        text, tops = await self._generate(
            prompt.text, list(conversation.images), body, top, fault
        )
        choice: dict[str, Any] = {
            "index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"
        }
        if tops is not None:
            choice["logprobs"] = {"content": [
                {"token": _argmax(p), "logprob": dict(p)[_argmax(p)],
                 "top_logprobs": [{"token": t, "logprob": lp} for t, lp in p]}
                for p in tops
            ]}
        elif fault is None or fault.kind != "missing_logprobs":
            choice["logprobs"] = None
        return {"id": f"chatcmpl-{self.hits}", "object": "chat.completion",
                "created": int(time.time()), "model": self.model, "choices": [choice]}


def _argmax(position: Sequence[tuple[str, float]]) -> str:
    return max(position, key=lambda t: t[1])[0]


def _json(data: Any) -> bytes:
    return json.dumps(data).encode()


def _error(status: int, message: str) -> bytes:
    return _json({"object": "error", "message": message, "type": "BadRequestError", "code": status})


_REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
            405: "Method Not Allowed", 429: "Too Many Requests", 500: "Internal Server Error",
            502: "Bad Gateway", 503: "Service Unavailable"}


def _encode(status: int, payload: bytes, extra: Sequence[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}",
             "Content-Type: application/json", f"Content-Length: {len(payload)}"]
    lines += [f"{k}: {v}" for k, v in extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload
