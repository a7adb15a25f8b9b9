"""PNG plots of a training run: loss and validation against time and updates, ROC, staleness,
per-worker throughput; the multiclass and regression plots (``report.tasks``) by the run's task;
with ``dataset.reweight``, each variable's distributions before and after (``report.reweight``).

Layer: report, drawing. Each plot is a function of a ``Run`` returning a matplotlib ``Figure``;
``write_report`` saves them atomically under ``RUN_DIR/plots``. Figures are drawn with the
object-oriented API and rendered by Agg, never through ``pyplot``: no display is needed, no global
backend is switched, and nothing here imports TensorFlow, so the head node can regenerate reports.

Beside each ``<plot>.png``, ``<plot>.npz`` holds the numbers the plot was drawn from, by name (the
ROC points, each epoch's losses, the bins of the response...: see ``drawing.keep`` in each plot),
so a plot can be checked, or redrawn elsewhere, without reading pixels.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from gridtrain.evaluation import auc_from_curve
from gridtrain.files import atomic_file
from gridtrain.report import tasks
from gridtrain.report.drawing import DPI, MissingData, drawn, figure, keep, thin
from gridtrain.report.reweight import reweight_plots
from gridtrain.report.run import EpochRecord, Run, ShardRecord, load_run
from gridtrain.rundir import RunDir

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

MAX_WORKER_COLOURS = 8
_figure = figure
_thin = thin


def _time_axis(seconds: Sequence[float]) -> tuple[float, str]:
    """A divisor and unit that keep wall-time ticks readable for runs of seconds to days."""
    longest = max(seconds, default=0.0)
    if longest > 3 * 3600:
        return 3600.0, "h"
    if longest > 180:
        return 60.0, "min"
    return 1.0, "s"


def _training(run: Run, along: str) -> Figure:
    """Loss (per shard and per epoch) and validation metrics against wall time or updates."""
    if not run.shards and not run.epochs:
        why = "history.jsonl has no shard or epoch records" if run.has_history else "no history"
        raise MissingData(why)

    def x_of(record: ShardRecord | EpochRecord) -> float:
        if along == "time":
            return record.time
        return math.nan if record.version is None else float(record.version)

    if along == "time":
        scale, unit = _time_axis([r.time for r in run.shards] + [r.time for r in run.epochs])
        xlabel = f"wall time ({unit})"
    else:
        scale, xlabel = 1.0, "center version (updates applied by the parameter server)"

    epochs = sorted(run.epochs, key=x_of)  # validations may finish out of epoch order
    best = (run.metrics or {}).get("best_epoch")
    fig = _figure(size=(8.5, 7.0))
    shard_x = np.array([x_of(s) / scale for s in run.shards], dtype=np.float64)
    shard_loss = np.array([s.loss for s in run.shards], dtype=np.float64)
    shard_worker = np.array([s.worker for s in run.shards], dtype=np.str_)
    ex = np.array([x_of(e) / scale for e in epochs], dtype=np.float64)
    per_epoch = {
        name: np.array([getattr(e, name) for e in epochs], dtype=np.float64)
        for name in ("train_loss", "val_loss", "val_auc", "val_accuracy")
    }
    best_x = ex[np.array([e.epoch == best for e in epochs], dtype=bool)]
    keep(
        fig,
        x_scale=scale,
        shard_x=shard_x,
        shard_loss=shard_loss,
        shard_worker=shard_worker,
        epoch=np.array([e.epoch for e in epochs], dtype=np.int64),
        epoch_x=ex,
        best_epoch_x=best_x,
        **per_epoch,
    )
    loss_ax, val_ax = fig.subplots(2, 1, sharex=True, height_ratios=(3, 2))
    workers = sorted(set(shard_worker.tolist()))
    by_worker = len(workers) <= MAX_WORKER_COLOURS
    for i, worker in enumerate(workers if by_worker else ["all"]):
        mine = shard_worker == worker if by_worker else slice(None)
        loss_ax.scatter(
            shard_x[mine],
            shard_loss[mine],
            s=9,
            alpha=0.55,
            color=f"C{i % 10}" if by_worker else "C0",
            label=f"training loss per shard ({worker})" if by_worker else "training loss per shard",
        )
    if epochs:
        loss_ax.plot(ex, per_epoch["train_loss"], "-", color="0.35", label="training loss")
        loss_ax.plot(ex, per_epoch["val_loss"], "o-", color="black", label="validation loss")
        series = [
            (per_epoch["val_auc"], "o-", "C3", "validation AUC"),
            (per_epoch["val_accuracy"], "s--", "C2", "validation accuracy"),
        ]
        if run.kind == "multiclass":
            series[0] = (series[0][0], "o-", "C3", "validation AUC (macro)")
        for values, style, colour, label in series:
            # A regression has no AUC nor accuracy: its validation is the loss above.
            if run.kind == "binary" or not np.all(np.isnan(values)):
                val_ax.plot(ex, values, style, color=colour, label=label)
        for x in best_x:
            for ax in (loss_ax, val_ax):
                ax.axvline(x, color="0.6", linestyle=":", label=None)
            val_ax.annotate(
                f"best epoch {best}",
                (x, 0.02),
                rotation=90,
                xycoords=("data", "axes fraction"),
                fontsize=8,
                color="0.4",
            )
        if val_ax.get_legend_handles_labels()[0]:
            val_ax.legend(loc="lower right", fontsize=8)
        else:
            val_ax.text(
                0.5,
                0.5,
                "validated on the loss (above); response and resolution: response.png",
                ha="center",
                va="center",
                transform=val_ax.transAxes,
                color="0.4",
            )
    else:
        val_ax.text(
            0.5,
            0.5,
            "no epoch finished yet",
            ha="center",
            va="center",
            transform=val_ax.transAxes,
            color="0.4",
        )
    loss_ax.set_ylabel(_loss_name(run))
    loss_ax.legend(loc="upper right", fontsize=8)
    loss_ax.grid(alpha=0.3)
    val_ax.set_ylabel("validation metric")
    val_ax.set_xlabel(xlabel)
    val_ax.grid(alpha=0.3)
    title = "training against wall time" if along == "time" else "training against updates"
    model = (run.metrics or {}).get("model")
    fig.suptitle(f"{title}{f' ({model})' if model else ''}")
    return fig


def _loss_name(run: Run) -> str:
    if run.kind == "multiclass":
        return "categorical cross-entropy"
    if run.kind == "regression":
        loss = run.task.get("loss") or "mse"
        return f"{loss} of the standardised targets"
    return "binary cross-entropy"


def training_vs_time(run: Run) -> Figure:
    return _training(run, "time")


def training_vs_updates(run: Run) -> Figure:
    return _training(run, "version")


def roc(run: Run) -> Figure:
    """Background efficiency against signal efficiency, and background rejection (log)."""
    if run.roc is None:
        raise MissingData("no roc.npz (the run ended before the final evaluation?)")
    points = _thin(run.roc.fpr, run.roc.tpr)
    fpr, tpr = run.roc.fpr[points], run.roc.tpr[points]
    auc = (run.metrics or {}).get("auc")
    if not isinstance(auc, int | float) or isinstance(auc, bool):
        auc = auc_from_curve(run.roc.fpr, run.roc.tpr)
    fig = _figure(size=(11.0, 5.0))
    keep(fig, fpr=fpr, tpr=tpr, threshold=run.roc.thresholds[points], auc=float(auc))
    linear, rejection = fig.subplots(1, 2)
    linear.plot(tpr, fpr, color="C0", label=f"model, AUC = {auc:.4f}")
    linear.plot([0, 1], [0, 1], ":", color="0.5", label="random, AUC = 0.5")
    linear.set_xlabel("signal efficiency (true positive rate)")
    linear.set_ylabel("background efficiency (false positive rate)")
    linear.set_xlim(0, 1)
    linear.set_ylim(0, 1)
    linear.legend(loc="upper left")
    linear.grid(alpha=0.3)
    selected = fpr > 0
    if np.any(selected):
        rejection.plot(tpr[selected], 1.0 / fpr[selected], color="C0", label=f"AUC = {auc:.4f}")
        grid = np.linspace(0.01, 1.0, 100)
        rejection.plot(grid, 1.0 / grid, ":", color="0.5", label="random")
        rejection.set_yscale("log")
        rejection.legend(loc="upper right")
    rejection.set_xlabel("signal efficiency (true positive rate)")
    rejection.set_ylabel("background rejection 1 / fpr")
    rejection.set_xlim(0, 1)
    rejection.grid(alpha=0.3, which="both")
    fig.suptitle("ROC curve on the validation shards")
    return fig


def _bucket_order(bucket: str) -> tuple[float, str]:
    """Sort staleness buckets '0', '1', '3-4', '>64' by their lower bound; unknown ones last."""
    found = re.search(r"\d+", bucket)
    if found is None:
        return math.inf, bucket
    low = float(found.group())
    return (low + 0.5 if bucket.lstrip().startswith(">") else low), bucket


def staleness(run: Run) -> Figure:
    """How many versions behind the center the accepted updates were computed."""
    found = (run.metrics or {}).get("staleness")
    info: dict[str, Any] = found if isinstance(found, dict) else {}
    histogram = info.get("histogram")
    if not isinstance(histogram, dict) or not histogram:
        raise MissingData("metrics.json has no staleness histogram")
    buckets = sorted(histogram, key=_bucket_order)
    counts = [float(histogram[b]) for b in buckets]
    fig = _figure(size=(8.0, 5.0))
    ax = fig.subplots()
    if not sum(counts):
        ax.text(
            0.5,
            0.5,
            "no update was accepted",
            ha="center",
            va="center",
            transform=ax.transAxes,
            color="0.4",
        )
    keep(fig, bucket=np.array(buckets, dtype=np.str_), count=np.array(counts, dtype=np.float64))
    bars = ax.bar(range(len(buckets)), counts, color="C1")
    ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.set_xticks(range(len(buckets)), buckets)
    ax.set_xlabel("staleness (center versions behind when the update arrived)")
    ax.set_ylabel("accepted updates")
    ax.grid(alpha=0.3, axis="y")
    quantiles = ", ".join(f"{k} {info[k]}" for k in ("p50", "p90", "p99", "max") if k in info)
    refused = (run.metrics or {}).get("refused")
    extra = f"; {refused} refused" if isinstance(refused, int) and refused else ""
    details = f" ({quantiles}{extra})" if quantiles or extra else ""
    fig.suptitle(f"staleness of accepted updates{details}")
    return fig


def throughput(run: Run) -> Figure:
    """Events per second each worker trained on."""
    workers = (run.metrics or {}).get("workers")
    rows: list[tuple[str, float]] = []
    for w in workers if isinstance(workers, list) else []:
        if isinstance(w, dict) and isinstance(w.get("events_per_s"), int | float):
            rows.append((str(w.get("name", "?")), float(w["events_per_s"])))
    if not rows:
        raise MissingData("metrics.json lists no workers with events_per_s")
    names = [name for name, _ in rows]
    rates = [rate for _, rate in rows]
    fig = _figure(size=(min(20.0, max(8.0, 2.0 + 0.35 * len(rows))), 5.0))
    ax: Axes = fig.subplots()
    keep(fig, worker=np.array(names, dtype=np.str_), events_per_s=np.array(rates, dtype=np.float64))
    bars = ax.bar(range(len(rows)), rates, color="C2")
    if len(rows) <= 16:
        ax.bar_label(bars, fmt="{:,.0f}", fontsize=8)
    ax.set_xticks(range(len(rows)), names, rotation=90 if len(rows) > 8 else 0, fontsize=8)
    ax.set_xlabel("worker")
    ax.set_ylabel("training events / s")
    ax.grid(alpha=0.3, axis="y")
    title = f"throughput: {sum(rates):,.0f} events/s from {len(rows)} workers"
    share = (run.metrics or {}).get("ps_time_fraction")
    if isinstance(share, int | float) and not isinstance(share, bool):
        title += f"\nparameter server busy {100 * share:.1f} % of the wall time"
    fig.suptitle(title)
    return fig


PLOTS: dict[str, Callable[[Run], Figure]] = {
    "training_vs_time.png": training_vs_time,
    "training_vs_updates.png": training_vs_updates,
    "roc.png": roc,
    "staleness.png": staleness,
    "throughput.png": throughput,
}
"""The plots of a binary run (and of a run from before tasks)."""

PLOTS_BY_KIND: dict[str, dict[str, Callable[[Run], Figure]]] = {
    "binary": PLOTS,
    "multiclass": {
        "training_vs_time.png": training_vs_time,
        "training_vs_updates.png": training_vs_updates,
        "roc.png": tasks.multiclass_roc,
        "confusion.png": tasks.confusion,
        "rejection.png": tasks.class_rejection,
        "staleness.png": staleness,
        "throughput.png": throughput,
    },
    "regression": {
        "training_vs_time.png": training_vs_time,
        "training_vs_updates.png": training_vs_updates,
        "response.png": tasks.response,
        "residuals.png": tasks.residuals,
        "staleness.png": staleness,
        "throughput.png": throughput,
    },
}


TRAINING_PLOTS = (
    "training_vs_time.png",
    "training_vs_updates.png",
    "staleness.png",
    "throughput.png",
)
"""How the training went: a k-fold run's folds have them, its parent directory does not."""


def plots_for(run: Run) -> dict[str, Callable[[Run], Figure]]:
    """The plots of the run's task, and of its kinematic reweighting: file name and drawing
    function. A k-fold run's parent (its metrics list the ``folds``) draws the validation plots
    of the combined scores only; each fold's folder has its training plots."""
    chosen = {**PLOTS_BY_KIND[run.kind], **reweight_plots(run)}
    if "folds" in (run.metrics or {}):
        chosen = {name: draw for name, draw in chosen.items() if name not in TRAINING_PLOTS}
    return chosen


def save_png(fig: Figure, path: Path) -> None:
    """Write ``fig`` as ``path`` atomically: a temporary name in the same folder, then a rename."""
    with atomic_file(path) as handle:
        fig.savefig(handle, format="png", dpi=DPI)


def save_drawn(fig: Figure, path: Path) -> bool:
    """Write the numbers ``fig`` was drawn from (``drawing.keep``) as the ``.npz`` file ``path``,
    atomically; False, and nothing written, when the figure kept none."""
    arrays: dict[str, Any] = drawn(fig)
    if not arrays:
        return False
    with atomic_file(path) as handle:
        np.savez(handle, allow_pickle=False, **arrays)  # numbers and strings: never pickles
    return True


def write_report(run_dir: str | Path, run: Run | None = None) -> list[Path]:
    """Draw every plot the run has data for into ``RUN_DIR/plots``; return the PNGs written.

    Each PNG has its numbers beside it, ``<plot>.npz`` (``save_drawn``). A plot whose data is
    missing (no ``roc.npz`` when the run was interrupted, say) is skipped with a warning. Raises
    ``RunDirError`` when the run directory or both its metrics and history are missing.
    """
    run = run if run is not None else load_run(run_dir)
    out = RunDir(Path(run_dir)).plots
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, draw in plots_for(run).items():
        try:
            fig = draw(run)
        except MissingData as why:
            log.warning("%s: skipped, %s", out / name, why)
            continue
        save_png(fig, out / name)
        save_drawn(fig, (out / name).with_suffix(".npz"))
        written.append(out / name)
    return written
