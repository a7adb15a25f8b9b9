"""User model functions named as ``path/to/file.py:function`` or ``package.module:function``."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from models_helpers import synthetic_batch, two_group_batch, with_garbage

from gridtrain.models import InputSpec, absolute_model_name, arrange_inputs, build_model

USER_MODELS = textwrap.dedent(
    """
    import keras


    def single(inputs, hidden=8):
        x = keras.Input(shape=(len(inputs.features),), name="features")
        out = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Dense(hidden)(x))
        model = keras.Model(x, out)  # one tensor, not a dict
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model


    def listed(inputs):
        length, channels = inputs.groups["constituents"]
        parts = keras.Input(shape=(length, len(channels)), name="constituents")
        feats = keras.Input(shape=(len(inputs.features),), name="features")
        x = keras.layers.Concatenate()([keras.layers.Flatten()(parts), feats])
        model = keras.Model([parts, feats], keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model
    """
)


@pytest.fixture
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "mymodels"
    folder.mkdir()
    (folder / "zoo.py").write_text(USER_MODELS)
    monkeypatch.chdir(tmp_path)
    return folder / "zoo.py"


@pytest.mark.parametrize(
    ("function", "params", "inputs"),
    [("single", {"hidden": 4}, ["features"]), ("listed", {}, ["constituents", "features"])],
)
def test_a_function_in_a_file_relative_to_cwd(
    spec: InputSpec, user_file: Path, function: str, params: dict[str, int], inputs: list[str]
) -> None:
    model = build_model(f"mymodels/zoo.py:{function}", params, spec, learning_rate=1e-3)
    assert [t.name for t in model.inputs] == inputs
    batch, label = synthetic_batch(32)
    x = arrange_inputs(model, batch)  # the structure the model was built with: no Keras warning
    assert model.predict_on_batch(x).shape == (32, 1)
    model.train_on_batch(x, label, sample_weight=np.ones(32))


def test_a_function_in_an_importable_module(
    spec: InputSpec, user_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(user_file.parent.parent))
    model = build_model("mymodels.zoo:single", {}, spec, learning_rate=1e-3)
    assert [t.name for t in model.inputs] == ["features"]


def test_absolute_model_name_anchors_file_paths_only(tmp_path: Path) -> None:
    assert absolute_model_name("x/m.py:f", tmp_path) == f"{tmp_path / 'x' / 'm.py'}:f"
    assert absolute_model_name("pkg.mod:f", tmp_path) == "pkg.mod:f"
    assert absolute_model_name("mlp", tmp_path) == "mlp"


def test_the_documented_two_group_example_builds_trains_and_masks(two_groups: InputSpec) -> None:
    """docs/examples/two_groups.py, which docs/how-to/training.md shows."""
    example = Path(__file__).parents[2] / "docs" / "examples" / "two_groups.py"
    name = f"{example}:two_groups"
    model = build_model(name, {"groups": ["constituents", "muons"]}, two_groups, learning_rate=1e-3)
    assert sorted(t.name for t in model.inputs) == [
        "constituents", "constituents_count", "features", "muons", "muons_count"
    ]  # fmt: skip
    batch, label = two_group_batch(256)
    x = arrange_inputs(model, batch)
    before = float(model.evaluate(x, label, verbose=0))
    for _ in range(30):
        model.train_on_batch(x, label)
    assert float(model.evaluate(x, label, verbose=0)) < 0.9 * before
    garbage = arrange_inputs(model, with_garbage(batch, ("constituents", "muons")))
    np.testing.assert_allclose(
        model.predict_on_batch(garbage), model.predict_on_batch(x), atol=1e-5, rtol=0
    )
    only_muons = build_model(name, {"groups": ["muons"]}, two_groups, learning_rate=1e-3)
    assert sorted(t.name for t in only_muons.inputs) == ["features", "muons", "muons_count"]
