"""The ``guard-plugins`` command line: render, check, dev-model, demo, eval, bench.

Exit status of ``check``: 0 safe, 1 unsafe, 2 error (bad input, no model, backend failure).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guard_plugins.backends.base import Backend, ClassificationRequest
from guard_plugins.categories import CategoryLike, CustomCategory, resolve_categories
from guard_plugins.config import DEFAULT_MODEL, load_transformers_backend
from guard_plugins.conversation import Conversation, Message
from guard_plugins.errors import ConfigError, GuardError
from guard_plugins.images import load_image

__all__ = ["build_parser", "main"]

EXIT_SAFE, EXIT_UNSAFE, EXIT_ERROR = 0, 1, 2


def _eprint(*parts: object) -> None:
    print(*parts, file=sys.stderr)


# -- shared options ---------------------------------------------------------------------------


def _add_input_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("text", nargs="?", help="the user message (use - to read stdin)")
    p.add_argument("--response", help="an assistant reply to assess (the user text is context)")
    p.add_argument("--conversation", type=Path, help="a JSON file with OpenAI-style messages")
    p.add_argument(
        "--image", type=Path, action="append", default=[], help="attach an image (repeatable)"
    )
    p.add_argument("--exclude", default="", help="category codes to leave out, e.g. S1,S9")
    p.add_argument(
        "--categories", type=Path, help="a JSON/YAML file of custom categories {code: name}"
    )


def add_backend_options(p: argparse.ArgumentParser) -> None:
    """``--model`` / ``--endpoint`` options shared by check, demo and eval."""
    p.add_argument(
        "--model",
        default=os.environ.get("GUARD_PLUGINS_MODEL"),
        help=f"model id or local path for the in-process backend (default {DEFAULT_MODEL}; "
        "env GUARD_PLUGINS_MODEL)",
    )
    p.add_argument("--endpoint", help="OpenAI-compatible base URL(s), comma-separated (vLLM ...)")
    p.add_argument("--endpoint-model", help="model name on the endpoint")
    p.add_argument("--api-key-env", help="environment variable holding the endpoint's API key")
    p.add_argument("--mode", choices=["completions", "chat"], help="endpoint protocol")
    p.add_argument("--device", help="torch device for the in-process backend (cuda, cpu ...)")


def build_backend(args: argparse.Namespace) -> Backend:
    """The backend the options name; fails fast (never falls back) when it cannot load."""
    endpoint = args.endpoint or (None if args.model else os.environ.get("GUARD_PLUGINS_ENDPOINT"))
    if endpoint:
        from guard_plugins.backends.openai_compatible import OpenAICompatibleBackend

        return OpenAICompatibleBackend.from_options(
            endpoint, args.endpoint_model, api_key_env=args.api_key_env, mode=args.mode
        )
    model = args.model or DEFAULT_MODEL
    _warn_if_dev_model(model)
    return load_transformers_backend(model, device=args.device)


def _warn_if_dev_model(model: str) -> None:
    try:
        from guard_plugins.devmodel import is_dev_model
    except ImportError:  # pragma: no cover
        return
    if os.path.isdir(model) and is_dev_model(model):
        _eprint(
            f"note: {model} is a random-weight dev model: its verdicts are meaningless "
            "(plumbing only)."
        )


def _read_input(args: argparse.Namespace) -> Conversation:
    messages: list[Message] = []
    if args.conversation is not None:
        try:
            data = json.loads(args.conversation.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read --conversation {args.conversation}: {exc}") from exc
        if isinstance(data, dict) and "messages" in data:
            data = data["messages"]
        messages.extend(Conversation.from_openai(data).messages)
    text = args.text
    if text == "-":
        text = sys.stdin.read()
    images = [load_image(path) for path in args.image]
    if text is not None or images:
        messages.append(Message.user(text or "", images))
    elif images:
        raise ConfigError("--image needs a user message to attach to")
    if args.response is not None:
        messages.append(Message.assistant(args.response))
    if not messages:
        raise ConfigError("nothing to check: give TEXT, --response or --conversation")
    return Conversation(tuple(messages))


def _read_categories(args: argparse.Namespace) -> tuple[CategoryLike, ...] | None:
    if args.categories is None:
        return None
    path: Path = args.categories
    try:
        raw = path.read_text(encoding="utf-8")
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(raw)
        else:
            data = json.loads(raw)
    except Exception as exc:
        raise ConfigError(f"cannot read --categories {path}: {exc}") from exc
    if isinstance(data, list):
        return tuple(
            CustomCategory(str(d["code"]), str(d["name"]), str(d.get("description", "")))
            for d in data
        )
    if isinstance(data, dict):
        return resolve_categories({str(k): str(v) for k, v in data.items()})
    raise ConfigError(f"--categories {path}: expected a mapping or a list of categories")


def _request(args: argparse.Namespace) -> ClassificationRequest:
    return ClassificationRequest(
        _read_input(args),
        _read_categories(args),
        tuple(c.strip() for c in args.exclude.split(",") if c.strip()),
        threshold=getattr(args, "threshold", 0.5),
    )


# -- commands ----------------------------------------------------------------------------------


def cmd_render(args: argparse.Namespace) -> int:
    request = _request(args)
    if not args.tokens:
        sys.stdout.write(request.prompt.text)
        if sys.stdout.isatty():
            sys.stdout.write("\n")
        return EXIT_SAFE
    if not args.model:
        raise ConfigError("--tokens needs --model PATH (a model or tokenizer directory)")
    from guard_plugins.backends.transformers import prompt_token_ids

    ids = prompt_token_ids(args.model, request)
    print(json.dumps({"count": len(ids), "ids": ids}))
    return EXIT_SAFE


def cmd_check(args: argparse.Namespace) -> int:
    request = _request(args)
    _ = request.prompt  # bad input fails before any model is loaded
    backend = build_backend(args)
    verdict = backend.classify_sync(request)
    if args.json:
        print(json.dumps(verdict.to_dict(), ensure_ascii=False))
    else:
        label = "safe" if verdict.safe else "unsafe"
        codes = ",".join(verdict.codes)
        score = f" score={verdict.score:.4f}" if verdict.score is not None else ""
        print(f"{label}{' ' + codes if codes else ''}{score} ({verdict.role}, {verdict.backend})")
    return EXIT_SAFE if verdict.safe else EXIT_UNSAFE


def cmd_dev_model(args: argparse.Namespace) -> int:
    from guard_plugins.devmodel import build_dev_model

    path = build_dev_model(args.out_dir, tokenizer=args.tokenizer, size=args.size, seed=args.seed)
    _eprint(f"note: wrote a random-weight {args.size} dev model: its verdicts are meaningless.")
    print(path)
    return EXIT_SAFE


def cmd_demo(args: argparse.Namespace) -> int:
    from guard_plugins.demo import run_demo

    return asyncio.run(run_demo(args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="guard-plugins",
        description="Llama Guard 4 for LLM applications: render prompts, check content, "
        "build dev models, evaluate and benchmark.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    render = sub.add_parser("render", help="print the exact Llama Guard 4 prompt")
    _add_input_options(render)
    render.add_argument(
        "--tokens", action="store_true", help='print {"count": N, "ids": [...]} instead'
    )
    render.add_argument("--model", help="model or tokenizer directory (for --tokens)")
    render.set_defaults(func=cmd_render)

    check = sub.add_parser("check", help="classify a message or conversation (exit 0/1/2)")
    _add_input_options(check)
    add_backend_options(check)
    check.add_argument("--threshold", type=float, default=0.5, help="unsafe at P(unsafe) >= this")
    check.add_argument("--json", action="store_true", help="print the Verdict as one JSON object")
    check.set_defaults(func=cmd_check)

    dev = sub.add_parser("dev-model", help="write a random-weight dev model (tests, demos)")
    dev.add_argument("out_dir", type=Path)
    dev.add_argument("--tokenizer", help="tokenizer directory ('builtin' for the small local one)")
    dev.add_argument("--size", choices=["tiny", "bench"], default="tiny")
    dev.add_argument("--seed", type=int, default=0)
    dev.set_defaults(func=cmd_dev_model)

    demo = sub.add_parser("demo", help="guard a scripted chat and code agent end to end")
    add_backend_options(demo)
    demo.add_argument(
        "--dev", action="store_true", help="run on a random-weight dev model (no weights needed)"
    )
    demo.set_defaults(func=cmd_demo)

    _register_optional(sub)
    return parser


def _register_optional(sub: Any) -> None:
    try:
        from guard_plugins.evaluation.cli import register as register_eval
    except ImportError:
        pass
    else:
        register_eval(sub, add_backend_options, build_backend)
    try:
        from guard_plugins.bench.cli import register as register_bench
    except ImportError:
        pass
    else:
        register_bench(sub)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        return result
    except GuardError as exc:
        _eprint(f"error: {exc}")
        return EXIT_ERROR
    except (OSError, ValueError) as exc:
        _eprint(f"error: {type(exc).__name__}: {exc}")
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
