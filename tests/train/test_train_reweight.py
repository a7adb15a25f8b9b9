"""A kinematically reweighted dataset (``dataset.reweight``) trains through the CLI, and the run
records the histograms it weighted with and draws them: the chain from the manifest to the
report. (The weights themselves are checked in tests/data/test_data_reweight.py.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from train_helpers import gridtrain

from gridtrain.data.manifest import load_manifest
from gridtrain.data.reweight import applied_histograms
from tests.data.test_data_reweight import CLASSES, ETA_EDGES, PT_BINS, section, write_class


@pytest.mark.slow
def test_a_reweighted_dataset_trains_and_its_report_draws_each_variable(tmp_path: Path) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for k, name in enumerate(CLASSES):
        write_class(inputs / f"{name}_1.root", name, 10 * k + 1, 1500, 0)
        write_class(inputs / f"{name}_2.root", name, 10 * k + 2, 1500, 1500)
    reweight = {"variables": ["jet_pt", "jet_eta"],
                "bins": {"jet_pt": PT_BINS, "jet_eta": ETA_EDGES}, "to": "wjets"}  # fmt: skip
    config = {
        "dataset": section(inputs, tmp_path / "dataset", reweight),
        "task": {"kind": "multiclass", "classes": CLASSES, "balance": True},
        "train": {
            "epochs": 1,
            "batch_size": 256,
            "model": {"name": "mlp", "params": {"hidden": [8], "flatten": 0}},
            "early_stopping": {"patience": None},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    converted = gridtrain("convert", "-c", str(path))
    assert converted.returncode == 0, converted.stderr[-2000:]
    run = tmp_path / "run"
    trained = gridtrain("train", "-c", str(path), "--run-dir", str(run), "--workers", "1")
    assert trained.returncode == 0, trained.stderr[-3000:]

    metrics = json.loads((run / "metrics.json").read_text())
    manifest = load_manifest(tmp_path / "dataset")
    expected = applied_histograms(manifest.weights["reweight"], "abs")  # the default treatment
    assert metrics["reweight"] == json.loads(json.dumps(expected))
    for variable in ("jet_pt", "jet_eta"):
        png = run / "plots" / f"reweight_{variable}.png"
        assert png.read_bytes()[:4] == b"\x89PNG"
        assert png.with_suffix(".npz").is_file()
