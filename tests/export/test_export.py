"""gridtrain export: every format scores the validation events as the Keras model does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from gridtrain.cli import main
from gridtrain.errors import ExportError
from gridtrain.export.run import export_run
from gridtrain.rundir import RunDir

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("model", ["mlp", "deepsets"])
def test_every_format_agrees_with_keras_on_every_validation_event(trained, model, capsys):
    run_dir = trained(model)
    assert main(["export", str(run_dir)]) == 0
    printed = capsys.readouterr().out
    folder = run_dir / "export"
    described = json.loads((folder / "export.json").read_text())
    assert described["weights"] == "model.keras"
    assert {path.name for path in folder.iterdir()} == {
        "export.json", "model.onnx", "saved_model", "model.pb"
    }  # fmt: skip
    checks = {c["format"]: c for c in described["verification"]["checks"]}
    assert set(checks) == {"onnx", "saved_model", "frozen"}
    metrics = json.loads(RunDir(run_dir).metrics.read_text())
    for check in checks.values():
        assert check["events"] > 1000
        assert check["max_abs_diff"] <= 1e-5
        assert check["auc"] == pytest.approx(check["keras_auc"], abs=1e-6)
        assert check["keras_auc"] == pytest.approx(metrics["auc"], abs=1e-9)  # the report's AUC
        assert f"{check['format']}: {check['events']} validation events" in printed
    names = [i["name"] for i in described["inputs"]]
    if model == "mlp":  # the flat features and, flattened (issue 28), the constituents
        assert sorted(names) == ["constituents", "constituents_count", "features"]
        assert (
            described["inputs"][names.index("features")]["columns"]
            == json.loads((run_dir / "worker.json").read_text())["features"]
        )
    else:
        assert names == ["constituents", "constituents_count"]
    group = described["inputs"][names.index("constituents")]
    assert group["shape"] == [None, 40, 5]
    assert group["columns"] == ["part_pt", "part_deta", "part_dphi", "part_charge", "part_pid"]
    assert described["inputs"][names.index("constituents_count")] == {
        "name": "constituents_count", "shape": [None], "dtype": "float32",
        "counts": "constituents",
    }  # fmt: skip
    assert described["outputs"][0]["name"] == "score"
    assert described["files"]["onnx"]["outputs"] == {"score": "score"}


@pytest.mark.parametrize("model", ["deepsets", "mlp"])
def test_the_exported_graph_takes_raw_values_and_ignores_what_padding_holds(trained, model):
    import onnxruntime

    run_dir = trained(model)
    folder = run_dir / "export"
    if not (folder / "model.onnx").exists():
        export_run(run_dir, ("onnx",))
    session = onnxruntime.InferenceSession(str(folder / "model.onnx"))
    rng = np.random.default_rng(1)
    values = rng.normal(size=(6, 40, 5)).astype(np.float32) * 50
    count = np.array([0, 1, 5, 17, 39, 40], dtype=np.float32)
    feed = {"constituents": values, "constituents_count": count}
    if model == "mlp":  # its flat features too
        width = len(json.loads((run_dir / "worker.json").read_text())["features"])
        feed["features"] = rng.normal(size=(6, width)).astype(np.float32)
    first = session.run(["score"], feed)[0]
    padded = np.arange(40)[None, :, None] >= count[:, None, None]
    garbage = np.where(padded, np.float32(1e30), values)
    second = session.run(["score"], {**feed, "constituents": garbage})[0]
    np.testing.assert_array_equal(first, second)
    assert first.shape == (6, 1)
    assert np.all((first >= 0) & (first <= 1))


def test_an_unfinished_run_exports_its_best_weights(trained, tmp_path):
    run_dir = tmp_path / "unfinished"
    shutil.copytree(trained("mlp"), run_dir, ignore=shutil.ignore_patterns("export"))
    RunDir(run_dir).model.unlink()  # as if the driver was stopped before the end
    result = export_run(run_dir, ("onnx",))
    assert result.weights.startswith("best.npz")
    assert result.checks[0].max_abs_diff <= 1e-5


def test_missing_model_and_bad_formats_are_refused_and_leave_nothing(trained, tmp_path):
    run_dir = tmp_path / "empty"
    shutil.copytree(trained("mlp"), run_dir, ignore=shutil.ignore_patterns("export"))
    files = RunDir(run_dir)
    for name in (files.model, files.checkpoint, files.best):
        name.unlink()
    with pytest.raises(ExportError, match=r"no model.keras and no checkpoint.npz; train first"):
        export_run(run_dir)
    with pytest.raises(ExportError, match=r"export format.s. tflite: choose from onnx"):
        export_run(trained("mlp"), ("tflite",))
    with pytest.raises(ExportError, match=r"no worker.json; not a gridtrain run directory"):
        export_run(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]
    assert not (run_dir / "export").exists()
    assert not [p for p in run_dir.iterdir() if p.name.startswith(".export")]


def test_a_format_that_scores_differently_is_refused_and_nothing_is_written(
    trained, tmp_path, monkeypatch
):
    from gridtrain.export import formats

    load = formats.load

    def off_by_a_little(written):  # as a runtime that computes in lower precision would
        score = load(written)
        return lambda feed: score(feed) + np.float32(2e-5)

    monkeypatch.setattr(formats, "load", off_by_a_little)
    out = tmp_path / "export"
    with pytest.raises(ExportError, match=r"> tolerance 1e-05\); nothing was written"):
        export_run(trained("mlp"), ("onnx",), out)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(formats, "load", load)
    assert export_run(trained("mlp"), ("onnx",), out, tolerance=1e-4).folder == out


def test_a_layer_that_cannot_be_exported_is_named_and_nothing_is_written(
    trained, tmp_path, monkeypatch
):
    import keras
    import tensorflow as tf

    from gridtrain.export import run

    class NumpySine(keras.layers.Layer):  # calls back into Python: no ONNX operator can hold it
        def call(self, x):
            y = tf.numpy_function(lambda a: np.sin(a).astype(np.float32), [x], tf.float32)
            return tf.ensure_shape(y, x.shape)

    run_dir = trained("mlp")
    features = len(json.loads((run_dir / "worker.json").read_text())["features"])
    inputs = keras.Input((features,), name="features")
    outputs = keras.layers.Dense(1, activation="sigmoid")(NumpySine(name="sine")(inputs))
    monkeypatch.setattr(run, "_weights", lambda files, spec: (keras.Model(inputs, outputs), "x"))
    with pytest.raises(
        ExportError, match=r"layer 'sine' \(.*NumpySine\) cannot be exported to onnx: .*PyFunc"
    ):
        export_run(run_dir, ("onnx",), tmp_path / "export")
    assert list(tmp_path.iterdir()) == []


def test_the_recipe_outside_gridtrain_scores_the_root_files_to_the_reports_auc(
    trained, toy_dir, tmp_path
):
    """docs/examples/score_with_onnx.py fills the inputs from the ROOT files with uproot and
    export.json alone; gridtrain cannot even be imported where it runs."""
    import subprocess
    import sys

    run_dir = trained("mlp")
    if not (run_dir / "export").exists():
        export_run(run_dir, ("onnx",))
    script = Path(__file__).parents[2] / "docs" / "examples" / "score_with_onnx.py"
    blocked = (
        "import runpy, sys; sys.modules['gridtrain'] = None; sys.argv = sys.argv[1:]; "
        "runpy.run_path(sys.argv[0], run_name='__main__')"
    )
    done = subprocess.run(
        [sys.executable, "-c", blocked, str(script), str(run_dir / "export"),
         f"signal={toy_dir / 'signal.root'}", f"background={toy_dir / 'background.root'}",
         "--validation", "--metrics", str(tmp_path / "metrics.json")],
        capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    auc = json.loads((tmp_path / "metrics.json").read_text())["auc"]
    assert auc == pytest.approx(json.loads(RunDir(run_dir).metrics.read_text())["auc"], abs=1e-6)
    validation = json.loads((run_dir / "export" / "export.json").read_text())["verification"]
    assert (
        sum(
            int(line.split(": ")[1].split()[0])
            for line in done.stdout.splitlines()
            if "scored" in line
        )
        == validation["checks"][0]["events"]
    )
