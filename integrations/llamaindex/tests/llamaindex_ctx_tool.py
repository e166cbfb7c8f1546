"""A tool taking the workflow Context. No `from __future__ import annotations` here on purpose:
FunctionTool recognises the Context parameter by its (evaluated) annotation."""

from typing import Any

from llama_index.core.workflow import Context

SEEN: list[Any] = []


async def remember(ctx: Context, note: str) -> str:
    """Store a note in the run state."""
    SEEN.append(ctx)
    await ctx.store.set("note", note)
    return f"stored {note}"
