"""The toy end to end on every Keras backend: convert (the session's dataset), train with 2 workers
and the parameter server, report, export (a JAX run's model.keras on TensorFlow; a wrapped
torch.nn.Module with PyTorch); and a plain torch.nn.Module trained through the PS.

Each ``gridtrain`` command is a process of its own, as a user runs it: the driver and its workers
take ``train.backend`` from the config; ``gridtrain export`` loads the backend-independent
model.keras where its exporters need it (TensorFlow for the built-in models, PyTorch for a model
that wraps a torch.nn.Module) and is checked against the scores the training backend gave.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import gridtrain, write_config

from gridtrain.backend import BACKENDS
from gridtrain.ps.checkpoint import read_checkpoint, read_initial_weights

REPO = Path(__file__).resolve().parents[2]
SAYS = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def train(config: Path, run_dir: Path) -> dict[str, object]:
    done = gridtrain("train", "-c", str(config), "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads((run_dir / "metrics.json").read_text())


def export_checks(run_dir: Path) -> dict[str, float]:
    """``gridtrain export``: each format's AUC on the validation events, as it printed it."""
    done = gridtrain("export", str(run_dir), timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    lines = [line.strip() for line in done.stdout.splitlines() if "validation events" in line]
    return {line.split(":")[0]: float(line.split("AUC ")[1].split()[0]) for line in lines}


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
def test_the_toy_trains_and_reports_on_each_backend_and_exports_from_any(
    toy_dir: Path, toy_dataset: Path, tmp_path: Path, backend: str
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        toy_dir,
        toy_dataset,
        epochs=1,
        workers=2,
        backend=backend,
        model={"name": "mlp", "params": {"hidden": [16], "flatten": 4}},
        early_stopping={"patience": None},
    )
    run_dir = tmp_path / "run"
    metrics = train(config, run_dir)
    for worker in ("run-w0", "run-w1"):  # each worker trained on the run's backend
        log = (run_dir / "logs" / f"{worker}.log").read_text()
        assert f"training on {SAYS[backend]}, CPU" in log
        assert "trained " in log
    # both joined on the run's backend (above); a fast backend's first worker may have trained
    # all nine shards before the second had its first (seen with torch in a suite run)
    trained = len(metrics["workers"])
    assert trained in (1, 2)
    assert metrics["auc"] > 0.6  # one short epoch learns something on every backend

    report = gridtrain("report", str(run_dir))
    assert report.returncode == 0, report.stderr[-2000:]
    assert f"{trained} workers" in report.stdout

    if backend != "jax":  # one export of another backend's model.keras is enough here: tests/export
        return  # covers TensorFlow-trained runs, the torch module's test exports with PyTorch
    checks = export_checks(run_dir)  # loaded with TensorFlow, verified in each format
    assert set(checks) == {"onnx", "saved_model", "frozen"}
    for auc in checks.values():  # the training backend's own figure, from its own scores
        assert auc == pytest.approx(metrics["auc"], abs=1e-5)


@pytest.mark.slow
def test_a_torch_module_trains_through_the_parameter_server_and_exports_to_onnx(
    toy_dir: Path, toy_dataset: Path, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path / "config.yaml",
        toy_dir,
        toy_dataset,
        epochs=2,
        workers=2,
        backend="torch",
        model={"name": str(REPO / "docs/examples/torch_module.py:torch_module")},
        early_stopping={"patience": None},
    )
    run_dir = tmp_path / "run"
    metrics = train(config, run_dir)
    initial = read_initial_weights(run_dir / "initial.npz")
    center = read_checkpoint(run_dir / "checkpoint.npz").center
    # the module's own parameters, in torch's layout (out, in), are what the workers pushed and
    # the parameter server kept: phi's two Linear layers, rho's on the sum and the jet features
    features = len(json.loads((toy_dataset / "manifest.json").read_text())["features"])
    width, channels = 32, 5
    assert [w.shape for w in initial] == [
        (width, channels), (width,), (width, width), (width,),
        (width, width + features), (width,), (1, width), (1,),
    ]  # fmt: skip
    assert all(not np.array_equal(a, b) for a, b in zip(initial, center, strict=True))
    assert metrics["auc"] > 0.75

    # exported on PyTorch (torch.onnx), scored by ONNX Runtime, against the run's own AUC
    checks = export_checks(run_dir)
    assert set(checks) == {"onnx"}  # SavedModel and the frozen graph need TensorFlow
    assert checks["onnx"] == pytest.approx(metrics["auc"], abs=1e-5)
    exported = json.loads((run_dir / "export" / "export.json").read_text())
    assert [i["name"] for i in exported["inputs"]] == [
        "constituents", "constituents_count", "features"
    ]  # fmt: skip
