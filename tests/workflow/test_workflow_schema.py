"""The config schema as Snakemake applies it: its ``validate`` fills defaults in place, so a
property default under an optional section (``dataset.reweight``, default null) or under one
branch of a ``oneOf`` made every snakemake command crash before it started. Each shipped config,
and each optional section in each of its forms, goes through Snakemake's own validator here."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[2]
SCHEMA = str(REPO / "workflow" / "schemas" / "config.schema.yaml")
CONFIGS = sorted((REPO / "config").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_passes_snakemakes_validation(path: Path) -> None:
    config = yaml.safe_load(path.read_text())
    validate(config, SCHEMA)
    assert "train" in config


def with_reweight(bins: dict[str, Any], **extra: Any) -> dict[str, Any]:
    config = yaml.safe_load((REPO / "config" / "multiclass.yaml").read_text())
    config = copy.deepcopy(config)
    config["dataset"]["reweight"] = {"variables": list(bins), "bins": bins, "to": "flat", **extra}
    return config


@pytest.mark.parametrize(
    "bins",
    [
        {"jet_pt": [200, 300, 500, 1000]},  # a list of edges
        {"jet_pt": {"n": 10, "lo": 200, "hi": 1000, "log": True}},
        {"jet_pt": {"n": 10, "lo": 200, "hi": 1000}, "jet_eta": [-2.5, 0, 2.5]},
    ],
    ids=["edges", "log", "2d"],
)
def test_the_reweight_section_passes_in_every_form(bins: dict[str, Any]) -> None:
    config = with_reweight(bins)
    validate(config, SCHEMA)
    assert config["dataset"]["reweight"]["bins"] == bins  # nothing written into the bins
