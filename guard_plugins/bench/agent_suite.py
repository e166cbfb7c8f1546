"""Suite ``agent``: what guarding costs an agent turn, with simulated latencies.

The model call is an ``asyncio.sleep`` (800 ms by default), the guard is the real `Guard` over a
`FunctionBackend(delay=0.15)` (150 ms per check), a tool runs in `tool_run_s` (0 by default, the
least favourable case for the ratio). Turns:

- ``reply``: a user turn answered by one reply;
- ``tool``: the model calls one tool, then answers.

Strategies: ``unguarded``; ``sequential`` (check input, call the model, check each output);
``speculative`` — the adapters' pattern: the input check and the model call start together,
nothing is released (no reply, no tool run) until the input check allows, then outputs are
checked as usual; for the tool turn also ``speculative_tool_result``, which treats the second
model call like the first (not what the adapters do: shown as the next possible step).
``blocked`` turns show the price of speculation when the input is refused: the model call is
cancelled, and the refusal is as fast as without speculation.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from guard_plugins.bench.measure import median
from guard_plugins.bench.settings import BenchContext
from guard_plugins.conversation import Conversation, Message, ToolCallPart
from guard_plugins.guard import Guard
from guard_plugins.testing import FunctionBackend

__all__ = ["AgentLatencies", "run_agent_suite", "simulate"]

BLOCK_MARKER = "[bench: refuse this input]"
TOOL_NAME = "search"
TOOL_ARGS = {"query": "opening hours of the city library"}
TOOL_RESULT = '{"results": ["Mon-Fri 9:00-18:00", "Sat 10:00-14:00"]}'
REPLY = "The library is open 9:00-18:00 on weekdays and 10:00-14:00 on Saturdays."


@dataclass(frozen=True)
class AgentLatencies:
    """Simulated latencies in seconds."""

    model_s: float
    guard_s: float
    tool_s: float

    def expected(self, turn: str, strategy: str) -> float:
        """The wall time each strategy should take if everything else were free."""
        m, g, t = self.model_s, self.guard_s, self.tool_s
        table = {
            ("reply", "unguarded"): m,
            ("reply", "sequential"): g + m + g,
            ("reply", "speculative"): max(g, m) + g,
            ("tool", "unguarded"): m + t + m,
            ("tool", "sequential"): g + m + g + t + g + m + g,
            ("tool", "speculative"): max(g, m) + g + t + g + m + g,
            ("tool", "speculative_tool_result"): max(g, m) + g + t + max(g, m) + g,
            ("blocked", "sequential"): g,
            ("blocked", "speculative"): g,
        }
        return table[(turn, strategy)]


class _World:
    """The simulated agent: a model, one tool, and a guard with a fixed check latency."""

    def __init__(self, latencies: AgentLatencies) -> None:
        self.lat = latencies
        self.model_time = 0.0

        def verdict(conversation: Conversation) -> str:
            return "unsafe\nS2" if BLOCK_MARKER in conversation.turns()[-1].text else "safe"

        self.guard = Guard(FunctionBackend(verdict, delay=latencies.guard_s), cache_size=0)

    async def model(self, reply: Message) -> Message:
        start = time.perf_counter()
        try:
            await asyncio.sleep(self.lat.model_s)
        finally:
            self.model_time += time.perf_counter() - start
        return reply

    async def tool(self) -> str:
        await asyncio.sleep(self.lat.tool_s)
        return TOOL_RESULT

    async def gated_model(
        self, conv: Conversation, reply: Message, speculative: bool
    ) -> Message | None:
        """Input check, then the model — or both at once, releasing nothing before the verdict."""
        if not speculative:
            if not (await self.guard.acheck_input(conv)).allowed:
                return None
            return await self.model(reply)
        call = asyncio.ensure_future(self.model(reply))
        if not (await self.guard.acheck_input(conv)).allowed:
            call.cancel()  # the reply will never be used: stop paying for it
            await asyncio.gather(call, return_exceptions=True)
            return None
        return await call

    async def reply_turn(self, conv: Conversation, strategy: str) -> bool:
        answer = Message.assistant(REPLY)
        if strategy == "unguarded":
            await self.model(answer)
            return True
        message = await self.gated_model(conv, answer, strategy == "speculative")
        if message is None:
            return False
        return (await self.guard.acheck_output(conv.append(message))).allowed

    async def tool_turn(self, conv: Conversation, strategy: str) -> bool:
        call = Message.assistant(tool_calls=[ToolCallPart(TOOL_NAME, dict(TOOL_ARGS))])
        answer = Message.assistant(REPLY)
        if strategy == "unguarded":
            await self.model(call)
            await self.tool()
            await self.model(answer)
            return True
        first = await self.gated_model(conv, call, strategy != "sequential")
        if first is None:
            return False
        if not (await self.guard.acheck_tool_call(TOOL_NAME, dict(TOOL_ARGS), conv)).allowed:
            return False
        result = await self.tool()
        conv = conv.append(first)
        check = self.guard.acheck_tool_result(TOOL_NAME, result, conv)
        conv = conv.append(Message.tool(result, name=TOOL_NAME))
        if strategy == "speculative_tool_result":
            second = asyncio.ensure_future(self.model(answer))
            if not (await check).allowed:
                second.cancel()
                await asyncio.gather(second, return_exceptions=True)
                return False
            reply = await second
        else:
            if not (await check).allowed:
                return False
            reply = await self.model(answer)
        return (await self.guard.acheck_output(conv.append(reply))).allowed


async def simulate(
    latencies: AgentLatencies, user_text: str, repetitions: int
) -> dict[str, dict[str, Any]]:
    """Median wall time of every (turn, strategy) over `repetitions` runs."""
    world = _World(latencies)
    conv = Conversation.user(user_text)
    blocked = Conversation.user(f"{user_text} {BLOCK_MARKER}")
    plans: dict[str, dict[str, Callable[[], Awaitable[bool]]]] = {
        "reply": {s: _bind(world.reply_turn, conv, s)
                  for s in ("unguarded", "sequential", "speculative")},
        "tool": {s: _bind(world.tool_turn, conv, s)
                 for s in ("unguarded", "sequential", "speculative", "speculative_tool_result")},
        "blocked": {s: _bind(world.reply_turn, blocked, s) for s in ("sequential", "speculative")},
    }
    for strategies in plans.values():  # warm-up: lazy imports (code screen), first renders
        for run in strategies.values():
            await run()
    results: dict[str, dict[str, Any]] = {}
    for turn, strategies in plans.items():
        times: dict[str, list[float]] = {s: [] for s in strategies}
        model_times: dict[str, list[float]] = {s: [] for s in strategies}
        allowed: dict[str, bool] = {}
        for _ in range(repetitions):
            for strategy, run in strategies.items():
                world.model_time = 0.0
                start = time.perf_counter()
                allowed[strategy] = await run()
                times[strategy].append(time.perf_counter() - start)
                model_times[strategy].append(world.model_time)
        unguarded = median(times["unguarded"]) if "unguarded" in times else None
        results[turn] = {
            strategy: {
                "wall_ms": round(median(values) * 1000, 1),
                "expected_ms": round(latencies.expected(turn, strategy) * 1000, 1),
                "ratio_to_unguarded": (
                    round(median(values) / unguarded, 3) if unguarded else None
                ),
                "model_time_ms": round(median(model_times[strategy]) * 1000, 1),
                "released": allowed[strategy],
            }
            for strategy, values in times.items()
        }
    return results


def _bind(
    fn: Callable[[Conversation, str], Awaitable[bool]], conv: Conversation, strategy: str
) -> Callable[[], Awaitable[bool]]:
    return lambda: fn(conv, strategy)


def run_agent_suite(ctx: BenchContext) -> dict[str, Any]:
    """The suite's JSON section."""
    s = ctx.settings
    scale = s.agent_time_scale
    latencies = AgentLatencies(
        s.model_call_s * scale, s.guard_check_s * scale, s.tool_run_s * scale
    )
    ctx.log(
        f"agent: simulated turns (model {latencies.model_s * 1000:.0f} ms, guard "
        f"{latencies.guard_s * 1000:.0f} ms, tool {latencies.tool_s * 1000:.0f} ms), "
        f"{s.agent_repetitions} repetitions"
    )
    short = next((w for w in ctx.prompts.workloads if w.name == "short"), ctx.prompts.workloads[0])
    user_text = short.conversations[0].turns()[-1].text
    turns = asyncio.run(simulate(latencies, user_text, s.agent_repetitions))
    return {
        "latencies_ms": {
            "model_call": round(latencies.model_s * 1000, 1),
            "guard_check": round(latencies.guard_s * 1000, 1),
            "tool_run": round(latencies.tool_s * 1000, 1),
        },
        "time_scale": scale,
        "repetitions": s.agent_repetitions,
        "adapter_pattern": "speculative",
        "turns": turns,
    }
