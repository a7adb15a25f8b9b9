"""The built-in models: an MLP on the flat features (and the leading entries of the jagged
groups), Deep Sets and an interaction network over one or more jagged groups, a small CNN on an
image, and the jet taggers ParticleNet and the Particle Transformer (the Keras pieces in
``models.interaction``, ``models.cnn``, ``models.particlenet`` and ``models.part``).

Layer: models, builders. Each builder turns an ``InputSpec`` and checked hyper-parameters into a
compiled model for the spec's task: its body ends in ``finish_model``, which adds the task's head
(``head``: 1 sigmoid, K softmax or T linear units) and compiles with the task's loss and Adam.
Keras is imported inside the builders, so the registry and its parameter checks need no framework.

A new built-in is a builder ``build(inputs, params, *, learning_rate, seed) -> keras.Model`` that
ends with ``finish_model(...)`` and one ``Builder`` entry in ``MODELS``.
"""

from __future__ import annotations

import difflib
import itertools
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gridtrain.errors import ConfigError
from gridtrain.models.params import ACTIVATIONS, Param, units
from gridtrain.models.spec import COUNT_SUFFIX, FEATURES, InputSpec
from gridtrain.models.taggers import (
    PART_PARAMS,
    PART_PRESETS,
    PARTICLENET_PARAMS,
    PARTICLENET_PRESETS,
    check_neighbours,
    resolve_fourmomentum,
    resolve_points,
    with_preset,
)
from gridtrain.task import Task

if TYPE_CHECKING:
    import keras

_units = units


def _fraction(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1


def _flag(value: Any) -> bool:
    return isinstance(value, bool)


def _optional_name(value: Any) -> bool:
    return value is None or isinstance(value, str)


def _optional_names(value: Any) -> bool:
    return value is None or (
        isinstance(value, list | tuple) and bool(value) and all(isinstance(v, str) for v in value)
    )


def _entry_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _optional_entries(value: Any) -> bool:
    if isinstance(value, Mapping):
        return all(isinstance(k, str) and _entry_count(v) for k, v in value.items())
    return value is None or _entry_count(value)


UNITS = "a list of positive integers, e.g. [64, 64]"
ACTIVATION = Param("relu", lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}")
DROPOUT = Param(0.0, _fraction, "a fraction in [0, 1)")

GROUP = Param(None, _optional_name, "the name of a jagged group (or use groups)")
GROUPS = Param(
    None, _optional_names, "a list of jagged group names, e.g. [jets, muons] (null: all of them)"
)
FLATTEN = Param(
    None,
    _optional_entries,
    "entries per jagged group, e.g. {jets: 2, muons: 1} (0 leaves a group out), one number for "
    "every group, or null for all of their entries",
)

MLP_PARAMS = {
    "hidden": Param([64, 64], _units, UNITS),
    "flatten": FLATTEN,
    "activation": ACTIVATION,
    "dropout": DROPOUT,
    "batch_norm": Param(False, _flag, "true or false"),
}
DEEPSETS_PARAMS = {
    "groups": GROUPS,
    "group": GROUP,
    "phi": Param([64, 64, 64], _units, UNITS),
    "rho": Param([64, 64], _units, UNITS),
    "pooling": Param("sum", lambda v: v in ("sum", "mean"), "sum or mean"),
    "use_features": Param(False, _flag, "true or false"),
    "activation": ACTIVATION,
    "dropout": DROPOUT,
}


def resolve_params(
    model: str, params: Mapping[str, Any], schema: Mapping[str, Param]
) -> dict[str, Any]:
    """The defaults overridden by ``params``; an unknown or invalid one is a ``ConfigError``."""
    resolved = {key: p.default for key, p in schema.items()}
    for key, value in params.items():
        if key not in schema:
            close = difflib.get_close_matches(key, schema, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"model {model!r}: unknown parameter {key!r}{hint}; it takes {', '.join(schema)}"
            )
        if not schema[key].valid(value):
            raise ConfigError(
                f"model {model!r}: parameter {key!r} is {value!r}; expected {schema[key].expected}"
            )
        resolved[key] = value
    return resolved


class _Seeds:
    """Distinct seeds for each initializer and dropout layer, or none (Keras's global state)."""

    def __init__(self, seed: int | None) -> None:
        self._seeds: Iterator[int] | None = None if seed is None else itertools.count(seed)

    def next(self) -> int | None:
        return None if self._seeds is None else next(self._seeds)

    def kernel(self) -> Any:
        import keras

        return keras.initializers.GlorotUniform(seed=self.next())


def _dense_stack(
    x: Any, units: list[int], prefix: str, params: Mapping[str, Any], seeds: _Seeds
) -> Any:
    import keras

    batch_norm = params.get("batch_norm", False)
    for i, n in enumerate(units):
        x = keras.layers.Dense(
            n, use_bias=not batch_norm, kernel_initializer=seeds.kernel(), name=f"{prefix}_{i}"
        )(x)
        if batch_norm:
            x = keras.layers.BatchNormalization(name=f"{prefix}_{i}_norm")(x)
        x = keras.layers.Activation(params["activation"], name=f"{prefix}_{i}_act")(x)
        if params["dropout"]:
            x = keras.layers.Dropout(
                params["dropout"], seed=seeds.next(), name=f"{prefix}_{i}_drop"
            )(x)
    return x


def head(x: Any, task: Task, seeds: _Seeds) -> Any:
    """The output layer ``task`` asks for: 1 sigmoid (binary), K softmax (multiclass) or T linear
    units on standardised targets (regression). Named ``probability`` for classifiers (as models
    saved before tasks existed) and ``prediction`` for a regression. In float32 under any
    ``train.precision``: a sigmoid in 16 bits rounds nearby scores to the same value."""
    import keras

    return keras.layers.Dense(
        task.output_units,
        activation=task.output_activation,
        kernel_initializer=seeds.kernel(),
        name="probability" if task.is_classifier else "prediction",
        dtype="float32",
    )(x)


def task_loss(task: Task) -> Any:
    """The Keras loss of ``task`` (``Task.loss_name``), with ``huber_delta`` for huber."""
    import keras

    losses = {
        "binary_crossentropy": keras.losses.BinaryCrossentropy,
        "categorical_crossentropy": keras.losses.CategoricalCrossentropy,
        "mse": keras.losses.MeanSquaredError,
        "mae": keras.losses.MeanAbsoluteError,
    }
    if task.loss_name == "huber":
        return keras.losses.Huber(delta=task.huber_delta)
    return losses[task.loss_name]()


def compile_for_task(model: keras.Model, task: Task, learning_rate: float) -> keras.Model:
    """Compile ``model`` for ``task``: Adam, the task's loss, a weighted accuracy (classifiers)
    or mean absolute error (regression, in standardised units)."""
    import keras

    if task.kind == "binary":
        metric = keras.metrics.BinaryAccuracy(name="accuracy")
    elif task.kind == "multiclass":
        metric = keras.metrics.CategoricalAccuracy(name="accuracy")
    else:
        metric = keras.metrics.MeanAbsoluteError(name="mae")
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss=task_loss(task),
        weighted_metrics=[metric],
    )
    return model


def finish_model(
    inputs: dict[str, Any],
    x: Any,
    name: str,
    task: Task,
    learning_rate: float,
    seeds: _Seeds,
) -> keras.Model:
    """Add the task's head to ``x`` and compile: the last step of every built-in model."""
    import keras

    model = keras.Model(inputs=inputs, outputs=head(x, task, seeds), name=name)
    return compile_for_task(model, task, learning_rate)


def _features_input(model: str, inputs: InputSpec) -> Any:
    import keras

    if not inputs.features:
        raise ConfigError(
            f"model {model!r} needs flat features and the dataset has none; list some under "
            "dataset.features, or choose 'deepsets' for the jagged groups"
        )
    return keras.Input(shape=(len(inputs.features),), dtype="float32", name=FEATURES)


def _group_inputs(inputs: InputSpec, group: str, model_inputs: dict[str, Any]) -> tuple[Any, Any]:
    """``<group>`` (batch, L, C) and ``<group>_count`` (batch,), added to ``model_inputs``."""
    import keras

    length, channels = inputs.groups[group]
    entries = keras.Input(shape=(length, len(channels)), dtype="float32", name=group)
    count = keras.Input(shape=(), dtype="int32", name=group + COUNT_SUFFIX)
    model_inputs[group] = entries
    model_inputs[group + COUNT_SUFFIX] = count
    return entries, count


def flattened_entries(inputs: InputSpec, flatten: Any) -> dict[str, int]:
    """Group -> leading entries the MLP takes (groups with none left out), from ``flatten``:
    null (every entry of every group), one number for every group, or a mapping that names each
    of the dataset's groups; a number beyond a group's length means all of its entries."""
    groups = inputs.groups
    if flatten is None:
        return {group: length for group, (length, _) in groups.items()}
    if not isinstance(flatten, Mapping):
        return {group: min(flatten, length) for group, (length, _) in groups.items() if flatten}
    available = ", ".join(groups) or "none"
    unknown = [group for group in flatten if group not in groups]
    if unknown:
        raise ConfigError(
            f"model 'mlp': parameter flatten names {', '.join(map(repr, unknown))}, which the "
            f"dataset does not have; its jagged groups: {available}"
        )
    missing = [group for group in groups if group not in flatten]
    if missing:
        example = ", ".join(f"{group}: {flatten.get(group, 0)}" for group in groups)
        raise ConfigError(
            f"model 'mlp': parameter flatten does not say how many entries of the jagged "
            f"group(s) {', '.join(missing)} to take; give every group, 0 to leave one out, "
            f"e.g. flatten: {{{example}}}"
        )
    return {
        group: min(flatten[group], length)
        for group, (length, _) in groups.items()
        if flatten[group]
    }


def build_mlp(
    inputs: InputSpec, params: Mapping[str, Any], *, learning_rate: float, seed: int | None
) -> keras.Model:
    """Dense layers on the flat features and the leading entries of each jagged group.

    Each group's first ``flatten`` entries go in flat, every slot with a flag saying whether it is
    real (``LeadingEntries``), so padded slots reach the network as exact zeros whatever they hold.
    """
    import keras

    from gridtrain.models.layers import LeadingEntries

    p = resolve_params("mlp", params, MLP_PARAMS)
    seeds = _Seeds(seed)
    entries = flattened_entries(inputs, p["flatten"])
    if not inputs.features and not entries:
        raise ConfigError(
            "model 'mlp' needs flat features or jagged entries and the dataset offers "
            f"{inputs.describe()}; list some under dataset.features, or let the parameter "
            "flatten take entries of the jagged groups"
        )
    model_inputs: dict[str, Any] = {}
    parts = []
    if inputs.features:
        model_inputs[FEATURES] = _features_input("mlp", inputs)
        parts.append(model_inputs[FEATURES])
    for group, leading in entries.items():
        values, count = _group_inputs(inputs, group, model_inputs)
        parts.append(LeadingEntries(leading, name=f"leading_{group}")([values, count]))
    x = parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="mlp_inputs")(parts)
    x = _dense_stack(x, list(p["hidden"]), "hidden", p, seeds)
    return finish_model(model_inputs, x, "mlp", inputs.task, learning_rate, seeds)


def choose_groups(
    model: str, inputs: InputSpec, group: str | None, groups: list[str] | None
) -> list[str]:
    """The jagged groups a model runs over: ``groups``, or the one ``group`` names (the older
    parameter), or all of the dataset's."""
    available = ", ".join(inputs.groups) or "none"
    if group is not None and groups is not None:
        raise ConfigError(
            f"model {model!r}: parameters group ({group!r}) and groups ({groups!r}) both given; "
            "keep groups"
        )
    if groups is not None:
        chosen, param = list(groups), "groups"
    elif group is not None:
        chosen, param = [group], "group"
    else:
        chosen, param = list(inputs.groups), "groups"
    if not chosen:
        raise ConfigError(
            f"model {model!r} runs over jagged groups and the dataset has none; list some under "
            "dataset.jagged, or choose 'mlp'"
        )
    unknown = [name for name in chosen if name not in inputs.groups]
    if unknown:
        raise ConfigError(
            f"model {model!r}: parameter {param} names {', '.join(map(repr, unknown))}, which the "
            f"dataset does not have; its jagged groups: {available}"
        )
    if len(set(chosen)) != len(chosen):
        raise ConfigError(f"model {model!r}: parameter groups names a group twice: {chosen!r}")
    return chosen


def _pooled(parts: list[Any]) -> Any:
    """One group's vector as it is, several concatenated (in ``groups`` order)."""
    import keras

    return parts[0] if len(parts) == 1 else keras.layers.Concatenate(name="groups")(parts)


def build_deepsets(
    inputs: InputSpec, params: Mapping[str, Any], *, learning_rate: float, seed: int | None
) -> keras.Model:
    """Deep Sets / particle flow: rho(pooled phi per group), padding masked.

    Each group has its own phi, applied to each entry alone (Dense acts on the last axis), and its
    own masked pooling over its real entries; the pooled vectors of the groups are concatenated
    before rho. Padded slots influence nothing before the pooling, which drops them, so the output
    is invariant to the order of each group's real entries and to whatever padded slots hold. With
    one group the layers keep their names (``phi_0``, ``pool``), as models saved before groups.
    """
    import keras

    from gridtrain.models.layers import MaskedPooling

    p = resolve_params("deepsets", params, DEEPSETS_PARAMS)
    groups = choose_groups("deepsets", inputs, p["group"], p["groups"])
    seeds = _Seeds(seed)
    model_inputs: dict[str, Any] = {}
    pooled = []
    for group in groups:
        entries, count = _group_inputs(inputs, group, model_inputs)
        suffix = "" if len(groups) == 1 else f"_{group}"
        phi = _dense_stack(entries, list(p["phi"]), f"phi{suffix}", {**p, "dropout": 0.0}, seeds)
        pooled.append(MaskedPooling(p["pooling"], name=f"pool{suffix}")([phi, count]))
    x = _pooled(pooled)
    if p["use_features"]:
        features = _features_input("deepsets", inputs)
        model_inputs[FEATURES] = features
        x = keras.layers.Concatenate(name="with_features")([x, features])
    x = _dense_stack(x, list(p["rho"]), "rho", p, seeds)
    return finish_model(model_inputs, x, "deepsets", inputs.task, learning_rate, seeds)


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


INTERACTION_PARAMS = {
    "groups": GROUPS,
    "group": GROUP,
    "relation": Param([32, 32], _units, UNITS),
    "object": Param([32, 32], _units, UNITS),
    "classifier": Param([64], _units, UNITS),
    "pooling": Param("mean", lambda v: v in ("sum", "mean"), "sum or mean"),
    "use_features": Param(False, _flag, "true or false"),
    "activation": ACTIVATION,
    "dropout": DROPOUT,
}
CNN_PARAMS = {
    "image": Param(None, _optional_name, "the name of an image (dataset.images)"),
    "filters": Param([16, 32], _units, UNITS),
    "kernel_size": Param(3, _positive_int, "a positive integer, e.g. 3"),
    "dense": Param([64], _units, UNITS),
    "use_features": Param(False, _flag, "true or false"),
    "activation": ACTIVATION,
    "dropout": DROPOUT,
}


def build_interaction(
    inputs: InputSpec, params: Mapping[str, Any], *, learning_rate: float, seed: int | None
) -> keras.Model:
    """Interaction network (JEDI-net) over one or more jagged groups; see
    ``models.interaction``. Each group has its own relation and object networks and its own
    masks; the groups' vectors are concatenated before the classifier."""
    import keras

    from gridtrain.models.interaction import interaction_body

    p = resolve_params("interaction", params, INTERACTION_PARAMS)
    groups = choose_groups("interaction", inputs, p["group"], p["groups"])
    seeds = _Seeds(seed)
    model_inputs: dict[str, Any] = {}
    no_dropout = {**p, "dropout": 0.0}
    pooled = []
    for group in groups:
        entries, count = _group_inputs(inputs, group, model_inputs)
        suffix = "" if len(groups) == 1 else f"_{group}"
        pooled.append(
            interaction_body(
                entries,
                count,
                p,
                lambda t, u, n: _dense_stack(t, u, n, no_dropout, seeds),
                suffix,
            )
        )
    x = _pooled(pooled)
    if p["use_features"]:
        model_inputs[FEATURES] = _features_input("interaction", inputs)
        x = keras.layers.Concatenate(name="with_features")([x, model_inputs[FEATURES]])
    x = _dense_stack(x, list(p["classifier"]), "classifier", p, seeds)
    return finish_model(model_inputs, x, "interaction", inputs.task, learning_rate, seeds)


def build_cnn(
    inputs: InputSpec, params: Mapping[str, Any], *, learning_rate: float, seed: int | None
) -> keras.Model:
    """A small CNN on one image; see ``models.cnn``."""
    import keras

    from gridtrain.models.cnn import cnn_body
    from gridtrain.models.interaction import choose_input

    p = resolve_params("cnn", params, CNN_PARAMS)
    name = choose_input("cnn", "image", "image", list(inputs.images), p["image"])
    shape = inputs.images[name]
    seeds = _Seeds(seed)
    image = keras.Input(shape=shape, dtype="float32", name=name)
    model_inputs = {name: image}
    x = cnn_body("cnn", image, name, shape, p, seeds.kernel)
    if p["use_features"]:
        model_inputs[FEATURES] = _features_input("cnn", inputs)
        x = keras.layers.Concatenate(name="with_features")([x, model_inputs[FEATURES]])
    x = _dense_stack(x, list(p["dense"]), "dense", p, seeds)
    return finish_model(model_inputs, x, "cnn", inputs.task, learning_rate, seeds)


def _tagger_groups(
    inputs: InputSpec, groups: list[str], model_inputs: dict[str, Any]
) -> dict[str, Any]:
    """Each group's Keras inputs with its channels and standardisation (``sets.GroupInput``)."""
    from gridtrain.models.sets import GroupInput

    found = {}
    for group in groups:
        entries, count = _group_inputs(inputs, group, model_inputs)
        channels = inputs.groups[group][1]
        found[group] = GroupInput(entries, count, channels, inputs.statistics.get(group))
    return found


def _tagger_head(
    model_inputs: dict[str, Any],
    x: Any,
    name: str,
    p: Mapping[str, Any],
    inputs: InputSpec,
    activation: Any,
    learning_rate: float,
    seeds: _Seeds,
) -> keras.Model:
    """The flat features beside the jet vector (``use_features``), the ``fc`` layers and the
    task's head."""
    import keras

    if p["use_features"]:
        model_inputs[FEATURES] = _features_input(name, inputs)
        x = keras.layers.Concatenate(name="with_features")([x, model_inputs[FEATURES]])
    for i, n in enumerate(p["fc"]):
        x = keras.layers.Dense(
            n, activation=activation, kernel_initializer=seeds.kernel(), name=f"fc_{i}"
        )(x)
        if p["dropout"]:
            x = keras.layers.Dropout(p["dropout"], seed=seeds.next(), name=f"fc_{i}_drop")(x)
    return finish_model(model_inputs, x, name, inputs.task, learning_rate, seeds)


def build_particlenet(
    inputs: InputSpec, params: Mapping[str, Any], *, learning_rate: float, seed: int | None
) -> keras.Model:
    """ParticleNet over the jagged ``groups``; ``preset: lite`` or ``full`` sets the sizes; see
    ``models.particlenet``."""
    from gridtrain.models.particlenet import particlenet_body

    p = with_preset(resolve_params("particlenet", params, PARTICLENET_PARAMS), PARTICLENET_PRESETS)
    groups = choose_groups("particlenet", inputs, None, p["groups"])
    channels = {group: inputs.groups[group][1] for group in groups}
    points = resolve_points("particlenet", p["points"], groups, channels)
    check_neighbours(p["edge_convs"], {group: inputs.groups[group][0] for group in groups})
    seeds = _Seeds(seed)
    model_inputs: dict[str, Any] = {}
    found = _tagger_groups(inputs, groups, model_inputs)
    x = particlenet_body(found, points, p["edge_convs"], p["embed"], seeds.kernel)
    return _tagger_head(model_inputs, x, "particlenet", p, inputs, "relu", learning_rate, seeds)


def build_part(
    inputs: InputSpec, params: Mapping[str, Any], *, learning_rate: float, seed: int | None
) -> keras.Model:
    """The Particle Transformer over the jagged ``groups``; ``preset: small`` or ``paper``; see
    ``models.part``."""
    from gridtrain.models.part import activation, part_body

    p = with_preset(resolve_params("part", params, PART_PARAMS), PART_PRESETS)
    groups = choose_groups("part", inputs, None, p["groups"])
    channels = {group: inputs.groups[group][1] for group in groups}
    momenta = resolve_fourmomentum("part", p["fourmomentum"], groups, channels)
    seeds = _Seeds(seed)
    model_inputs: dict[str, Any] = {}
    found = _tagger_groups(inputs, groups, model_inputs)
    x = part_body(found, momenta, p, seeds.kernel, seeds.next)
    kind = activation(p["activation"])
    return _tagger_head(model_inputs, x, "part", p, inputs, kind, learning_rate, seeds)


@dataclass(frozen=True)
class Builder:
    """A built-in model: its builder and its parameters (checkable without building)."""

    build: Callable[..., keras.Model]
    params: Mapping[str, Param]
    summary: str


MODELS: dict[str, Builder] = {
    "mlp": Builder(
        build_mlp, MLP_PARAMS, "dense layers on the flat features and leading jagged entries"
    ),
    "deepsets": Builder(
        build_deepsets, DEEPSETS_PARAMS, "Deep Sets over the jagged groups, padding masked"
    ),
    "interaction": Builder(
        build_interaction, INTERACTION_PARAMS, "interaction network (JEDI-net), padding masked"
    ),
    "cnn": Builder(build_cnn, CNN_PARAMS, "a small CNN on one image (dataset.images)"),
    "particlenet": Builder(
        build_particlenet, PARTICLENET_PARAMS, "ParticleNet (EdgeConv; presets lite, full)"
    ),
    "part": Builder(
        build_part,
        PART_PARAMS,
        "Particle Transformer (pairwise attention bias; presets small, paper)",
    ),
}
