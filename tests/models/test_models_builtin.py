"""The built-in MLP and Deep Sets models: they build, learn, mask padding and save."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from models_helpers import LENGTH, synthetic_batch

from gridtrain.models import (
    MODELS,
    InputSpec,
    arrange_inputs,
    build_model,
    load_model,
    model_input_names,
)


def train_steps(model: keras.Model, steps: int = 30) -> tuple[float, float]:
    """Loss on a fixed batch before and after a few weighted training steps."""
    batch, label = synthetic_batch(256)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, 256).astype(np.float32)
    x = arrange_inputs(model, batch)
    before = float(model.evaluate(x, label, sample_weight=weights, verbose=0)[0])
    for _ in range(steps):
        model.train_on_batch(x, label, sample_weight=weights)
    after = float(model.evaluate(x, label, sample_weight=weights, verbose=0)[0])
    return before, after


def test_registry_lists_the_built_ins() -> None:
    assert set(MODELS) == {"mlp", "deepsets", "interaction", "cnn", "particlenet", "part"}


@pytest.mark.parametrize(
    ("name", "params", "inputs"),
    [
        ("mlp", {"hidden": [16, 16]}, ["constituents", "constituents_count", "features"]),
        ("mlp", {"hidden": [16], "batch_norm": True, "dropout": 0.1, "flatten": 0}, ["features"]),
        ("deepsets", {"phi": [16, 16], "rho": [16]}, ["constituents", "constituents_count"]),
        (
            "deepsets",
            {"phi": [16], "rho": [16], "pooling": "mean", "use_features": True},
            ["constituents", "constituents_count", "features"],
        ),
    ],
)
def test_built_ins_train_and_reduce_the_loss(
    spec: InputSpec, name: str, params: dict[str, object], inputs: list[str]
) -> None:
    model = build_model(name, params, spec, learning_rate=0.01, seed=3)
    assert sorted(model_input_names(model)) == sorted(inputs)
    probabilities = model.predict_on_batch(arrange_inputs(model, synthetic_batch(8)[0]))
    assert probabilities.shape == (8, 1)
    assert np.all((probabilities >= 0) & (probabilities <= 1))
    before, after = train_steps(model)
    assert after < 0.8 * before


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_deepsets_is_invariant_to_order_and_to_padding_contents(
    spec: InputSpec, pooling: str
) -> None:
    model = build_model(
        "deepsets", {"phi": [16, 16], "rho": [16], "pooling": pooling}, spec, learning_rate=1e-3
    )
    batch, _ = synthetic_batch(64, seed=5)
    rng = np.random.default_rng(6)
    entries, count = batch["constituents"], batch["constituents_count"]
    shuffled = entries.copy()
    garbage = entries.copy()
    for i, n in enumerate(count):
        shuffled[i, :n] = entries[i, rng.permutation(n)]
        garbage[i, n:] = rng.normal(0, 1e3, size=(LENGTH - n, entries.shape[2]))
    garbage[count < LENGTH, -1] = np.inf  # even inf in a padded slot must not leak
    reference = model.predict_on_batch(arrange_inputs(model, batch))
    for variant in (shuffled, garbage):
        other = model.predict_on_batch(arrange_inputs(model, {**batch, "constituents": variant}))
        np.testing.assert_allclose(other, reference, atol=1e-5, rtol=0)
    fewer = {**batch, "constituents_count": np.maximum(count - 1, 0)}
    assert not np.allclose(model.predict_on_batch(arrange_inputs(model, fewer)), reference)


def test_seed_makes_the_initial_weights_reproducible(spec: InputSpec) -> None:
    first, second, other = (
        build_model("mlp", {"hidden": [8]}, spec, learning_rate=1e-3, seed=s) for s in (1, 1, 2)
    )
    for a, b in zip(first.get_weights(), second.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.get_weights()[0], other.get_weights()[0])


# Keras saving calls np.array(tf.Variable), which NumPy 2 flags; a Keras/TensorFlow matter.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_a_saved_deepsets_model_loads_back(spec: InputSpec, tmp_path: Path) -> None:
    model = build_model("deepsets", {"phi": [8], "rho": [8]}, spec, learning_rate=1e-3)
    batch, label = synthetic_batch(16)
    x = arrange_inputs(model, batch)
    model.train_on_batch(x, label)  # builds the optimizer, whose state is saved too
    path = tmp_path / "model.keras"
    model.save(path)
    again = load_model(path)
    np.testing.assert_allclose(again.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
    assert again.optimizer.iterations.numpy() == 1
    assert not load_model(path, compile=False).compiled


def test_input_spec_from_a_manifest_like_record() -> None:
    manifest = SimpleNamespace(
        features=["a", "b"],
        jagged=[{"name": "tracks", "branches": ["pt", "eta"], "length": 5, "count": "x"}],
        images=[],  # the manifest's image groups (dataset.images), none here
    )
    spec = InputSpec.from_manifest(manifest)  # type: ignore[arg-type]
    assert spec == InputSpec(("a", "b"), {"tracks": (5, ("pt", "eta"))})
    assert {k: v.shape for k, v in spec.tensors().items()} == {
        "features": (2,),
        "tracks": (5, 2),
        "tracks_count": (),
    }


def test_importing_the_package_does_not_import_tensorflow() -> None:
    code = "import sys, gridtrain.models; sys.exit('tensorflow' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)
