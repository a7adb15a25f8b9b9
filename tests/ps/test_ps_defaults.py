"""The algorithm defaults are written once, in ``AlgorithmConfig``: ``gridtrain ps serve`` reads
them from its fields, and the config schema's ``train.algorithm`` must agree with them except
where a training deliberately starts elsewhere (``TRAINING_DIFFERS`` says where and why)."""

from __future__ import annotations

import argparse
from dataclasses import fields
from typing import Any

from gridtrain.config import load_schema
from gridtrain.ps.cli import _algorithm_from, register
from gridtrain.ps.rules import (
    ALGORITHMS,
    GEM_PLACEMENTS,
    OPTIMIZERS,
    STALENESS_SCALINGS,
    AlgorithmConfig,
)

# Where a training's parameter server starts from other settings than a bare `ps serve`:
TRAINING_DIFFERS = {
    "optimizer": "add",  # a training's workers run their own optimizer and push weight deltas
    "staleness_scaling": "dynsgd",  # damping stale pushes is what asynchronous training wants
}
TRAINING_ONLY = {"every"}  # the workers' exchange period: not a server setting


def algorithm_schema() -> dict[str, Any]:
    schema: dict[str, Any] = load_schema()["properties"]["train"]["properties"]["algorithm"]
    return schema


def serve_defaults(*arguments: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["ps", "serve", *arguments])


def test_ps_serve_takes_every_algorithm_default_from_algorithm_config() -> None:
    assert _algorithm_from(serve_defaults()) == AlgorithmConfig()
    changed = serve_defaults("--kappa", "0.5", "--max-staleness", "3", "--gem-on", "server")
    assert _algorithm_from(changed) == AlgorithmConfig(kappa=0.5, max_staleness=3, gem_on="server")


def test_the_schemas_algorithm_defaults_are_algorithm_configs() -> None:
    properties = algorithm_schema()["properties"]
    defaults = {field.name: field.default for field in fields(AlgorithmConfig)}
    unknown = set(properties) - set(defaults) - TRAINING_ONLY
    assert not unknown, f"train.algorithm keys that AlgorithmConfig lacks: {sorted(unknown)}"
    for name, prop in properties.items():
        if name in TRAINING_ONLY:
            continue
        expected = TRAINING_DIFFERS.get(name, defaults[name])
        assert prop.get("default") == expected, (
            f"train.algorithm.{name} defaults to {prop.get('default')!r} in the schema, but "
            f"AlgorithmConfig says {defaults[name]!r}"
            + (f" (a training deliberately uses {expected!r})" if name in TRAINING_DIFFERS else "")
        )
    for name, value in TRAINING_DIFFERS.items():  # a deliberate difference, not a stale one
        assert value != defaults[name], f"{name}: no longer differs; drop it from TRAINING_DIFFERS"
    # what a training with an empty algorithm section runs is a valid AlgorithmConfig
    filled = {n: p["default"] for n, p in properties.items() if n not in TRAINING_ONLY}
    assert AlgorithmConfig.from_dict(filled) == AlgorithmConfig(**TRAINING_DIFFERS)


def test_the_schemas_algorithm_choices_are_the_ones_the_server_knows() -> None:
    properties = algorithm_schema()["properties"]
    assert tuple(properties["algorithm"]["enum"]) == ALGORITHMS
    assert set(properties["optimizer"]["enum"]) <= set(OPTIMIZERS)
    assert set(properties["staleness_scaling"]["enum"]) == set(STALENESS_SCALINGS)
    assert set(properties["gem_on"]["enum"]) == set(GEM_PLACEMENTS)
