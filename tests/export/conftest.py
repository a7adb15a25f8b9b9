"""Trained toy runs to export: one per built-in model, trained once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_helpers import dataset_section, gridtrain, write_config

MODELS = {
    "mlp": {"hidden": [16, 16]},
    "deepsets": {"phi": [16], "rho": [16], "group": "constituents"},
}


@pytest.fixture(scope="session")
def export_dataset(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert

    out = tmp_path_factory.mktemp("export-dataset")
    convert(DatasetConfig.from_dict(dataset_section(toy_dir, out)), out)
    return out


@pytest.fixture(scope="session")
def trained(toy_dir: Path, export_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A function: the run directory of a short training of a built-in model (cached)."""
    runs: dict[str, Path] = {}

    def run(model: str) -> Path:
        if model not in runs:
            work = tmp_path_factory.mktemp(f"export-{model}")
            config = write_config(
                work / "config.yaml",
                toy_dir,
                export_dataset,
                epochs=2,
                model={"name": model, "params": MODELS[model]},
                early_stopping={"patience": None},
            )
            done = gridtrain("train", "-c", str(config), "--run-dir", str(work / "run"))
            assert done.returncode == 0, done.stderr[-3000:]
            runs[model] = work / "run"
        return runs[model]

    return run
