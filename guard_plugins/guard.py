"""The Guard: the one object adapters hold.

It turns a hook and a conversation into a `Decision`: fits the conversation to the backend's
budget, asks the backend (through the verdict cache and the micro-batcher), adds the static code
screen and Prompt Guard where configured, applies the policy, asks an approver when the policy
says so, and emits an audit event. Async core; the sync methods run the same coroutine on the
background loop, except that when nothing would wait (an inline backend or verdict-cache hits, an
idle micro-batcher, no Prompt Guard) they run the same steps in the caller's thread.

>>> from guard_plugins.testing import FunctionBackend
>>> guard = Guard(FunctionBackend(lambda c: "unsafe\\nS14" if "rm -rf /" in c.turns()[-1].text
...                               else "safe"))
>>> guard.check_tool_call("bash", {"command": "rm -rf /"}).action
<Action.BLOCK: 'block'>
>>> guard.check_tool_call("bash", {"command": "ls"}).allowed
True
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
from collections.abc import Awaitable, Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from guard_plugins._await import within_deadline
from guard_plugins._sync import on_portal_thread, run_sync
from guard_plugins.audit import AuditSink, build_event, emit, otel_span, wanted
from guard_plugins.backends.base import Backend, ClassificationRequest
from guard_plugins.batching import MicroBatcher, VerdictCache, request_key
from guard_plugins.categories import Category, CategoryLike
from guard_plugins.conversation import (
    Conversation,
    ConversationLike,
    Message,
    ToolCallPart,
    Turn,
)
from guard_plugins.decision import Decision, PromptGuardResult, ScreenFinding, new_decision
from guard_plugins.errors import ConfigError
from guard_plugins.fitting import fit_conversation
from guard_plugins.policy import Action, Hook, HookPolicy, Policy
from guard_plugins.prompt import build_prompt_from_turns
from guard_plugins.verdict import Verdict

if TYPE_CHECKING:
    from guard_plugins.backends.prompt_guard import PromptGuardBackend

__all__ = ["ApprovalRequest", "Approver", "Guard"]

logger = logging.getLogger("guard_plugins.guard")


@dataclass(frozen=True)
class ApprovalRequest:
    """What an approver is asked about: the provisional decision and the content's context."""

    decision: Decision
    conversation: Conversation
    tool_name: str | None = None
    arguments: Mapping[str, Any] | str | None = None


Approver = Callable[[ApprovalRequest], bool | Awaitable[bool]]

_PROMPT_GUARD_HOOKS = (Hook.USER_INPUT, Hook.TOOL_RESULT)


class _HookRules:
    """What one hook's checks read from the policy, looked up once per policy."""

    def __init__(self, policy: Policy, hook: Hook) -> None:
        self.policy = policy
        self.hook = hook
        self.hp = policy.for_hook(hook)
        self.screen = hook is Hook.TOOL_CALL and self.hp.screen_code

    @property
    def threshold(self) -> float:
        # Read per check: `thresholds` is a dict inside the frozen policy and can still change.
        return self.hp.request_threshold

    @cached_property
    def categories(self) -> tuple[CategoryLike, ...]:
        # Lazy, and only kept when it succeeds: a ConfigError surfaces on every check.
        return self.policy.categories_for(self.hook)


class Guard:
    """Checks content at four hooks and returns Decisions.

    `backend` classifies; `policy` (default: `Policy()`) decides; `approver` answers
    ``require_approval`` actions (no approver: denied); `sinks` receive audit events;
    `prompt_guard` (a `PromptGuardBackend`) adds a jailbreak / injection classifier at
    ``user_input`` and ``tool_result``. `cache_size=0` disables the verdict cache;
    `max_batch_size=1` disables micro-batching.
    """

    def __init__(
        self,
        backend: Backend,
        policy: Policy | None = None,
        *,
        approver: Approver | None = None,
        sinks: Sequence[AuditSink] = (),
        prompt_guard: PromptGuardBackend | None = None,
        cache_size: int = 4096,
        max_batch_size: int = 16,
        batch_window_s: float = 0.0,
    ) -> None:
        if not isinstance(backend, Backend):
            raise ConfigError(
                f"backend must be a guard_plugins Backend, got {type(backend).__name__}"
            )
        self.backend = backend
        self.policy = policy if policy is not None else Policy()
        if not isinstance(self.policy, Policy):
            raise ConfigError(f"policy must be a Policy, got {type(self.policy).__name__}")
        self.approver = approver
        self.sinks: list[AuditSink] = list(sinks)
        self.prompt_guard = prompt_guard
        self.cache = VerdictCache(cache_size)
        self.batcher = MicroBatcher(backend, max_batch_size=max_batch_size, window_s=batch_window_s)
        self._rules: tuple[Policy, dict[Hook, _HookRules]] = (self.policy, {})

    def __repr__(self) -> str:
        mode = " monitor" if self.policy.monitor else ""
        return f"<Guard backend={self.backend.name!r}{mode}>"

    @classmethod
    def from_env(cls, policy: Policy | None = None, **kwargs: Any) -> Guard:
        """Build from environment variables (``GUARD_PLUGINS_ENDPOINT`` or ``GUARD_PLUGINS_MODEL``;
        ``GUARD_PLUGINS_POLICY`` for a policy file). See docs/configuration.md."""
        from guard_plugins.config import backend_from_env

        if policy is None and os.environ.get("GUARD_PLUGINS_POLICY"):
            policy = Policy.from_file(os.environ["GUARD_PLUGINS_POLICY"])
        return cls(backend_from_env(), policy, **kwargs)

    def add_sink(self, sink: AuditSink) -> None:
        self.sinks.append(sink)

    # -- public async API -------------------------------------------------------------------

    async def acheck_input(self, conversation: ConversationLike) -> Decision:
        """Check the last user turn (in the context of the conversation so far)."""
        return await self.acheck(Hook.USER_INPUT, conversation)

    async def acheck_output(self, conversation: ConversationLike) -> Decision:
        """Check the last assistant turn."""
        return await self.acheck(Hook.ASSISTANT_OUTPUT, conversation)

    async def acheck_tool_call(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | str,
        conversation: ConversationLike | None = None,
        *,
        language: str | None = None,
    ) -> Decision:
        """Check a tool call before it runs: `arguments` a dict, or a string of code."""
        call = _tool_call(tool_name, arguments, language)
        conv = _then(conversation, Message("assistant", (call,)))
        return await self._check(
            Hook.TOOL_CALL, conv, tool_name=tool_name, call=call, arguments=arguments
        )

    async def acheck_tool_result(
        self, tool_name: str, result: Any, conversation: ConversationLike | None = None
    ) -> Decision:
        """Check what a tool returned before the model sees it."""
        text = result if isinstance(result, str) else _stringify(result)
        conv = _then(conversation, Message.tool(text, name=tool_name))
        return await self._check(Hook.TOOL_RESULT, conv, tool_name=tool_name)

    async def acheck(self, hook: Hook | str, conversation: ConversationLike) -> Decision:
        """Check the last turn of `conversation` at `hook`."""
        return await self._check(_hook(hook), Conversation.of(conversation))

    async def acheck_many(
        self, hook: Hook | str, conversations: Sequence[ConversationLike]
    ) -> list[Decision]:
        """Check several conversations at one hook; they reach the backend as one batch."""
        with self.batcher.gathering():
            return list(await asyncio.gather(*(self.acheck(hook, c) for c in conversations)))

    # -- sync twins -------------------------------------------------------------------------

    def check_input(self, conversation: ConversationLike) -> Decision:
        return self._check_sync(Hook.USER_INPUT, Conversation.of(conversation), "acheck_input()")

    def check_output(self, conversation: ConversationLike) -> Decision:
        return self._check_sync(
            Hook.ASSISTANT_OUTPUT, Conversation.of(conversation), "acheck_output()"
        )

    def check_tool_call(
        self,
        tool_name: str,
        arguments: Mapping[str, Any] | str,
        conversation: ConversationLike | None = None,
        *,
        language: str | None = None,
    ) -> Decision:
        call = _tool_call(tool_name, arguments, language)
        conv = _then(conversation, Message("assistant", (call,)))
        return self._check_sync(
            Hook.TOOL_CALL,
            conv,
            "acheck_tool_call()",
            tool_name=tool_name,
            call=call,
            arguments=arguments,
        )

    def check_tool_result(
        self, tool_name: str, result: Any, conversation: ConversationLike | None = None
    ) -> Decision:
        text = result if isinstance(result, str) else _stringify(result)
        conv = _then(conversation, Message.tool(text, name=tool_name))
        return self._check_sync(Hook.TOOL_RESULT, conv, "acheck_tool_result()", tool_name=tool_name)

    def check(self, hook: Hook | str, conversation: ConversationLike) -> Decision:
        return self._check_sync(_hook(hook), Conversation.of(conversation), "acheck()")

    def check_many(
        self, hook: Hook | str, conversations: Sequence[ConversationLike]
    ) -> list[Decision]:
        return run_sync(self.acheck_many(hook, conversations), api="acheck_many()")

    async def aclose(self) -> None:
        await self.backend.aclose()
        if self.prompt_guard is not None:
            await self.prompt_guard.aclose()

    def close(self) -> None:
        run_sync(self.aclose(), api="aclose()")

    # -- the pipeline -----------------------------------------------------------------------
    #
    # One sequence of steps, written twice only where it waits: `_check` awaits the backend (and
    # Prompt Guard, the approver); `_check_sync` runs in the caller's thread and hands exactly
    # those waits to the background loop, or skips them when the batcher can classify inline.
    # Everything else (fitting, rendering, the screen, policy, fail modes, audit) is shared.

    def _rules_for(self, hook: Hook) -> _HookRules:
        policy, rules = self._rules
        if policy is not self.policy:  # the policy was replaced: look everything up again
            policy, rules = self._rules = (self.policy, {})
        found = rules.get(hook)
        if found is None:
            found = rules[hook] = _HookRules(policy, hook)
        return found

    async def _check(
        self,
        hook: Hook,
        conversation: Conversation,
        *,
        tool_name: str | None = None,
        call: ToolCallPart | None = None,
        arguments: Mapping[str, Any] | str | None = None,
    ) -> Decision:
        start = time.perf_counter()
        rules = self._rules_for(hook)
        turns = conversation.turns()  # validates: raises on nothing to assess
        with otel_span(hook, self.backend.name) as record:
            if not rules.hp.enabled:
                decision = Decision(hook, Action.ALLOW, "hook_disabled", tool_name=tool_name)
            else:
                decision = await self._decide(rules, conversation, turns, tool_name, call)
                if decision.action is Action.REQUIRE_APPROVAL and decision.enforced:
                    decision = await self._ask_approval(decision, conversation, arguments)
            _stamp_latency(decision, start)
            record(decision)
        self._audit(decision, turns[-1].text)
        return decision

    def _check_sync(
        self,
        hook: Hook,
        conversation: Conversation,
        api: str,
        *,
        tool_name: str | None = None,
        call: ToolCallPart | None = None,
        arguments: Mapping[str, Any] | str | None = None,
    ) -> Decision:
        if self.batcher.classifying_inline_here():
            # Called from inside this guard's own inline classification: on the loop this is
            # the sync-call-on-its-own-loop error, and waiting here would never end.
            raise RuntimeError(f"sync call made on the guard's own loop; await {api} instead")
        # No running loop at all (the usual sync caller): not on the portal's, asked without
        # get_running_loop's exception.
        on_portal = asyncio._get_running_loop() is not None and on_portal_thread()
        if on_portal or (self.prompt_guard is not None and hook in _PROMPT_GUARD_HOOKS):
            # On the loop itself run_sync refuses (await the async twin); Prompt Guard runs
            # concurrently with the backend, which needs the loop.
            coro = self._check(
                hook, conversation, tool_name=tool_name, call=call, arguments=arguments
            )
            return run_sync(coro, api=api)
        start = time.perf_counter()
        rules = self._rules_for(hook)
        turns = conversation.turns()
        with otel_span(hook, self.backend.name) as record:
            if not rules.hp.enabled:
                decision = Decision(hook, Action.ALLOW, "hook_disabled", tool_name=tool_name)
            else:
                decision = self._decide_sync(rules, conversation, turns, tool_name, call, api)
                if decision.action is Action.REQUIRE_APPROVAL and decision.enforced:
                    decision = run_sync(
                        self._ask_approval(decision, conversation, arguments), api=api
                    )
            _stamp_latency(decision, start)
            record(decision)
        self._audit(decision, turns[-1].text)
        return decision

    def _prepare(
        self,
        rules: _HookRules,
        conversation: Conversation,
        turns: tuple[Turn, ...],
        tool_name: str | None,
        call: ToolCallPart | None,
    ) -> tuple[list[ClassificationRequest], dict[str, Any]]:
        """Fit and render the requests; screen the code; the fields every outcome shares."""
        categories = rules.categories
        fitted = fit_conversation(
            conversation,
            categories,
            budget=self.policy.max_prompt_tokens or self.backend.max_prompt_tokens,
            count_tokens=self.backend.count_tokens,
            max_context_turns=self.policy.max_context_turns,
            turns=turns,
        )
        requests = []
        for conv in fitted.conversations:
            request = ClassificationRequest(conv, categories, threshold=rules.threshold)
            if len(fitted.conversations) == 1 and fitted.prompt is not None:
                request._seed_prompt(fitted.prompt)  # fitting rendered it already
            elif conv is conversation:
                request._seed_prompt(build_prompt_from_turns(conv, turns, categories))
            requests.append(request)
        neutralized = any(r.prompt.neutralized for r in requests)
        findings = _screen(call) if (rules.screen and call) else ()
        common: dict[str, Any] = {
            "tool_name": tool_name,
            "findings": findings,
            "enforced": not self.policy.monitor,
            "windows": len(requests),
            "trimmed_turns": fitted.trimmed_messages,
            "neutralized": neutralized,
        }
        return requests, common

    async def _decide(
        self,
        rules: _HookRules,
        conversation: Conversation,
        turns: tuple[Turn, ...],
        tool_name: str | None,
        call: ToolCallPart | None,
    ) -> Decision:
        hook, hp = rules.hook, rules.hp
        requests, common = self._prepare(rules, conversation, turns, tool_name, call)
        pg_task: asyncio.Future[PromptGuardResult] | None = None
        pg_start = time.perf_counter()
        if self.prompt_guard is not None and hook in _PROMPT_GUARD_HOOKS:
            pg_task = asyncio.ensure_future(
                self.prompt_guard.score_detail(turns[-1].text, hp.prompt_guard_threshold)
            )
        try:
            verdicts, cached = await self._classify_all(requests, hp.timeout)
        except asyncio.TimeoutError:
            if pg_task is not None:
                pg_task.cancel()
            return self._failed(hook, hp, TimeoutError(f"timed out after {hp.timeout}s"), common)
        except AssertionError:
            raise  # a test double's broken script, not a backend failure
        except Exception as exc:
            # Any backend failure (HTTP, garbage output, torch out-of-memory, a bug) is decided
            # by the hook's fail mode: closed never lets content through.
            if pg_task is not None:
                pg_task.cancel()
            return self._failed(hook, hp, exc, common)
        prompt_guard = None
        if pg_task is not None:
            # The hook's timeout bounds Prompt Guard as well, counted from when both started.
            elapsed = time.perf_counter() - pg_start
            left = None if hp.timeout is None else max(0.0, hp.timeout - elapsed)
            try:
                prompt_guard = await asyncio.wait_for(pg_task, left)
            except asyncio.TimeoutError:
                return self._failed(
                    hook, hp, TimeoutError(f"timed out after {hp.timeout}s"), common
                )
            except Exception as exc:
                return self._failed(hook, hp, exc, common)
        return _apply_policy(hook, hp, verdicts, prompt_guard, cached=cached, **common)

    def _decide_sync(
        self,
        rules: _HookRules,
        conversation: Conversation,
        turns: tuple[Turn, ...],
        tool_name: str | None,
        call: ToolCallPart | None,
        api: str,
    ) -> Decision:
        """`_decide` without Prompt Guard (`_check_sync` leaves that to the loop)."""
        hook, hp = rules.hook, rules.hp
        requests, common = self._prepare(rules, conversation, turns, tool_name, call)
        try:
            verdicts, cached = self._classify_all_sync(requests, hp.timeout, api)
        except asyncio.TimeoutError:
            return self._failed(hook, hp, TimeoutError(f"timed out after {hp.timeout}s"), common)
        except AssertionError:
            raise
        except Exception as exc:
            return self._failed(hook, hp, exc, common)
        return _apply_policy(hook, hp, verdicts, None, cached=cached, **common)

    async def _classify_all(
        self, requests: list[ClassificationRequest], timeout: float | None, *, missed: int = 0
    ) -> tuple[list[Verdict], bool]:
        """Verdicts through the cache and the batcher, within `timeout`. The first `missed`
        requests were already looked up in the cache (by `_classify_all_sync`) and missed."""
        first_key: Hashable | None = None
        if len(requests) == 1 and not missed and self.backend.can_classify_inline():
            # The common lone check with a backend that answers at once: straight to it when
            # the batcher is idle, as `submit` would, without the layers around a wait.
            request = requests[0]
            first_key = request_key(request)
            hit = self.cache.get(first_key)
            if hit is not None:
                return [hit], True
            verdict = await self.batcher.classify_now(request, timeout)
            if verdict is not None:
                self.cache.put(first_key, verdict)
                return [verdict], False
            missed = 1

        async def one(
            request: ClassificationRequest, lookup: bool, key: Hashable | None = None
        ) -> tuple[Verdict, bool]:
            if key is None:
                key = request_key(request)
            hit = self.cache.get(key) if lookup else None
            if hit is not None:
                return hit, True
            verdict = await self.batcher.submit(request)
            self.cache.put(key, verdict)
            return verdict, False

        async def all_() -> list[tuple[Verdict, bool]]:
            if len(requests) == 1:
                return [await one(requests[0], missed < 1, first_key)]
            return list(
                await asyncio.gather(*(one(r, i >= missed) for i, r in enumerate(requests)))
            )

        deadline = None if timeout is None else asyncio.get_running_loop().time() + timeout
        results = await within_deadline(all_(), deadline)
        return [v for v, _ in results], all(c for _, c in results)

    def _classify_all_sync(
        self, requests: list[ClassificationRequest], timeout: float | None, api: str
    ) -> tuple[list[Verdict], bool]:
        """`_classify_all` from a sync caller: cache hits and inline classifications here, in
        order (as the async path does them when nothing waits); from the first request that
        needs to wait, the rest on the background loop, with the timeout."""
        verdicts: list[Verdict] = []
        cached = True
        for i, request in enumerate(requests):
            key = request_key(request)
            hit = self.cache.get(key)
            if hit is not None:
                verdicts.append(hit)
                continue
            cached = False
            verdict = self.batcher.classify_inline(request)
            if verdict is None:
                rest, _ = run_sync(self._classify_all(requests[i:], timeout, missed=1), api=api)
                return verdicts + rest, False
            self.cache.put(key, verdict)
            verdicts.append(verdict)
        return verdicts, cached

    def _failed(
        self, hook: Hook, hp: HookPolicy, exc: BaseException, common: dict[str, Any]
    ) -> Decision:
        kind = type(exc).__name__
        logger.warning("guard check at %s failed (%s); failing %s", hook.value, kind, hp.fail_mode)
        if hp.fail_mode == "open":
            return Decision(
                hook,
                Action.WARN,
                f"fail_open:{kind}",
                failed=True,
                fail_mode="open",
                error=f"{kind}: {exc}",
                **common,
            )
        action = (
            Action.BLOCK if hp.action is Action.BLOCK or hook is Hook.TOOL_CALL else Action.REFUSE
        )
        return Decision(
            hook,
            action,
            f"fail_closed:{kind}",
            failed=True,
            fail_mode="closed",
            error=f"{kind}: {exc}",
            refusal=hp.refusal_for(hook, ()),
            **common,
        )

    async def _ask_approval(
        self,
        decision: Decision,
        conversation: Conversation,
        arguments: Mapping[str, Any] | str | None,
    ) -> Decision:
        if self.approver is None:
            return decision.replace(approved=False, rule=decision.rule + ";approval:no_approver")
        request = ApprovalRequest(decision, conversation, decision.tool_name, arguments)
        approver = self.approver

        async def ask() -> bool:
            answer = approver(request)
            if inspect.isawaitable(answer):
                answer = await answer
            return answer is True

        try:
            approved = await asyncio.wait_for(ask(), timeout=self.policy.approval_timeout)
            outcome = "approved" if approved else "denied"
        except asyncio.TimeoutError:
            approved, outcome = False, "timeout"
        except Exception as exc:
            logger.warning("approver raised %s; denying", type(exc).__name__)
            approved, outcome = False, "error"
        return decision.replace(approved=approved, rule=f"{decision.rule};approval:{outcome}")

    def _audit(self, decision: Decision, content: str) -> None:
        if not wanted(decision, self.sinks):
            return
        event = build_event(decision, content, include_content=self.policy.log_content)
        emit(event, self.sinks)


def _apply_policy(
    hook: Hook,
    hp: HookPolicy,
    verdicts: list[Verdict],
    prompt_guard: PromptGuardResult | None,
    **common: Any,
) -> Decision:
    """Verdicts (one per window; the worst wins) + screen findings + Prompt Guard → Decision."""
    if (
        len(verdicts) == 1
        and verdicts[0].safe
        and not common.get("findings")
        and (prompt_guard is None or not prompt_guard.flagged)
    ):  # the common outcome, without collecting rules that cannot fire
        return new_decision(
            hook, Action.ALLOW, "safe", verdict=verdicts[0], prompt_guard=prompt_guard, **common
        )
    flagged: dict[str, Any] = {}
    worst: Verdict = verdicts[0]
    unexplained = False
    for verdict in verdicts:
        if verdict.safe:
            continue
        if worst.safe or (verdict.score or 1.0) > (worst.score or 1.0):
            worst = verdict
        if not verdict.categories and (verdict.score is None or verdict.score >= hp.threshold):
            unexplained = True
        for category in verdict.categories:
            if verdict.score is None or verdict.score >= hp.threshold_for(category):
                flagged[category.code] = category
    rules: list[tuple[Action, str]] = []
    for code, category in flagged.items():
        rules.append((hp.action_for(category), f"category:{code}"))
    if unexplained:
        rules.append((hp.action, "unsafe:unspecified"))
    findings: tuple[ScreenFinding, ...] = common.get("findings", ())
    blocking = [f for f in findings if _screen_flags(f, hp.screen_blocks)]
    if blocking:
        flagged.setdefault("S14", Category.S14)
        rules.append((hp.action_for("S14"), f"screen:{blocking[0].rule_id}"))
    if prompt_guard is not None and prompt_guard.flagged:
        rules.append((hp.prompt_guard_action, "prompt_guard"))
    if not rules:
        rule = "safe" if all(v.safe for v in verdicts) else "below_threshold"
        return new_decision(
            hook, Action.ALLOW, rule, verdict=worst, prompt_guard=prompt_guard, **common
        )
    action, rule = max(rules, key=lambda r: r[0].severity)
    return new_decision(
        hook,
        action,
        rule,
        verdict=worst,
        categories=tuple(flagged.values()),
        prompt_guard=prompt_guard,
        refusal=hp.refusal_for(hook, tuple(flagged.values()))
        if action is not Action.ALLOW
        else None,
        **common,
    )


def _hook(hook: Hook | str) -> Hook:
    # Hook(member) is an enum lookup through EnumMeta.__call__: adapters pass members.
    return hook if type(hook) is Hook else Hook(hook)


def _stamp_latency(decision: Decision, start: float) -> None:
    # The decision was just built by this check and nobody else holds it yet: setting the field
    # in place saves a dataclasses.replace copy of ~20 fields on every check.
    object.__setattr__(decision, "latency_ms", (time.perf_counter() - start) * 1000)


def _screen_flags(finding: ScreenFinding, mode: str) -> bool:
    if mode == "never":
        return False
    return mode == "any" or finding.high_confidence


def _screen(call: ToolCallPart) -> tuple[ScreenFinding, ...]:
    try:
        from guard_plugins import codescreen
    except ImportError:  # pragma: no cover - shipped with the package
        return ()
    if not hasattr(codescreen, "scan_tool_call"):  # pragma: no cover - partial install
        return ()
    arguments: Mapping[str, Any] | str = call.arguments
    if call.code is not None and isinstance(arguments, str):
        arguments = {"code": call.code}
    found = codescreen.scan_tool_call(call.name, arguments)
    return tuple(
        ScreenFinding(
            f.rule_id,
            str(getattr(f.severity, "value", f.severity)),
            f.line,
            f.reason,
            _is_high_confidence(f),
        )
        for f in found
    )


def _is_high_confidence(finding: Any) -> bool:
    confidence = getattr(finding, "confidence", "high")
    return str(getattr(confidence, "value", confidence)).lower() == "high"


def _tool_call(
    tool_name: str, arguments: Mapping[str, Any] | str, language: str | None
) -> ToolCallPart:
    if isinstance(arguments, str):
        return ToolCallPart(tool_name, arguments, code=arguments, language=language)
    if isinstance(arguments, Mapping):
        return ToolCallPart(tool_name, dict(arguments), language=language)
    raise ConfigError(
        f"tool arguments must be a mapping or a code string, got {type(arguments).__name__}"
    )


def _then(conversation: ConversationLike | None, message: Message) -> Conversation:
    """`conversation` (none: empty) followed by `message`."""
    if conversation is None or (type(conversation) in (list, tuple) and not conversation):
        return Conversation((message,))
    return Conversation.of(conversation).append(message)


def _stringify(result: Any) -> str:
    import json

    if result is None:
        return ""
    if isinstance(result, (bytes, bytearray)):
        return bytes(result).decode("utf-8", "replace")
    try:
        return json.dumps(result, ensure_ascii=False, default=str)
    except (TypeError, ValueError):
        return str(result)
