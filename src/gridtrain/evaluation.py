"""Weighted classification metrics for binary classifiers, in plain numpy.

Layer: evaluation, pure functions of arrays. It never imports TensorFlow or Keras, so the head node
can recompute metrics and regenerate reports without them, and it does no I/O.

Every function takes per-event ``weights`` (generator weights, cross-section normalisation) and
treats an event of weight w like w copies of it. Ties in the scores are handled exactly: events
with equal scores form one step of the ROC curve, so the AUC credits a tied signal/background pair
with one half, as the Mann-Whitney statistic does.

**Negative weights** (NLO generators) are accepted. Each class's total weight must be positive;
inside the curve, negative weights can make it step backwards, and fpr or tpr can leave [0, 1]
at intermediate thresholds. The curve is returned as computed, unclipped, and the AUC remains the
weighted Mann-Whitney statistic

    sum over signal i, background j of w_i w_j ([s_i > s_j] + [s_i = s_j] / 2) / (W_sig W_bkg)

which is bilinear in the weights, so it still equals the repeated-events AUC wherever that is
defined, but it may fall outside [0, 1].
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]


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
    return y, v, w


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
                f"the events with label {label} have total weight {total:g}, not > 0: "
                "the efficiencies are undefined"
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
        raise ValueError(f"the events' total weight is {total:g}, not > 0: no weighted mean")
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
