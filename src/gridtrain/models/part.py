"""The Particle Transformer (ParT): particle self-attention biased by pairwise features.

Layer: models, Keras graph pieces (``keras.ops`` only, any backend); ``models.zoo`` builds
the ``part`` model from them. The network is Qu, Li and
Qian's (arXiv:2202.03772), as jet-universe/particle_transformer and weaver-core write it (version
1, no sequence trimming):

1. particle embedding: the group's channels batch-normalised, then per width of ``embed_dims``
   LayerNorm - Dense - GELU (with several groups each has its own, and the groups are joined);
2. pairwise features of every pair (i, j) from the four-momenta, as the paper's eq. (2)-(3):
   ln delta (delta^2 = (y_i - y_j)^2 + (phi_i - phi_j)^2), ln kT (min(pt_i, pt_j) delta),
   ln z (min(pt_i, pt_j) / (pt_i + pt_j)) and ln m^2 (the pair's invariant mass), each clamped
   at 1e-8 before the log; embedded per pair by BN, then Dense - BN - GELU per width of
   ``pair_embed_dims`` and one more to ``num_heads`` channels: one attention bias per head;
3. ``num_layers`` particle attention blocks (pre-norm multi-head self-attention with the bias
   added to the logits, LayerNorm after the attention and after the first FFN layer, learned
   per-head and residual scales; NormFormer as in the paper);
4. ``num_cls_layers`` class attention blocks: a learned class token attends to itself and the
   particles (CaiT), then LayerNorm, the ``fc`` layers and the task's head.

Padding: padded slots are set to 0 first; padded particles are never attended to (their logits
are replaced by -1e9 before the softmax, so their weight is exactly 0) and their pairs' biases
reach only padded rows; the class token reads real particles only. The output does not depend on
what padded slots held. Cost grows as L^2 (pairs): keep ``dataset.jagged`` lengths of 64-128.

The pair invariant mass uses pt, rapidity, phi and mass: m_ij^2 = m_i^2 + m_j^2 +
2 (mT_i mT_j cosh(y_i - y_j) - pt_i pt_j cos(phi_i - phi_j)), so it is the same with eta and phi
relative to the jet axis, and needs no px, py, pz.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import keras
from keras import ops

from gridtrain.models.particlenet import Kernel, particle_sets
from gridtrain.models.sets import GroupInput, MaskedEntries

EPS = 1e-8
MASKED = -1e9  # the logit of a padded key: exp(MASKED - max) is exactly 0 in float32
KINEMATIC_ORDER = ("pt", "eta", "phi", "energy", "mass")


@keras.saving.register_keras_serializable(package="gridtrain")  # type: ignore[untyped-decorator]
def gelu_erf(x: Any) -> Any:
    """The exact GELU, x Phi(x), written with erf: TensorFlow's own gelu uses erfc, which ONNX
    (tf2onnx) has no operator for."""
    return 0.5 * x * (1.0 + ops.erf(x / math.sqrt(2.0)))


def activation(name: str) -> Any:
    """The activation ``name``, GELU as ``gelu_erf`` (exportable)."""
    return gelu_erf if name == "gelu" else keras.activations.get(name)


@keras.saving.register_keras_serializable(package="gridtrain")
class PairFeatures(keras.layers.Layer):  # type: ignore[misc]
    """(B, L, 4) particles as (pt, eta, phi, m) -> (B, L, L, 4) pairs: ln delta, ln kT, ln z,
    ln m^2 (ParT's interaction features)."""

    def call(self, particles: Any) -> Any:
        pt = ops.maximum(particles[..., 0], 0.0)
        eta, phi = particles[..., 1], particles[..., 2]
        mass = ops.maximum(particles[..., 3], 0.0)
        transverse = ops.sqrt(pt * pt + mass * mass)
        rapidity = ops.arcsinh(pt * ops.sinh(eta) / ops.maximum(transverse, EPS))

        def pair(values: Any) -> tuple[Any, Any]:
            return ops.expand_dims(values, 2), ops.expand_dims(values, 1)

        pt_i, pt_j = pair(pt)
        mt_i, mt_j = pair(transverse)
        y_i, y_j = pair(rapidity)
        phi_i, phi_j = pair(phi)
        m_i, m_j = pair(mass)
        dy = y_i - y_j
        dphi = ops.mod(phi_i - phi_j + math.pi, 2.0 * math.pi) - math.pi
        delta = ops.sqrt(dy * dy + dphi * dphi)
        ptmin = ops.minimum(pt_i, pt_j)
        ln_delta = ops.log(ops.maximum(delta, EPS))
        ln_kt = ops.log(ops.maximum(ptmin * delta, EPS))
        ln_z = ops.log(ops.maximum(ptmin / ops.maximum(pt_i + pt_j, EPS), EPS))
        m2 = m_i * m_i + m_j * m_j
        m2 = m2 + 2.0 * (mt_i * mt_j * ops.cosh(dy) - pt_i * pt_j * ops.cos(dphi))
        ln_m2 = ops.log(ops.maximum(m2, EPS))
        return ops.stack([ln_delta, ln_kt, ln_z, ln_m2], axis=-1)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        batch, length, _ = input_shape
        return (batch, length, length, 4)


@keras.saving.register_keras_serializable(package="gridtrain")
class FourMomenta(keras.layers.Layer):  # type: ignore[misc]
    """Measured channels (B, L, n) -> (pt, eta, phi, m) (B, L, 4): ``kinds`` names each input
    channel (pt, eta, phi, then energy, mass or nothing); the mass from the energy is
    sqrt(max(E^2 - (pt cosh eta)^2, 0)), none is massless."""

    def __init__(self, kinds: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.kinds = list(kinds)

    def call(self, values: Any) -> Any:
        pt, eta, phi = values[..., 0], values[..., 1], values[..., 2]
        if "mass" in self.kinds:
            mass = values[..., 3]
        elif "energy" in self.kinds:
            momentum = pt * ops.cosh(eta)
            energy = values[..., 3]
            mass = ops.sqrt(ops.maximum(energy * energy - momentum * momentum, 0.0))
        else:
            mass = ops.zeros_like(pt)
        return ops.stack([pt, eta, phi, mass], axis=-1)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (*input_shape[:-1], 4)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config["kinds"] = self.kinds
        return config


@keras.saving.register_keras_serializable(package="gridtrain")
class ClassToken(keras.layers.Layer):  # type: ignore[misc]
    """A learned (1, 1, D) token, one per event: (B, L, D) -> (B, 1, D)."""

    def __init__(self, dim: int, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim = int(dim)
        self.seed = seed

    def build(self, input_shape: Any) -> None:
        self.token = self.add_weight(
            shape=(1, 1, self.dim),
            initializer=keras.initializers.TruncatedNormal(stddev=0.02, seed=self.seed),
            name="token",
        )

    def call(self, particles: Any) -> Any:
        return ops.zeros_like(particles[:, :1, : self.dim]) + self.token

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], 1, self.dim)

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(dim=self.dim, seed=self.seed)
        return config


@keras.saving.register_keras_serializable(package="gridtrain")
class AttentionBlock(keras.layers.Layer):  # type: ignore[misc]
    """One ParT block (NormFormer): a particle attention block, called on
    ``[x (B, L, D), mask (B, L, 1), bias (B, L, L, H)]``, or with ``class_attention`` a class
    attention block, called on ``[token (B, 1, D), x, mask]``. Returns the updated x or token."""

    def __init__(
        self,
        dim: int,
        heads: int,
        ffn_ratio: int = 4,
        dropout: float = 0.0,
        activation: str = "gelu",
        class_attention: bool = False,
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if dim % heads:
            raise ValueError(f"embedding width {dim} is not a multiple of {heads} heads")
        self.dim, self.heads, self.ffn_ratio = int(dim), int(heads), int(ffn_ratio)
        self.dropout, self.activation = float(dropout), activation
        self.class_attention, self.seed = bool(class_attention), seed

        def dense(units: int, name: str, offset: int) -> keras.layers.Dense:
            init = keras.initializers.GlorotUniform(seed=None if seed is None else seed + offset)
            return keras.layers.Dense(units, kernel_initializer=init, name=name)

        ffn = self.dim * self.ffn_ratio
        self.pre_attn_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="pre_attn_norm")
        self.in_proj = dense(3 * self.dim, "in_proj", 0)
        self.out_proj = dense(self.dim, "out_proj", 1)
        self.post_attn_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="post_attn_norm")
        self.pre_fc_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="pre_fc_norm")
        self.fc1 = dense(ffn, "fc1", 2)
        self.post_fc_norm = keras.layers.LayerNormalization(epsilon=1e-5, name="post_fc_norm")
        self.fc2 = dense(self.dim, "fc2", 3)
        self.drop = keras.layers.Dropout(self.dropout, seed=seed)

    def build(self, input_shape: Any) -> None:
        d, ffn = self.dim, self.dim * self.ffn_ratio
        self.c_attn = self.add_weight(shape=(self.heads,), initializer="ones", name="c_attn")
        self.w_resid = self.add_weight(shape=(d,), initializer="ones", name="w_resid")
        for layer, shape in (
            (self.pre_attn_norm, (None, None, d)),
            (self.in_proj, (None, None, d)),
            (self.out_proj, (None, None, d)),
            (self.post_attn_norm, (None, None, d)),
            (self.pre_fc_norm, (None, None, d)),
            (self.fc1, (None, None, d)),
            (self.post_fc_norm, (None, None, ffn)),
            (self.fc2, (None, None, ffn)),
        ):
            layer.build(shape)

    def _heads(self, x: Any) -> Any:
        """(B, S, D) -> (B, H, S, D / H)."""
        length = x.shape[1]
        split = ops.reshape(x, (-1, length, self.heads, self.dim // self.heads))
        return ops.transpose(split, (0, 2, 1, 3))

    def call(self, inputs: list[Any], training: bool | None = None) -> Any:
        if self.class_attention:
            token, x, mask = inputs
            residual = token
            keys = self.pre_attn_norm(ops.concatenate([token, x], axis=1))
            real = ops.concatenate([ops.ones_like(mask[:, :1]), mask], axis=1)
            q, k, v = ops.split(self.in_proj(keys), 3, axis=-1)
            q = q[:, :1]
            bias = None
        else:
            x, mask, bias = inputs
            residual = x
            normed = self.pre_attn_norm(x)
            q, k, v = ops.split(self.in_proj(normed), 3, axis=-1)
            real = mask
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        logits = ops.matmul(q, ops.transpose(k, (0, 1, 3, 2))) / math.sqrt(self.dim / self.heads)
        if bias is not None:
            logits = logits + ops.transpose(bias, (0, 3, 1, 2))
        keep = ops.expand_dims(ops.transpose(real, (0, 2, 1)), 1) > 0  # (B, 1, 1, S)
        logits = ops.where(keep, logits, ops.full_like(logits, MASKED))
        weights = self.drop(ops.softmax(logits, axis=-1), training=training)
        attended = ops.matmul(weights, v) * ops.reshape(self.c_attn, (1, self.heads, 1, 1))
        length = attended.shape[2]
        attended = ops.reshape(ops.transpose(attended, (0, 2, 1, 3)), (-1, length, self.dim))
        y = self.post_attn_norm(self.out_proj(attended))
        y = self.drop(y, training=training) + residual
        residual = y
        h = activation(self.activation)(self.fc1(self.pre_fc_norm(y)))
        h = self.fc2(self.post_fc_norm(self.drop(h, training=training)))
        return self.drop(h, training=training) + self.w_resid * residual

    def compute_output_shape(self, input_shape: list[Any]) -> Any:
        return input_shape[0]

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            dim=self.dim,
            heads=self.heads,
            ffn_ratio=self.ffn_ratio,
            dropout=self.dropout,
            activation=self.activation,
            class_attention=self.class_attention,
            seed=self.seed,
        )
        return config


def _embed(x: Any, dims: list[int], kind: str, name: str, kernel: Kernel) -> Any:
    """Per width: LayerNorm - Dense - activation (weaver's ``Embed``, without its input BN)."""
    for i, n in enumerate(dims):
        x = keras.layers.LayerNormalization(epsilon=1e-5, name=f"{name}_{i}_norm")(x)
        x = keras.layers.Dense(n, kernel_initializer=kernel(), name=f"{name}_{i}")(x)
        x = keras.layers.Activation(activation(kind), name=f"{name}_{i}_act")(x)
    return x


def _pair_bias(momenta: Any, dims: list[int], heads: int, kind: str, kernel: Kernel) -> Any:
    """(B, L, 4) four-momenta -> (B, L, L, heads): the pairs' features, embedded."""
    pairs = PairFeatures(name="pair_features")(momenta)
    x = keras.layers.BatchNormalization(name="pair_input_norm")(pairs)
    for i, n in enumerate([*dims, heads]):
        x = keras.layers.Dense(n, kernel_initializer=kernel(), name=f"pair_embed_{i}")(x)
        x = keras.layers.BatchNormalization(name=f"pair_embed_{i}_norm")(x)
        x = keras.layers.Activation(activation(kind), name=f"pair_embed_{i}_act")(x)
    return x


def part_body(
    groups: Mapping[str, GroupInput],
    momenta: Mapping[str, Mapping[str, str]],
    p: Mapping[str, Any],
    kernel: Kernel,
    next_seed: Callable[[], int | None],
) -> Any:
    """The class token's vector (B, D) after the particle and class attention blocks over the
    joined set of ``groups``; ``momenta``: per group the channels of pt, eta, phi and energy or
    mass; ``p``: the model's parameters, sizes resolved from the preset."""
    order = {
        group: [kind for kind in KINEMATIC_ORDER if kind in names]
        for group, names in momenta.items()
    }
    physics = {group: [momenta[group][kind] for kind in order[group]] for group in groups}
    dims = list(p["embed_dims"])

    def four_momenta(group: str, values: Any) -> Any:
        suffix = "" if len(groups) == 1 else f"_{group}"
        return FourMomenta(order[group], name=f"four_momenta{suffix}")(values)

    x, four, mask = particle_sets(groups, dims[0] if dims else 32, kernel, physics, four_momenta)
    x = MaskedEntries(name="embedded")([_embed(x, dims, p["activation"], "embed", kernel), mask])
    dim, heads = x.shape[-1], p["num_heads"]
    if p["num_layers"]:
        bias = _pair_bias(four, list(p["pair_embed_dims"]), heads, p["activation"], kernel)
    for i in range(p["num_layers"]):
        x = AttentionBlock(
            dim, heads, p["ffn_ratio"], p["dropout"], p["activation"], seed=next_seed(),
            name=f"block_{i}",
        )([x, mask, bias])  # fmt: skip
    token = ClassToken(dim, seed=next_seed(), name="class_token")(x)
    for i in range(p["num_cls_layers"]):
        token = AttentionBlock(
            dim, heads, p["ffn_ratio"], 0.0, p["activation"], class_attention=True,
            seed=next_seed(), name=f"class_block_{i}",
        )([token, x, mask])  # fmt: skip
    token = keras.layers.LayerNormalization(epsilon=1e-5, name="norm")(token)
    return keras.layers.Flatten(name="class_vector")(token)
