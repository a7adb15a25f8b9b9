"""What a model is trained towards, per task: labels, targets, sample weights, validation figures.

Layer: train, pure numpy (no TensorFlow, no files). ``InputBuilder`` turns a shard's ``label``,
``target`` and ``weight`` datasets into what ``train_on_batch`` takes with these functions, and the
worker's epoch validation and the final evaluation turn predictions back into the task's figures:

==============  ================================  ==================  =========================
kind            y (training)                      y back (metrics)    validation record
==============  ================================  ==================  =========================
``binary``      label 0/1, float32 (N,)           label (N,)          loss, accuracy, auc
``multiclass``  one-hot float32 (N, K)            argmax (N,)         loss, accuracy, auc (macro)
``regression``  ``(target - mean) / std`` (N, T)  physical (N, T)     loss
==============  ================================  ==================  =========================

**Sample weights** are the event weight after ``train.negative_weights`` (``keep`` it, take its
``abs``olute value, or ``zero`` it; default ``abs``) times its kinematic reweighting factor
(``dataset.reweight``, looked up in the manifest's histograms for that treatment) times the
class's factor (``task.balance``, which equalises the reweighted sums).
The default is ``abs`` because with ``keep`` the loss is unbounded below: an event of weight
-|w| adds ``|w| log p``, which a model lowers without limit by predicting its label ever more
wrongly. ``zero`` drops those events (the closest to the positive part of the distribution), and
``keep`` is the unbiased estimate of the physical distribution, for a share small enough that the
model cannot exploit it. Metrics never use these weights: they take the event weights with
negative ones counted as zero (``gridtrain.evaluation.metric_weights``), whatever the choice.
The validation loss (early stopping, the best snapshot) is the training loss on the validation
events with the training's sample weights, so both curves measure the same thing; under ``keep``
the evaluation's loss functions still count a negative weight as zero, so the loss that early
stopping compares stays bounded below.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from gridtrain.errors import ConfigError, ShardError
from gridtrain.evaluation import (
    metric_weights,
    multiclass_metrics,
    weighted_accuracy,
    weighted_auc,
    weighted_categorical_log_loss,
    weighted_log_loss,
    weighted_regression_loss,
)
from gridtrain.task import Task

Float = npt.NDArray[np.float32]

NEGATIVE_WEIGHTS = ("keep", "abs", "zero")
DEFAULT_NEGATIVE_WEIGHTS = "abs"


def treat_negative(weights: npt.ArrayLike, policy: str) -> Float:
    """Event weights after ``train.negative_weights``: ``keep``, ``abs`` or ``zero``."""
    w = np.asarray(weights, dtype=np.float32)
    if policy == "keep":
        return w
    if policy == "abs":
        return np.abs(w)
    if policy == "zero":
        return np.where(w > 0, w, np.float32(0.0))
    raise ConfigError(
        f"train.negative_weights is {policy!r}; choose one of {', '.join(NEGATIVE_WEIGHTS)}"
    )


def sample_weights(
    event_weights: npt.ArrayLike,
    labels: npt.ArrayLike,
    policy: str,
    factors: Sequence[float],
    reweight: npt.ArrayLike | None = None,
) -> Float:
    """The weights training uses: the treated event weight times the event's kinematic
    reweighting factor (``reweight``, ``dataset.reweight``) times ``factors[label]``
    (classifiers; a regression passes no factors)."""
    w = treat_negative(event_weights, policy)
    if reweight is not None:
        w = w * np.asarray(reweight, dtype=np.float32)
    if factors and any(f != 1.0 for f in factors):
        w = w * np.asarray(factors, dtype=np.float32)[np.asarray(labels, dtype=np.int64)]
    return w.astype(np.float32, copy=False)


def training_labels(task: Task, labels: npt.ArrayLike, where: str) -> Float:
    """What the model is fit to for class indices ``labels``: 0/1 (binary) or one-hot rows."""
    y = np.asarray(labels)
    k = len(task.classes)
    bad = (y < 0) | (y >= k)
    if y.size and np.any(bad):
        value = y[np.argmax(bad)].item()
        raise ShardError(
            f"{where}: label {value!r} is not a class of the task {task.describe()} (0..{k - 1}); "
            "convert again with this config"
        )
    if task.kind == "binary":
        return y.astype(np.float32)
    return np.eye(k, dtype=np.float32)[y.astype(np.int64)]


def standardise_targets(task: Task, targets: npt.ArrayLike, where: str) -> Float:
    """``(target - mean) / std`` per column, with the manifest's training-split statistics."""
    t = np.asarray(targets, dtype=np.float32)
    t = t[:, None] if t.ndim == 1 else t
    if t.ndim != 2 or t.shape[1] != len(task.targets):
        raise ShardError(
            f"{where}: target has shape {t.shape}, the task {task.describe()} has "
            f"{len(task.targets)} target(s); convert again with this config"
        )
    mean = np.asarray([x.mean for x in task.targets], dtype=np.float32)
    std = np.asarray([x.std for x in task.targets], dtype=np.float32)
    return (t - mean) / std


def unstandardise(task: Task, values: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Physical units from standardised (N, T) values (``Task.unstandardise`` per column)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[:, None] if v.ndim == 1 else v
    return np.stack([task.unstandardise(i, v[:, i]) for i in range(v.shape[1])], axis=1)


def class_indices(task: Task, y: npt.ArrayLike) -> npt.NDArray[np.int64]:
    """Class indices (N,) from training labels (0/1 or one-hot rows)."""
    a = np.asarray(y)
    if task.kind == "multiclass":
        return np.argmax(a, axis=1).astype(np.int64)
    return a.reshape(-1).astype(np.int64)


def validation_record(
    task: Task,
    y: npt.ArrayLike,
    outputs: npt.ArrayLike,
    weights: npt.ArrayLike,
    event_weights: npt.ArrayLike,
) -> dict[str, float]:
    """The epoch's validation figures the parameter server records (``ps.leases``).

    ``loss`` (what early stopping and the best snapshot compare) is the training loss with the
    training's sample ``weights``; ``accuracy`` and ``auc`` (classifiers; macro-averaged
    one-vs-rest for multiclass) use the ``event_weights`` with negative ones as zero.
    """
    out = np.asarray(outputs, dtype=np.float64)
    if task.kind == "regression":
        loss = weighted_regression_loss(y, out, weights, task.loss or "mse", task.huber_delta)
        return {"loss": loss}
    labels = class_indices(task, y)
    metric = metric_weights(event_weights)
    if task.kind == "binary":
        scores = out.reshape(-1)
        return {
            "loss": weighted_log_loss(labels, scores, weights),
            "accuracy": weighted_accuracy(labels, scores, metric),
            "auc": weighted_auc(labels, scores, metric),
        }
    full = multiclass_metrics(labels, out, metric, task.classes)
    return {
        "loss": weighted_categorical_log_loss(labels, out, weights),
        "accuracy": float(full["accuracy"]),
        "auc": float(full["auc"]),
    }


def negative_weight_warning(weights: dict[str, Any], policy: str) -> str | None:
    """One line naming the share of negative weights in a manifest's ``weights`` record and what
    training does with them; ``None`` when there are none."""
    samples = weights.get("samples") or {}
    negative = {
        name: record for name, record in samples.items() if record.get("negative_events", 0) > 0
    }
    if not negative:
        return None
    absolute = sum(r.get("sum", 0.0) - 2.0 * r.get("negative_sum", 0.0) for r in samples.values())
    share = -sum(r.get("negative_sum", 0.0) for r in samples.values()) / absolute if absolute else 0
    parts = ", ".join(
        f"{name} {r['negative_events']} of {r.get('events', '?')} events, "
        f"{100 * r.get('negative_share', 0.0):.1f}% of |w|"
        for name, r in sorted(negative.items())
    )
    what = {
        "keep": "kept as they are (the loss can be lowered without bound by them)",
        "abs": "used with their absolute value",
        "zero": "set to zero",
    }[policy]
    return (
        f"{100 * share:.1f}% of the sum of |w| is negative event weights ({parts}); training: "
        f"{what} (train.negative_weights: {policy}); metrics count them as zero"
    )
