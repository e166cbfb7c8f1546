"""Registration of ``guard-plugins eval`` in the main CLI (`guard_plugins.cli` calls `register`).

The main CLI owns the backend options and how a backend is built; this module adds the eval
arguments, ``--policy`` / ``--threshold`` for the Guard, and the command function.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from guard_plugins.backends.base import Backend
from guard_plugins.evaluation.harness import add_eval_arguments, run_eval_command
from guard_plugins.guard import Guard
from guard_plugins.policy import Hook, Policy

__all__ = ["build_guard", "register"]

HELP = "run the guard over a labelled dataset; report recall / FPR / F1, PR and ROC curves"


def build_guard(
    args: argparse.Namespace, build_backend: Callable[[argparse.Namespace], Backend]
) -> Guard:
    """A Guard on the CLI's backend with ``--policy`` (a file) and ``--threshold`` applied."""
    policy = Policy.from_file(args.policy) if args.policy else Policy()
    if args.threshold is not None:
        hook = Hook(args.hook)
        changed = policy.for_hook(hook).model_copy(update={"threshold": args.threshold})
        policy = Policy.from_dict({**policy.model_dump(), hook.value: changed.model_dump()})
    return Guard(build_backend(args), policy)


def register(
    sub: Any,
    add_backend_options: Callable[[argparse.ArgumentParser], None],
    build_backend: Callable[[argparse.Namespace], Backend],
) -> argparse.ArgumentParser:
    """Add the ``eval`` sub-command to `sub` (an argparse subparsers action)."""
    parser: argparse.ArgumentParser = sub.add_parser("eval", help=HELP, description=HELP)
    add_eval_arguments(parser)
    add_backend_options(parser)
    parser.add_argument("--policy", help="policy file (YAML, TOML or JSON) for the Guard")
    parser.add_argument(
        "--threshold", type=float, default=None, help="the hook's unsafe threshold on P(unsafe)"
    )

    def command(args: argparse.Namespace) -> int:
        return run_eval_command(args, lambda: build_guard(args, build_backend))

    parser.set_defaults(func=command)
    return parser
