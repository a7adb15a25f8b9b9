"""Every way a model config can be wrong is one ConfigError naming the thing and the way out."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from gridtrain.errors import ConfigError
from gridtrain.models import InputSpec, build_model

BAD_MODELS = textwrap.dedent(
    """
    import keras


    def returns_none(inputs):
        return None


    def uncompiled(inputs):
        x = keras.Input(shape=(len(inputs.features),), name="features")
        return keras.Model(x, keras.layers.Dense(1)(x))


    def wants_tracks(inputs):
        x = keras.Input(shape=(4, 2), name="tracks")
        model = keras.Model(x, keras.layers.Dense(1)(keras.layers.Flatten()(x)))
        model.compile(loss="binary_crossentropy")
        return model


    def wrong_width(inputs):
        x = keras.Input(shape=(7,), name="features")
        model = keras.Model(x, keras.layers.Dense(1)(x))
        model.compile(loss="binary_crossentropy")
        return model


    def two_outputs(inputs):
        x = keras.Input(shape=(len(inputs.features),), name="features")
        model = keras.Model(x, [keras.layers.Dense(1)(x), keras.layers.Dense(1)(x)])
        model.compile(loss="binary_crossentropy")
        return model


    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(1)

        def call(self, x):
            return self.dense(x["features"])


    def subclassed(inputs):
        model = Subclassed()
        model.compile(loss="binary_crossentropy")
        return model


    def takes_depth(inputs, depth=2):
        raise AssertionError("never called with bad parameters")
    """
)


@pytest.fixture
def bad_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "bad.py").write_text(BAD_MODELS)
    (tmp_path / "broken.py").write_text("import keras\ndef f(inputs):\n    return (\n")
    monkeypatch.chdir(tmp_path)
    return "bad.py"


def expect_config_error(
    words: list[str], name: str, params: dict[str, Any], spec: InputSpec
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_model(name, params, spec, learning_rate=1e-3)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


@pytest.mark.parametrize(
    ("name", "params", "words"),
    [
        (
            "mpl",
            {},
            [
                "unknown model 'mpl'",
                "did you mean 'mlp'",
                "cnn, deepsets, interaction, mlp",
                "file.py:",
            ],
        ),
        ("mlp", {"hiden": [4]}, ["unknown parameter 'hiden'", "did you mean 'hidden'"]),
        ("mlp", {"hidden": [0]}, ["parameter 'hidden' is [0]", "positive integers"]),
        ("mlp", {"hidden": 64}, ["parameter 'hidden' is 64"]),
        ("mlp", {"dropout": 1.5}, ["parameter 'dropout'", "[0, 1)"]),
        ("mlp", {"activation": "sigmoidal"}, ["parameter 'activation'", "relu"]),
        ("deepsets", {"pooling": "max"}, ["parameter 'pooling'", "sum or mean"]),
        ("deepsets", {"group": "tracks"}, ["'tracks'", "constituents"]),
    ],
)
def test_built_in_config_errors(
    spec: InputSpec, name: str, params: dict[str, Any], words: list[str]
) -> None:
    expect_config_error(words, name, params, spec)


def test_models_without_flat_features_say_so() -> None:
    spec = InputSpec((), {"a": (3, ("x",)), "b": (3, ("y",))})
    expect_config_error(
        ["needs flat features or jagged entries", "flatten"], "mlp", {"flatten": 0}, spec
    )
    expect_config_error(
        ["needs flat features"], "deepsets", {"group": "a", "use_features": True}, spec
    )


@pytest.mark.parametrize(
    ("function", "params", "words"),
    [
        ("returns_none", {}, ["returned NoneType, expected a compiled keras.Model"]),
        ("uncompiled", {}, ["uncompiled", "call model.compile(...) before returning it"]),
        ("wants_tracks", {}, ["input 'tracks'", "offers: features (4, float32)", "constituents"]),
        ("wrong_width", {}, ["input 'features' has shape (7,)", "(4,)"]),
        ("two_outputs", {}, ["outputs 1, 1 unit(s)", "expects 1 unit(s) with sigmoid"]),
        ("subclassed", {}, ["declares no inputs", "keras.Input"]),
        ("takes_depth", {"width": 3}, ["parameters ['width'] do not fit", "takes_depth"]),
        ("nothing", {}, ["has no function 'nothing'", "returns_none"]),
    ],
)
def test_user_function_errors(
    spec: InputSpec, bad_file: str, function: str, params: dict[str, Any], words: list[str]
) -> None:
    expect_config_error([f"{bad_file}:{function}", *words], f"{bad_file}:{function}", params, spec)


@pytest.mark.parametrize(
    ("name", "words"),
    [
        ("missing.py:f", ["no file missing.py", "relative to the working directory"]),
        ("broken.py:f", ["importing broken.py failed: SyntaxError"]),
        ("no_such_package.models:f", ["cannot import 'no_such_package.models'", "PYTHONPATH"]),
        ("bad.py:", ["a user model is named 'package.module:function'"]),
    ],
)
def test_user_function_lookup_errors(
    spec: InputSpec, bad_file: str, name: str, words: list[str]
) -> None:
    expect_config_error(words, name, {}, spec)


@pytest.mark.parametrize("group", ["features", "tracks_count"])
def test_group_names_that_clash_with_input_names(group: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(f"group name {group!r} clashes")):
        InputSpec(("a",), {group: (3, ("x",))})
