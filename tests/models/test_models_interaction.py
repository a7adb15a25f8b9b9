"""The interaction network (JEDI-net) and the small CNN: masking, invariance, heads, training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from models_helpers import CHANNELS, FEATURES, LENGTH, synthetic_batch

from gridtrain.data.toy import generate_events, jet_images
from gridtrain.errors import ConfigError
from gridtrain.models import MODELS, InputSpec, arrange_inputs, build_model, load_model
from gridtrain.task import Target, Task

SMALL = {"relation": [8, 8], "object": [8], "classifier": [8]}
TASKS = {
    "binary": Task(),
    "multiclass": Task("multiclass", classes=("top", "W", "QCD")),
    "regression": Task(
        "regression", targets=(Target("pt", "pt"), Target("mass", "m")), loss="huber"
    ),
}
IMAGE = (8, 8, 2)


def jets(
    task: Task = TASKS["binary"], images: dict[str, tuple[int, ...]] | None = None
) -> InputSpec:
    return InputSpec(FEATURES, {"constituents": (LENGTH, CHANNELS)}, images or {}, task)


def test_both_are_registered_with_their_parameters() -> None:
    assert {"interaction", "cnn"} <= set(MODELS)
    assert set(MODELS["interaction"].params) >= {"group", "relation", "object", "classifier"}
    assert set(MODELS["cnn"].params) >= {"image", "filters", "kernel_size", "dense"}


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_interaction_is_invariant_to_order_and_to_padding_contents(pooling: str) -> None:
    model = build_model(
        "interaction", {**SMALL, "pooling": pooling}, jets(), learning_rate=1e-3, seed=2
    )
    batch, _ = synthetic_batch(48, seed=5)
    rng = np.random.default_rng(6)
    entries, count = batch["constituents"], batch["constituents_count"]
    shuffled, garbage = entries.copy(), entries.copy()
    for i, n in enumerate(count):
        shuffled[i, :n] = entries[i, rng.permutation(n)]
        garbage[i, n:] = rng.normal(0, 1e3, size=(LENGTH - n, entries.shape[2]))
    garbage[count < LENGTH, -1] = np.nan  # even NaN in a padded slot must not leak
    reference = model.predict_on_batch(arrange_inputs(model, batch))
    for variant in (shuffled, garbage):
        other = model.predict_on_batch(arrange_inputs(model, {**batch, "constituents": variant}))
        np.testing.assert_allclose(other, reference, atol=1e-5, rtol=0)
    # The relations matter: the same constituents with one fewer real one change the output.
    fewer = {**batch, "constituents_count": np.maximum(count - 1, 1)}
    changed = model.predict_on_batch(arrange_inputs(model, fewer))
    assert not np.allclose(changed[count > 1], reference[count > 1])


def test_interaction_pairs_the_constituents() -> None:
    # Two events with the same constituents' multiset of channels but different pairings give
    # different outputs, which no per-constituent (Deep Sets) sum of these channels could tell.
    model = build_model("interaction", SMALL, jets(), learning_rate=1e-3, seed=4)
    batch, _ = synthetic_batch(2, seed=1)
    entries = np.zeros((2, LENGTH, len(CHANNELS)), np.float32)
    entries[0, :2] = [[1.0, 0.5, 0.0], [2.0, -0.5, 0.0]]
    entries[1, :2] = [[1.0, -0.5, 0.0], [2.0, 0.5, 0.0]]
    count = np.array([2, 2], np.int32)
    x = arrange_inputs(model, {**batch, "constituents": entries, "constituents_count": count})
    out = model.predict_on_batch(x)
    assert abs(float(out[0, 0]) - float(out[1, 0])) > 1e-6


@pytest.mark.parametrize("kind", ["binary", "multiclass", "regression"])
def test_heads_follow_the_task(kind: str) -> None:
    task = TASKS[kind]
    spec = jets(task, {"jet_image": IMAGE})
    batch, _ = synthetic_batch(5)
    batch["jet_image"] = np.random.default_rng(0).normal(size=(5, *IMAGE)).astype(np.float32)
    for name, params in (("interaction", SMALL), ("cnn", {"filters": [4], "dense": [8]})):
        model = build_model(name, params, spec, learning_rate=1e-3, seed=1)
        out = np.asarray(model.predict_on_batch(arrange_inputs(model, batch)))
        assert out.shape == (5, task.output_units), name
        if kind == "multiclass":
            np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-5)
        elif kind == "binary":
            assert np.all((out >= 0) & (out <= 1))


def image_toy(n: int, size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The toy's jet images (W signal, QCD background), channels last, standardised."""
    rng = np.random.default_rng(7)
    parts = [generate_events(n // 2, signal, rng, 0) for signal in (True, False)]
    images = np.concatenate([jet_images(p.counts, p.constituents, size) for p in parts])
    images = np.log1p(images.transpose(0, 2, 3, 1))
    images = (images - images.mean(axis=(0, 1, 2))) / images.std(axis=(0, 1, 2))
    labels = np.repeat([1.0, 0.0], n // 2).astype(np.float32)
    return images.astype(np.float32), labels


def test_the_cnn_learns_on_the_toy_jet_images() -> None:
    images, labels = image_toy(256)
    spec = InputSpec(FEATURES, {}, {"jet_image": IMAGE})
    model = build_model("cnn", {"filters": [8, 8], "dense": [16]}, spec, learning_rate=1e-2, seed=0)
    assert [t.name for t in model.inputs] == ["jet_image"]
    x = arrange_inputs(model, {"jet_image": images})
    before = float(model.evaluate(x, labels, verbose=0)[0])
    for _ in range(20):
        model.train_on_batch(x, labels)
    after = float(model.evaluate(x, labels, verbose=0)[0])
    assert after < 0.7 * before


def test_a_one_channel_image_gets_its_channel_axis() -> None:
    spec = InputSpec((), {}, {"charged": (8, 8)})
    model = build_model("cnn", {"filters": [4], "dense": [4]}, spec, learning_rate=1e-3)
    out = model.predict_on_batch(arrange_inputs(model, {"charged": np.zeros((3, 8, 8), "f4")}))
    assert out.shape == (3, 1)


# Keras saving calls np.array(tf.Variable), which NumPy 2 flags; a Keras/TensorFlow matter.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
def test_a_saved_interaction_network_loads_back(tmp_path: Path) -> None:
    model = build_model("interaction", {**SMALL, "use_features": True}, jets(), learning_rate=1e-3)
    batch, _ = synthetic_batch(8)
    x = arrange_inputs(model, batch)
    model.save(tmp_path / "model.keras")
    again = load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(again.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "params", "spec", "words"),
    [
        (
            "interaction",
            {"relaton": [8]},
            jets(),
            "model 'interaction': unknown parameter 'relaton' (did you mean 'relation'?)",
        ),
        (
            "interaction",
            {"object": [0]},
            jets(),
            "parameter 'object' is [0]; expected a list of positive integers",
        ),
        (
            "interaction",
            {},
            InputSpec(FEATURES, {}),
            "model 'interaction' runs over jagged groups and the dataset has none",
        ),
        (
            "cnn",
            {"kernel_size": 0},
            jets(images={"jet_image": IMAGE}),
            "parameter 'kernel_size' is 0; expected a positive integer",
        ),
        (
            "cnn",
            {"image": "calo"},
            jets(images={"jet_image": IMAGE}),
            "parameter image is 'calo', which the dataset does not have; its images: jet_image",
        ),
        (
            "cnn",
            {},
            jets(images={"strip": (8,)}),
            "image 'strip' has shape (8,); a 2-D CNN takes (H, W) or (H, W, channels)",
        ),
    ],
)
def test_a_bad_parameter_is_one_line(
    name: str, params: dict[str, object], spec: InputSpec, words: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_model(name, params, spec, learning_rate=1e-3)
    message = str(caught.value)
    assert words in message
    assert "\n" not in message
