"""Fine-tuning: start from another run's weights, freeze layers, train the new head faster.

Layer: train, model preparation (Keras imported lazily; ``keras.optimizers`` and layer attributes
only, so any backend). A model trained on a big sample is adapted to an analysis's small one:

* ``train.init_from`` (a run directory or a ``.keras`` file) gives the initial weights: every
  layer of the new model is matched by name to the source's, and a layer the source lacks or
  holds with other shapes is an error naming it and both shapes, unless it is a head layer;
* ``train.head`` (layer name patterns, default the task's output layer) names the layers trained
  anew: they keep their fresh initialisation and train at ``train.head_learning_rate``
  (default: ``train.learning_rate``);
* ``train.freeze`` (layer name patterns) marks layers not trainable. Their weights never change on
  a worker, so every update a worker pushes holds zeros for them, and the parameter server's
  center (which only adds what workers push, or moves towards their weights) keeps them as
  ``init_from`` set them. Frozen BatchNormalization layers also stop updating their statistics.

Patterns are shell-style (``fnmatch``: ``edge_conv_0*``, ``block_*``); one that matches no layer
is an error listing the model's layers.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from gridtrain.errors import ConfigError

if TYPE_CHECKING:
    import keras

log = logging.getLogger(__name__)

DEFAULT_HEAD = ("probability", "prediction")  # the task's output layer (models.zoo.head)


def matching_layers(
    model: keras.Model, patterns: Sequence[str], key: str, *, required: bool = True
) -> list[str]:
    """The names of ``model``'s layers that hold weights and match any of ``patterns``; with
    ``required`` a pattern that matches none is a ``ConfigError``."""
    names = [layer.name for layer in model.layers if layer.weights]
    matched: list[str] = []
    for pattern in patterns:
        hits = fnmatch.filter(names, pattern)
        if not hits and required:
            raise ConfigError(
                f"{key}: {pattern!r} matches no layer with weights of model {model.name!r}; "
                f"its layers: {', '.join(names)}"
            )
        matched += [name for name in hits if name not in matched]
    return matched


def head_layers(model: keras.Model, patterns: Sequence[str]) -> list[str]:
    """The head's layers; the default patterns name the output layer, whichever the task has."""
    required = tuple(patterns) != DEFAULT_HEAD
    return matching_layers(model, patterns, "train.head", required=required)


def prepare_model(
    model: keras.Model,
    freeze: Sequence[str],
    head: Sequence[str],
    learning_rate: float,
    head_learning_rate: float | None,
) -> keras.Model:
    """``model`` with the ``freeze`` layers not trainable and, with a ``head_learning_rate``,
    an optimizer that trains the ``head`` layers at that rate; recompiled as it was compiled."""
    import keras

    if not freeze and head_learning_rate is None:
        return model
    frozen = matching_layers(model, freeze, "train.freeze")
    heads = head_layers(model, head)
    both = sorted(set(frozen) & set(heads))
    if both:
        raise ConfigError(
            f"train.freeze and train.head both name {', '.join(both)}: a head is trained anew, "
            "so it cannot be frozen; take it out of one of them"
        )
    for layer in model.layers:
        if layer.name in frozen:
            layer.trainable = False
    config = model.get_compile_config()
    if config is None:
        raise ConfigError(
            f"model {model.name!r} is not compiled; train.freeze and train.head_learning_rate "
            "recompile the model the builder compiled"
        )
    if head_learning_rate is not None:
        optimizer = model.optimizer
        if not isinstance(optimizer, keras.optimizers.Adam):
            raise ConfigError(
                f"train.head_learning_rate needs the model compiled with Adam (as the built-in "
                f"models are); model {model.name!r} has {type(optimizer).__name__}"
            )
        from gridtrain.models.optimizers import HeadAdam

        settings = optimizer.get_config()
        settings.pop("name", None)
        head_adam = HeadAdam(
            head_layers=heads, head_scale=head_learning_rate / learning_rate, **settings
        )
        config["optimizer"] = keras.saving.serialize_keras_object(head_adam)
    model.compile_from_config(config)
    log.info(
        "fine-tuning: frozen %s; head %s at learning rate %s",
        ", ".join(frozen) or "nothing",
        ", ".join(heads) or "none",
        head_learning_rate if head_learning_rate is not None else learning_rate,
    )
    return model


def source_weights(path: str | Path) -> tuple[Path, dict[str, list[np.ndarray]]]:
    """Layer name -> weights of the trained model at ``path``: a run directory (its final
    ``model.keras``) or a ``.keras`` file."""
    from gridtrain.models import load_model
    from gridtrain.rundir import RunDir

    given = Path(path)
    file = RunDir(given).model if given.is_dir() else given
    if not file.is_file():
        where = (
            f"run directory {given} has no {file.name} (it is written when a run finishes; "
            f"finish it with `gridtrain train --resume {given}`)"
            if given.is_dir()
            else f"{given} does not exist"
        )
        raise ConfigError(f"train.init_from: {where}; name a finished run or a .keras file")
    try:
        source = load_model(file, compile=False)
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"train.init_from: {file} is not a Keras model ({err})") from None
    return file, {layer.name: layer.get_weights() for layer in source.layers if layer.weights}


def initialise_from(model: keras.Model, path: str | Path, head: Sequence[str]) -> list[str]:
    """Set every layer of ``model`` but the head from the model at ``path``, matched by name;
    returns the names of the layers set. A layer missing there or of other shapes is a
    ``ConfigError`` naming it and the shapes."""
    file, source = source_weights(path)
    heads = set(head_layers(model, head))
    taken = []
    for layer in model.layers:
        if not layer.weights or layer.name in heads:
            continue
        if layer.name not in source:
            raise ConfigError(
                f"train.init_from: layer {layer.name!r} is not in {file} (its layers: "
                f"{', '.join(source)}); list it under train.head to train it from scratch"
            )
        mine = [tuple(w.shape) for w in layer.get_weights()]
        theirs = [tuple(w.shape) for w in source[layer.name]]
        if mine != theirs:
            raise ConfigError(
                f"train.init_from: layer {layer.name!r} has weights of shapes {mine} here and "
                f"{theirs} in {file}; build the same model (inputs and parameters) or list it "
                "under train.head to train it anew"
            )
        layer.set_weights(source[layer.name])
        taken.append(layer.name)
    unused = [name for name in source if name not in taken and name not in heads]
    log.info(
        "init_from %s: %d layers set%s",
        file,
        len(taken),
        f"; not used: {', '.join(unused)}" if unused else "",
    )
    return taken
