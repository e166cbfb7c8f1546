"""A guarded Python execution tool: the Guard decides, then a resource-limited process runs.

`GuardedPythonExecutor.run(code)` asks ``guard.acheck_tool_call("python", {"code": code})``
first; code the policy does not allow (S14 Code Interpreter Abuse, a blocking screen finding, a
failed check under fail-closed) never reaches a process. Allowed code runs in a fresh process with
rlimits, an empty environment, its own temporary directory and a wall-clock timeout.

This is a guard plus resource limits, **not a security sandbox**: the process shares the host's
kernel, network and filesystem with the permissions of the user it runs as. Pass ``runner=`` to run
the code in a real sandbox instead (gVisor, Firecracker, nsjail, a container, a hosted sandbox);
the guard check stays in front of whatever runner you choose. See docs/code-agents.md.

>>> executor = GuardedPythonExecutor(guard, timeout=5)         # doctest: +SKIP
>>> print((await executor.run("print(6 * 7)")).to_text())       # doctest: +SKIP
Exit code 0 (0.03 s)
--- stdout ---
42
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

from guard_plugins._sync import run_sync
from guard_plugins.errors import ConfigError, GuardError

if TYPE_CHECKING:
    from guard_plugins.conversation import ConversationLike
    from guard_plugins.decision import Decision
    from guard_plugins.guard import Guard

__all__ = [
    "ExecutionError",
    "ExecutionLimits",
    "ExecutionResult",
    "GuardedPythonExecutor",
    "LocalProcessRunner",
    "ProcessOutput",
    "Runner",
]

logger = logging.getLogger("guard_plugins.pyexec")

_MB = 1024 * 1024
_PATH = "/usr/local/bin:/usr/bin:/bin"
_READ_CHUNK = 65536
# After the process is gone, how long to wait for pipes held open by escaped descendants.
_PIPE_GRACE_S = 1.0


class ExecutionError(GuardError):
    """The code could not be started (missing interpreter, permissions, bad runner result)."""


@dataclass(frozen=True)
class ExecutionLimits:
    """Limits for one run. Sizes in MiB; `max_output_chars` applies to stdout and stderr each."""

    timeout: float = 10.0
    cpu_seconds: int = 10
    memory_mb: int = 512
    max_file_mb: int = 16
    max_processes: int = 32
    max_open_files: int = 256
    max_output_chars: int = 20_000

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if not value > 0:
                raise ConfigError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class ProcessOutput:
    """What a runner returns: output, exit status (negative: killed by that signal), timing."""

    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    duration_s: float = 0.0


@dataclass(frozen=True)
class ExecutionResult:
    """The outcome of `GuardedPythonExecutor.run`: the guard's Decision and, if it ran, the output.

    `executed` is False when the guard refused the code; `stderr` then holds the refusal.
    """

    executed: bool
    decision: Decision
    stdout: str
    stderr: str
    exit_code: int | None
    timed_out: bool = False
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.executed and self.exit_code == 0 and not self.timed_out

    def to_text(self) -> str:
        """The result as the agent should read it."""
        if not self.executed:
            return f"Not executed: {self.stderr}"
        if self.timed_out:
            head = f"Timed out after {self.duration_s:.1f} s; the process was killed."
        elif self.exit_code is not None and self.exit_code < 0:
            head = f"Killed by {_signal_name(-self.exit_code)} after {self.duration_s:.2f} s."
        else:
            head = f"Exit code {self.exit_code} ({self.duration_s:.2f} s)"
        parts = [head]
        if self.stdout:
            parts.append("--- stdout ---\n" + self.stdout.rstrip("\n"))
        if self.stderr:
            parts.append("--- stderr ---\n" + self.stderr.rstrip("\n"))
        if not (self.stdout or self.stderr):
            parts.append("(no output)")
        return "\n".join(parts)


def _signal_name(number: int) -> str:
    try:
        name = signal.Signals(number).name
    except ValueError:
        return f"signal {number}"
    hint = {"SIGXCPU": " (CPU time limit)", "SIGXFSZ": " (file size limit)"}.get(name, "")
    return name + hint


#: ``runner(code, workdir, env, limits)``, sync or async, returning a `ProcessOutput`.
Runner = Callable[
    [str, Path, Mapping[str, str], ExecutionLimits],
    Union[ProcessOutput, Awaitable[ProcessOutput]],
]


# -- the local process runner ---------------------------------------------------------------------


class _CappedBuffer:
    """Keeps the first and last bytes of a stream up to `limit` in all; counts what it drops."""

    def __init__(self, limit: int) -> None:
        self.head_limit = limit // 2
        self.tail_limit = limit - self.head_limit
        self.head = bytearray()
        self.tail = bytearray()
        self.total = 0

    def feed(self, chunk: bytes) -> None:
        self.total += len(chunk)
        room = self.head_limit - len(self.head)
        if room > 0:
            self.head += chunk[:room]
            chunk = chunk[room:]
        if chunk:
            self.tail += chunk
            if len(self.tail) > self.tail_limit:
                del self.tail[: len(self.tail) - self.tail_limit]

    def text(self) -> str:
        dropped = self.total - len(self.head) - len(self.tail)
        if dropped == 0:
            return bytes(self.head + self.tail).decode("utf-8", "replace")
        head = bytes(self.head).decode("utf-8", "replace")
        tail = bytes(self.tail).decode("utf-8", "replace")
        return f"{head}\n[... {dropped} bytes truncated ...]\n{tail}"


def _cap_text(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    head = limit // 2
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters truncated ...]\n{text[-tail:]}"


def _rlimit_setter(limits: ExecutionLimits) -> Callable[[], None]:
    """The preexec function: lower the child's rlimits (computed here, before the fork)."""
    import resource

    plan = [
        # soft: SIGXCPU (Python dies of it); hard one second later: SIGKILL
        (resource.RLIMIT_CPU, limits.cpu_seconds, limits.cpu_seconds + 1),
        (resource.RLIMIT_AS, limits.memory_mb * _MB, limits.memory_mb * _MB),
        (resource.RLIMIT_FSIZE, limits.max_file_mb * _MB, limits.max_file_mb * _MB),
        (resource.RLIMIT_NPROC, limits.max_processes, limits.max_processes),
        (resource.RLIMIT_NOFILE, limits.max_open_files, limits.max_open_files),
        (resource.RLIMIT_CORE, 0, 0),
    ]

    def apply() -> None:
        for which, soft, hard in plan:
            current = resource.getrlimit(which)[1]
            if current != resource.RLIM_INFINITY:
                hard = min(hard, current)
                soft = min(soft, hard)
            resource.setrlimit(which, (soft, hard))

    return apply


def _resolve_user(run_as: int | str) -> tuple[int, int]:
    import pwd

    try:
        entry = pwd.getpwnam(run_as) if isinstance(run_as, str) else pwd.getpwuid(run_as)
    except KeyError:
        raise ConfigError(f"run_as: no such user {run_as!r}") from None
    return entry.pw_uid, entry.pw_gid


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


class LocalProcessRunner:
    """Runs code with ``python -I -u -`` in a new session, with rlimits and a wall-clock timeout.

    The code arrives on stdin (not argv, which other users can read in ``ps``). On timeout, on
    cancellation and after a normal exit the whole process group is killed, so background children
    do not outlive the run. `run_as` (root only) starts the process as another user. `wrapper` is
    put before the interpreter, for sandboxes that run their command as a child (``bwrap ...
    --die-with-parent --``, ``nsjail ... --``); `python` is then the path inside the sandbox.
    """

    def __init__(
        self,
        python: str = sys.executable,
        *,
        run_as: int | str | None = None,
        wrapper: Sequence[str] = (),
    ) -> None:
        if os.name != "posix":
            raise ConfigError("LocalProcessRunner needs a POSIX system; pass a sandbox runner=")
        self.python = python
        self.run_as = run_as
        self.wrapper = tuple(wrapper)
        self._ids = _resolve_user(run_as) if run_as is not None else None

    def prepare(self, workdir: Path) -> None:
        """Give the run's user its working directory."""
        if self._ids is not None:
            os.chown(workdir, *self._ids)

    async def __call__(
        self, code: str, workdir: Path, env: Mapping[str, str], limits: ExecutionLimits
    ) -> ProcessOutput:
        identity: dict[str, Any] = {}
        if self._ids is not None:
            identity = {"user": self._ids[0], "group": self._ids[1], "extra_groups": []}
        start = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.wrapper,
                self.python,
                "-I",
                "-u",
                "-X",
                "utf8",
                "-",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                cwd=workdir,
                env=dict(env),
                start_new_session=True,
                preexec_fn=_rlimit_setter(limits),
                **identity,
            )
        except OSError as exc:
            who = f" as {self.run_as!r}" if self.run_as is not None else ""
            what = " ".join((*self.wrapper, self.python))
            raise ExecutionError(f"cannot start {what}{who}: {exc}") from exc
        out, err = _CappedBuffer(limits.max_output_chars), _CappedBuffer(limits.max_output_chars)
        assert proc.stdin is not None
        assert proc.stdout is not None
        assert proc.stderr is not None
        tasks = [
            asyncio.ensure_future(_feed(proc.stdin, code.encode("utf-8"))),
            asyncio.ensure_future(_drain(proc.stdout, out)),
            asyncio.ensure_future(_drain(proc.stderr, err)),
        ]
        timed_out = True
        try:
            timed_out = not await _exited(proc, limits.timeout)
        finally:
            _kill_group(proc.pid)
            await _exited(proc, _PIPE_GRACE_S)
            _, pending = await asyncio.wait(tasks, timeout=_PIPE_GRACE_S)
            for task in pending:
                task.cancel()
        return ProcessOutput(
            out.text(), err.text(), proc.returncode, timed_out, time.perf_counter() - start
        )


async def _exited(proc: asyncio.subprocess.Process, timeout: float) -> bool:
    """Whether the process exits within `timeout` s.

    Polls `returncode` because ``proc.wait()`` also waits for the pipes to close, which background
    children holding them would delay until the timeout.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pause = 0.001
    while proc.returncode is None:
        left = deadline - loop.time()
        if left <= 0:
            return False
        await asyncio.sleep(min(pause, left))
        pause = min(pause * 2, 0.025)
    return True


async def _feed(stdin: asyncio.StreamWriter, data: bytes) -> None:
    try:
        stdin.write(data)
        await stdin.drain()
        stdin.close()
    except (BrokenPipeError, ConnectionResetError):
        pass  # the process died before reading all of its code; its exit status says why


async def _drain(stream: asyncio.StreamReader, buffer: _CappedBuffer) -> None:
    # Read to the end even past the cap: a full pipe would stall the child instead of failing it.
    while chunk := await stream.read(_READ_CHUNK):
        buffer.feed(chunk)


# -- the executor ---------------------------------------------------------------------------------


def _remove_tree(path: Path) -> None:
    def retry(func: Callable[..., Any], name: str, _: Any) -> None:
        # Code may leave read-only files or directories behind.
        os.chmod(os.path.dirname(name) or name, stat.S_IRWXU)
        os.chmod(name, stat.S_IRWXU)
        func(name)

    try:
        if sys.version_info >= (3, 12):
            shutil.rmtree(path, onexc=retry)
        else:
            shutil.rmtree(path, onerror=retry)
    except OSError as exc:
        logger.warning("could not remove the execution directory %s: %s", path, exc)


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


class GuardedPythonExecutor:
    """Runs Python code an agent wrote, after the Guard allowed it, under resource limits.

    **Not a security sandbox.** The guard stops code Llama Guard 4 (and the static screen) flag;
    the limits stop accidents (runaway loops, memory, output floods, fork storms). Neither stops a
    determined attacker: the process shares the kernel, the network and every file its user can
    read. For untrusted users, pass a sandbox as `runner` (see docs/code-agents.md).

    - `timeout` wall-clock seconds (the process group is killed); `cpu_seconds`, `memory_mb`
      (address space), `max_file_mb`, `max_processes` (per user: RLIMIT_NPROC counts every
      process of the user, and root is exempt), `max_open_files`; `max_output_chars` per stream.
    - `workdir`: a directory to run in and keep; None (default): a fresh temporary directory,
      removed afterwards. `env`: variables to add to the minimal environment (PATH, LANG, HOME and
      TMPDIR = the workdir, PYTHONIOENCODING); nothing is inherited from ``os.environ``.
    - `run_as`: a user name or uid to run the code as (needs root; strongly advised when running as
      root); `python` must be executable, and a given `workdir` writable, by that user.
    - `runner`: replaces the local process runner: ``runner(code, workdir, env, limits)``
      returning a `ProcessOutput`, sync or async.

    >>> executor = GuardedPythonExecutor(guard, timeout=5, memory_mb=256)  # doctest: +SKIP
    >>> result = executor.run_sync("print(sum(range(10)))")                  # doctest: +SKIP
    >>> result.executed, result.stdout                                       # doctest: +SKIP
    (True, '45\\n')
    """

    def __init__(
        self,
        guard: Guard,
        *,
        timeout: float = 10.0,
        cpu_seconds: int = 10,
        memory_mb: int = 512,
        max_file_mb: int = 16,
        max_processes: int = 32,
        max_open_files: int = 256,
        max_output_chars: int = 20_000,
        workdir: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        python: str = sys.executable,
        run_as: int | str | None = None,
        runner: Runner | None = None,
        tool_name: str = "python",
    ) -> None:
        self.guard = guard
        self.limits = ExecutionLimits(
            timeout=timeout,
            cpu_seconds=cpu_seconds,
            memory_mb=memory_mb,
            max_file_mb=max_file_mb,
            max_processes=max_processes,
            max_open_files=max_open_files,
            max_output_chars=max_output_chars,
        )
        self.workdir = Path(workdir) if workdir is not None else None
        self.env = dict(env or {})
        self.tool_name = tool_name
        if runner is not None and run_as is not None:
            raise ConfigError("run_as applies to the built-in process runner, not to runner=")
        self.runner: Runner = runner or LocalProcessRunner(python, run_as=run_as)
        if runner is None and run_as is None and hasattr(os, "geteuid") and os.geteuid() == 0:
            logger.warning(
                "GuardedPythonExecutor runs code as root: max_processes is not enforced for root "
                "and the code can read this process's environment; pass run_as=<unprivileged user>"
            )

    def __repr__(self) -> str:
        return f"<GuardedPythonExecutor tool={self.tool_name!r} limits={self.limits}>"

    async def run(self, code: str, conversation: ConversationLike | None = None) -> ExecutionResult:
        """Check `code` with the guard; run it only if the Decision allows it."""
        decision = await self.guard.acheck_tool_call(self.tool_name, {"code": code}, conversation)
        if not decision.allowed:
            refusal = decision.refusal or f"refused by the safety guard ({decision.rule})"
            return ExecutionResult(False, decision, "", refusal, None)
        workdir, temporary = self._workdir()
        try:
            if temporary and isinstance(self.runner, LocalProcessRunner):
                self.runner.prepare(workdir)
            output = await self._call_runner(code, workdir, self._environment(workdir))
        finally:
            if temporary:
                _remove_tree(workdir)
        cap = self.limits.max_output_chars
        return ExecutionResult(
            True,
            decision,
            # A custom runner may not cap its output; the LocalProcessRunner already did.
            _cap_text(output.stdout, cap + 64),
            _cap_text(output.stderr, cap + 64),
            output.exit_code,
            output.timed_out,
            output.duration_s,
        )

    def run_sync(self, code: str, conversation: ConversationLike | None = None) -> ExecutionResult:
        return run_sync(self.run(code, conversation), api="run()")

    def as_function(self) -> Callable[[str], str]:
        """A plain ``python(code: str) -> str`` tool for LangChain, LlamaIndex or any framework."""

        def python(code: str) -> str:
            return self.run_sync(code).to_text()

        python.__doc__ = self._tool_doc()
        return python

    def as_async_function(self) -> Callable[[str], Awaitable[str]]:
        """The async twin of `as_function`."""

        async def python(code: str) -> str:
            return (await self.run(code)).to_text()

        python.__doc__ = self._tool_doc()
        return python

    # -- internals --------------------------------------------------------------------------

    def _tool_doc(self) -> str:
        lim = self.limits
        return (
            "Run a Python program in a fresh process and return its exit status and output.\n\n"
            "Each call starts from scratch: variables, imports and files do not persist between "
            "calls, so print every result you need. Standard input is empty. Limits: "
            f"{lim.timeout:g} s wall clock, {lim.cpu_seconds} s CPU, {lim.memory_mb} MB memory; "
            f"output beyond {lim.max_output_chars} characters is truncated. A safety guard "
            "checks the code first and refuses harmful code.\n\n"
            "Args:\n    code: a complete Python program (print what you want to see).\n"
        )

    def _workdir(self) -> tuple[Path, bool]:
        if self.workdir is not None:
            self.workdir.mkdir(parents=True, exist_ok=True)
            return self.workdir.resolve(), False
        return Path(tempfile.mkdtemp(prefix="guard-pyexec-")), True

    def _environment(self, workdir: Path) -> dict[str, str]:
        env = {
            "PATH": _PATH,
            "LANG": "C.UTF-8",
            "HOME": str(workdir),
            "TMPDIR": str(workdir),
            "PYTHONIOENCODING": "utf-8",
        }
        env.update(self.env)
        return env

    async def _call_runner(self, code: str, workdir: Path, env: dict[str, str]) -> ProcessOutput:
        runner = self.runner
        if _is_async(runner):
            result: Any = runner(code, workdir, env, self.limits)
        else:
            result = await asyncio.to_thread(runner, code, workdir, env, self.limits)
        if inspect.isawaitable(result):
            result = await result
        if not isinstance(result, ProcessOutput):
            raise ExecutionError(f"the runner returned {type(result).__name__}, not ProcessOutput")
        return result
