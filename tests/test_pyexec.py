"""GuardedPythonExecutor: the guard decides first, then a resource-limited process runs (Linux)."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest

from guard_plugins import Action, Guard, Policy
from guard_plugins.conversation import Conversation, ToolCallPart
from guard_plugins.pyexec import (
    ExecutionError,
    ExecutionLimits,
    GuardedPythonExecutor,
    LocalProcessRunner,
    ProcessOutput,
)
from guard_plugins.testing import FunctionBackend

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="rlimits and process groups: Linux")

# These tests exercise the limits behind the guard, so the static code screen (which would rightly
# refuse fork loops and huge allocations on its own) is switched off; the model backend says safe.
NO_SCREEN = Policy.from_dict({"tool_call": {"screen_code": False}})


def llama_guard(conversation: Conversation) -> str:
    """Stand-in verdicts: code mentioning ``shutil.rmtree('/')`` is S14, the rest is safe."""
    return "unsafe\nS14" if "shutil.rmtree('/')" in conversation.turns()[-1].text else "safe"


def make_executor(**kwargs: Any) -> tuple[GuardedPythonExecutor, FunctionBackend]:
    backend = FunctionBackend(llama_guard)
    return GuardedPythonExecutor(Guard(backend, NO_SCREEN), **kwargs), backend


def _other_user_python() -> str | None:
    """A python an unprivileged user may execute (this venv's may live under a 0700 /root)."""
    for candidate in (sys.executable, shutil.which("python3", path="/usr/local/bin:/usr/bin")):
        if not candidate:
            continue
        path = Path(os.path.realpath(candidate))
        parents_ok = all(p.stat().st_mode & stat.S_IXOTH for p in path.parents)
        if parents_ok and path.stat().st_mode & stat.S_IXOTH:
            return str(path)
    return None


def unprivileged() -> dict[str, Any]:
    """Executor options that make per-user limits real: as root, run as ``nobody``."""
    if os.geteuid() != 0:
        return {}
    python = _other_user_python()
    if python is None:
        pytest.skip("running as root and no python is executable by 'nobody'")
    return {"run_as": "nobody", "python": python}


def _gone_or_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
    except FileNotFoundError:
        return True


# -- the guard in front ---------------------------------------------------------------------


async def test_benign_code_runs_after_the_guard_allowed_it() -> None:
    executor, backend = make_executor()
    code = "import sys\nprint('hello', 6 * 7)\nprint('oops', file=sys.stderr)"
    result = await executor.run(code)
    assert result.executed and result.ok
    assert (result.stdout, result.stderr, result.exit_code) == ("hello 42\n", "oops\n", 0)
    assert result.decision.allowed and result.decision.tool_name == "python"
    (request,) = backend.requests
    call = request.conversation.messages[-1].parts[0]
    assert isinstance(call, ToolCallPart)
    assert call.name == "python" and call.arguments == {"code": code}
    text = result.to_text()
    assert text.startswith("Exit code 0") and "--- stdout ---\nhello 42" in text


async def test_abusive_code_is_refused_and_never_starts_a_process(tmp_path: Path) -> None:
    executor, backend = make_executor()
    marker = tmp_path / "ran"
    code = f"open({str(marker)!r}, 'w').write('x')\nimport shutil\nshutil.rmtree('/')"
    result = await executor.run(code, [{"role": "user", "content": "clean up my disk"}])
    assert not result.executed and not result.ok
    assert result.exit_code is None and result.stdout == ""
    assert result.decision.action is Action.BLOCK and result.decision.codes == ("S14",)
    assert "S14" in result.stderr and result.to_text().startswith("Not executed:")
    assert len(backend.requests) == 1
    assert not marker.exists()


async def test_custom_runner_sits_behind_the_guard() -> None:
    calls: list[tuple[str, Path, dict[str, str], ExecutionLimits]] = []

    def sandbox(
        code: str, workdir: Path, env: Mapping[str, str], limits: ExecutionLimits
    ) -> ProcessOutput:
        assert workdir.is_dir()
        calls.append((code, workdir, dict(env), limits))
        return ProcessOutput("y" * 5000, "", 0, duration_s=0.5)

    backend = FunctionBackend(llama_guard)
    executor = GuardedPythonExecutor(Guard(backend), runner=sandbox, max_output_chars=1000)
    refused = await executor.run("import shutil\nshutil.rmtree('/')")
    assert not refused.executed and calls == []
    result = await executor.run("print('y' * 5000)")
    assert result.executed and len(calls) == 1
    code, workdir, env, limits = calls[0]
    assert code == "print('y' * 5000)" and env["HOME"] == str(workdir)
    assert limits.max_output_chars == 1000
    assert "truncated" in result.stdout and len(result.stdout) < 1200
    assert not workdir.exists()


# -- the limits behind it -------------------------------------------------------------------


async def test_timeout_kills_the_process_group() -> None:
    executor, _ = make_executor(timeout=1.0)
    code = (
        "import subprocess\n"
        "child = subprocess.Popen(['sleep', '60'])\n"
        "print(child.pid, flush=True)\n"
        "while True:\n    pass\n"
    )
    start = time.perf_counter()
    result = await executor.run(code)
    assert time.perf_counter() - start < 4.0
    assert result.executed and result.timed_out and not result.ok
    assert result.exit_code == -9
    assert result.to_text().startswith("Timed out after 1.")
    assert _gone_or_zombie(int(result.stdout.split()[0]))


async def test_memory_limit_stops_a_huge_allocation() -> None:
    executor, _ = make_executor(memory_mb=256)
    small = await executor.run("x = bytearray(50 * 1024 * 1024)\nprint(len(x))")
    assert small.ok and small.stdout == f"{50 * 1024 * 1024}\n"
    huge = await executor.run("x = bytearray(2 * 1024 ** 3)\nprint('allocated')")
    assert huge.exit_code == 1 and "MemoryError" in huge.stderr
    assert "allocated" not in huge.stdout


async def test_output_is_capped_while_read_incrementally() -> None:
    executor, _ = make_executor(max_output_chars=1000)
    code = "import sys\nprint('START')\nfor _ in range(80):\n    sys.stdout.write('x' * 65536)\nprint('\\nEND')"
    result = await executor.run(code)
    assert result.ok
    assert len(result.stdout) < 1100
    assert result.stdout.startswith("START\n") and result.stdout.endswith("END\n")
    assert f"[... {80 * 65536 + 11 - 1000} bytes truncated ...]" in result.stdout


async def test_file_size_limit() -> None:
    executor, _ = make_executor(max_file_mb=1)
    code = "open('big', 'wb').write(b'x' * 2 * 1024 * 1024)"
    result = await executor.run(code)
    assert result.exit_code == 1 and "File too large" in result.stderr


async def test_environment_carries_no_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GUARD_SECRET_TEST", "s3cret-value")
    executor, _ = make_executor(env={"EXTRA": "passed on purpose"})
    result = await executor.run("import os, json\nprint(json.dumps(dict(os.environ)))")
    import json

    env = json.loads(result.stdout)
    assert "GUARD_SECRET_TEST" not in env and "s3cret-value" not in result.stdout
    assert set(env) <= {"PATH", "LANG", "HOME", "TMPDIR", "PYTHONIOENCODING", "EXTRA", "LC_CTYPE"}
    assert env["EXTRA"] == "passed on purpose" and env["HOME"] == env["TMPDIR"]


async def test_run_as_hides_the_parent_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    if os.geteuid() != 0:
        pytest.skip("run_as needs root")
    monkeypatch.setenv("GUARD_SECRET_TEST", "s3cret-value")
    executor, _ = make_executor(**unprivileged())
    code = "import os\ntry:\n    print(open(f'/proc/{os.getppid()}/environ').read())\nexcept OSError as e:\n    print(type(e).__name__, os.getuid())"
    result = await executor.run(code)
    assert result.stdout.startswith("PermissionError") and "s3cret" not in result.stdout


async def test_fork_limit() -> None:
    executor, _ = make_executor(max_processes=8, timeout=10.0, **unprivileged())
    code = (
        "import os, time\n"
        "pids = []\n"
        "try:\n"
        "    for _ in range(100):\n"
        "        pid = os.fork()\n"
        "        if pid == 0:\n"
        "            time.sleep(60)\n"
        "            os._exit(0)\n"
        "        pids.append(pid)\n"
        "except OSError as exc:\n"
        "    print('refused', type(exc).__name__)\n"
        "print(*pids)\n"
    )
    start = time.perf_counter()
    result = await executor.run(code)
    assert time.perf_counter() - start < 5.0  # sleeping children do not hold the run open
    first, second = result.stdout.splitlines()
    assert first == "refused BlockingIOError"
    pids = [int(p) for p in second.split()]
    assert len(pids) < 8
    assert all(_gone_or_zombie(pid) for pid in pids)  # the process group was killed


async def test_temporary_directory_is_removed_and_workdir_kept(tmp_path: Path) -> None:
    executor, _ = make_executor()
    code = "import os\nos.makedirs('sub')\nopen('sub/f', 'w').write('x')\nos.chmod('sub', 0o500)\nprint(os.getcwd())"
    result = await executor.run(code)
    used = Path(result.stdout.strip())
    assert used.name.startswith("guard-pyexec-") and not used.exists()

    keep = tmp_path / "work"
    executor, _ = make_executor(workdir=keep)
    result = await executor.run("open('out.txt', 'w').write('kept')\nimport os\nprint(os.getcwd())")
    assert Path(result.stdout.strip()) == keep.resolve()
    assert (keep / "out.txt").read_text() == "kept"


async def test_a_wrapper_command_runs_the_interpreter_inside_it() -> None:
    env_cmd = shutil.which("env", path="/usr/bin:/bin")
    if env_cmd is None:
        pytest.skip("no env(1)")
    runner = LocalProcessRunner(sys.executable, wrapper=[env_cmd, "WRAPPED=yes"])
    executor = GuardedPythonExecutor(Guard(FunctionBackend(llama_guard), NO_SCREEN), runner=runner)
    result = await executor.run(
        "import os, resource\nprint(os.environ['WRAPPED'], resource.getrlimit(resource.RLIMIT_CPU))"
    )
    assert result.stdout == "yes (10, 11)\n"


# -- framework-free tool functions ----------------------------------------------------------


def test_as_function_is_a_plain_documented_tool() -> None:
    executor, _ = make_executor(timeout=5)
    python = executor.as_function()
    assert python.__name__ == "python"
    assert python.__doc__ is not None and "5 s wall clock" in python.__doc__
    assert "Args:\n    code:" in python.__doc__
    assert "42" in python("print(6 * 7)")
    assert python("import shutil\nshutil.rmtree('/')").startswith("Not executed:")


async def test_async_function_and_errors() -> None:
    executor, _ = make_executor()
    python = executor.as_async_function()
    assert "Exit code 1" in await python("raise SystemExit(1)")
    broken, _ = make_executor(python="/nonexistent/python3")
    with pytest.raises(ExecutionError, match="cannot start"):
        await broken.run("print(1)")
    with pytest.raises(ValueError, match="timeout"):
        make_executor(timeout=0)
