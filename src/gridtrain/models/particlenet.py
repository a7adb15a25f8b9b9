"""ParticleNet: dynamic graph convolutions (EdgeConv) over a jet's particles.

Layer: models, Keras graph pieces (``keras.ops`` only, any backend); ``models.zoo`` builds
the ``particlenet`` model from them. The network is Qu and
Gouskos's (arXiv:1902.08570), as weaver-core's ``ParticleNet`` writes it:

1. each particle's features are batch-normalised (with several groups, each group is first
   embedded to ``embed`` channels by its own BN - Dense - BN - ReLU and the groups are joined into
   one set, as weaver's ``ParticleNetTagger`` joins particles and secondary vertices);
2. an EdgeConv block finds every particle's k nearest neighbours - in the (delta eta, delta phi)
   ``points`` for the first block, in the previous block's features after - builds the edge
   features ``[x_i, x_j - x_i]``, runs them through a shared MLP (Dense - BN - ReLU per layer),
   averages over the k edges and adds a shortcut (Dense - BN of ``x_i``) before a ReLU;
3. the last block's features are averaged over the real particles, then dense layers with dropout
   and the task's head.

Padding: padded slots are set to 0 before anything reads them and again after every block, and
for the neighbour search they sit 1e9 away from every real particle, so a real particle only takes
a padded one as neighbour when the jet has fewer than k + 1 particles, and then always the same
zeros: the output does not depend on what padded slots held.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import ops

from gridtrain.models.sets import (
    EntryMask,
    GroupInput,
    JoinSets,
    MaskedEntries,
    MaskedMean,
    physical,
)

Kernel = Callable[[], Any]
"""``kernel()``: the next seeded kernel initializer (the zoo's ``_Seeds.kernel``)."""

FAR = 1e9  # where padded particles sit for the neighbour search


@keras.saving.register_keras_serializable(package="gridtrain")
class NeighbourEdges(keras.layers.Layer):  # type: ignore[misc]
    """``[points (B, L, P), features (B, L, C), mask (B, L, 1)]`` -> edge features
    (B, L, k, 2C): for each particle i and each of its ``k`` nearest neighbours j in ``points``
    (itself excluded), ``[x_i, x_j - x_i]``. Padded particles sit ``FAR`` away."""

    def __init__(self, k: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.k = int(k)

    def call(self, inputs: list[Any]) -> Any:
        points, features, mask = inputs
        real = mask > 0
        points = ops.where(real, points, ops.zeros_like(points))
        points = points + ops.where(real, 0.0, FAR)
        squared = ops.sum(points * points, axis=-1, keepdims=True)
        inner = ops.matmul(points, ops.transpose(points, (0, 2, 1)))
        distance = squared - 2.0 * inner + ops.transpose(squared, (0, 2, 1))
        _, nearest = ops.top_k(-distance, self.k + 1)
        nearest = nearest[:, :, 1:]  # the nearest is the particle itself
        length, channels = features.shape[1], features.shape[2]
        batch = ops.shape(features)[0]
        offsets = ops.reshape(ops.arange(batch, dtype="int32") * length, (-1, 1, 1))
        flat = ops.reshape(features, (-1, channels))
        index = ops.reshape(ops.cast(nearest, "int32") + offsets, (-1,))
        neighbours = ops.reshape(ops.take(flat, index, axis=0), (-1, length, self.k, channels))
        centres = ops.repeat(ops.expand_dims(features, 2), self.k, axis=2)
        return ops.concatenate([centres, neighbours - centres], axis=-1)

    def compute_output_shape(self, input_shape: list[Any]) -> tuple[Any, ...]:
        batch, length, channels = input_shape[1]
        return (batch, length, self.k, None if channels is None else 2 * channels)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["k"] = self.k
        return config


@keras.saving.register_keras_serializable(package="gridtrain")
class NeighbourMean(keras.layers.Layer):  # type: ignore[misc]
    """(B, L, k, D) -> (B, L, D): the mean over each particle's k edges."""

    def call(self, edges: Any) -> Any:
        return ops.mean(edges, axis=2)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], input_shape[1], input_shape[3])


def _dense_norm(x: Any, units: int, name: str, kernel: Kernel, relu: bool = True) -> Any:
    """Dense (no bias: the BN's beta is the bias) - BN - ReLU, as weaver's Conv - BN - ReLU."""
    x = keras.layers.Dense(units, use_bias=False, kernel_initializer=kernel(), name=name)(x)
    x = keras.layers.BatchNormalization(name=f"{name}_norm")(x)
    return keras.layers.Activation("relu", name=f"{name}_act")(x) if relu else x


def edge_conv(
    points: Any, x: Any, mask: Any, k: int, units: list[int], name: str, kernel: Kernel
) -> Any:
    """One EdgeConv block over the real particles of ``x`` (B, L, C); padding 0 after it."""
    edges = NeighbourEdges(k, name=f"{name}_edges")([points, x, mask])
    for j, n in enumerate(units):
        edges = _dense_norm(edges, n, f"{name}_{j}", kernel)
    pooled = NeighbourMean(name=f"{name}_mean")(edges)
    if x.shape[-1] == units[-1]:
        shortcut = x
    else:
        shortcut = _dense_norm(x, units[-1], f"{name}_shortcut", kernel, relu=False)
    out = keras.layers.Add(name=f"{name}_add")([pooled, shortcut])
    out = keras.layers.Activation("relu", name=f"{name}_act")(out)
    return MaskedEntries(name=f"{name}_masked")([out, mask])


def particle_sets(
    groups: Mapping[str, GroupInput],
    embed: int,
    kernel: Kernel,
    physics: Mapping[str, list[str]],
    convert: Callable[[str, Any], Any] | None = None,
) -> tuple[Any, Any, Any]:
    """The particles of ``groups`` as one set: ``(features, physics, mask)``.

    ``features`` (B, L, C): one group's channels batch-normalised (``input_norm``), or with
    several groups each embedded to ``embed`` channels and joined; ``physics`` (B, L, P): the
    channels ``physics`` names per group, standardisation undone, turned by ``convert(group,
    values)`` when given, joined; ``mask`` (B, L, 1).
    """
    features, measured, masks = [], [], []
    for group, (entries, count, channels, stats) in groups.items():
        suffix = "" if len(groups) == 1 else f"_{group}"
        mask = EntryMask(entries.shape[1], name=f"mask{suffix}")(count)
        clean = MaskedEntries(name=f"clean{suffix}")([entries, mask])
        values = physical(clean, channels, physics[group], stats, name=f"physical{suffix}")
        measured.append(values if convert is None else convert(group, values))
        normed = keras.layers.BatchNormalization(name=f"input_norm{suffix}")(clean)
        if len(groups) > 1:
            normed = _dense_norm(normed, embed, f"embed{suffix}", kernel)
        features.append(MaskedEntries(name=f"features{suffix}")([normed, mask]))
        masks.append(mask)
    if len(groups) == 1:
        return features[0], measured[0], masks[0]
    return (
        JoinSets(name="joined_features")(features),
        JoinSets(name="joined_physical")(measured),
        JoinSets(name="joined_mask")(masks),
    )


def particlenet_body(
    groups: Mapping[str, GroupInput],
    points: Mapping[str, list[str]],
    edge_convs: list[Any],
    embed: int,
    kernel: Kernel,
) -> Any:
    """The jet vector (B, channels of the last block): EdgeConv blocks ``[[k, [units]], ...]``
    over the joined set of ``groups``, averaged over the real particles."""
    x, coordinates, mask = particle_sets(groups, embed, kernel, points)
    for i, (k, units) in enumerate(edge_convs):
        x = edge_conv(
            coordinates if i == 0 else x, x, mask, k, list(units), f"edge_conv_{i}", kernel
        )
    return MaskedMean(name="pool")([x, mask])
