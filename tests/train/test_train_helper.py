"""The driver's Keras work done in its first local worker (train/helper.py): a local run's driver
imports no Keras backend, and does the work itself whenever the helper cannot."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from train_helpers import write_config

from tests.waiting import wait_until

pytestmark = pytest.mark.slow

# `gridtrain` as the command line runs it, then the training frameworks the process imported
DRIVER = """
import json, sys
from gridtrain.cli import main
code = main(sys.argv[2:])
frameworks = ("keras", "tensorflow", "jax", "torch")
with open(sys.argv[1], "w") as out:
    json.dump(sorted(name for name in frameworks if name in sys.modules), out)
sys.exit(code)
"""


# A user's model function that prints, as one calling model.summary() does
PRINTING_MODEL = """
import keras


def build(inputs):
    print("built by the user's function")
    x = keras.Input(shape=(len(inputs.features),), name="features")
    model = keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(8)(x)))
    model.compile(optimizer="adam", loss="binary_crossentropy")
    return model
"""


def test_a_local_runs_driver_imports_no_framework_and_its_helper_writes_the_outputs(
    tmp_path, toy_dir, toy_dataset
):
    from gridtrain.ps.checkpoint import read_initial_weights
    from gridtrain.train.helper import initial_weights
    from gridtrain.train.settings import WorkerSpec

    (tmp_path / "printing.py").write_text(PRINTING_MODEL)
    model = {"name": str(tmp_path / "printing.py") + ":build"}
    config = write_config(
        tmp_path / "c.yaml", toy_dir, toy_dataset, workers=2, epochs=1, model=model
    )
    run_dir, imported = tmp_path / "run", tmp_path / "imported.json"
    done = subprocess.run(
        [sys.executable, "-c", DRIVER, str(imported), "train", "-c", str(config), "--run-dir",
         str(run_dir)],
        capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(imported.read_text()) == []
    assert "validation AUC" in done.stdout
    # what the model function printed in the helper reached the driver's output, once
    assert done.stdout.count("built by the user's function") == 1
    for name in ("model.keras", "metrics.json", "validation.npz", "roc.npz", "plots/roc.png"):
        assert (run_dir / name).is_file(), name
    # the final scoring happened in w0's process (its log), not in the driver's
    assert "final model:" in (run_dir / "logs" / "run-w0.log").read_text()
    assert "final model:" not in done.stderr
    # the helper's initial weights are the model's (a user's model, so not seeded: the shapes)
    built = initial_weights(WorkerSpec.read(run_dir / "worker.json"))
    written = read_initial_weights(run_dir / "initial.npz")
    assert [w.shape for w in written] == [w.shape for w in built]


def test_the_helper_builds_the_drivers_weights_and_without_it_the_driver_builds_them(
    tmp_path, toy_dir, toy_dataset
):
    from gridtrain.config import load_config
    from gridtrain.ps.checkpoint import read_initial_weights
    from gridtrain.train.driver import prepare
    from gridtrain.train.local_executor import LocalExecutor
    from gridtrain.train.settings import WorkerSpec

    config = write_config(tmp_path / "c.yaml", toy_dir, toy_dataset)
    files = prepare(load_config(config), tmp_path / "run", 1)  # built here, in the driver
    spec = WorkerSpec.read(files.spec)

    alive = LocalExecutor()
    alive.prewarm(1, "alive", spec.settings.backend)
    try:
        built = alive.initial_weights(spec)  # the same seeded model, built in the helper
    finally:
        alive.discard_prewarmed()
    assert built is not None
    driver_built = read_initial_weights(files.initial)
    assert len(built) == len(driver_built)
    for theirs, ours in zip(built, driver_built, strict=True):
        np.testing.assert_array_equal(theirs, ours)

    other = LocalExecutor()
    other.prewarm(1, "other", "jax")  # a helper of another backend is not asked
    assert other.helper is not None
    assert other.initial_weights(spec) is None
    assert other.helper.process.poll() is None  # and is left alone (killed when discarded)
    other.discard_prewarmed()
    assert other.helper is None

    gone = LocalExecutor()
    gone.prewarm(1, "gone", spec.settings.backend)
    assert gone.helper is not None
    process = gone.helper.process
    process.kill()
    wait_until(lambda: process.poll() is not None, 30, "the killed helper to end")
    assert gone.initial_weights(spec) is None  # died: the driver builds the weights
    assert not gone.finalize_run(files.path, plots=False)  # never trained: nor scores
    gone.discard_prewarmed()
