"""Weighted ROC, AUC, log loss and accuracy against brute force and known classifiers."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtrain.evaluation import (
    auc_from_curve,
    metric_weights,
    multiclass_metrics,
    negative_weight_summary,
    regression_metrics,
    weighted_accuracy,
    weighted_auc,
    weighted_categorical_log_loss,
    weighted_log_loss,
    weighted_regression_loss,
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


def test_negative_weights_count_as_zero_and_the_auc_stays_a_probability() -> None:
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 300)
    scores = rng.integers(0, 20, 300) / 20
    weights = rng.normal(1.0, 1.0, 300)  # about 16 % negative
    assert np.any(weights < 0)
    zeroed = np.where(weights > 0, weights, 0.0)
    assert weighted_auc(labels, scores, weights) == pytest.approx(
        pairwise_auc(labels, scores, zeroed), abs=1e-12
    )
    fpr, tpr, _ = weighted_roc(labels, scores, weights)
    assert np.all(np.diff(fpr) >= 0)
    assert np.all(np.diff(tpr) >= 0)
    assert fpr.min() >= 0
    assert tpr.max() <= 1


def test_the_nanoaod_case_that_gave_auc_above_one() -> None:
    # A negative-weight background event that scores above the signal lowers the background's
    # total without losing any pair, as the genWeight sample's did: the kept statistic exceeds 1.
    labels = np.array([1, 1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.95, 0.3, 0.2])
    weights = np.array([1.0, 1.0, 1.0, -0.5, 1.0, 1.0])
    kept = pairwise_auc(labels, scores, weights)
    assert kept == pytest.approx(4 / 3)  # the old definition
    assert weighted_auc(labels, scores, weights) == pytest.approx(1.0)


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
    with pytest.raises(ValueError, match="weight is 0, not > 0, with negative weights counted"):
        weighted_log_loss([1, 0], [0.5, 0.5], [-1, -1])
    with pytest.raises(ValueError, match="total weight"):
        weighted_accuracy([1, 0], [0.5, 0.5], [0, 0])


def test_module_does_not_import_tensorflow() -> None:
    code = "import sys, gridtrain.evaluation; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


# -- negative weights, multiclass and regression ------------------------------------------------


def test_metric_weights_zero_the_negative_and_summary_counts_them() -> None:
    w = np.array([2.0, -1.0, 0.0, 1.0])
    np.testing.assert_array_equal(metric_weights(w), [2.0, 0.0, 0.0, 1.0])
    assert w[1] == -1.0  # the caller's array is left alone
    assert negative_weight_summary(w) == {
        "metrics": "zero",
        "events": 4,
        "negative_events": 1,
        "negative_share": pytest.approx(0.25),
    }
    with pytest.raises(ValueError, match="weights must be finite; found nan at index 1"):
        metric_weights([1.0, np.nan])


def test_multiclass_metrics_by_hand() -> None:
    labels = np.array([0, 0, 1, 1, 2, 2])
    scores = np.array(
        [
            [0.7, 0.2, 0.1],
            [0.4, 0.5, 0.1],
            [0.1, 0.8, 0.1],
            [0.3, 0.6, 0.1],
            [0.2, 0.1, 0.7],
            [0.6, 0.1, 0.3],
        ]
    )
    weights = np.array([1.0, 1.0, 2.0, 1.0, 1.0, 3.0])
    m = multiclass_metrics(labels, scores, weights, ["top", "W", "QCD"])
    assert m["kind"] == "multiclass"
    assert m["classes"] == ["top", "W", "QCD"]
    # top's tagger: signal scores 0.7 (w1), 0.4 (w1); background 0.1 (2), 0.3 (1), 0.2 (1), 0.6 (3)
    # pairs: 0.7 beats all 7 units; 0.4 beats 4 units (0.1, 0.3, 0.2) and loses to 0.6
    assert m["class_auc"]["top"] == pytest.approx((7 + 4) / (2 * 7))
    assert m["class_auc"]["W"] == pytest.approx(pairwise_auc(labels == 1, scores[:, 1], weights))
    assert m["class_auc"]["QCD"] == pytest.approx(pairwise_auc(labels == 2, scores[:, 2], weights))
    assert m["macro_auc"] == pytest.approx(np.mean(list(m["class_auc"].values())))
    assert m["auc"] == m["macro_auc"]
    # argmax: 0, 1, 1, 1, 2, 0
    np.testing.assert_allclose(
        m["confusion"], [[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.75, 0.0, 0.25]]
    )
    assert m["accuracy"] == pytest.approx((1 + 2 + 1 + 1) / 9)
    expected = -np.dot(weights, np.log(scores[np.arange(6), labels])) / 9
    assert m["log_loss"] == pytest.approx(expected)
    assert weighted_categorical_log_loss(labels, scores, weights) == pytest.approx(expected)
    # top tagger vs W: signal 0.7, 0.4; W at 0.2 (2), 0.3 (1). At 50 % signal efficiency the cut
    # sits at 0.7, which no W event passes: rejection undefined (null).
    assert m["rejection"]["top"]["W"]["0.5"] is None
    # top tagger vs QCD at 90 %: between (tpr 0.5, fpr 0.75) at 0.6... cut at 0.6 passes QCD's
    # 0.6 (w3 of 4): fpr 0.75 at tpr 0.5, then fpr 0.75 at tpr 1 (cut 0.4) -> eps_b 0.75
    assert m["rejection"]["top"]["QCD"]["0.9"] == pytest.approx(1 / 0.75)
    json.dumps(m, allow_nan=False)


def test_multiclass_perfect_and_random_classifiers() -> None:
    rng = np.random.default_rng(4)
    labels = rng.integers(0, 4, 4000)
    weights = rng.uniform(0.5, 2.0, 4000)
    perfect = np.eye(4)[labels] * 0.9 + 0.025
    m = multiclass_metrics(labels, perfect, weights, list("abcd"))
    assert m["macro_auc"] == pytest.approx(1.0)
    np.testing.assert_allclose(m["confusion"], np.eye(4))
    assert all(
        r is None for rows in m["rejection"].values() for e in rows.values() for r in e.values()
    )
    noise = rng.dirichlet(np.ones(4), 4000)
    m = multiclass_metrics(labels, noise, weights, list("abcd"))
    assert abs(m["macro_auc"] - 0.5) < 0.03
    assert abs(m["accuracy"] - 0.25) < 0.03
    # A random tagger rejects a background by about 1 / eps_s.
    assert m["rejection"]["a"]["b"]["0.5"] == pytest.approx(2.0, rel=0.15)


def test_multiclass_negative_weights_keep_every_metric_in_range() -> None:
    rng = np.random.default_rng(5)
    labels = rng.integers(0, 3, 600)
    scores = rng.dirichlet(np.ones(3), 600)
    scores[np.arange(600), labels] += 0.5
    scores /= scores.sum(axis=1, keepdims=True)
    weights = rng.normal(1.0, 1.2, 600)  # about a fifth negative
    m = multiclass_metrics(labels, scores, weights, ["x", "y", "z"])
    assert all(0 <= a <= 1 for a in m["class_auc"].values())
    assert 0 <= m["accuracy"] <= 1
    assert m["log_loss"] >= 0
    c = np.array(m["confusion"])
    assert np.all((c >= 0) & (c <= 1))
    assert np.allclose(c.sum(axis=1), 1)
    zeroed = np.where(weights > 0, weights, 0.0)
    assert m["class_auc"]["y"] == pytest.approx(pairwise_auc(labels == 1, scores[:, 1], zeroed))
    assert m["negative_weights"]["negative_events"] == int(np.sum(weights < 0))


def test_multiclass_class_without_events_and_bad_input() -> None:
    labels = np.array([0, 1, 0, 1])
    scores = np.full((4, 3), 1 / 3)
    m = multiclass_metrics(labels, scores, np.ones(4), ["a", "b", "c"])
    assert m["class_auc"]["c"] is None
    assert m["macro_auc"] == pytest.approx(0.5)
    assert m["confusion"][2] == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="positive weight in 1 of the classes"):
        multiclass_metrics(labels, scores, [1, -1, 1, 0], ["a", "b", "c"])
    with pytest.raises(
        ValueError, match=r"labels must be class indices 0\.\.2 \(a, b, c\); found 3"
    ):
        multiclass_metrics([0, 3, 1, 1], scores, np.ones(4), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"scores \(N, 3\)"):
        multiclass_metrics(labels, scores[:, :2], np.ones(4), ["a", "b", "c"])


def test_regression_metrics_by_hand() -> None:
    truth = np.array([[1.0], [2.0], [4.0], [5.0]])
    prediction = np.array([[1.5], [2.0], [3.0], [5.0]])
    weights = np.array([2.0, 1.0, 1.0, -3.0])  # the last counts as zero
    m = regression_metrics(truth, prediction, weights, ["pt"], bins=1)
    t = m["targets"]["pt"]
    assert t["rmse"] == pytest.approx(np.sqrt((2 * 0.25 + 1) / 4))
    assert t["mae"] == pytest.approx((2 * 0.5 + 1) / 4)
    assert t["bias"] == pytest.approx((2 * 0.5 - 1) / 4)
    assert t["response_kind"] == "ratio"
    # ratios 1.5 (w2), 1.0 (w1), 0.75 (w1): weighted median by the midpoint rule is 1.0 + ...
    # cdf at 0.75 -> 0.125, 1.0 -> 0.375, 1.5 -> 0.75; q 0.5 lies 1/3 of the way from 1.0 to 1.5
    assert t["response"] == pytest.approx(1.0 + 0.5 / 3)
    assert t["binned"]["events"] == [3]
    assert m["negative_weights"]["negative_events"] == 1
    json.dumps(m, allow_nan=False)


def test_regression_response_and_resolution_of_a_known_bias_and_smearing() -> None:
    rng = np.random.default_rng(6)
    n = 40_000
    true_pt = rng.uniform(20, 200, n)
    # 5 % high, with a 10 % Gaussian smearing at low pt shrinking to 5 % at high pt.
    sigma = 0.10 - 0.05 * (true_pt - 20) / 180
    predicted = true_pt * 1.05 * (1 + sigma * rng.normal(size=n))
    weights = rng.uniform(0.5, 1.5, n)
    weights[rng.uniform(size=n) < 0.1] *= -1
    m = regression_metrics(true_pt, predicted, weights, ["pt"], bins=5)["targets"]["pt"]
    binned = m["binned"]
    assert len(binned["edges"]) == 6
    assert sum(binned["events"]) == int(np.sum(weights > 0))
    np.testing.assert_allclose(binned["response"], 1.05, atol=0.01)
    expected = [1.05 * (0.10 - 0.05 * (t - 20) / 180) for t in binned["truth"]]
    np.testing.assert_allclose(binned["resolution"], expected, rtol=0.12)
    assert binned["resolution"][0] > binned["resolution"][-1]


def test_regression_difference_response_losses_and_bad_input() -> None:
    truth = np.array([[-1.0, 1.0], [0.0, 2.0], [1.0, 3.0], [2.0, 4.0]])
    prediction = truth + np.array([0.5, -2.0])
    m = regression_metrics(truth, prediction, np.ones(4), ["eta", "pt"], bins=2)
    assert m["targets"]["eta"]["response_kind"] == "difference"
    assert m["targets"]["eta"]["response"] == pytest.approx(0.5)
    assert m["targets"]["pt"]["rmse"] == pytest.approx(2.0)
    residual = prediction - truth
    assert weighted_regression_loss(truth, prediction, np.ones(4), "mse") == pytest.approx(
        np.mean(residual**2)
    )
    assert weighted_regression_loss(truth, prediction, np.ones(4), "mae") == pytest.approx(1.25)
    # huber with delta 1: 0.5 * 0.25 for 0.5, 1 * (2 - 0.5) for -2; mean over targets
    assert weighted_regression_loss(truth, prediction, np.ones(4), "huber") == pytest.approx(
        (0.125 + 1.5) / 2
    )
    with pytest.raises(ValueError, match="2 targets but 1 names"):
        regression_metrics(truth, prediction, np.ones(4), ["pt"])
    with pytest.raises(
        ValueError, match=r"prediction must be finite; found \[inf, 0.0\] at event 1"
    ):
        regression_metrics(truth, np.where(truth == 0, np.inf, 0.0), np.ones(4), ["a", "b"])
    with pytest.raises(ValueError, match="loss is 'l2'"):
        weighted_regression_loss(truth, prediction, np.ones(4), "l2")


def test_a_truth_near_zero_gives_the_difference_response_however_it_was_rounded() -> None:
    """A ratio target with one value of 1.49e-10 (stored) or -4.48e-8 (after a round trip through
    standardisation): the ratio would put that event at 1e7, and the sign alone would flip the
    choice between the two; both give the difference, and say why."""
    rng = np.random.default_rng(3)
    truth = rng.uniform(0.5, 1.5, 200)
    prediction = truth + rng.normal(0, 0.05, 200)
    weights = np.ones(200)
    assert regression_metrics(truth, prediction, weights, ["r"])["targets"]["r"][
        "response_kind"
    ] == "ratio"  # fmt: skip
    for tiny in (1.49e-10, -4.48e-8):
        truth[0] = tiny
        t = regression_metrics(truth, prediction, weights, ["r"])["targets"]["r"]
        assert t["response_kind"] == "difference"
        assert "comes near zero" in t["response_reason"] or "both signs" in t["response_reason"]
        assert abs(t["response"]) < 0.05
        assert all(abs(r) < 1 for r in t["binned"]["response"] if r is not None)
    truth[0] = 1.49e-10
    assert "smallest |truth| 1.49e-10" in regression_metrics(truth, prediction, weights, ["r"])[
        "targets"
    ]["r"]["response_reason"]  # fmt: skip
