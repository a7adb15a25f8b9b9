"""Weighted metrics for every task (binary, multiclass, regression), in plain numpy.

Layer: evaluation, pure functions of arrays. It never imports TensorFlow or Keras, so the head node
can recompute metrics and regenerate reports without them, and it does no I/O.

Every function takes per-event ``weights`` (generator weights, cross-section normalisation) and
treats an event of weight w like w copies of it. Ties in the scores are handled exactly: events
with equal scores form one step of the ROC curve, so the AUC credits a tied signal/background pair
with one half, as the Mann-Whitney statistic does.

**Negative weights** (NLO generators such as MadGraph5_aMC@NLO) are **counted as zero by every
metric** (``metric_weights``), whatever ``train.negative_weights`` did in training. A metric is a
statement about a distribution of events, and only non-negative weights make one: with negative
weights kept, an efficiency is a difference of sums and can leave [0, 1], so a ROC curve can step
backwards and an AUC can exceed 1 (a validation AUC of 1.0214 was seen on NanoAOD with
``genWeight``). The two choices that keep every metric in its range are zeroing and the absolute
value. Zeroing is the closer one: write the physical distribution as f = f+ - f- (positive-weight
events minus negative-weight ones); zeroing measures f+ = f + f-, the absolute value measures
f+ + f- = f + 2 f-, twice as far from f wherever the negative events differ in shape. Where they do
not, all three agree. The share of |w| that was negative is recorded next to the metrics
(``negative_weight_summary``) so a report can say how much was set aside. The constant
``METRIC_NEGATIVE_WEIGHTS`` names the choice for records.

With zeroed weights the binary AUC is the weighted Mann-Whitney statistic

    sum over signal i, background j of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_sig W_bkg)

over the events of positive weight, a probability in [0, 1]; every efficiency, confusion-matrix
entry and accuracy lies in [0, 1], and every loss is a weighted mean of non-negative terms.

Multiclass metrics are one-vs-rest: class k's tagger is its own output ``scores[:, k]`` (the softmax
probability), the signal is class k and the background every other class. The HEP view, background
rejection 1 / eps_b at a fixed signal efficiency, is given per pair of classes (class k's tagger,
class j as the background), interpolated linearly along the ROC curve.

Regression metrics are in physical units. The **response** is prediction / truth when every true
value has one sign and stays away from zero (the calibration view: 1 is unbiased), and
prediction - truth otherwise (``response_kind``, with the reason in ``response_reason``). Away
from zero means every |truth| is at least ``RATIO_FLOOR`` of the median |truth|: a ratio over a
truth near zero is a number like 1.7e7 that says nothing, and a choice made on the sign alone flips
with the rounding of a value near zero (1.49e-10 stored, -4.48e-8 after a round trip). Its
centre is the weighted **median** and the **resolution** its weighted interquartile range / 1.349
(the standard deviation for a Gaussian core, robust against the tails a mis-measured jet gives),
each in bins of the true value that hold equal shares of the weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

METRIC_NEGATIVE_WEIGHTS = "zero"
"""How metrics treat negative event weights: counted as zero (see the module docstring)."""

FIXED_EFFICIENCIES = (0.5, 0.9)
"""The signal efficiencies at which multiclass metrics give each background's rejection."""

RATIO_FLOOR = 0.01
"""A regression's response is a ratio only where every |truth| >= RATIO_FLOOR x median |truth|."""

IQR_TO_SIGMA = 1.349
"""The interquartile range of a unit Gaussian: IQR / 1.349 estimates a Gaussian core's sigma."""


def metric_weights(weights: ArrayLike) -> FloatArray:
    """The weights every metric uses: negative weights counted as zero (float64, a new array).

    The one treatment of negative weights for metrics, so that no efficiency, AUC, accuracy or
    confusion-matrix entry can leave [0, 1]; why zero and not the absolute value is in the
    module docstring.
    """
    w = np.array(weights, dtype=np.float64)
    finite = np.isfinite(w)
    if not np.all(finite):
        index = int(np.argmin(finite.reshape(-1)))
        raise ValueError(f"weights must be finite; found {w.reshape(-1)[index]} at index {index}")
    return np.where(w > 0, w, 0.0)


def negative_weight_summary(weights: ArrayLike) -> dict[str, Any]:
    """How many events the metrics counted as zero and their share of the sum of |w|."""
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    negative = w < 0
    total = float(np.sum(np.abs(w)))
    return {
        "metrics": METRIC_NEGATIVE_WEIGHTS,
        "events": int(w.shape[0]),
        "negative_events": int(np.count_nonzero(negative)),
        # + 0.0: no negative weight gives 0.0, not -0.0 (printed "-0.0 %")
        "negative_share": float(-np.sum(w[negative]) / total) + 0.0 if total > 0 else 0.0,
    }


def _check(
    labels: ArrayLike, values: ArrayLike, weights: ArrayLike, what: str
) -> tuple[npt.NDArray[np.bool_], FloatArray, FloatArray]:
    """Validate and convert to 1-D arrays: boolean labels, float64 values and weights."""
    y = np.asarray(labels)
    v = np.asarray(values, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if y.ndim != 1 or v.ndim != 1 or w.ndim != 1:
        # A Keras model's (N, 1) output is the common case: accept it as a column.
        if v.ndim == 2 and v.shape[1] == 1:
            v = v[:, 0]
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if w.ndim == 2 and w.shape[1] == 1:
            w = w[:, 0]
    if y.ndim != 1 or v.ndim != 1 or w.ndim != 1:
        raise ValueError(
            f"labels, {what} and weights must be 1-D (or N x 1); got shapes "
            f"{y.shape}, {v.shape} and {w.shape}"
        )
    if not y.shape == v.shape == w.shape:
        raise ValueError(
            f"labels, {what} and weights must have the same length; got {y.shape[0]}, "
            f"{v.shape[0]} and {w.shape[0]}"
        )
    if y.shape[0] == 0:
        raise ValueError("no events: labels, scores and weights are empty")
    if y.dtype != np.bool_:
        bad = (y != 0) & (y != 1)
        if np.any(bad):
            raise ValueError(
                f"labels must be 0 or 1; found {y[np.argmax(bad)]!r} at index {int(np.argmax(bad))}"
            )
        y = y == 1
    for name, array in ((what, v), ("weights", w)):
        finite = np.isfinite(array)
        if not np.all(finite):
            index = int(np.argmin(finite))
            raise ValueError(f"{name} must be finite; found {array[index]} at index {index}")
    return y, v, metric_weights(w)


def _class_totals(y: npt.NDArray[np.bool_], w: FloatArray) -> tuple[float, float]:
    """Total signal and background weight; a class that is absent or not positive is an error."""
    totals = []
    for label, present in ((1, y), (0, ~y)):
        if not np.any(present):
            raise ValueError(
                f"no events with label {label}: a ROC curve needs both classes "
                "(is the validation split too small, or the label column constant?)"
            )
        total = float(np.sum(w[present]))
        if not total > 0:
            raise ValueError(
                f"the events with label {label} have total weight {total:g}, not > 0, with "
                "negative weights counted as zero: the efficiencies are undefined"
            )
        totals.append(total)
    return totals[0], totals[1]


def weighted_roc(
    labels: ArrayLike, scores: ArrayLike, weights: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The weighted ROC curve: ``fpr, tpr, thresholds``, thresholds strictly descending.

    Point k counts the events with score >= ``thresholds[k]`` as selected; the first point is
    (0, 0) at threshold +inf and the last is (1, 1) at the lowest score. Events with equal scores
    are one point (exact ties), so there are as many points as distinct scores, plus one.
    O(n log n): one sort and two cumulative sums.
    """
    y, s, w = _check(labels, scores, weights, "scores")
    positives, negatives = _class_totals(y, w)
    order = np.argsort(-s, kind="stable")
    s, y, w = s[order], y[order], w[order]
    tp = np.cumsum(np.where(y, w, 0.0))
    fp = np.cumsum(np.where(y, 0.0, w))
    # The last event of each run of equal scores closes that threshold's step.
    last = np.flatnonzero(np.r_[s[1:] != s[:-1], True])
    tpr = np.r_[0.0, tp[last] / positives]
    fpr = np.r_[0.0, fp[last] / negatives]
    thresholds = np.r_[np.inf, s[last]]
    # The cumulative sums' rounding must not leave the end point a hair away from (1, 1).
    tpr[-1] = fpr[-1] = 1.0
    return fpr, tpr, thresholds


def auc_from_curve(fpr: ArrayLike, tpr: ArrayLike) -> float:
    """The area under a ROC curve given as points (trapezoids; exact for tied steps)."""
    x = np.asarray(fpr, dtype=np.float64)
    y = np.asarray(tpr, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1 or x.shape[0] < 2:
        raise ValueError(f"fpr and tpr must be 1-D of equal length >= 2; got {x.shape}, {y.shape}")
    return float(np.sum(np.diff(x) * (y[1:] + y[:-1])) / 2.0)


def weighted_auc(labels: ArrayLike, scores: ArrayLike, weights: ArrayLike) -> float:
    """The weighted ROC AUC: the probability that signal scores above background, ties one half."""
    fpr, tpr, _ = weighted_roc(labels, scores, weights)
    return auc_from_curve(fpr, tpr)


def _total_weight(w: FloatArray) -> float:
    total = float(np.sum(w))
    if not total > 0:
        raise ValueError(
            f"the events' total weight is {total:g}, not > 0, with negative weights counted as "
            "zero: no weighted mean"
        )
    return total


def weighted_log_loss(
    labels: ArrayLike, probabilities: ArrayLike, weights: ArrayLike, eps: float = 1e-7
) -> float:
    """Binary cross-entropy averaged with the weights: sum(w * loss) / sum(w).

    Probabilities are clipped to [eps, 1 - eps] as Keras does (its epsilon is 1e-7). Note that
    Keras's own weighted loss divides by the number of events, not the total weight; this is the
    weighted mean, comparable across datasets whatever their normalisation.
    """
    y, p, w = _check(labels, probabilities, weights, "probabilities")
    p = np.clip(p, eps, 1.0 - eps)
    losses = -np.where(y, np.log(p), np.log1p(-p))
    return float(np.dot(w, losses) / _total_weight(w))


def weighted_accuracy(
    labels: ArrayLike, probabilities: ArrayLike, weights: ArrayLike, threshold: float = 0.5
) -> float:
    """The weighted fraction of events classified right, an event being signal when p > threshold.

    Strictly greater, as Keras's ``BinaryAccuracy`` decides.
    """
    y, p, w = _check(labels, probabilities, weights, "probabilities")
    right = (p > threshold) == y
    return float(np.sum(w[right]) / _total_weight(w))


# -- multiclass ---------------------------------------------------------------------------------


def _check_multiclass(
    labels: ArrayLike, scores: ArrayLike, weights: ArrayLike, classes: Sequence[str]
) -> tuple[npt.NDArray[np.int64], FloatArray, FloatArray]:
    """Validate: integer labels 0..K-1 (N,), scores (N, K) and weights (N,); metric weights."""
    y = np.asarray(labels)
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    k = len(classes)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if w.ndim == 2 and w.shape[1] == 1:
        w = w[:, 0]
    if y.ndim != 1 or w.ndim != 1 or s.ndim != 2 or s.shape[1] != k:
        raise ValueError(
            f"labels (N,), scores (N, {k}) for classes {list(classes)} and weights (N,) "
            f"expected; got shapes {y.shape}, {s.shape} and {w.shape}"
        )
    if not y.shape[0] == s.shape[0] == w.shape[0]:
        raise ValueError(
            f"labels, scores and weights must have the same length; got {y.shape[0]}, "
            f"{s.shape[0]} and {w.shape[0]}"
        )
    if y.shape[0] == 0:
        raise ValueError("no events: labels, scores and weights are empty")
    bad = (y < 0) | (y >= k) | (y != np.round(y)) if y.dtype.kind == "f" else (y < 0) | (y >= k)
    if np.any(bad):
        index = int(np.argmax(bad))
        raise ValueError(
            f"labels must be class indices 0..{k - 1} ({', '.join(classes)}); "
            f"found {y[index].item()!r} at index {index}"
        )
    finite = np.isfinite(s)
    if not np.all(finite):
        index = int(np.argmin(finite.all(axis=1)))
        raise ValueError(f"scores must be finite; found {s[index].tolist()} at event {index}")
    return y.astype(np.int64), s, metric_weights(w)


def weighted_categorical_log_loss(
    labels: ArrayLike, probabilities: ArrayLike, weights: ArrayLike, eps: float = 1e-7
) -> float:
    """Categorical cross-entropy of integer labels, averaged with the weights.

    ``-log p[label]`` per event with p clipped to [eps, 1 - eps] as Keras does; the weighted mean
    sum(w * loss) / sum(w), negative weights counted as zero.
    """
    p = np.asarray(probabilities, dtype=np.float64)
    classes = [str(i) for i in range(p.shape[1])] if p.ndim == 2 else ["0"]
    y, p, w = _check_multiclass(labels, p, weights, classes)
    picked = np.clip(p[np.arange(y.shape[0]), y], eps, 1.0 - eps)
    return float(np.dot(w, -np.log(picked)) / _total_weight(w))


def one_vs_rest_roc(
    labels: ArrayLike,
    scores: ArrayLike,
    weights: ArrayLike,
    signal: int,
    background: int | None = None,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """The ROC curve of class ``signal``'s tagger ``scores[:, signal]``.

    The background is every other class, or only class ``background`` when given (the HEP
    view of one tagger against one process). Returns ``fpr, tpr, thresholds`` as
    ``weighted_roc`` does.
    """
    y = np.asarray(labels).reshape(-1)
    s = np.asarray(scores, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    keep = slice(None) if background is None else (y == signal) | (y == background)
    return weighted_roc(y[keep] == signal, s[keep, signal], w[keep])


def efficiency_at(tpr: ArrayLike, fpr: ArrayLike, signal_efficiency: float) -> float:
    """The background efficiency where the curve first reaches ``signal_efficiency``.

    Linear interpolation between the two points around it (the curve is monotone: metric
    weights are non-negative).
    """
    t = np.asarray(tpr, dtype=np.float64)
    f = np.asarray(fpr, dtype=np.float64)
    i = int(np.searchsorted(t, signal_efficiency, side="left"))
    if i == 0:
        return float(f[0])
    if i >= t.shape[0]:
        return float(f[-1])
    step = t[i] - t[i - 1]
    share = (signal_efficiency - t[i - 1]) / step if step > 0 else 1.0
    return float(f[i - 1] + share * (f[i] - f[i - 1]))


def rejection(background_efficiency: float) -> float | None:
    """Background rejection 1 / eps_b; ``None`` (JSON null) when no background passes."""
    return 1.0 / background_efficiency if background_efficiency > 0 else None


def multiclass_metrics(
    labels: ArrayLike,
    scores: ArrayLike,
    weights: ArrayLike,
    classes: Sequence[str],
    efficiencies: Sequence[float] = FIXED_EFFICIENCIES,
) -> dict[str, Any]:
    """The weighted metrics of a K-class classifier, as a JSON-ready record.

    ``labels`` are class indices (label i is ``classes[i]``), ``scores`` the (N, K) softmax
    outputs. Keys: ``class_auc`` (per class, one-vs-rest; ``None`` for a class without events or
    without weight), ``macro_auc`` (the mean of the defined ones) and ``auc``, the same number
    (the headline figure that binary runs' readers, the tuner and ``gridtrain status`` take),
    ``accuracy`` (argmax),
    ``log_loss``, ``confusion`` (row i: how class i's weight spreads over the predicted classes
    (argmax), each row summing to 1, an absent class a row of zeros), ``rejection``
    (``rejection[k][j][str(e)]``: class j's rejection by class k's tagger at signal efficiency e)
    and ``negative_weights`` (``negative_weight_summary``).
    """
    names = [str(c) for c in classes]
    y, s, w = _check_multiclass(labels, scores, weights, names)
    k = len(names)
    class_weight = np.bincount(y, weights=w, minlength=k)
    present = class_weight > 0
    if np.count_nonzero(present) < 2:
        raise ValueError(
            f"the events have positive weight in {int(np.count_nonzero(present))} of the "
            f"classes {names}; one-vs-rest metrics need two (is the validation split too small?)"
        )
    aucs: dict[str, float | None] = {}
    rejections: dict[str, dict[str, dict[str, float | None]]] = {}
    for i, name in enumerate(names):
        if not present[i]:
            aucs[name] = None
            continue
        fpr, tpr, _ = one_vs_rest_roc(y, s, w, i)
        aucs[name] = auc_from_curve(fpr, tpr)
        rejections[name] = {}
        for j, other in enumerate(names):
            if j == i or not present[j]:
                continue
            fpr, tpr, _ = one_vs_rest_roc(y, s, w, i, j)
            rejections[name][other] = {
                f"{e:g}": rejection(efficiency_at(tpr, fpr, e)) for e in efficiencies
            }
    predicted = np.argmax(s, axis=1)
    confusion = np.zeros((k, k))
    np.add.at(confusion, (y, predicted), w)
    rows = confusion.sum(axis=1, keepdims=True)
    confusion = np.divide(confusion, rows, out=np.zeros_like(confusion), where=rows > 0)
    defined = [a for a in aucs.values() if a is not None]
    return {
        "kind": "multiclass",
        "classes": names,
        "class_auc": aucs,
        "macro_auc": float(np.mean(defined)),
        "auc": float(np.mean(defined)),
        "accuracy": float(np.sum(w[predicted == y]) / _total_weight(w)),
        "log_loss": weighted_categorical_log_loss(y, s, w),
        "confusion": confusion.tolist(),
        "rejection": rejections,
        "negative_weights": negative_weight_summary(weights),
    }


# -- regression ---------------------------------------------------------------------------------


def _check_regression(
    truth: ArrayLike, prediction: ArrayLike, weights: ArrayLike
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Validate: truth and prediction (N, T) (or (N,), one target) and weights (N,)."""
    t = np.asarray(truth, dtype=np.float64)
    p = np.asarray(prediction, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    t = t[:, None] if t.ndim == 1 else t
    p = p[:, None] if p.ndim == 1 else p
    w = w[:, 0] if w.ndim == 2 and w.shape[1] == 1 else w
    if t.ndim != 2 or t.shape != p.shape or w.shape != (t.shape[0],):
        raise ValueError(
            "truth and prediction (N, T) of one shape and weights (N,) expected; got shapes "
            f"{t.shape}, {p.shape} and {w.shape}"
        )
    if t.shape[0] == 0:
        raise ValueError("no events: truth, prediction and weights are empty")
    for name, array in (("truth", t), ("prediction", p)):
        finite = np.isfinite(array)
        if not np.all(finite):
            index = int(np.argmin(finite.all(axis=1)))
            raise ValueError(
                f"{name} must be finite; found {array[index].tolist()} at event {index}"
            )
    return t, p, metric_weights(w)


def regression_losses(residual: FloatArray, loss: str, delta: float = 1.0) -> FloatArray:
    """Per-element loss of residuals: ``mse`` (r^2), ``mae`` (|r|) or ``huber`` (Keras's)."""
    a = np.abs(residual)
    if loss == "mse":
        return residual * residual
    if loss == "mae":
        return a
    if loss == "huber":
        return np.where(a <= delta, 0.5 * residual * residual, delta * (a - 0.5 * delta))
    raise ValueError(f"loss is {loss!r}; choose one of mse, mae, huber")


def weighted_regression_loss(
    truth: ArrayLike,
    prediction: ArrayLike,
    weights: ArrayLike,
    loss: str = "mse",
    delta: float = 1.0,
) -> float:
    """A Keras regression loss averaged with the weights: per event the mean over the targets
    (as Keras reduces the last axis), then sum(w * loss) / sum(w), negative weights as zero.

    Pass standardised values to compare with the training loss, physical ones for a physical
    figure.
    """
    t, p, w = _check_regression(truth, prediction, weights)
    per_event = regression_losses(p - t, loss, delta).mean(axis=1)
    return float(np.dot(w, per_event) / _total_weight(w))


def weighted_quantile(values: ArrayLike, weights: ArrayLike, q: ArrayLike) -> FloatArray:
    """Weighted quantiles: each event's weight spread around its value (midpoint rule).

    With equal weights this is the Hazen quantile ((i - 1/2) / n at the i-th smallest value);
    events of zero weight play no part. ``q`` in [0, 1]; the weights' total must be positive.
    """
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    keep = w > 0
    v, w = v[keep], w[keep]
    if v.shape[0] == 0:
        raise ValueError("no events of positive weight: no quantile")
    order = np.argsort(v, kind="stable")
    v, w = v[order], w[order]
    cdf = (np.cumsum(w) - 0.5 * w) / np.sum(w)
    return np.asarray(np.interp(np.asarray(q, dtype=np.float64), cdf, v), dtype=np.float64)


def response_kind(truth: ArrayLike, weights: ArrayLike) -> tuple[str, str]:
    """``("ratio", why)`` when every true value of positive weight has one sign and is at least
    ``RATIO_FLOOR`` of the median |truth| away from zero, else ``("difference", why)``."""
    t = np.asarray(truth, dtype=np.float64).reshape(-1)
    t = t[np.asarray(weights, dtype=np.float64).reshape(-1) > 0]
    if t.size == 0:
        return "difference", "no event of positive weight"
    if not (np.all(t > 0) or np.all(t < 0)):
        return "difference", "the truth takes both signs or zero"
    smallest, median = float(np.min(np.abs(t))), float(np.median(np.abs(t)))
    if smallest < RATIO_FLOOR * median:
        return "difference", (
            f"the truth comes near zero (smallest |truth| {smallest:.3g} < {RATIO_FLOOR:g} x "
            f"median {median:.3g}): a ratio there would be meaningless"
        )
    return "ratio", "the truth has one sign and stays away from zero"


def _centre_and_spread(values: FloatArray, weights: FloatArray) -> tuple[float, float]:
    q25, q50, q75 = weighted_quantile(values, weights, [0.25, 0.5, 0.75])
    return float(q50), float((q75 - q25) / IQR_TO_SIGMA)


def regression_metrics(
    truth: ArrayLike,
    prediction: ArrayLike,
    weights: ArrayLike,
    names: Sequence[str],
    bins: int = 10,
) -> dict[str, Any]:
    """The weighted metrics of a regression in physical units, as a JSON-ready record.

    Per target (``targets[name]``): ``rmse``, ``mae``, ``bias`` (weighted mean of prediction -
    truth), ``response_kind`` (``ratio`` prediction / truth when every true value has one sign
    and stays away from zero, else ``difference``; ``response_reason`` says which),
    ``response`` (weighted median) and ``resolution`` (weighted IQR / 1.349) of all events, and
    ``binned``: the true value cut into ``bins`` bins of equal weight (``edges``; bins that
    coincide on a discrete truth merge) with each bin's ``truth`` (weighted mean), ``events``,
    ``response`` and ``resolution``.
    """
    t, p, w = _check_regression(truth, prediction, weights)
    labels = [str(n) for n in names]
    if len(labels) != t.shape[1]:
        raise ValueError(f"{t.shape[1]} targets but {len(labels)} names ({labels})")
    if bins < 1:
        raise ValueError(f"bins is {bins}; at least 1")
    total = _total_weight(w)
    targets: dict[str, Any] = {}
    for index, name in enumerate(labels):
        true, pred = t[:, index], p[:, index]
        residual = pred - true
        kind, reason = response_kind(true, w)
        response = pred / true if kind == "ratio" else residual
        centre, spread = _centre_and_spread(response, w)
        edges = np.unique(weighted_quantile(true, w, np.linspace(0.0, 1.0, bins + 1)))
        # Every event in a bin, the extreme ones included.
        edges[0], edges[-1] = min(edges[0], true.min()), max(edges[-1], true.max())
        which = np.clip(np.searchsorted(edges, true, side="right") - 1, 0, max(len(edges) - 2, 0))
        binned: dict[str, list[Any]] = {
            "edges": edges.tolist(),
            "truth": [],
            "events": [],
            "response": [],
            "resolution": [],
        }
        for b in range(max(len(edges) - 1, 1)):
            inside = (which == b) & (w > 0)
            if not np.any(inside):
                for key in ("truth", "response", "resolution"):
                    binned[key].append(None)
                binned["events"].append(0)
                continue
            c, r = _centre_and_spread(response[inside], w[inside])
            binned["truth"].append(float(np.average(true[inside], weights=w[inside])))
            binned["events"].append(int(np.count_nonzero(inside)))
            binned["response"].append(c)
            binned["resolution"].append(r)
        targets[name] = {
            "rmse": float(np.sqrt(np.dot(w, residual * residual) / total)),
            "mae": float(np.dot(w, np.abs(residual)) / total),
            "bias": float(np.dot(w, residual) / total),
            "response_kind": kind,
            "response_reason": reason,
            "response": centre,
            "resolution": spread,
            "binned": binned,
        }
    return {
        "kind": "regression",
        "targets": targets,
        "negative_weights": negative_weight_summary(weights),
    }
