"""A few lines on a run's outcome for the terminal, from the same records the plots use.

Layer: report, text. Pure formatting of a ``Run``; no I/O. A multiclass or regression run's
figures come from metrics.json, or are computed from validation.npz when it lacks them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from gridtrain.data.yields import yield_lines
from gridtrain.evaluation import METRIC_NEGATIVE_WEIGHTS, negative_weight_summary
from gridtrain.report import tasks
from gridtrain.report.drawing import MissingData
from gridtrain.report.run import Run
from gridtrain.rundir import RunDir


def summary_lines(run: Run) -> list[str]:
    """A few lines on the run's outcome for the terminal: its metrics (by task), epochs, the
    task and the negative-weight choice where the run records them, workers, and the yield
    table of a dataset normalised to a luminosity."""
    m: dict[str, Any] = run.metrics or {}
    kind = run.kind
    lines = []
    if run.metrics is not None:
        lines.extend(_outcome(run, m, kind))
        stop = ", stopped early" if m.get("stopped_early") else ""
        lines.append(
            f"{m.get('epochs', '?')} epochs (best {m.get('best_epoch', '?')}{stop}), wall time "
            f"{_duration(m.get('wall_time_s'))}, {m.get('updates', '?')} updates "
            f"({m.get('refused', 0)} refused)"
        )
    elif run.epochs:
        last = run.epochs[-1]
        auc = "" if kind == "regression" else f"validation AUC {last.val_auc:.4f}, "
        lines.append(
            f"no {RunDir(run.path).metrics} (training unfinished?); after epoch {last.epoch}: "
            f"{auc}{'validation ' if not auc else ''}loss {last.val_loss:.4f}, "
            f"{last.updates} updates in {_duration(last.time)}"
        )
    else:
        lines.append(
            f"no {RunDir(run.path).metrics.name} and no finished epoch; "
            f"{len(run.shards)} shards trained"
        )
    if kind != "binary" or run.task:
        lines.append(f"task: {describe_task(run.task, kind)}")
    negative = negative_weights_line(run)
    if negative:
        lines.append(negative)
    staleness = m.get("staleness")
    workers = m.get("workers")
    if isinstance(staleness, dict) and isinstance(workers, list) and workers:
        rate = sum(float(w.get("events_per_s", 0)) for w in workers if isinstance(w, dict))
        lines.append(
            f"{len(workers)} workers, {rate:,.0f} events/s in all; staleness p50 "
            f"{staleness.get('p50', '?')}, p90 {staleness.get('p90', '?')}, max "
            f"{staleness.get('max', '?')}"
        )
    folds = m.get("folds")
    if isinstance(folds, dict):
        lines.append(_folds_line(folds))
    if run.normalisation:
        lines.extend(yield_lines(run.normalisation))
    return lines


def _folds_line(folds: dict[str, Any]) -> str:
    """A k-fold run: how many folds, and each headline figure's mean and spread over them."""
    mean, std = folds.get("mean") or {}, folds.get("std") or {}
    figures = ", ".join(
        f"{key} {mean[key]:.4f} ± {std.get(key, float('nan')):.4f}"
        for key in ("auc", "macro_auc", "accuracy", "loss")
        if isinstance(mean.get(key), int | float)
    )
    return (
        f"folds: {folds.get('folds', '?')} (each event scored by the fold model that did not "
        f"train on it); per fold {figures or 'no figures'}"
    )


def _outcome(run: Run, m: dict[str, Any], kind: str) -> list[str]:
    """The validation metrics of a finished run, by task."""
    model = m.get("model", "model ?")
    if kind == "binary":
        return [
            f"validation AUC {_fmt(m.get('auc'), '.4f')}, loss {_fmt(m.get('loss'), '.4f')}, "
            f"accuracy {_fmt(m.get('accuracy'), '.4f')} ({model})"
        ]
    if kind == "multiclass":
        record = _record(run, tasks.multiclass_record)
        per_class = record.get("class_auc") or {}
        lines = [
            f"validation macro AUC {_fmt(record.get('macro_auc', m.get('auc')), '.4f')}, loss "
            f"{_fmt(m.get('loss'), '.4f')}, accuracy "
            f"{_fmt(record.get('accuracy', m.get('accuracy')), '.4f')} ({model})"
        ]
        if isinstance(per_class, dict) and per_class:
            lines.append(
                "one-vs-rest AUC: "
                + ", ".join(f"{name} {_fmt(auc, '.4f')}" for name, auc in per_class.items())
            )
        return lines
    lines = [f"validation loss {_fmt(m.get('loss'), '.4f')} ({model})"]
    targets = _record(run, tasks.regression_record)
    for name, t in targets.items() if isinstance(targets, dict) else ():
        kind_of = (
            "prediction / truth" if t.get("response_kind") == "ratio" else "prediction - truth"
        )
        lines.append(
            f"{name}: RMSE {_fmt(t.get('rmse'), '.4g')}, MAE {_fmt(t.get('mae'), '.4g')}, "
            f"response {_fmt(t.get('response'), '.4g')} and resolution "
            f"{_fmt(t.get('resolution'), '.4g')} of {kind_of}"
            + (
                f" ({t['response_reason']})"
                if t.get("response_kind") == "difference" and t.get("response_reason")
                else ""
            )
        )
    return lines


def _record(run: Run, compute: Callable[[Run], dict[str, Any]]) -> dict[str, Any]:
    try:
        return compute(run)
    except (MissingData, ValueError):
        return {}


def describe_task(task: dict[str, Any], kind: str) -> str:
    """``multiclass (top, W, QCD), classes balanced`` or ``regression of pt (huber)``."""
    if kind == "regression":
        targets = task.get("targets") or []
        names = ", ".join(str(t.get("name", "?")) for t in targets if isinstance(t, dict))
        return f"regression of {names or '?'} ({task.get('loss') or 'mse'})"
    classes = task.get("classes") or []
    text = f"{kind} ({', '.join(str(c) for c in classes)})" if classes else kind
    return text + (", classes balanced" if task.get("balance") else "")


def negative_weights_line(run: Run) -> str | None:
    """What training and the metrics did with negative weights, and how many there were;
    ``None`` when the run records no choice and has no negative weight to speak of."""
    training = run.training_negative_weights
    counts: dict[str, Any] | None = None
    if run.validation is not None:
        counts = negative_weight_summary(run.validation.weights)
    elif isinstance((run.metrics or {}).get("negative_weights"), dict):
        counts = (run.metrics or {})["negative_weights"]
    negative = counts.get("negative_events") if counts else None
    if training is None and not negative:
        return None
    found = (
        f"{negative} of {counts.get('events', '?')} validation events "
        f"({100 * float(counts.get('negative_share', 0.0)):.1f} % of |w|)"
        if counts and isinstance(negative, int)
        else "validation events not recorded"
    )
    return (
        f"negative weights: {found}; training: {training or 'not recorded'} "
        f"(train.negative_weights); metrics count them as {METRIC_NEGATIVE_WEIGHTS}"
    )


def _fmt(value: Any, spec: str) -> str:
    return format(value, spec) if isinstance(value, int | float) else "?"


def _duration(seconds: Any) -> str:
    if not isinstance(seconds, int | float) or not math.isfinite(seconds):
        return "?"
    if seconds < 120:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {secs:02d} s"
