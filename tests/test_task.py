"""The task record: validation, what a model must output, and the manifest round trip."""

from __future__ import annotations

import pytest

from gridtrain.errors import ConfigError
from gridtrain.task import Target, Task


def test_an_absent_task_is_the_binary_classifier_of_old_configs_and_manifests() -> None:
    for record in (None, {}):
        task = Task.from_dict(record)
        assert (task.kind, task.output_units, task.output_activation) == ("binary", 1, "sigmoid")
        assert task.loss_name == "binary_crossentropy"


def test_multiclass_and_regression_heads() -> None:
    tagger = Task.from_dict({"kind": "multiclass", "classes": ["top", "W", "QCD"]})
    assert (tagger.output_units, tagger.output_activation) == (3, "softmax")
    assert tagger.loss_name == "categorical_crossentropy"
    assert tagger.describe() == "multiclass (top, W, QCD)"
    calibration = Task.from_dict(
        {"kind": "regression", "targets": [{"name": "r", "expression": "a / b"}], "loss": "huber"}
    )
    assert (calibration.output_units, calibration.output_activation) == (1, "linear")
    assert calibration.loss_name == "huber"


def test_statistics_round_trip_through_the_manifest_record_and_unstandardise() -> None:
    task = Task(kind="regression", targets=(Target("pt", "genJet_pt"),), loss="mse")
    task = task.with_statistics([50.0], [10.0])
    again = Task.from_dict(task.to_dict())
    assert again == task
    assert again.unstandardise(0, 1.5) == pytest.approx(65.0)


@pytest.mark.parametrize(
    ("record", "words"),
    [
        ({"kind": "ranking"}, "task.kind is 'ranking'"),
        ({"kind": "regression"}, "task.targets is empty"),
        ({"kind": "regression", "targets": [{"name": "a"}], "loss": "l2"}, "task.loss is 'l2'"),
        ({"kind": "regression", "targets": [{"name": "a"}, {"name": "a"}]}, "repeat a name"),
        ({"kind": "regression", "targets": [{"name": "a"}], "balance": True}, "classifiers"),
        ({"kind": "multiclass", "classes": ["a", "b"]}, "at least 3"),
        ({"kind": "multiclass", "classes": ["a", "b", "a"]}, "repeat a name"),
        ({"kind": "binary", "classes": ["a", "b", "c"]}, "task.kind: multiclass"),
        ({"kind": "binary", "loss": "mse"}, "task.loss is for regression"),
        ({"kind": "binary", "targets": [{"name": "a"}]}, "targets are for regression"),
    ],
)
def test_contradictions_are_refused_in_one_line(record: dict, words: str) -> None:
    with pytest.raises(ConfigError, match=words.replace("(", r"\(")) as caught:
        Task.from_dict(record)
    assert "\n" not in str(caught.value)


def test_a_constant_target_is_refused() -> None:
    task = Task(kind="regression", targets=(Target("pt", "genJet_pt"),), loss="mse")
    with pytest.raises(ConfigError, match="constant target"):
        task.with_statistics([3.0], [0.0])
