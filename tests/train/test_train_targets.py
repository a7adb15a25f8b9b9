"""What training fits per task and how it weighs events, and the figures computed back: pure numpy
(train/targets.py), plus finalize's metrics and validation.npz on given predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from gridtrain.errors import ConfigError, ShardError
from gridtrain.rundir import RunDir
from gridtrain.task import Task
from gridtrain.train.finalize import task_metrics
from gridtrain.train.targets import (
    negative_weight_warning,
    sample_weights,
    standardise_targets,
    training_labels,
    treat_negative,
    unstandardise,
    validation_record,
)
from gridtrain.train.worker import Predictions

MULTICLASS = Task("multiclass", ("qcd", "w", "top"))
REGRESSION = Task.from_dict(
    {
        "kind": "regression",
        "targets": [
            {"name": "pt", "expression": "jet_pt_true", "mean": 400.0, "std": 100.0},
            {"name": "response", "expression": "jet_pt_true / jet_pt", "mean": 1.1, "std": 0.2},
        ],
        "loss": "mae",
    }
)


def test_negative_weights_are_kept_made_absolute_or_zeroed() -> None:
    w = np.array([2.0, -1.0, 0.5], dtype=np.float32)
    assert treat_negative(w, "keep").tolist() == [2.0, -1.0, 0.5]
    assert treat_negative(w, "abs").tolist() == [2.0, 1.0, 0.5]
    assert treat_negative(w, "zero").tolist() == [2.0, 0.0, 0.5]
    with pytest.raises(ConfigError, match=r"train.negative_weights is 'flip'; choose one of keep"):
        treat_negative(w, "flip")


def test_sample_weights_multiply_the_class_factor_of_each_label() -> None:
    weights = sample_weights([1.0, -2.0, 3.0], [0, 2, 1], "abs", [0.5, 1.0, 4.0])
    assert weights.dtype == np.float32
    assert weights.tolist() == [0.5, 8.0, 3.0]


def test_labels_are_0_1_for_binary_and_one_hot_for_multiclass() -> None:
    assert training_labels(Task(), np.array([0, 1, 1]), "s.h5").tolist() == [0.0, 1.0, 1.0]
    one_hot = training_labels(MULTICLASS, np.array([2, 0, 1]), "s.h5")
    assert one_hot.tolist() == [[0, 0, 1], [1, 0, 0], [0, 1, 0]]
    with pytest.raises(ShardError, match=r"s.h5: label 3 is not a class of the task multiclass"):
        training_labels(MULTICLASS, np.array([0, 3]), "s.h5")
    with pytest.raises(ShardError, match=r"label 2 is not a class of the task binary"):
        training_labels(Task(), np.array([2]), "s.h5")


def test_targets_are_standardised_with_the_manifest_statistics_and_back() -> None:
    physical = np.array([[500.0, 1.3], [300.0, 0.9]], dtype=np.float32)
    z = standardise_targets(REGRESSION, physical, "s.h5")
    assert np.allclose(z, [[1.0, 1.0], [-1.0, -1.0]])
    assert np.allclose(unstandardise(REGRESSION, z), physical)
    with pytest.raises(ShardError, match=r"target has shape \(2, 1\).*2 target"):
        standardise_targets(REGRESSION, physical[:, :1], "s.h5")


def test_validation_loss_uses_training_weights_and_metrics_zero_negative_ones() -> None:
    labels = np.array([1, 0, 1, 0], dtype=np.float32)
    scores = np.array([[0.9], [0.2], [0.1], [0.8]])
    event = np.array([1.0, 1.0, -1.0, 1.0])  # the badly scored signal has a negative weight
    record = validation_record(Task(), labels, scores, treat_negative(event, "abs"), event)
    assert record["auc"] == pytest.approx(1.0)  # the negative-weight event counts as zero
    assert 0 <= record["accuracy"] <= 1
    # the loss is training's: every event with its |w|, the badly scored one included
    assert record["loss"] == pytest.approx(-np.mean(np.log([0.9, 0.8, 0.1, 0.2])), rel=1e-6)
    y = training_labels(MULTICLASS, np.array([0, 1, 2, 2]), "s")
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.1, 0.8], [0.2, 0.2, 0.6]])
    record = validation_record(MULTICLASS, y, probabilities, np.ones(4), np.ones(4))
    assert record["auc"] == pytest.approx(1.0)
    assert record["loss"] == pytest.approx(-np.mean(np.log([0.8, 0.8, 0.8, 0.6])))
    z = standardise_targets(REGRESSION, np.array([[500.0, 1.3], [300.0, 0.9]]), "s")
    record = validation_record(REGRESSION, z, z + 0.5, np.ones(2), np.ones(2))
    assert record == {"loss": pytest.approx(0.5)}  # mae in standardised units


def test_the_warning_names_the_share_per_sample_and_the_choice() -> None:
    weights = {
        "samples": {
            "dy": {"events": 240, "sum": 220.0, "negative_events": 10, "negative_sum": -10.0,
                   "negative_share": 10 / 240},
            "tt": {"events": 100, "sum": 100.0, "negative_events": 0, "negative_sum": 0.0,
                   "negative_share": 0.0},
        }
    }  # fmt: skip
    line = negative_weight_warning(weights, "abs")
    assert line is not None
    assert "\n" not in line
    assert line.startswith("2.9% of the sum of |w| is negative")  # 10 / (230 + 10 + 100)
    assert "dy 10 of 240 events, 4.2% of |w|" in line
    assert "tt" not in line
    assert "train.negative_weights: abs" in line
    assert "metrics count them as zero" in line
    assert negative_weight_warning({}, "abs") is None
    assert negative_weight_warning({"samples": {"tt": weights["samples"]["tt"]}}, "keep") is None


def predictions(task: Task, n: int = 400, seed: int = 0) -> Predictions:
    """Noisy but informative predictions with 10% negative event weights."""
    rng = np.random.default_rng(seed)
    event = rng.uniform(0.5, 1.5, n)
    event[rng.random(n) < 0.1] *= -1
    if task.kind == "regression":
        truth = np.stack([rng.normal(400, 100, n), rng.normal(1.1, 0.2, n)], axis=1)
        y = standardise_targets(task, truth, "s")
        return Predictions(y, y + rng.normal(0, 0.3, y.shape), np.abs(event), event)
    k = max(len(task.classes), 2)
    labels = rng.integers(0, k, n)
    logits = rng.normal(0, 1, (n, k)) + 2.0 * np.eye(k)[labels]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    outputs = p[:, 1:] if task.kind == "binary" else p
    y = training_labels(task, labels, "s")
    return Predictions(y, outputs, np.abs(event), event)


@pytest.mark.parametrize("task", [Task(), MULTICLASS, REGRESSION], ids=lambda t: t.kind)
def test_finalize_writes_the_tasks_metrics_in_range_and_validation_npz(
    tmp_path: Path, task: Task
) -> None:
    files = RunDir(tmp_path)
    predicted = predictions(task)
    n = predicted.events
    stored = {  # what the validation shards hold beside the scores: ids, and targets as stored
        "event_id": np.stack([np.ones(n), np.zeros(n), np.arange(n)], axis=1).astype(np.uint64),
        "event_id_names": ["run", "luminosityBlock", "event"],
    }
    if task.kind == "regression":
        stored["target"] = unstandardise(task, predicted.y).astype(np.float32)
    metrics = json.loads(json.dumps(task_metrics(files, task, predicted, stored)))  # JSON-clean
    assert metrics["negative_weights"]["negative_events"] > 0
    with np.load(tmp_path / "validation.npz") as saved:
        arrays = dict(saved)
    assert arrays["weights"].min() < 0  # the event weights as converted
    if task.kind == "regression":
        assert list(arrays["names"]) == ["pt", "response"]
        assert arrays["truth"].shape == arrays["prediction"].shape == (400, 2)
        assert 100 < arrays["truth"][:, 0].mean() < 700  # physical units
        for figures in metrics["targets"].values():
            assert figures["rmse"] >= figures["mae"] >= 0
            assert figures["resolution"] > 0
        return
    assert arrays["labels"].shape == (400,)
    assert arrays["scores"].shape == (400, task.output_units)
    assert list(arrays["names"]) == list(task.classes)
    assert 0.5 < metrics["auc"] <= 1
    assert 0 <= metrics["accuracy"] <= 1
    if task.kind == "binary":
        with np.load(tmp_path / "roc.npz") as roc:
            assert roc["fpr"].min() >= 0
            assert roc["tpr"].max() <= 1 + 1e-12  # cumulative sums: rounding only
    else:
        assert all(0 <= a <= 1 for a in metrics["class_auc"].values())
        assert all(0 <= x <= 1 for row in metrics["confusion"] for x in row)
