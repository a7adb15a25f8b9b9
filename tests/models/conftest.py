"""Fixtures for the model zoo: a small InputSpec; TensorFlow's C++ logging quieted."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest
from models_helpers import CHANNELS, FEATURES, LENGTH

from gridtrain.models import InputSpec


@pytest.fixture
def spec() -> InputSpec:
    return InputSpec(features=FEATURES, groups={"constituents": (LENGTH, CHANNELS)})
