"""Built-in models over several jagged groups (issue 28): each group its own network and mask,
pooled together; the MLP takes the leading entries of each group."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from models_helpers import (
    CHANNELS,
    FEATURES,
    LENGTH,
    MUON_CHANNELS,
    MUONS,
    two_group_batch,
    with_garbage,
)

from gridtrain.errors import ConfigError
from gridtrain.models import InputSpec, arrange_inputs, build_model, load_model, model_input_names

BOTH = ("constituents", "muons")
BOTH_INPUTS = ["constituents", "constituents_count", "muons", "muons_count"]
SMALL = {
    "deepsets": {"phi": [16, 16], "rho": [16]},
    "interaction": {"relation": [8, 8], "object": [8], "classifier": [16]},
}


def train_steps(model: keras.Model, steps: int = 40) -> tuple[float, float]:
    batch, label = two_group_batch(256)
    x = arrange_inputs(model, batch)
    before = float(model.evaluate(x, label, verbose=0)[0])
    for _ in range(steps):
        model.train_on_batch(x, label)
    return before, float(model.evaluate(x, label, verbose=0)[0])


@pytest.mark.parametrize("name", ["deepsets", "interaction"])
def test_both_groups_by_default_each_with_its_own_network(two_groups: InputSpec, name: str) -> None:
    model = build_model(name, SMALL[name], two_groups, learning_rate=0.01, seed=3)
    assert sorted(model_input_names(model)) == BOTH_INPUTS
    layers = {layer.name for layer in model.layers}
    first = "phi" if name == "deepsets" else "relation"
    assert {f"{first}_constituents_0", f"{first}_muons_0", "groups"} <= layers
    before, after = train_steps(model)
    assert after < 0.8 * before


@pytest.mark.parametrize("name", ["deepsets", "interaction"])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_padding_of_either_group_does_not_change_the_output(
    two_groups: InputSpec, name: str, pooling: str
) -> None:
    params = {**SMALL[name], "groups": list(BOTH), "pooling": pooling}
    model = build_model(name, params, two_groups, learning_rate=1e-3, seed=2)
    batch, _ = two_group_batch(64, seed=5)
    reference = model.predict_on_batch(arrange_inputs(model, batch))
    assert np.all(np.isfinite(reference))
    for groups in (("constituents",), ("muons",), BOTH):
        other = model.predict_on_batch(arrange_inputs(model, with_garbage(batch, groups)))
        np.testing.assert_allclose(other, reference, atol=1e-5, rtol=0, err_msg=str(groups))
    # Each group is read: one muon fewer changes the output of events that had muons.
    count = batch["muons_count"]
    fewer = {**batch, "muons_count": np.maximum(count - 1, 0)}
    changed = model.predict_on_batch(arrange_inputs(model, fewer))
    assert not np.allclose(changed[count > 1], reference[count > 1])


@pytest.mark.parametrize("name", ["deepsets", "interaction"])
def test_groups_picks_and_group_still_names_one(two_groups: InputSpec, name: str) -> None:
    only_muons = build_model(
        name, {**SMALL[name], "groups": ["muons"]}, two_groups, learning_rate=1e-3
    )
    assert sorted(model_input_names(only_muons)) == ["muons", "muons_count"]
    one = build_model(
        name, {**SMALL[name], "group": "muons"}, two_groups, learning_rate=1e-3, seed=1
    )
    listed = build_model(
        name, {**SMALL[name], "groups": ["muons"]}, two_groups, learning_rate=1e-3, seed=1
    )
    assert [w.shape for w in one.get_weights()] == [w.shape for w in listed.get_weights()]
    assert "pool" in {layer.name for layer in one.layers}  # one group: the names of before


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"groups": ["jets"]}, ["parameter groups names 'jets'", "constituents, muons"]),
        ({"groups": ["muons", "muons"]}, ["names a group twice"]),
        ({"groups": []}, ["parameter 'groups' is []", "list of jagged group names"]),
        ({"group": "muons", "groups": ["muons"]}, ["group ('muons') and groups", "keep groups"]),
    ],
)
def test_bad_groups_are_one_line(
    two_groups: InputSpec, params: dict[str, object], words: list[str]
) -> None:
    for name in ("deepsets", "interaction"):
        with pytest.raises(ConfigError) as caught:
            build_model(name, {**SMALL[name], **params}, two_groups, learning_rate=1e-3)
        assert "\n" not in str(caught.value)
        for word in words:
            assert word in str(caught.value)


def test_the_mlp_flattens_every_group_by_default(two_groups: InputSpec) -> None:
    model = build_model("mlp", {"hidden": [16]}, two_groups, learning_rate=0.01, seed=1)
    assert sorted(model_input_names(model)) == sorted(["features", *BOTH_INPUTS])
    width = len(FEATURES) + LENGTH * (len(CHANNELS) + 1) + MUONS * (len(MUON_CHANNELS) + 1)
    assert model.get_layer("hidden_0").kernel.shape == (width, 16)
    before, after = train_steps(model)
    assert after < 0.8 * before


def test_the_mlp_takes_the_leading_entries_flatten_names(two_groups: InputSpec) -> None:
    params = {"hidden": [16], "flatten": {"constituents": 2, "muons": 1}}
    model = build_model("mlp", params, two_groups, learning_rate=1e-3, seed=1)
    width = len(FEATURES) + 2 * (len(CHANNELS) + 1) + 1 * (len(MUON_CHANNELS) + 1)
    assert model.get_layer("hidden_0").kernel.shape == (width, 16)
    batch, _ = two_group_batch(64, seed=5)
    reference = model.predict_on_batch(arrange_inputs(model, batch))
    garbage = with_garbage(batch, BOTH)
    np.testing.assert_allclose(
        model.predict_on_batch(arrange_inputs(model, garbage)), reference, atol=1e-5, rtol=0
    )
    # Entries after the leading ones are not read; the leading ones are.
    later = {**batch, "constituents": batch["constituents"].copy()}
    later["constituents"][:, 2:] += 1.0
    np.testing.assert_allclose(
        model.predict_on_batch(arrange_inputs(model, later)), reference, atol=1e-6, rtol=0
    )
    first = {**batch, "muons": batch["muons"] + 1.0}
    changed = model.predict_on_batch(arrange_inputs(model, first))
    has = batch["muons_count"] > 0
    assert not np.allclose(changed[has], reference[has])
    np.testing.assert_allclose(changed[~has], reference[~has], atol=1e-6, rtol=0)


def test_the_mlp_leaves_out_a_group_only_when_told(two_groups: InputSpec) -> None:
    features_only = build_model("mlp", {"flatten": 0}, two_groups, learning_rate=1e-3)
    assert model_input_names(features_only) == ["features"]
    no_muons = build_model(
        "mlp", {"flatten": {"constituents": 3, "muons": 0}}, two_groups, learning_rate=1e-3
    )
    assert sorted(model_input_names(no_muons)) == ["constituents", "constituents_count", "features"]
    with pytest.raises(ConfigError) as caught:
        build_model("mlp", {"flatten": {"constituents": 3}}, two_groups, learning_rate=1e-3)
    message = str(caught.value)
    assert "parameter flatten does not say how many entries" in message
    assert "group(s) muons" in message
    assert "flatten: {constituents: 3, muons: 0}" in message
    assert "\n" not in message
    with pytest.raises(ConfigError, match="flatten names 'jets', which the dataset does not have"):
        build_model("mlp", {"flatten": {"jets": 1}}, two_groups, learning_rate=1e-3)
    with pytest.raises(ConfigError, match="parameter 'flatten' is -1"):
        build_model("mlp", {"flatten": -1}, two_groups, learning_rate=1e-3)


def test_the_mlp_runs_on_jagged_entries_alone() -> None:
    spec = InputSpec((), {"muons": (MUONS, MUON_CHANNELS)})
    model = build_model("mlp", {"hidden": [4]}, spec, learning_rate=1e-3)
    assert sorted(model_input_names(model)) == ["muons", "muons_count"]
    with pytest.raises(ConfigError, match="needs flat features or jagged entries"):
        build_model("mlp", {"flatten": 0}, spec, learning_rate=1e-3)


# Keras saving calls np.array(tf.Variable), which NumPy 2 flags; a Keras/TensorFlow matter.
@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("deepsets", SMALL["deepsets"]),
        ("mlp", {"hidden": [8], "flatten": {"constituents": 2, "muons": 1}}),
    ],
)
def test_a_saved_two_group_model_loads_back(
    two_groups: InputSpec, tmp_path: Path, name: str, params: dict[str, object]
) -> None:
    model = build_model(name, params, two_groups, learning_rate=1e-3, seed=1)
    x = arrange_inputs(model, two_group_batch(16)[0])
    model.save(tmp_path / "model.keras")
    again = load_model(tmp_path / "model.keras", compile=False)
    np.testing.assert_allclose(again.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
