"""Keras layers the built-in models need, written with ``keras.ops`` only (any backend).

Layer: models, Keras building blocks. Importing this module registers the layers with Keras's
serialisation, which is what lets ``keras.saving.load_model`` read a saved ``.keras`` file back;
``gridtrain.models.load_model`` does that import for you.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

POOLINGS = ("sum", "mean")


class _Pooling(keras.layers.Layer):  # type: ignore[misc]
    """A masked pooling's ``mode`` (one of POOLINGS), checked and serialised."""

    def __init__(self, mode: str = "sum", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in POOLINGS:
            raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}; got {mode!r}")
        self.mode = mode

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["mode"] = self.mode
        return config


@keras.saving.register_keras_serializable(package="gridtrain")
class MaskedPooling(_Pooling):
    """Pool per-entry values (batch, L, D) over the real entries of each event only.

    Called on ``[values, count]``: entry ``i`` of an event is real when ``i < count``. Padded slots
    are selected away (not multiplied by zero), so whatever they hold, even inf or NaN, never
    reaches the output, and a sum or mean is invariant under permutations of the real entries.
    """

    def call(self, inputs: list[Any]) -> Any:
        values, count = inputs
        length = values.shape[1]
        count = ops.cast(count, "int32")
        real = ops.expand_dims(ops.arange(length, dtype="int32")[None, :] < count[:, None], -1)
        pooled = ops.sum(ops.where(real, values, ops.zeros_like(values)), axis=1)
        if self.mode == "mean":
            entries = ops.clip(ops.cast(count, pooled.dtype), 1.0, float(length))
            pooled = pooled / entries[:, None]
        return pooled

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[Any, ...]:
        values_shape = input_shape[0]
        return (values_shape[0], values_shape[2])


@keras.saving.register_keras_serializable(package="gridtrain")
class Standardise(keras.layers.Layer):  # type: ignore[misc]
    """``(x - mean) * inverse`` per channel (the last axis), as training standardises inputs.

    Called on ``values`` alone, or on ``[values, count]`` for a jagged group (batch, L, C): entries
    at ``i >= count`` become exactly 0, whatever they held. ``mean`` and ``inverse`` are constant
    weights of the layer, so an exported graph carries them as initialisers.
    """

    def __init__(self, mean: Any, inverse: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.mean_values = [float(v) for v in mean]
        self.inverse_values = [float(v) for v in inverse]
        self.mean = self.add_weight(
            shape=(len(self.mean_values),),
            initializer=keras.initializers.Constant(self.mean_values),
            trainable=False,
            name="mean",
        )
        self.inverse = self.add_weight(
            shape=(len(self.inverse_values),),
            initializer=keras.initializers.Constant(self.inverse_values),
            trainable=False,
            name="inverse",
        )

    def call(self, inputs: Any) -> Any:
        if not isinstance(inputs, list | tuple):
            return (inputs - self.mean) * self.inverse
        values, count = inputs
        scaled = (values - self.mean) * self.inverse
        entries = ops.arange(values.shape[1], dtype="int32")[None, :]
        real = ops.expand_dims(entries < ops.cast(count, "int32")[:, None], -1)
        return ops.where(real, scaled, ops.zeros_like(scaled))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape[0] if isinstance(input_shape, list) else input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(mean=self.mean_values, inverse=self.inverse_values)
        return config


@keras.saving.register_keras_serializable(package="gridtrain")
class RelationPairs(keras.layers.Layer):  # type: ignore[misc]
    """Every ordered pair of entries of a group: (batch, L, C) -> (batch, L, L, 2C).

    Pair (r, s) is the receiver's channels then the sender's, ``[x_r, x_s]``: the input of the
    interaction network's relation function (JEDI-net's B = [R_r O, R_s O], arXiv:1908.05318).
    Padded entries are paired too; ``MaskedRelationPooling`` drops those pairs.
    """

    def call(self, inputs: Any) -> Any:
        length = inputs.shape[1]
        receivers = ops.repeat(ops.expand_dims(inputs, 2), length, axis=2)
        senders = ops.repeat(ops.expand_dims(inputs, 1), length, axis=1)
        return ops.concatenate([receivers, senders], axis=-1)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[Any, ...]:
        batch, length, channels = input_shape
        return (batch, length, length, None if channels is None else 2 * channels)


@keras.saving.register_keras_serializable(package="gridtrain")
class MaskedRelationPooling(_Pooling):
    """What each receiver gets from the real senders: (batch, L, L, D) -> (batch, L, D).

    Called on ``[effects, count]``: the effect of pair (r, s) counts when sender ``s < count``
    and ``s != r``; ``sum`` adds them (JEDI-net), ``mean`` divides by the count - 1 other real
    entries. Other pairs are selected away (not multiplied by zero), so padded senders never
    reach a receiver; padded receivers' values are left for the pooling's own mask.
    """

    def call(self, inputs: list[Any]) -> Any:
        effects, count = inputs
        length = effects.shape[1]
        count = ops.cast(count, "int32")
        entries = ops.arange(length, dtype="int32")
        real = entries[None, None, :] < count[:, None, None]
        other = (entries[:, None] != entries[None, :])[None, :, :]
        keep = ops.expand_dims(ops.logical_and(real, other), -1)
        pooled = ops.sum(ops.where(keep, effects, ops.zeros_like(effects)), axis=2)
        if self.mode == "mean":
            senders = ops.clip(ops.cast(count - 1, pooled.dtype), 1.0, float(length))
            pooled = pooled / senders[:, None, None]
        return pooled

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[Any, ...]:
        batch, length, _, depth = input_shape[0]
        return (batch, length, depth)


@keras.saving.register_keras_serializable(package="gridtrain")
class LeadingEntries(keras.layers.Layer):  # type: ignore[misc]
    """The first ``entries`` slots of a group, flat, each with a flag saying it is real.

    Called on ``[values, count]`` (batch, L, C): (batch, entries * (C + 1)), slot by slot its C
    channels then 1.0 where ``i < count`` and 0.0 otherwise. Padded slots' channels are selected
    away (exactly 0, whatever they held), so an MLP can take a group's leading entries and never
    see what padding holds; the flag tells a real entry at the mean (0) from an absent one.
    """

    def __init__(self, entries: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if entries < 1:
            raise ValueError(f"entries must be at least 1; got {entries}")
        self.entries = entries

    def call(self, inputs: list[Any]) -> Any:
        values, count = inputs
        leading = values[:, : self.entries, :]
        slots = ops.arange(self.entries, dtype="int32")[None, :]
        real = ops.expand_dims(slots < ops.cast(count, "int32")[:, None], -1)
        kept = ops.where(real, leading, ops.zeros_like(leading))
        flagged = ops.concatenate([kept, ops.cast(real, kept.dtype)], axis=-1)
        return ops.reshape(flagged, (-1, self.entries * (values.shape[2] + 1)))

    def compute_output_shape(self, input_shape: list[tuple[int | None, ...]]) -> tuple[Any, ...]:
        batch, _, channels = input_shape[0]
        return (batch, None if channels is None else self.entries * (channels + 1))

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["entries"] = self.entries
        return config
