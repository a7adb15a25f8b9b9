"""Fixtures for the model zoo: small InputSpecs (one and two jagged groups); TensorFlow's C++
logging quieted."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from models_helpers import CHANNELS, FEATURES, LENGTH, MUON_CHANNELS, MUONS

from gridtrain.models import InputSpec


@pytest.fixture
def spec() -> InputSpec:
    return InputSpec(features=FEATURES, groups={"constituents": (LENGTH, CHANNELS)})


@pytest.fixture
def two_groups() -> InputSpec:
    """``spec`` with a second jagged group, ``muons``, as ``two_group_batch`` feeds."""
    groups = {"constituents": (LENGTH, CHANNELS), "muons": (MUONS, MUON_CHANNELS)}
    return InputSpec(features=FEATURES, groups=groups)
