"""Weighted ROC, AUC, log loss and accuracy against brute force and known classifiers."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtrain.evaluation import (
    auc_from_curve,
    weighted_accuracy,
    weighted_auc,
    weighted_log_loss,
    weighted_roc,
)


def pairwise_auc(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> float:
    """The weighted Mann-Whitney statistic over every signal/background pair, ties one half."""
    sig, bkg = labels == 1, labels == 0
    s, b = scores[sig][:, None], scores[bkg][None, :]
    pair_weights = weights[sig][:, None] * weights[bkg][None, :]
    wins = (s > b) + 0.5 * (s == b)
    return float(np.sum(pair_weights * wins) / (weights[sig].sum() * weights[bkg].sum()))


events = st.integers(min_value=2, max_value=40).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 1), min_size=n, max_size=n).filter(lambda y: 0 < sum(y) < n),
        # Few distinct scores, so that ties are frequent.
        st.lists(st.integers(0, 6).map(lambda k: k / 4), min_size=n, max_size=n),
        st.lists(st.floats(0.1, 5.0), min_size=n, max_size=n),
    )
)


@given(events)
@settings(max_examples=200, deadline=None)
def test_auc_equals_the_pairwise_statistic_with_ties_and_weights(
    case: tuple[list[int], list[float], list[float]],
) -> None:
    labels, scores, weights = (np.asarray(v) for v in case)
    assert weighted_auc(labels, scores, weights) == pytest.approx(
        pairwise_auc(labels, scores, weights), abs=1e-12
    )


@given(events)
@settings(max_examples=100, deadline=None)
def test_integer_weights_equal_repeated_events(
    case: tuple[list[int], list[float], list[float]],
) -> None:
    labels, scores, weights = (np.asarray(v) for v in case)
    counts = np.ceil(weights).astype(int)
    repeated = [np.repeat(v, counts) for v in (labels, scores)]
    ones = np.ones(counts.sum())
    fpr, tpr, thr = weighted_roc(labels, scores, counts)
    rfpr, rtpr, rthr = weighted_roc(*repeated, ones)
    np.testing.assert_allclose(fpr, rfpr, atol=1e-12)
    np.testing.assert_allclose(tpr, rtpr, atol=1e-12)
    np.testing.assert_array_equal(thr, rthr)
    p = scores / 1.5
    assert weighted_log_loss(labels, p, counts) == pytest.approx(
        weighted_log_loss(*[np.repeat(v, counts) for v in (labels, p)], ones)
    )
    assert weighted_accuracy(labels, p, counts) == pytest.approx(
        weighted_accuracy(*[np.repeat(v, counts) for v in (labels, p)], ones)
    )


def test_negative_weights_keep_the_bilinear_statistic() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20
    weights = rng.normal(1.0, 1.0, 300)  # about 16 % negative
    assert np.any(weights < 0)
    assert weighted_auc(labels, scores, weights) == pytest.approx(
        pairwise_auc(labels, scores, weights), abs=1e-12
    )


def test_curve_shape_thresholds_and_end_points() -> None:
    labels = np.array([1, 0, 1, 0, 1, 0])
    scores = np.array([0.9, 0.9, 0.7, 0.3, 0.3, 0.1])
    fpr, tpr, thresholds = weighted_roc(labels, scores, np.ones(6))
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.7, 0.3, 0.1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1, 1])
    np.testing.assert_allclose(fpr, [0, 1 / 3, 1 / 3, 2 / 3, 1])
    assert np.all(np.diff(thresholds) < 0)


def test_perfect_inverted_and_constant_classifiers() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    weights = rng.uniform(0.5, 2.0, 1000)
    perfect = labels + rng.uniform(0, 0.5, 1000)
    assert weighted_auc(labels, perfect, weights) == pytest.approx(1.0)
    assert weighted_auc(labels, -perfect, weights) == pytest.approx(0.0)
    assert weighted_auc(labels, np.zeros(1000), weights) == pytest.approx(0.5)
    assert weighted_accuracy(labels, perfect / 1.5, weights) == pytest.approx(1.0)
    assert weighted_accuracy(labels, 1 - perfect / 1.5, weights) == pytest.approx(0.0)


def test_random_scores_give_about_one_half() -> None:
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200_000)
    auc = weighted_auc(labels, rng.uniform(size=200_000), rng.uniform(0.1, 3, 200_000))
    assert abs(auc - 0.5) < 0.01


def test_log_loss_and_accuracy_by_hand() -> None:
    labels = np.array([1, 0, 1])
    p = np.array([0.8, 0.4, 0.3])
    w = np.array([1.0, 2.0, 1.0])
    expected = -(np.log(0.8) + 2 * np.log(0.6) + np.log(0.3)) / 4
    assert weighted_log_loss(labels, p, w) == pytest.approx(expected)
    assert weighted_accuracy(labels, p, w) == pytest.approx(3 / 4)
    assert weighted_accuracy(labels, np.array([0.5, 0.5, 0.5]), w) == pytest.approx(2 / 4)
    assert np.isfinite(weighted_log_loss(labels, np.array([1.0, 0.0, 0.0]), w))


def test_keras_shaped_column_outputs_are_accepted() -> None:
    labels = np.array([[1], [0]])
    p = np.array([[0.9], [0.2]], dtype=np.float32)
    assert weighted_auc(labels, p, np.ones(2)) == 1.0


def test_auc_from_curve_agrees() -> None:
    fpr, tpr, _ = weighted_roc([1, 0, 1, 0], [0.8, 0.6, 0.4, 0.2], [1, 1, 1, 1])
    assert auc_from_curve(fpr, tpr) == pytest.approx(0.75)


@pytest.mark.parametrize(
    ("labels", "scores", "weights", "words"),
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], [1, 1, 1], "no events with label 0"),
        ([0, 0], [0.1, 0.2], [1, 1], "no events with label 1"),
        ([1, 0, 1], [0.1, 0.2], [1, 1, 1], "same length"),
        ([[1, 0], [1, 0]], [[0.1, 0.2], [0.1, 0.2]], [[1, 1], [1, 1]], "1-D"),
        ([1, 0, 2], [0.1, 0.2, 0.3], [1, 1, 1], "labels must be 0 or 1"),
        ([1, 0], [0.1, np.nan], [1, 1], "scores must be finite"),
        ([1, 0], [0.1, 0.2], [-1, 1], "label 1 have total weight"),
        ([], [], [], "no events"),
    ],
)
def test_bad_input_is_a_clear_value_error(
    labels: list[int], scores: list[float], weights: list[float], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        weighted_roc(labels, scores, weights)


def test_weighted_means_need_positive_total_weight() -> None:
    with pytest.raises(ValueError, match="total weight"):
        weighted_log_loss([1, 0], [0.5, 0.5], [1, -1])
    with pytest.raises(ValueError, match="total weight"):
        weighted_accuracy([1, 0], [0.5, 0.5], [0, 0])


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, gridtrain.evaluation; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
