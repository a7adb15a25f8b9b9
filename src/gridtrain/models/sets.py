"""One set of particles from several jagged groups, with a mask: what the taggers run over.

Layer: models, Keras building blocks (``keras.ops`` only, any backend). ParticleNet and the
Particle Transformer see a jet as one set: its particles, and with a second group (secondary
vertices) those appended, each group embedded by its own layers first (as weaver's
``ParticleNetTagger`` and ``ParticleTransformerTagger`` do). Padding is then no longer a prefix
of each row, so these layers carry a mask (batch, L, 1) of 1.0 (real) and 0.0 (padded) rather
than a count.

Every value a padded slot holds is replaced by 0 (``MaskedEntries``: selected away, not
multiplied, so NaN and inf never pass) before anything reads it; whatever follows sees the same
numbers whatever padding held.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import keras
from keras import ops


class GroupInput(NamedTuple):
    """One jagged group as a tagger takes it: its Keras inputs ``entries`` (B, L, C) and
    ``count`` (B,), its channel names and its standardisation ((means, stds) or None)."""

    entries: Any
    count: Any
    channels: tuple[str, ...]
    stats: Any


@keras.saving.register_keras_serializable(package="gridtrain")
class EntryMask(keras.layers.Layer):  # type: ignore[misc]
    """``count`` (batch,) -> mask (batch, ``length``, 1): 1.0 for entries ``i < count``."""

    def __init__(self, length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.length = int(length)

    def call(self, count: Any) -> Any:
        entries = ops.arange(self.length, dtype="int32")[None, :]
        real = entries < ops.cast(count, "int32")[:, None]
        return ops.expand_dims(ops.cast(real, self.compute_dtype), -1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self.length, 1)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["length"] = self.length
        return config


@keras.saving.register_keras_serializable(package="gridtrain")
class MaskedEntries(keras.layers.Layer):  # type: ignore[misc]
    """``[values, mask]`` -> values with padded entries exactly 0, whatever they held."""

    def call(self, inputs: list[Any]) -> Any:
        values, mask = inputs
        return ops.where(mask > 0, values, ops.zeros_like(values))

    def compute_output_shape(self, input_shape: list[Any]) -> Any:
        return input_shape[0]


@keras.saving.register_keras_serializable(package="gridtrain")
class MaskedMean(keras.layers.Layer):  # type: ignore[misc]
    """``[values (batch, L, D), mask (batch, L, 1)]`` -> the mean over real entries (batch, D);
    an event with none gives 0."""

    def call(self, inputs: list[Any]) -> Any:
        values, mask = inputs
        total = ops.sum(ops.where(mask > 0, values, ops.zeros_like(values)), axis=1)
        entries = ops.maximum(ops.sum(mask, axis=1), 1.0)
        return total / entries

    def compute_output_shape(self, input_shape: list[Any]) -> tuple[Any, ...]:
        values = input_shape[0]
        return (values[0], values[2])


@keras.saving.register_keras_serializable(package="gridtrain")
class PhysicalChannels(keras.layers.Layer):  # type: ignore[misc]
    """Some channels of a group, standardisation undone: ``x * std + mean`` for the channels at
    ``index``, (batch, L, C) -> (batch, L, len(index)). The statistics are constants of the
    layer's config (not weights), so fine-tuning and the parameter server never move them."""

    def __init__(
        self, index: list[int], mean: list[float], std: list[float], **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.index = [int(i) for i in index]
        self.mean = [float(v) for v in mean]
        self.std = [float(v) for v in std]

    def call(self, values: Any) -> Any:
        picked = ops.take(values, ops.convert_to_tensor(self.index, dtype="int32"), axis=-1)
        std = ops.convert_to_tensor(self.std, dtype=picked.dtype)
        mean = ops.convert_to_tensor(self.mean, dtype=picked.dtype)
        return picked * std + mean

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        return (*input_shape[:-1], len(self.index))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(index=self.index, mean=self.mean, std=self.std)
        return config


@keras.saving.register_keras_serializable(package="gridtrain")
class JoinSets(keras.layers.Layer):  # type: ignore[misc]
    """Several groups' (batch, L_g, D) tensors as one set (batch, sum L_g, D)."""

    def call(self, inputs: list[Any]) -> Any:
        return ops.concatenate(list(inputs), axis=1)

    def compute_output_shape(self, input_shape: list[Any]) -> tuple[Any, ...]:
        lengths = [shape[1] for shape in input_shape]
        total = None if None in lengths else sum(lengths)
        return (input_shape[0][0], total, input_shape[0][2])


def physical(
    values: Any, channels: tuple[str, ...], names: list[str], stats: Any, name: str
) -> Any:
    """The channels ``names`` of a group as measured: its standardisation (``stats``: (means,
    standard deviations) of every channel, or None when the group is fed unstandardised) undone.
    A standard deviation of 0 stands for 1, as the worker's standardisation has it."""
    index = [channels.index(n) for n in names]
    if stats is None:
        mean, std = [0.0] * len(index), [1.0] * len(index)
    else:
        mean = [float(stats[0][i]) for i in index]
        std = [float(stats[1][i]) if stats[1][i] > 0 else 1.0 for i in index]
    return PhysicalChannels(index, mean, std, name=name)(values)
