"""Evaluate the guard on XSTest (250 safe prompts that look unsafe, 200 unsafe contrasts).

The backend comes from the environment, as in `Guard.from_env`: ``GUARD_PLUGINS_MODEL`` (a model
id or path; a dev model built with ``guard-plugins dev-model DIR`` runs anywhere but its verdicts
are meaningless) or ``GUARD_PLUGINS_ENDPOINT`` (an OpenAI-compatible server).

    GUARD_PLUGINS_MODEL=/tmp/lg4-dev python examples/eval_xstest.py --limit 20

Results go to ``--out`` (default ``eval-xstest``); rerunning resumes. XSTest: Röttger et al.,
paul-rottger/exaggerated-safety, CC-BY-4.0.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from pathlib import Path

from guard_plugins import Guard
from guard_plugins.errors import GuardError
from guard_plugins.evaluation import evaluate, load_xstest, select

DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "xstest_prompts.csv"


async def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--limit", type=int, default=None, help="a seeded random sample of N prompts (both labels)"
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="xstest_prompts.csv")
    parser.add_argument("--out", type=Path, default=Path("eval-xstest"))
    args = parser.parse_args(argv)
    try:
        guard = Guard.from_env()
        dataset = select(load_xstest(args.data), sample=args.limit, seed=0)
    except GuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    report = await evaluate(guard, dataset, args.out, progress=True)
    print(report.table())
    fpr = report.metrics.overall.fpr
    print(f"\nXSTest over-blocking: {fpr.num} of {fpr.den} safe prompts flagged")
    print(f"report: {args.out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
