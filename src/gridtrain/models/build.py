"""Build the configured model and check it against what the dataset offers.

Layer: models, entry point. ``build_model`` turns a name (built-in or user function) and its
hyper-parameters into a compiled Keras model whose inputs the worker can feed and whose output
fits the task; everything that can be wrong with that (name, parameters, return value, input
names and shapes, output units and activation) is a ``ConfigError`` here, before any training
process starts.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gridtrain.errors import ConfigError
from gridtrain.models.spec import InputSpec
from gridtrain.models.user import SYNTAX, check_signature, is_user_model, load_function
from gridtrain.models.zoo import MODELS, resolve_params
from gridtrain.task import Task

if TYPE_CHECKING:
    import keras

T = TypeVar("T")


def build_model(
    name: str,
    params: Mapping[str, Any],
    inputs: InputSpec,
    *,
    learning_rate: float,
    seed: int | None = None,
) -> keras.Model:
    """A compiled model for ``inputs.task``: its output is checked against the task's head.

    ``name`` is a built-in (``MODELS``) or a user function ``package.module:function`` /
    ``path/to/file.py:function``, called as ``function(inputs, **params)``; the user function
    reads ``inputs.task`` for its head and compiles the model itself, so ``learning_rate`` and
    ``seed`` apply to built-ins only.
    """
    if is_user_model(name):
        function = load_function(name)
        check_signature(name, function, params)
        model = function(inputs, **params)
        check_compiled(name, model)
    else:
        check_model_params(name, params)
        model = MODELS[name].build(inputs, params, learning_rate=learning_rate, seed=seed)
    check_inputs(name, model, inputs)
    return model


def check_model_params(name: str, params: Mapping[str, Any]) -> None:
    """A built-in's name and parameters checked without Keras (a ``ConfigError`` naming the
    unknown model or parameter); a user function is checked when it is built."""
    if is_user_model(name):
        return
    if name not in MODELS:
        close = difflib.get_close_matches(name, MODELS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(
            f"unknown model {name!r}{hint}; built-in models: {', '.join(sorted(MODELS))}, or "
            f"name your own function as {SYNTAX}"
        )
    resolve_params(name, params, MODELS[name].params)


def check_compiled(name: str, model: Any) -> None:
    """A user function must return a compiled ``keras.Model``."""
    import keras

    if not isinstance(model, keras.Model):
        raise ConfigError(
            f"model {name!r} returned {type(model).__name__}, expected a compiled keras.Model; "
            "return the model, after calling model.compile(...)"
        )
    if not getattr(model, "compiled", False) or getattr(model, "optimizer", None) is None:
        raise ConfigError(
            f"model {name!r} returned an uncompiled keras.Model, expected a compiled "
            "keras.Model; call model.compile(...) before returning it"
        )


def model_input_names(model: keras.Model) -> list[str]:
    """The names of a model's inputs, in ``model.inputs`` order.

    Keras 3 has no ``model.input_names``; a functional or Sequential model's ``model.inputs``
    are ``keras.Input`` tensors whose ``.name`` is the name given to ``keras.Input(name=...)``.
    A subclassed model declares no inputs and cannot be fed by name: a ``ConfigError``.
    """
    return _input_names(model.name, model)


def _input_names(name: str, model: keras.Model) -> list[str]:
    try:
        tensors = model.inputs
    except (AttributeError, ValueError):
        tensors = None
    if not tensors:
        raise ConfigError(
            f"model {name!r} declares no inputs; build it with the functional API from "
            "keras.Input(shape=..., name=...) tensors named after the dataset's inputs"
        )
    return [t.name for t in tensors]


def arrange_inputs(model: keras.Model, batch: Mapping[str, T]) -> T | list[T] | dict[str, T]:
    """Pick from ``batch`` (all offered inputs, by name) what the model takes, as it takes it.

    Keras warns when a functional model gets another structure than it was built with: a model
    built on one tensor wants that tensor, on a list wants a list, on a dict wants exactly its
    keys. This helper gives each what it wants; extra entries of ``batch`` are left out.
    """
    structure = model.input
    if isinstance(structure, dict):
        return {key: batch[key] for key in structure}
    if isinstance(structure, list | tuple):
        return [batch[t.name] for t in structure]
    return batch[structure.name]


def check_inputs(name: str, model: keras.Model, inputs: InputSpec) -> None:
    """Every model input must be one the dataset offers, with a compatible shape."""
    offered = inputs.tensors()
    _input_names(name, model)  # a model without declared inputs cannot be checked or fed
    for tensor in model.inputs:
        want = offered.get(tensor.name)
        if want is None:
            raise ConfigError(
                f"model {name!r} takes an input {tensor.name!r} that the dataset does not "
                f"offer; it offers: {inputs.describe()}"
            )
        shape = tuple(tensor.shape[1:])
        if len(shape) != len(want.shape) or any(
            got is not None and got != need for got, need in zip(shape, want.shape, strict=True)
        ):
            raise ConfigError(
                f"model {name!r}: input {tensor.name!r} has shape {shape}, the dataset feeds "
                f"{want.shape}; size the keras.Input from the InputSpec"
            )
    check_output(name, model, inputs.task)


def output_activation(model: keras.Model) -> str | None:
    """The activation of the layer that produces the model's output, when it can be told.

    A ``Dense``/``Activation`` layer names its activation (``None`` or ``linear`` is linear), a
    ``Softmax`` layer is softmax; any other last layer (a user's own) is not guessed: ``None``.
    """
    import keras

    history = getattr(model.outputs[0], "_keras_history", None)
    layer = getattr(history, "operation", None) if history is not None else None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    if activation is None:
        return "linear" if isinstance(layer, keras.layers.Dense) else None
    name = getattr(activation, "__name__", None) or keras.activations.serialize(activation)
    return str(name)


def check_output(name: str, model: keras.Model, task: Task) -> None:
    """One output of ``task.output_units`` units with ``task.output_activation``.

    A binary output may be (None,) as well as (None, 1). The activation is checked where the last
    layer names one (``output_activation``).
    """
    units, activation = task.output_units, task.output_activation
    outputs = model.outputs
    shapes = [tuple(o.shape[1:]) for o in outputs]
    allowed = [(units,), ()] if units == 1 else [(units,)]
    found = output_activation(model) if len(outputs) == 1 else None
    if len(outputs) != 1 or shapes[0] not in allowed:
        found_units = ", ".join(str(s[0] if len(s) == 1 else s) for s in shapes) or "none"
    elif found is not None and found != activation:
        found_units = str(units)
    else:
        return
    raise ConfigError(
        f"model {name!r} outputs {found_units} unit(s)"
        + (f" with {found}" if found else "")
        + f"; the task, {task.describe()}, expects {units} unit(s) with {activation}: build the "
        "head from inputs.task.output_units and inputs.task.output_activation"
    )


def save_model(model: keras.Model, path: str | Path) -> None:
    """``model.save(path)``, without importing TensorFlow where it is not imported yet.

    Keras's serialisation asks whether TensorFlow can be imported (to recognise a
    ``tf.TensorShape``) and so imports it, seconds of CPU and hundreds of MB, in a JAX or
    PyTorch process that never uses it. Where TensorFlow is not imported no object can be a
    ``tf.TensorShape``: for the save, Keras is told it is unavailable (its lazy module's cached
    answer, put back afterwards so a later ``import tensorflow`` in the process still counts).
    """
    import sys

    try:
        from keras.src.utils.module_utils import tensorflow as lazy
    except ImportError:  # another Keras layout: save as Keras does
        lazy = None
    if lazy is None or "tensorflow" in sys.modules or not hasattr(lazy, "_available"):
        model.save(path)
        return
    previous = lazy._available
    lazy._available = False
    try:
        model.save(path)
    finally:
        lazy._available = previous


def load_model(path: str | Path, *, compile: bool = True) -> keras.Model:
    """Load a saved ``.keras`` model with the built-in layers registered.

    A user model's custom layers must be registered too: import their module first. A model saved
    before its optimizer took a step loads with a Keras warning about the optimizer's variables;
    ``compile=False`` skips the optimizer (enough to predict).
    """
    import keras

    # registers the built-in layers (MaskedPooling, the taggers') and optimizers for loading
    import gridtrain.models.layers
    import gridtrain.models.optimizers
    import gridtrain.models.part
    import gridtrain.models.particlenet  # noqa: F401

    return keras.saving.load_model(path, compile=compile)
