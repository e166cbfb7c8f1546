"""Precision-recall and ROC curves as PNG files (matplotlib, extra ``eval``).

matplotlib is imported only here and only when plotting; figures are drawn with the Agg canvas
directly (no pyplot), so a caller's global matplotlib backend is left alone. Without matplotlib
the plots are skipped with a warning naming the extra to install.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from guard_plugins.evaluation.metrics import Confusion, Sweep, SweepPoint

__all__ = ["PR_CURVE", "ROC_CURVE", "write_plots"]

logger = logging.getLogger("guard_plugins.evaluation")

PR_CURVE = "pr_curve.png"
ROC_CURVE = "roc_curve.png"


def _figure() -> tuple[Any, Any, Any]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(5.5, 4.5), dpi=120)
    canvas = FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    axes.set_xlim(-0.01, 1.01)
    axes.set_ylim(-0.01, 1.01)
    axes.grid(True, alpha=0.3)
    return figure, canvas, axes


def _finish(figure: Any, canvas: Any, axes: Any, path: Path) -> None:
    handles, _ = axes.get_legend_handles_labels()
    if handles:
        axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    canvas.print_png(str(path))


def _pr(sweep: Sweep, operating: Confusion | None, at: SweepPoint | None, path: Path) -> None:
    figure, canvas, axes = _figure()
    recall = [p.confusion.recall.value or 0.0 for p in sweep.points]
    precision = [p.confusion.precision.value or 0.0 for p in sweep.points]
    ap = sweep.average_precision
    label = "PR curve" + (f" (AP {ap:.3f})" if ap is not None else "")
    # precision at a point holds over the recall step that leads to it (as AP sums it)
    axes.step(
        [0.0, *recall], [precision[0] if precision else 1.0, *precision], where="pre", label=label
    )
    if sweep.scored:
        prevalence = sweep.positives / sweep.scored
        axes.axhline(
            prevalence,
            linestyle=":",
            color="grey",
            linewidth=0.8,
            label=f"prevalence {prevalence:.2f}",
        )
    if operating is not None and operating.precision.value is not None:
        axes.plot(
            [operating.recall.value or 0.0],
            [operating.precision.value],
            "o",
            label="verdict (policy threshold)",
        )
    if at is not None:
        axes.plot(
            [at.confusion.recall.value or 0.0],
            [at.confusion.precision.value or 0.0],
            "s",
            label=f"threshold {at.threshold:.3g} (target FPR)",
        )
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_title(f"Precision-recall ({sweep.positives} unsafe, {sweep.negatives} safe)")
    _finish(figure, canvas, axes, path)


def _roc(sweep: Sweep, operating: Confusion | None, at: SweepPoint | None, path: Path) -> None:
    figure, canvas, axes = _figure()
    fpr = [p.confusion.fpr.value or 0.0 for p in sweep.points]
    tpr = [p.confusion.recall.value or 0.0 for p in sweep.points]
    auroc = sweep.auroc
    label = "ROC curve" + (f" (AUROC {auroc:.3f})" if auroc is not None else "")
    axes.plot([0.0, *fpr], [0.0, *tpr], label=label)
    axes.plot([0, 1], [0, 1], ":", color="grey", linewidth=0.8)
    if operating is not None and operating.fpr.value is not None:
        axes.plot(
            [operating.fpr.value],
            [operating.recall.value or 0.0],
            "o",
            label="verdict (policy threshold)",
        )
    if at is not None:
        axes.plot(
            [at.confusion.fpr.value or 0.0],
            [at.confusion.recall.value or 0.0],
            "s",
            label=f"threshold {at.threshold:.3g} (target FPR)",
        )
    axes.set_xlabel("false-positive rate")
    axes.set_ylabel("recall (true-positive rate)")
    axes.set_title(f"ROC ({sweep.positives} unsafe, {sweep.negatives} safe)")
    _finish(figure, canvas, axes, path)


def write_plots(
    sweep: Sweep,
    out_dir: str | Path,
    *,
    operating: Confusion | None = None,
    at_target: SweepPoint | None = None,
) -> list[Path]:
    """Write ``pr_curve.png`` and ``roc_curve.png``; returns the paths written (none when
    matplotlib is missing or no example has a score)."""
    if not sweep.points:
        logger.info("no scored results: PR/ROC plots skipped")
        return []
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        logger.warning(
            "matplotlib is not installed: PR/ROC plots skipped (pip install 'guard-plugins[eval]')"
        )
        return []
    out = Path(out_dir)
    pr_path, roc_path = out / PR_CURVE, out / ROC_CURVE
    _pr(sweep, operating, at_target, pr_path)
    _roc(sweep, operating, at_target, roc_path)
    return [pr_path, roc_path]
