"""The OpenAI wire format for Llama Guard: request bodies in, generations out. Pure, no I/O.

Kept apart from the transport (`_http_transport`) so that the loopback server, the backend and the
tests share one reading of the protocol. Two response shapes are understood for log-probabilities:

- chat style (OpenAI, vLLM chat): ``logprobs.content[i] = {"token", "logprob", "top_logprobs":
  [{"token", "logprob"}, ...]}``;
- completions style (OpenAI legacy, vLLM completions, Together everywhere): ``logprobs =
  {"tokens": [...], "token_logprobs": [...], "top_logprobs": [{token: logprob, ...}, ...]}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from guard_plugins.categories import Category, CategoryLike, CustomCategory
from guard_plugins.conversation import Turn
from guard_plugins.errors import BackendError, ConfigError
from guard_plugins.prompt import neutralize_text
from guard_plugins.verdict import score_from_logprobs

__all__ = [
    "Generation",
    "LogprobsStyle",
    "chat_messages",
    "chat_payload",
    "completions_payload",
    "parse_chat_response",
    "parse_completions_response",
    "template_kwargs",
    "verdict_score",
]

LogprobsStyle = Literal["openai", "integer"]
#: what the model is asked to generate: "\n\n", the verdict, "\n", a few category codes, <|eot|>
MAX_TOKENS = 10
_EXCERPT = 500


@dataclass(frozen=True)
class Generation:
    """One generated answer: its text and, when the server sent them, per-position top tokens."""

    text: str
    top_logprobs: tuple[Mapping[str, float], ...] | None = None


def completions_payload(
    model: str, prompts: Sequence[str], *, top_logprobs: int | None, max_tokens: int = MAX_TOKENS
) -> dict[str, Any]:
    """A ``/v1/completions`` body; several prompts go in one request (vLLM batches them)."""
    body: dict[str, Any] = {
        "model": model,
        "prompt": prompts[0] if len(prompts) == 1 else list(prompts),
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if top_logprobs:
        body["logprobs"] = top_logprobs
    return body


def chat_messages(turns: Sequence[Turn]) -> list[dict[str, Any]]:
    """One message per rendered turn, content as parts, images first (as the template puts them).

    Text is neutralised exactly as `build_prompt` does, so the server-side template renders the
    prompt the client would have rendered and content cannot forge structure there either.
    """
    messages: list[dict[str, Any]] = []
    for turn in turns:
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": image.data_url()}} for image in turn.images
        ]
        text = neutralize_text(turn.text).strip()
        if text:
            content.append({"type": "text", "text": text})
        role = "user" if turn.role == "User" else "assistant"
        messages.append({"role": role, "content": content})
    return messages


def template_kwargs(
    listed: Sequence[CategoryLike],
    *,
    has_images: bool,
    send_exclusions: bool,
    send_categories: bool,
) -> dict[str, Any]:
    """``chat_template_kwargs`` that make the server list exactly `listed`.

    Built-in categories only: ``excluded_category_keys`` (S14 is dropped by the template itself
    when there is an image). Custom categories need the Llama Guard 3 ``categories`` mapping, which
    Llama Guard 4's template is only *inferred* to accept, so it is opt-in.
    """
    if any(isinstance(c, CustomCategory) for c in listed):
        if not send_categories:
            raise ConfigError(
                "custom categories cannot be sent in chat mode: use mode='completions' (the "
                "prompt is rendered client-side) or opt in with send_categories=True if the "
                "server's chat template accepts a 'categories' mapping"
            )
        return {"categories": {c.code: c.prompt_line()[len(c.code) + 2:] for c in listed}}
    if not send_exclusions:
        return {}
    codes = {c.code for c in listed}
    excluded = [
        c.code for c in Category
        if c.code not in codes and not (has_images and c is Category.S14)
    ]
    return {"excluded_category_keys": excluded} if excluded else {}


def chat_payload(
    model: str,
    messages: list[dict[str, Any]],
    *,
    top_logprobs: int | None,
    logprobs_style: LogprobsStyle = "openai",
    kwargs: Mapping[str, Any] | None = None,
    max_tokens: int = MAX_TOKENS,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0,
    }
    if top_logprobs:
        if logprobs_style == "integer":
            body["logprobs"] = top_logprobs
        else:
            body["logprobs"] = True
            body["top_logprobs"] = top_logprobs
    if kwargs:
        body["chat_template_kwargs"] = dict(kwargs)
    return body


# -- responses ------------------------------------------------------------------------------------


def _shape_error(what: str, data: object, url: str) -> BackendError:
    excerpt = json.dumps(data, default=str)[:_EXCERPT] if not isinstance(data, str) else data
    return BackendError(f"unexpected response from {url}: {what} (body: {excerpt[:_EXCERPT]})")


def _choices(data: object, url: str) -> list[Mapping[str, Any]]:
    if not isinstance(data, Mapping):
        raise _shape_error("the body is not a JSON object", data, url)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise _shape_error("no 'choices' list", data, url)
    if not all(isinstance(c, Mapping) for c in choices):
        raise _shape_error("a choice is not an object", data, url)
    return choices


def parse_completions_response(data: object, count: int, url: str) -> list[Generation]:
    """Generations of a ``/v1/completions`` reply, in prompt order (by each choice's ``index``)."""
    choices = _choices(data, url)
    if len(choices) != count:
        raise _shape_error(f"{len(choices)} choices for {count} prompts", data, url)
    ordered: list[Generation | None] = [None] * count
    for position, choice in enumerate(choices):
        index = choice.get("index", position)
        text = choice.get("text")
        if not isinstance(index, int) or not 0 <= index < count or ordered[index] is not None:
            raise _shape_error(f"bad choice index {index!r}", data, url)
        if not isinstance(text, str):
            raise _shape_error("a choice has no 'text'", data, url)
        ordered[index] = Generation(text, top_logprobs_of(choice.get("logprobs")))
    return [g for g in ordered if g is not None]


def parse_chat_response(data: object, url: str) -> Generation:
    choice = _choices(data, url)[0]
    message = choice.get("message")
    content = message.get("content") if isinstance(message, Mapping) else None
    if isinstance(content, list):  # some providers answer with content parts
        content = "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    if not isinstance(content, str):
        raise _shape_error("the choice has no message content", data, url)
    return Generation(content, top_logprobs_of(choice.get("logprobs")))


def top_logprobs_of(logprobs: object) -> tuple[Mapping[str, float], ...] | None:
    """Per-position ``{token: logprob}`` (sampled token included) from either shape, else None."""
    if not isinstance(logprobs, Mapping):
        return None
    content = logprobs.get("content")
    if isinstance(content, list):
        positions: list[dict[str, float]] = []
        for entry in content:
            if not isinstance(entry, Mapping):
                return None
            top = _pairs(entry.get("top_logprobs") or ())
            _add(top, entry.get("token"), entry.get("logprob"))
            positions.append(top)
        return tuple(positions)
    tops = logprobs.get("top_logprobs")
    tokens = logprobs.get("tokens")
    token_lps = logprobs.get("token_logprobs")
    if not isinstance(tops, list):
        return None
    result: list[dict[str, float]] = []
    for i, top in enumerate(tops):
        position = _pairs(top.items()) if isinstance(top, Mapping) else _pairs(top or ())
        if isinstance(tokens, list) and isinstance(token_lps, list) and i < min(
            len(tokens), len(token_lps)
        ):
            _add(position, tokens[i], token_lps[i])
        result.append(position)
    return tuple(result)


def _pairs(items: Any) -> dict[str, float]:
    out: dict[str, float] = {}
    for item in items:
        if isinstance(item, Mapping):
            _add(out, item.get("token"), item.get("logprob"))
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            _add(out, item[0], item[1])
    return out


def _add(out: dict[str, float], token: object, logprob: object) -> None:
    if isinstance(token, str) and isinstance(logprob, (int, float)) and not isinstance(
        logprob, bool
    ):
        out.setdefault(token, float(logprob))


def verdict_score(top_logprobs: Sequence[Mapping[str, float]] | None) -> float | None:
    """P(unsafe) at the verdict position, or None when the reply carries no usable logprobs.

    The verdict position is the first whose generated (most likely) token is ``safe``/``unsafe``
    after stripping white space; failing that, the first whose top tokens contain either word
    (the first generated token is ``"\\n\\n"``, so this is normally position 1).
    """
    if not top_logprobs:
        return None
    chosen: Mapping[str, float] | None = None
    for position in top_logprobs:
        if position and max(position, key=lambda t: position[t]).strip() in ("safe", "unsafe"):
            chosen = position
            break
    if chosen is None:
        chosen = next(
            (p for p in top_logprobs if any(t.strip() in ("safe", "unsafe") for t in p)), None
        )
    if chosen is None:
        return None
    return score_from_logprobs(_best(chosen, "unsafe"), _best(chosen, "safe"))


def _best(position: Mapping[str, float], word: str) -> float | None:
    # The exact token first: it is the one the in-process backend reads (e.g. id 72110).
    if word in position:
        return position[word]
    variants = [lp for token, lp in position.items() if token.strip() == word]
    return max(variants) if variants else None
