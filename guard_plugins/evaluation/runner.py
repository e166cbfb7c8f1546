"""Running a Guard over a dataset: bounded concurrency, a progress bar, resumable results.

Each example is checked with ``Guard.acheck`` (``acheck_tool_call`` at ``tool_call``); at most
`concurrency` checks are in flight, so the Guard's micro-batcher sends full batches to the
backend. Every result is appended to ``OUT/results.jsonl`` as soon as it completes. On a rerun,
examples with a successful result are skipped; examples whose last result is an error are tried
again (unless ``retry_errors=False``). A failed check never stops the run: its error is recorded.

The prediction is the model's verdict: ``flagged = decision.verdict.unsafe`` (the backend applies
the hook's threshold to the score when it observes probabilities). The policy's action is
recorded beside it and counted separately in the report, since it also depends on per-category
actions, the code screen and Prompt Guard.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO

from guard_plugins.conversation import Conversation, Message
from guard_plugins.decision import Decision
from guard_plugins.errors import ConfigError
from guard_plugins.evaluation.loaders import Dataset, EvalExample
from guard_plugins.guard import Guard
from guard_plugins.policy import Hook

__all__ = [
    "RESULTS_FILE",
    "RUN_FILE",
    "EvalRecord",
    "RunResult",
    "read_results",
    "run_eval",
]

logger = logging.getLogger("guard_plugins.evaluation")

RESULTS_FILE = "results.jsonl"
RUN_FILE = "run.json"
LOCK_FILE = ".lock"
_ERROR_LIMIT = 300


@dataclass(frozen=True)
class EvalRecord:
    """One line of ``results.jsonl``: the guard's answer for one example (never its text)."""

    id: str
    label: bool
    flagged: bool | None
    score: float | None = None
    categories: tuple[str, ...] = ()
    action: str | None = None
    rule: str | None = None
    latency_ms: float = 0.0
    error: str | None = None

    def to_json(self) -> str:
        data = asdict(self)
        data["categories"] = list(self.categories)
        data["latency_ms"] = round(self.latency_ms, 3)
        return json.dumps(data, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalRecord:
        return cls(
            id=str(data["id"]),
            label=bool(data["label"]),
            flagged=None if data.get("flagged") is None else bool(data["flagged"]),
            score=None if data.get("score") is None else float(data["score"]),
            categories=tuple(data.get("categories") or ()),
            action=data.get("action"),
            rule=data.get("rule"),
            latency_ms=float(data.get("latency_ms") or 0.0),
            error=data.get("error"),
        )


def read_results(path: Path) -> tuple[dict[str, EvalRecord], int]:
    """Records by id (the last line for an id wins) and the number of unreadable lines (a run
    killed mid-write can leave a partial last line)."""
    records: dict[str, EvalRecord] = {}
    bad = 0
    if not path.exists():
        return records, bad
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            try:
                record = EvalRecord.from_dict(json.loads(line))
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            records[record.id] = record
    return records, bad


@dataclass(frozen=True)
class RunResult:
    """Records of the selected examples in dataset order, and how many were computed now."""

    records: tuple[EvalRecord, ...]
    checked: int
    reused: int
    unreadable_lines: int
    wall_s: float


def _conversation(example: EvalExample, hook: Hook) -> Conversation:
    context = (Message.user(example.prompt),) if example.prompt else ()
    if hook is Hook.USER_INPUT:
        return Conversation((*context, Message.user(example.text)))
    if hook is Hook.ASSISTANT_OUTPUT:
        return Conversation((*context, Message.assistant(example.text)))
    return Conversation(context)


async def _decide(guard: Guard, hook: Hook, example: EvalExample, tool_name: str) -> Decision:
    if hook is Hook.TOOL_CALL:
        return await guard.acheck_tool_call(tool_name, example.text, _conversation(example, hook))
    if hook is Hook.TOOL_RESULT:
        return await guard.acheck_tool_result(tool_name, example.text, _conversation(example, hook))
    return await guard.acheck(hook, _conversation(example, hook))


async def check_example(
    guard: Guard, hook: Hook, example: EvalExample, tool_name: str = "python"
) -> EvalRecord:
    """Check one example; any failure becomes an error record instead of an exception."""
    start = time.perf_counter()
    try:
        decision = await _decide(guard, hook, example, tool_name)
    except Exception as exc:
        return EvalRecord(
            example.id,
            example.unsafe,
            None,
            latency_ms=(time.perf_counter() - start) * 1000,
            error=f"{type(exc).__name__}: {exc}"[:_ERROR_LIMIT],
        )
    verdict = decision.verdict
    error = None
    if decision.failed or verdict is None:
        error = (decision.error or f"no verdict (rule {decision.rule})")[:_ERROR_LIMIT]
    return EvalRecord(
        example.id,
        example.unsafe,
        None if error else bool(verdict and verdict.unsafe),
        verdict.score if verdict and not error else None,
        verdict.codes if verdict and not error else (),
        decision.action.value,
        decision.rule,
        decision.latency_ms,
        error,
    )


def _fingerprint(guard: Guard, hook: Hook, tool_name: str) -> dict[str, Any]:
    backend = guard.backend
    source = getattr(backend, "source", None) or getattr(backend, "model", None)
    return {
        "hook": hook.value,
        "tool_name": tool_name if hook in (Hook.TOOL_CALL, Hook.TOOL_RESULT) else None,
        "backend": backend.name,
        "model": source if isinstance(source, str) else None,
        "policy": guard.policy.for_hook(hook).model_dump(mode="json"),
        "categories": [c.code for c in guard.policy.categories_for(hook)],
    }


def _check_resume(out: Path, fingerprint: dict[str, Any], fresh: bool) -> None:
    run_file, results = out / RUN_FILE, out / RESULTS_FILE
    if fresh:
        results.unlink(missing_ok=True)
    elif results.exists() and run_file.exists():
        previous = json.loads(run_file.read_text(encoding="utf-8")).get("fingerprint")
        if previous != fingerprint:
            changed = sorted(k for k in fingerprint if (previous or {}).get(k) != fingerprint[k])
            raise ConfigError(
                f"{out} holds results of a different configuration ({', '.join(changed)} "
                "changed); pass fresh=True (--fresh) or choose another output directory"
            )
    run_file.write_text(json.dumps({"fingerprint": fingerprint}, indent=2), encoding="utf-8")


def _lock(handle: TextIO, out: Path) -> None:
    """One run per output directory: a second concurrent run would interleave its results."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no advisory lock
        return
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        raise ConfigError(
            f"another evaluation is writing to {out}; wait for it or use another directory"
        ) from None


class Progress(Protocol):
    def advance(self, record: EvalRecord) -> None: ...
    def close(self) -> None: ...


class _NoProgress:
    def advance(self, record: EvalRecord) -> None:
        return None

    def close(self) -> None:
        return None


class _RichProgress:
    def __init__(self, total: int, done: int, label: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

        columns = (BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
        self._bar = Progress("{task.description}", *columns, "{task.fields[errors]}")
        self._task = self._bar.add_task(label, total=total, completed=done, errors="")
        self._errors = 0
        self._bar.start()

    def advance(self, record: EvalRecord) -> None:
        self._errors += record.error is not None
        errors = f"[red]{self._errors} errors" if self._errors else ""
        self._bar.update(self._task, advance=1, errors=errors)

    def close(self) -> None:
        self._bar.stop()


class _TqdmProgress:
    def __init__(self, total: int, done: int, label: str) -> None:
        tqdm = importlib.import_module("tqdm").tqdm  # untyped; imported only when used

        self._bar = tqdm(total=total, initial=done, desc=label, unit="ex", file=sys.stderr)
        self._errors = 0

    def advance(self, record: EvalRecord) -> None:
        if record.error is not None:
            self._errors += 1
            self._bar.set_postfix(errors=self._errors)
        self._bar.update(1)

    def close(self) -> None:
        self._bar.close()


def make_progress(enabled: bool, total: int, done: int, label: str) -> Progress:
    """A rich progress bar, else tqdm, else nothing (both are optional dependencies)."""
    if enabled:
        for kind in (_RichProgress, _TqdmProgress):
            try:
                return kind(total, done, label)
            except ImportError:
                continue
    return _NoProgress()


async def run_eval(
    guard: Guard,
    dataset: Dataset,
    out_dir: str | Path,
    *,
    hook: Hook | str = Hook.USER_INPUT,
    concurrency: int = 16,
    tool_name: str = "python",
    retry_errors: bool = True,
    fresh: bool = False,
    progress: bool | Callable[[int, int], Progress] = False,
) -> RunResult:
    """Check every example not already scored in `out_dir` and return all selected records.

    `progress` is a bool (rich / tqdm bar on stderr) or a factory ``(total, done) -> Progress``.
    """
    if concurrency < 1:
        raise ConfigError("concurrency must be >= 1")
    hook = Hook(hook)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (out / LOCK_FILE).open("a") as lock:
        _lock(lock, out)
        _check_resume(out, _fingerprint(guard, hook, tool_name), fresh)
        return await _run(guard, dataset, out, hook, concurrency, tool_name, retry_errors, progress)


async def _run(
    guard: Guard,
    dataset: Dataset,
    out: Path,
    hook: Hook,
    concurrency: int,
    tool_name: str,
    retry_errors: bool,
    progress: bool | Callable[[int, int], Progress],
) -> RunResult:
    results_path = out / RESULTS_FILE
    previous, bad = read_results(results_path)
    if bad:
        logger.warning("%s: ignored %d unreadable line(s)", results_path, bad)

    def done(example: EvalExample) -> bool:
        record = previous.get(example.id)
        return record is not None and (record.error is None or not retry_errors)

    todo = [e for e in dataset if not done(e)]
    total = len(dataset)
    if callable(progress):
        bar = progress(total, total - len(todo))
    else:
        bar = make_progress(progress, total, total - len(todo), f"eval {dataset.name}")
    fresh_records: dict[str, EvalRecord] = {}
    start = time.perf_counter()
    pending: Iterator[EvalExample] = iter(todo)
    try:
        with results_path.open("a", encoding="utf-8") as sink:

            async def worker() -> None:
                for example in pending:  # one shared iterator: each example taken once
                    record = await check_example(guard, hook, example, tool_name)
                    sink.write(record.to_json() + "\n")
                    sink.flush()
                    fresh_records[record.id] = record
                    bar.advance(record)

            workers = [asyncio.ensure_future(worker()) for _ in range(min(concurrency, len(todo)))]
            try:
                await asyncio.gather(*workers)
            finally:  # on an error or cancellation stop every worker before the file closes
                for task in workers:
                    task.cancel()
                await asyncio.gather(*workers, return_exceptions=True)
    finally:
        bar.close()
    merged = {**previous, **fresh_records}
    return RunResult(
        records=tuple(merged[e.id] for e in dataset if e.id in merged),
        checked=len(fresh_records),
        reused=total - len(todo),
        unreadable_lines=bad,
        wall_s=time.perf_counter() - start,
    )
