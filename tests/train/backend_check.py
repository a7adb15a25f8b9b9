"""Run in a process of its own with KERAS_BACKEND set (tests/train/test_train_backends.py): the
compiled window against a train_on_batch loop, and the dtype policies, on that backend. Prints
one JSON object."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def window_against_per_batch(
    name: str, params: dict[str, object], grouped: bool
) -> dict[str, object]:
    from gridtrain.models import InputSpec, arrange_inputs, build_model
    from gridtrain.train.steps import WindowSteps, windows

    rng = np.random.default_rng(0)
    events, batch = 150, 16  # 9 full batches and a short one
    inputs = {"features": rng.normal(size=(events, 3)).astype(np.float32)}
    groups = {}
    if grouped:
        inputs["jets"] = rng.normal(size=(events, 4, 2)).astype(np.float32)
        inputs["jets_count"] = rng.integers(0, 5, size=events).astype(np.int32)
        groups = {"jets": (4, ("pt", "eta"))}
    labels = (rng.random(events) < 0.5).astype(np.float32)
    weights = rng.random(events).astype(np.float32)
    spec = InputSpec(("a", "b", "c"), groups)

    def model():
        return build_model(name, params, spec, learning_rate=0.01, seed=1)

    per_batch, compiled = model(), model()
    expected = []
    for start in range(0, events, batch):
        stop = start + batch
        batch_inputs = {key: array[start:stop] for key, array in inputs.items()}
        result = per_batch.train_on_batch(
            arrange_inputs(per_batch, batch_inputs),
            labels[start:stop],
            sample_weight=weights[start:stop],
        )
        expected.append(float(result[0] if isinstance(result, list) else result))
    steps = WindowSteps(compiled)
    losses = []
    # windows of 3 steps: on JAX scans of 2 and 1 after the first window
    for _, x, y, w in windows(inputs, labels, weights, batch, iter(lambda: 3, None)):
        losses.extend(float(loss) for loss in steps.train(x, y, w))
    differences = [
        float(np.max(np.abs(a - b))) if a.size else 0.0
        for a, b in zip(per_batch.get_weights(), compiled.get_weights(), strict=True)
    ]
    return {
        "losses_equal": losses == expected,
        "losses": losses,
        "expected": expected,
        "weights_max_difference": max(differences),
    }


def precision(policy: str) -> dict[str, object]:
    """The run's replica under ``train.precision``: its variables, what it computes in, and a
    window of training on it."""
    import keras

    from gridtrain.config import validate_config
    from gridtrain.models import arrange_inputs
    from gridtrain.train.replica import build_replica
    from gridtrain.train.settings import TrainConfig
    from gridtrain.train.steps import WindowSteps, windows
    from tests.conftest import toy_section

    section = {
        "model": {"name": "deepsets"},
        "precision": policy,
        "backend": keras.backend.backend(),
    }
    config = validate_config({"dataset": toy_section(Path("toy"), Path("out")), "train": section})
    settings = TrainConfig.from_dict(config["train"])
    groups = {"jets": (4, ("pt", "eta"))}
    model = build_replica(settings, ("a", "b", "c"), groups)
    rng = np.random.default_rng(0)
    events = 64
    inputs = {
        "features": rng.normal(size=(events, 3)).astype(np.float32),
        "jets": rng.normal(size=(events, 4, 2)).astype(np.float32),
        "jets_count": rng.integers(0, 5, size=events).astype(np.int32),
    }
    labels = (rng.random(events) < 0.5).astype(np.float32)
    weights = np.ones(events, np.float32)
    before = [w.copy() for w in model.get_weights()]
    steps = WindowSteps(model)
    losses = []
    for _, x, y, w in windows(inputs, labels, weights, 16, iter(lambda: 2, None)):
        losses.extend(float(loss) for loss in steps.train(x, y, w))
    after = model.get_weights()
    predicted = np.asarray(model.predict_on_batch(arrange_inputs(model, inputs)))
    return {
        "global_policy_after": keras.config.dtype_policy().name,
        "compute_dtypes": sorted({layer.compute_dtype for layer in model.layers}),
        "weight_dtypes": sorted({str(w.dtype) for w in after}),
        "optimizer": type(model.optimizer).__name__,
        "losses_finite": bool(np.all(np.isfinite(losses))),
        "moved": any(not np.array_equal(a, b) for a, b in zip(before, after, strict=True)),
        "output_dtype": str(predicted.dtype),
    }


def saved_and_loaded(directory: Path) -> dict[str, object]:
    """A model saved with gridtrain's ``save_model`` and loaded back: whether that imported
    TensorFlow into a process that had not (Keras's serialisation probes for it), and whether
    the loaded model predicts as the saved one."""
    from gridtrain.models import InputSpec, build_model, load_model, save_model

    before = "tensorflow" in sys.modules
    model = build_model("mlp", {"hidden": [4]}, InputSpec(("a", "b"), {}), learning_rate=0.01)
    model.optimizer.build(model.trainable_variables)
    save_model(model, directory / "model.keras")
    loaded = load_model(directory / "model.keras")
    x = {"features": np.random.default_rng(1).normal(size=(5, 2)).astype(np.float32)}
    return {
        "tensorflow_before": before,
        "tensorflow_after": "tensorflow" in sys.modules,
        "same": bool(np.array_equal(model.predict_on_batch(x), loaded.predict_on_batch(x))),
    }


def main() -> None:
    import tempfile

    import keras

    out: dict[str, object] = {"backend": keras.backend.backend()}
    with tempfile.TemporaryDirectory() as directory:  # first: nothing else has imported yet
        out["saved"] = saved_and_loaded(Path(directory))
    out["mlp"] = window_against_per_batch("mlp", {"hidden": [8]}, grouped=False)
    out["deepsets"] = window_against_per_batch("deepsets", {}, grouped=True)
    for policy in ("float32", "mixed_bfloat16", "mixed_float16"):
        out[policy] = precision(policy)
    print(json.dumps(out))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parents[2]))  # the repository: tests.conftest
    sys.exit(main())
