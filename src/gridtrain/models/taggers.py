"""The jet taggers' parameters and presets, and which channels of each group they read.

Layer: models, pure records (no Keras: the zoo's registry checks a config's parameters on the head
node). The networks are in ``models.particlenet`` and ``models.part``.

Both taggers run over one or more jagged groups (``groups``; default all of the dataset's) and
take every channel of a group as a particle feature. Besides, they read some channels as physics:

* ParticleNet's first k-nearest-neighbour search runs in ``points`` (two channels per group,
  (delta eta, delta phi) to the jet axis: ``part_deta``, ``part_dphi``);
* the Particle Transformer's pairwise features come from the ``fourmomentum`` of each group: the
  channels holding pt, eta and phi, and energy or mass (or neither: massless particles), e.g.
  ``{pt: part_pt, eta: part_eta, phi: part_phi, energy: part_energy}``. eta and phi may be
  relative to the jet (deta, dphi) unless energy is given (the mass from the energy needs the
  particle's own eta).

When a parameter leaves them out, a group's channels are found by name: the part after the last
``_`` (``part_deta`` -> ``deta``; ``PFCands_pt`` -> ``pt``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from gridtrain.errors import ConfigError
from gridtrain.models.params import ACTIVATIONS, Param
from gridtrain.models.params import units as _units

# ParticleNet (Qu and Gouskos, arXiv:1902.08570, Table 1): EdgeConv blocks (k, channels), the
# fully connected layer and its dropout. 26k (Lite) and 366k (full) parameters on the paper's
# 7 particle features and 2 classes.
PARTICLENET_PRESETS: dict[str, dict[str, Any]] = {
    "lite": {"edge_convs": [[7, [32, 32, 32]], [7, [64, 64, 64]]], "fc": [128], "dropout": 0.1},
    "full": {
        "edge_convs": [[16, [64, 64, 64]], [16, [128, 128, 128]], [16, [256, 256, 256]]],
        "fc": [256],
        "dropout": 0.1,
    },
}
# Particle Transformer (Qu, Li and Qian, arXiv:2202.03772; jet-universe/particle_transformer's
# example_ParticleTransformer.py): 2.14M parameters on JetClass's 17 features and 10 classes.
# "small" is ours, for CPUs: at 48 particles about 40 times fewer multiply-adds per jet than
# "paper" (3M against 127M).
PART_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {
        "embed_dims": [128, 512, 128],
        "pair_embed_dims": [64, 64, 64],
        "num_heads": 8,
        "num_layers": 8,
        "num_cls_layers": 2,
        "fc": [],
        "dropout": 0.1,
    },
    "small": {
        "embed_dims": [32, 32],
        "pair_embed_dims": [16, 16],
        "num_heads": 4,
        "num_layers": 2,
        "num_cls_layers": 1,
        "fc": [],
        "dropout": 0.0,
    },
}
KINEMATICS = ("pt", "eta", "phi", "energy", "mass")
_ALIASES = {
    "pt": ("pt",),
    "eta": ("deta", "eta", "etarel"),
    "phi": ("dphi", "phi", "phirel"),
    "energy": ("energy", "e"),
    "mass": ("mass", "m"),
}


def _edge_convs(value: Any) -> bool:
    return value is None or (
        isinstance(value, list | tuple)
        and bool(value)
        and all(
            isinstance(block, list | tuple)
            and len(block) == 2
            and isinstance(block[0], int)
            and not isinstance(block[0], bool)
            and block[0] > 0
            and _units(block[1])
            for block in value
        )
    )


def _optional_units(value: Any) -> bool:
    return value is None or (isinstance(value, list | tuple) and (not value or _units(value)))


def _optional_positive(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value > 0)


def _optional_count(value: Any) -> bool:
    return value is None or (isinstance(value, int) and not isinstance(value, bool) and value >= 0)


def _optional_fraction(value: Any) -> bool:
    return value is None or (
        isinstance(value, int | float) and not isinstance(value, bool) and 0 <= value < 1
    )


def _channel_map(value: Any) -> bool:
    """None, a list of names (every group) or a mapping group -> list of names."""
    if value is None:
        return True
    if isinstance(value, Mapping):
        return all(
            isinstance(v, list | tuple) and all(isinstance(n, str) for n in v)
            for v in value.values()
        )
    return isinstance(value, list | tuple) and all(isinstance(n, str) for n in value)


def _fourmomentum(value: Any) -> bool:
    """None, one {pt: .., eta: .., phi: .., energy|mass: ..} or a mapping group -> such."""
    if value is None:
        return True
    if not isinstance(value, Mapping):
        return False
    if set(value) <= set(KINEMATICS):
        return all(isinstance(v, str) for v in value.values())
    return all(_fourmomentum(v) and v is not None for v in value.values())


PRESET_NOTE = "null: the preset's"
GROUPS = Param(
    None,
    lambda v: (
        v is None
        or (isinstance(v, list | tuple) and bool(v) and all(isinstance(n, str) for n in v))
    ),
    "a list of jagged group names, e.g. [particles, svs] (null: all of them)",
)
PARTICLENET_PARAMS = {
    "preset": Param("lite", lambda v: v in PARTICLENET_PRESETS, "lite or full"),
    "groups": GROUPS,
    "points": Param(
        None,
        _channel_map,
        "two channel names per group for the first neighbour search, e.g. [part_deta, part_dphi] "
        "or {particles: [part_deta, part_dphi], svs: [sv_deta, sv_dphi]}",
    ),
    "edge_convs": Param(
        None,
        _edge_convs,
        f"EdgeConv blocks [[k, [units]], ...], e.g. [[7, [32, 32, 32]]] ({PRESET_NOTE})",
    ),
    "fc": Param(None, _optional_units, f"units of the dense layers, e.g. [128] ({PRESET_NOTE})"),
    "dropout": Param(None, _optional_fraction, f"a fraction in [0, 1) ({PRESET_NOTE})"),
    "embed": Param(
        32,
        lambda v: _optional_positive(v) and v is not None,
        "a positive integer: each group's embedding width when there are several",
    ),
    "use_features": Param(False, lambda v: isinstance(v, bool), "true or false"),
}
PART_PARAMS = {
    "preset": Param("small", lambda v: v in PART_PRESETS, "paper or small"),
    "groups": GROUPS,
    "fourmomentum": Param(
        None,
        _fourmomentum,
        "the channels of pt, eta, phi and energy or mass, e.g. {pt: part_pt, eta: part_deta, "
        "phi: part_dphi, energy: part_energy}, or one such mapping per group",
    ),
    "embed_dims": Param(None, _optional_units, f"particle embedding widths ({PRESET_NOTE})"),
    "pair_embed_dims": Param(None, _optional_units, f"pair embedding widths ({PRESET_NOTE})"),
    "num_heads": Param(None, _optional_positive, f"attention heads ({PRESET_NOTE})"),
    "num_layers": Param(None, _optional_count, f"particle attention blocks ({PRESET_NOTE})"),
    "num_cls_layers": Param(None, _optional_positive, f"class attention blocks ({PRESET_NOTE})"),
    "fc": Param(None, _optional_units, f"dense layers before the head ({PRESET_NOTE})"),
    "dropout": Param(None, _optional_fraction, f"a fraction in [0, 1) ({PRESET_NOTE})"),
    "ffn_ratio": Param(4, lambda v: _optional_positive(v) and v is not None, "a positive integer"),
    "activation": Param("gelu", lambda v: v in ACTIVATIONS, f"one of {', '.join(ACTIVATIONS)}"),
    "use_features": Param(False, lambda v: isinstance(v, bool), "true or false"),
}


def check_neighbours(edge_convs: list[Any], lengths: Mapping[str, int]) -> None:
    """Every EdgeConv block's k below the entries a jet can hold (the groups' lengths)."""
    total = sum(lengths.values())
    for k, _ in edge_convs:
        if k >= total:
            raise ConfigError(
                f"model 'particlenet': an EdgeConv block takes k = {k} neighbours and the jets "
                f"hold at most {total} entries ({', '.join(lengths)}); choose a smaller k in "
                "edge_convs or a longer dataset.jagged length"
            )


def with_preset(p: dict[str, Any], presets: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``p`` with every size it leaves null taken from its preset."""
    preset = presets[p["preset"]]
    return {**p, **{key: value for key, value in preset.items() if p.get(key) is None}}


def _per_group(model: str, param: str, value: Any, groups: list[str]) -> dict[str, Any]:
    """A per-group parameter as group -> value (None where not given): one value for every
    group, or a mapping that names only chosen groups."""
    if value is None:
        return dict.fromkeys(groups)
    one = isinstance(value, list | tuple) or (
        param == "fourmomentum" and set(value) <= set(KINEMATICS)
    )
    if one:
        return dict.fromkeys(groups, value)
    unknown = [g for g in value if g not in groups]
    if unknown:
        raise ConfigError(
            f"model {model!r}: parameter {param} names {', '.join(map(repr, unknown))}, which "
            f"is not among its groups ({', '.join(groups)})"
        )
    return {group: value.get(group) for group in groups}


def _find(channels: tuple[str, ...], what: str) -> str | None:
    """The first channel whose name ends (after its last ``_``) in an alias of ``what``."""
    by_suffix = {c.rsplit("_", 1)[-1].lower(): c for c in reversed(channels)}
    return next((by_suffix[a] for a in _ALIASES[what] if a in by_suffix), None)


def resolve_points(
    model: str, value: Any, groups: list[str], channels: Mapping[str, tuple[str, ...]]
) -> dict[str, list[str]]:
    """Group -> the two channels of its first neighbour search (``points``)."""
    chosen = _per_group(model, "points", value, groups)
    resolved = {}
    for group, names in chosen.items():
        if names is None:
            found = [_find(channels[group], "eta"), _find(channels[group], "phi")]
            if None in found:
                raise ConfigError(
                    f"model {model!r}: no (delta eta, delta phi) channels found in group "
                    f"{group!r} ({', '.join(channels[group])}); name them, e.g. points: "
                    f"{{{group}: [{group}_deta, {group}_dphi]}}"
                )
            names = found
        _check_channels(model, "points", group, list(names), channels[group])
        resolved[group] = list(names)
    return resolved


def resolve_fourmomentum(
    model: str, value: Any, groups: list[str], channels: Mapping[str, tuple[str, ...]]
) -> dict[str, dict[str, str]]:
    """Group -> {pt, eta, phi[, energy | mass]: channel} for the pairwise features."""
    chosen = _per_group(model, "fourmomentum", value, groups)
    resolved = {}
    for group, names in chosen.items():
        if names is None:
            names = _default_fourmomentum(channels[group])
        missing = [what for what in ("pt", "eta", "phi") if what not in names]
        if missing or ("energy" in names and "mass" in names):
            raise ConfigError(
                f"model {model!r}: group {group!r} ({', '.join(channels[group])}) needs the "
                f"channels of pt, eta and phi (and energy or mass) for the pairwise features; "
                f"name them, e.g. fourmomentum: {{pt: {group}_pt, eta: {group}_eta, "
                f"phi: {group}_phi, energy: {group}_energy}}"
            )
        _check_channels(model, "fourmomentum", group, list(names.values()), channels[group])
        resolved[group] = dict(names)
    return resolved


def _default_fourmomentum(channels: tuple[str, ...]) -> dict[str, str]:
    """pt, eta, phi and the mass if the group has it (eta and phi relative to the jet if it has
    those: the pairwise features only take differences); else the energy with the absolute eta
    and phi it needs; else massless."""

    def suffix(*names: str) -> str | None:
        return next((c for c in channels if c.rsplit("_", 1)[-1].lower() in names), None)

    pt, mass, energy = suffix("pt"), suffix("mass", "m"), suffix("energy", "e")
    eta, phi = suffix("eta"), suffix("phi")
    deta, dphi = suffix("deta", "etarel") or eta, suffix("dphi", "phirel") or phi
    found: dict[str, str | None] = {"pt": pt, "eta": deta, "phi": dphi}
    if mass is not None:
        found["mass"] = mass
    elif energy is not None and eta is not None and phi is not None:
        found.update(eta=eta, phi=phi, energy=energy)
    return {what: name for what, name in found.items() if name is not None}


def _check_channels(
    model: str, param: str, group: str, names: list[str], channels: tuple[str, ...]
) -> None:
    unknown = [n for n in names if n not in channels]
    if unknown:
        raise ConfigError(
            f"model {model!r}: parameter {param} names {', '.join(map(repr, unknown))}, which "
            f"group {group!r} does not have; its channels: {', '.join(channels)}"
        )
    if param == "points" and len(names) != 2:
        raise ConfigError(
            f"model {model!r}: parameter points gives group {group!r} {len(names)} channels; "
            "it takes two, e.g. [part_deta, part_dphi]"
        )
