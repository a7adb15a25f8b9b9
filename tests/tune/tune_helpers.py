"""Helpers for the tuning tests: a study config over the toy dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.train.train_helpers import dataset_section

# A tiny MLP for two epochs; one learning rate hopeless, so the pruner has something to stop.
FAST_TRAIN: dict[str, Any] = {
    "epochs": 2,
    "batch_size": 256,
    "seed": 3,
    "model": {"name": "mlp", "params": {"hidden": [8]}},
    "early_stopping": {"patience": None},
}
SPACE: dict[str, Any] = {
    "learning_rate": {"type": "categorical", "choices": [0.003, 100.0]},
    "model.params.hidden": {"type": "categorical", "choices": [[8], [16, 8]]},
}


def tune_config(toy_dir: Path, dataset: Path, **tune: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "space": SPACE,
        "trials": 8,
        "parallel": 2,
        "workers": 1,
        "sampler": "random",
        "seed": 4,
        "prune_after": 2,
    }
    section.update(tune)
    return {
        "dataset": dataset_section(toy_dir, dataset),
        "train": dict(FAST_TRAIN),
        "tune": section,
    }


def write_tune_config(path: Path, toy_dir: Path, dataset: Path, **tune: Any) -> Path:
    path.write_text(yaml.safe_dump(tune_config(toy_dir, dataset, **tune)))
    return path
