"""The model's head follows the task: built-ins build it, a user's function reads it, a misfit is
refused in one line before any process starts."""

from __future__ import annotations

import textwrap
from pathlib import Path
from types import SimpleNamespace

import keras
import numpy as np
import pytest
from models_helpers import CHANNELS, FEATURES, LENGTH, synthetic_batch

from gridtrain.errors import ConfigError
from gridtrain.models import InputSpec, arrange_inputs, build_model
from gridtrain.task import Task

MULTICLASS = Task("multiclass", ("W", "top", "QCD"))
REGRESSION = Task.from_dict(
    {
        "kind": "regression",
        "targets": [{"name": "pt", "expression": "gen_pt"}, {"name": "m", "expression": "gen_m"}],
        "loss": "huber",
        "huber_delta": 0.5,
    }
)


def spec_for(task: Task) -> InputSpec:
    return InputSpec(FEATURES, {"constituents": (LENGTH, CHANNELS)}, task=task)


def task_labels(task: Task, n: int) -> np.ndarray:
    """Learnable labels of ``task`` for ``synthetic_batch(n)``: one-hot classes or targets."""
    batch = synthetic_batch(n)[0]
    total = batch["constituents"][:, :, 0].sum(axis=1)
    if task.kind == "multiclass":
        classes = np.digitize(total, [-1.0, 1.0])
        return np.eye(3, dtype=np.float32)[classes]
    return np.stack([total, batch["constituents_count"] / LENGTH], axis=1).astype(np.float32)


@pytest.mark.parametrize(
    ("name", "task"), [("mlp", MULTICLASS), ("deepsets", REGRESSION)], ids=["mlp", "deepsets"]
)
def test_built_ins_build_the_task_head_and_learn(name: str, task: Task) -> None:
    model = build_model(name, {}, spec_for(task), learning_rate=0.01, seed=3)
    head = model.layers[-1]
    assert model.outputs[0].shape[1:] == (task.output_units,)
    assert head.activation.__name__ == task.output_activation
    expected = {
        "multiclass": keras.losses.CategoricalCrossentropy,
        "regression": keras.losses.Huber,
    }
    assert isinstance(model.loss, expected[task.kind])
    if task.kind == "regression":
        error = model.loss(np.zeros((1, 2)), np.array([[2.0, 0.0]]))  # 0.5 (2 - 0.5/2) / 2
        assert float(error) == pytest.approx(0.4375)
    batch, _ = synthetic_batch(256)
    x, y = arrange_inputs(model, batch), task_labels(task, 256)
    weights = np.random.default_rng(1).uniform(0.5, 2.0, 256).astype(np.float32)
    before = float(model.evaluate(x, y, sample_weight=weights, verbose=0)[0])
    for _ in range(30):
        model.train_on_batch(x, y, sample_weight=weights)
    after = float(model.evaluate(x, y, sample_weight=weights, verbose=0)[0])
    assert after < 0.8 * before
    if task.kind == "multiclass":
        assert np.allclose(model.predict_on_batch(x).sum(axis=1), 1.0, atol=1e-5)


USER_MODELS = textwrap.dedent(
    """
    import keras


    def follows_the_task(inputs):
        x = keras.Input(shape=(len(inputs.features),), name="features")
        out = keras.layers.Dense(
            inputs.task.output_units, activation=inputs.task.output_activation
        )(keras.layers.Dense(8, activation="relu")(x))
        model = keras.Model(x, out)
        model.compile(optimizer="adam", loss=inputs.task.loss_name)
        return model


    def binary_head(inputs):
        x = keras.Input(shape=(len(inputs.features),), name="features")
        model = keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(x))
        model.compile(optimizer="adam", loss="binary_crossentropy")
        return model


    def logits(inputs):
        x = keras.Input(shape=(len(inputs.features),), name="features")
        model = keras.Model(x, keras.layers.Dense(inputs.task.output_units)(x))
        model.compile(optimizer="adam", loss="categorical_crossentropy")
        return model
    """
)


@pytest.fixture
def user_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "heads.py").write_text(USER_MODELS)
    monkeypatch.chdir(tmp_path)
    return "heads.py"


@pytest.mark.parametrize("task", [Task(), MULTICLASS, REGRESSION], ids=lambda t: t.kind)
def test_a_user_function_receives_the_task_and_builds_its_head(user_file: str, task: Task) -> None:
    model = build_model(f"{user_file}:follows_the_task", {}, spec_for(task), learning_rate=1e-3)
    assert model.outputs[0].shape[1:] == (task.output_units,)


@pytest.mark.parametrize(
    ("function", "task", "words"),
    [
        (
            "binary_head",
            MULTICLASS,
            ["outputs 1 unit(s) with sigmoid", "expects 3 unit(s) with softmax"],
        ),
        ("binary_head", REGRESSION, ["regression of pt, m", "expects 2 unit(s) with linear"]),
        ("logits", MULTICLASS, ["outputs 3 unit(s) with linear", "expects 3 unit(s) with softmax"]),
    ],
)
def test_a_head_that_does_not_fit_the_task_is_refused_in_one_line(
    user_file: str, function: str, task: Task, words: list[str]
) -> None:
    with pytest.raises(ConfigError) as caught:
        build_model(f"{user_file}:{function}", {}, spec_for(task), learning_rate=1e-3)
    message = str(caught.value)
    assert "\n" not in message
    for word in [f"{user_file}:{function}", *words, "inputs.task.output_units"]:
        assert word in message, f"{word!r} not in {message!r}"


def test_a_softmax_layer_counts_as_a_softmax_head() -> None:
    from gridtrain.models.build import check_output

    x = keras.Input(shape=(4,), name="features")
    model = keras.Model(x, keras.layers.Softmax()(keras.layers.Dense(3)(x)))
    check_output("softmax-layer", model, MULTICLASS)  # accepted
    with pytest.raises(ConfigError, match="outputs 3 unit"):
        check_output("softmax-layer", model, Task())


def test_input_spec_from_a_manifest_reads_the_task() -> None:
    manifest = SimpleNamespace(features=["a"], jagged=[], images=[], task=REGRESSION.to_dict())
    assert InputSpec.from_manifest(manifest).task == REGRESSION  # type: ignore[arg-type]
    old = SimpleNamespace(features=["a"], jagged=[], images=[])  # written before tasks
    assert InputSpec.from_manifest(old).task == Task()  # type: ignore[arg-type]
