"""The search space: contradictions, unknown keys and parameters refused in one line, before any
training starts; suggestions, conditions and the grid on hand-made trials."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from tune_helpers import SPACE, tune_config, write_tune_config

from gridtrain.cli import main
from gridtrain.config import validate_config
from gridtrain.errors import ConfigError
from gridtrain.tune.space import SearchSpace, apply
from gridtrain.tune.study import TuneConfig
from gridtrain.tune.tuner import check_config


class FixedTrial:
    """An Optuna trial stand-in: the low end of each range, the last choice."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def suggest_float(self, name: str, low: float, high: float, **_: Any) -> float:
        self.asked.append(name)
        return low

    def suggest_int(self, name: str, low: int, high: int, **_: Any) -> int:
        self.asked.append(name)
        return low

    def suggest_categorical(self, name: str, choices: Any) -> Any:
        self.asked.append(name)
        return choices[-1]


def test_conditional_parameters_are_suggested_only_for_their_model() -> None:
    space = SearchSpace.from_dict(
        {
            "model.params.phi": {
                "type": "categorical",
                "choices": [[16], [32, 32]],
                "when": {"model.name": "deepsets"},
            },
            "model.params.hidden": {
                "type": "categorical",
                "choices": [[8], [16, 8]],
                "when": {"model.name": ["mlp"]},
            },
            "model.name": {"type": "categorical", "choices": ["mlp", "deepsets"]},
            "algorithm.every": {"type": "int", "low": 2, "high": 16, "log": True},
        }
    )
    assert space.params[0].key == "model.name"  # parents first
    trial = FixedTrial()
    values = space.suggest(trial)
    assert values == {"model.name": "deepsets", "model.params.phi": [32, 32], "algorithm.every": 2}
    assert "model.params.hidden" not in trial.asked
    train = apply({"model": {"name": "mlp", "params": {}}, "algorithm": {"every": 8}}, values)
    assert train == {
        "model": {"name": "deepsets", "params": {"phi": [32, 32]}},
        "algorithm": {"every": 2},
    }


def test_grid_lists_every_point() -> None:
    space = SearchSpace.from_dict(
        {
            "batch_size": {"type": "int", "low": 64, "high": 256, "step": 64},
            "learning_rate": {"type": "float", "low": 0.001, "high": 0.003, "step": 0.001},
        }
    )
    assert space.grid() == {
        "batch_size": (64, 128, 192, 256),
        "learning_rate": (0.001, 0.002, 0.003),
    }
    with pytest.raises(ConfigError, match="learning_rate: the grid sampler needs a step"):
        SearchSpace.from_dict({"learning_rate": {"type": "float", "low": 0.1, "high": 1}}).grid()


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "tune.space is empty"),
        (
            {"learning_rate": {"type": "float", "low": 0.1, "high": 0.01}},
            r"learning_rate: low \(0.1\)",
        ),
        ({"learning_rate": {"type": "float", "low": 0, "high": 1, "log": True}}, "log scale needs"),
        ({"epochs": {"type": "int", "low": 1, "high": 4, "step": 1, "log": True}}, "step and log"),
        ({"epochs": {"type": "int", "low": 1.5, "high": 4}}, "epochs: an int needs whole"),
        ({"seed": {"type": "categorical", "choices": []}}, "seed: no choices"),
        ({"seed": {"type": "categorical", "choices": [1, 1]}}, "repeat a value"),
        ({"seed": {"type": "categorical", "choices": [1, 2], "low": 0}}, "not low"),
        (
            {"model.params.hidden": {"type": "categorical", "choices": [[8]], "when": {"x": 1}}},
            "hidden.when.x: a condition names another categorical",
        ),
        (
            {
                "model.name": {"type": "categorical", "choices": ["mlp"]},
                "model.params.hidden": {
                    "type": "categorical",
                    "choices": [[8]],
                    "when": {"model.name": "deepset"},
                },
            },
            r'\["deepset"\] not among its choices',
        ),
        ({"workers": {"type": "int", "low": 1, "high": 4}}, "set tune.workers"),
    ],
)
def test_contradictory_spaces_are_refused_naming_the_key(
    space: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        SearchSpace.from_dict(space)


def test_a_direction_against_the_objective_is_refused() -> None:
    sample = {"name": "s", "files": ["s.root"], "label": 1}
    section = validate_config(
        {"dataset": {"tree": "t", "samples": [sample]}, "tune": {"space": SPACE}}
    )
    section["tune"].update(objective="val_auc", direction="minimize")
    with pytest.raises(ConfigError, match=r"tune\.direction: minimize contradicts"):
        TuneConfig.from_dict(section["tune"])


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"learnig_rate": {"type": "float", "low": 0.01, "high": 0.1}}, "no train.learnig_rate"),
        ({"algorithm.evry": {"type": "int", "low": 2, "high": 8}}, "no train.algorithm.evry"),
        ({"algorithm": {"type": "int", "low": 2, "high": 8}}, "train.algorithm is a section"),
        ({"epochs": {"type": "float", "low": 0.5, "high": 2}}, "epochs: 0.5: .*not of type"),
        (
            {"model.params.widths": {"type": "categorical", "choices": [[8]]}},
            "model.params.widths: \\[8\\]: model 'mlp': unknown parameter 'widths'",
        ),
        (
            {"model.params.dropout": {"type": "float", "low": 0.1, "high": 1.5}},
            "dropout: 1.5: model 'mlp': parameter 'dropout' is 1.5",
        ),
        (
            {"model.name": {"type": "categorical", "choices": ["mlp", "deepsets"]}},
            "model.name: \"deepsets\": model 'deepsets': unknown parameter 'hidden'",
        ),
    ],
)
def test_keys_and_parameters_the_training_does_not_take_are_refused(
    toy_dir: Path, toy_dataset: Path, space: dict[str, Any], message: str
) -> None:
    config = validate_config(tune_config(toy_dir, toy_dataset, space=space))
    with pytest.raises(ConfigError, match=message):
        check_config(copy.deepcopy(config))


@pytest.mark.parametrize(
    ("space", "key"),
    [
        ({}, "tune.space"),
        ({"learning_rate": {"type": "float", "low": 1, "high": 0.1}}, "tune.space.learning_rate"),
        ({"learnig_rate": {"type": "float", "low": 0.01, "high": 0.1}}, "train.learnig_rate"),
        ({"model.params.widths": {"type": "categorical", "choices": [[8]]}}, "'widths'"),
    ],
)
def test_gridtrain_tune_refuses_bad_input_in_one_line_before_training(
    tmp_path: Path,
    toy_dir: Path,
    toy_dataset: Path,
    capsys: pytest.CaptureFixture[str],
    space: dict[str, Any],
    key: str,
) -> None:
    config = write_tune_config(tmp_path / "config.yaml", toy_dir, toy_dataset, space=space)
    study = tmp_path / "study"
    assert main(["tune", "-c", str(config), "--run-dir", str(study)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gridtrain tune: error: ")
    assert key in err
    assert len(err.splitlines()) == 1
    assert not study.exists()


def test_an_auc_objective_on_a_regression_dataset_is_refused(
    tmp_path: Path, toy_dir: Path, toy_dataset: Path
) -> None:
    record = json.loads((toy_dataset / "manifest.json").read_text())
    record["task"] = {
        "kind": "regression",
        "targets": [{"name": "pt", "expression": "jet_pt", "mean": 50.0, "std": 10.0}],
        "loss": "mse",
    }
    (tmp_path / "manifest.json").write_text(json.dumps(record))
    config = tune_config(toy_dir, toy_dataset, objective="val_auc")
    config["dataset"]["outdir"] = str(tmp_path)
    with pytest.raises(ConfigError, match=r"val_auc needs a classifier.*regression of pt"):
        check_config(validate_config(config))
