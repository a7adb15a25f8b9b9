"""Image tensors from the shards reach a model: standardised as converted, offered by name."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.manifest import load_manifest
from gridtrain.data.shards import ShardReader
from gridtrain.data.toy import IMAGE_BRANCHES, write_toy_dataset
from gridtrain.models import InputSpec, arrange_inputs, build_model
from gridtrain.train.inputs import InputBuilder
from tests.conftest import toy_section

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

IMAGE_MODEL = textwrap.dedent(
    """
    import keras


    def cnn(inputs):
        image = keras.Input(shape=inputs.images["jet_image"], name="jet_image")
        x = keras.layers.Conv2D(4, 3, activation="relu")(image)
        x = keras.layers.GlobalAveragePooling2D()(x)
        feats = keras.Input(shape=(len(inputs.features),), name="features")
        x = keras.layers.Concatenate()([x, feats])
        model = keras.Model([image, feats], keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model
    """
)


@pytest.fixture(scope="module")
def image_dataset(tmp_path_factory) -> Path:
    toy = tmp_path_factory.mktemp("toy")
    write_toy_dataset(toy, 1200, seed=4, image_size=8)
    out = tmp_path_factory.mktemp("dataset")
    images = {
        "jet_image": {"branches": list(IMAGE_BRANCHES)},
        "charged": {"branches": ["jet_image_charged"], "statistics": "per-pixel"},
    }
    convert(DatasetConfig.from_dict(toy_section(toy, out, images=images, shard_events=500)))
    return out


def test_images_are_standardised_as_the_manifest_says(image_dataset):
    manifest = load_manifest(image_dataset)
    spec = InputSpec.from_manifest(manifest)
    assert spec.images == {"jet_image": (8, 8, 2), "charged": (8, 8)}
    assert spec.tensors()["jet_image"].shape == (8, 8, 2)
    builder = InputBuilder(manifest, (), {}, ["jet_image", "charged"])
    path = image_dataset / manifest.shards["train"][0].path
    loaded = builder.load(path)
    with ShardReader(path, ["jet_image", "charged"]) as reader:
        raw = reader.read()
    stats = manifest.stats["jet_image"]
    expected = (raw["jet_image"] - np.float32(stats["mean"])) / np.float32(stats["std"])
    np.testing.assert_allclose(loaded.inputs["jet_image"], expected, rtol=1e-5, atol=1e-5)
    stats = manifest.stats["charged"]
    mean = np.asarray(stats["mean"], dtype=np.float32).reshape(8, 8)
    std = np.asarray(stats["std"], dtype=np.float32).reshape(8, 8)
    expected = (raw["charged"] - mean) / np.where(std > 0, std, 1)  # never-hit pixels: std 1
    np.testing.assert_allclose(loaded.inputs["charged"], expected, rtol=1e-5, atol=1e-5)
    assert np.isfinite(loaded.inputs["charged"]).all()


def test_a_user_cnn_trains_on_the_image_and_the_features(image_dataset, tmp_path, monkeypatch):
    (tmp_path / "cnn.py").write_text(IMAGE_MODEL)
    monkeypatch.chdir(tmp_path)
    manifest = load_manifest(image_dataset)
    spec = InputSpec.from_manifest(manifest)
    model = build_model("cnn.py:cnn", {}, spec, learning_rate=1e-3)
    builder = InputBuilder(manifest, spec.features, {}, ["jet_image", "features"])
    data = builder.load(image_dataset / manifest.shards["train"][0].path)
    for inputs, labels, weights in data.batches(128):
        loss = model.train_on_batch(arrange_inputs(model, inputs), labels, sample_weight=weights)
    assert np.isfinite(loss)


def test_export_refuses_image_inputs_in_one_line(image_dataset):
    from types import SimpleNamespace

    from gridtrain.errors import ConfigError
    from gridtrain.export.graph import describe_inputs

    manifest = load_manifest(image_dataset)
    described = {"jagged": [], "images": manifest.images}
    spec = SimpleNamespace(manifest=described, features=(), groups={})
    with pytest.raises(ConfigError, match=r"image 'jet_image'.*not supported yet.*model\.keras"):
        describe_inputs(spec, ["jet_image"])  # type: ignore[arg-type]
