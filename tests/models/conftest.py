"""Fixtures for the model zoo: a small InputSpec; TensorFlow's C++ logging quieted."""

from __future__ import annotations

import contextlib
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

# The XRootD client (PyPI xrootd 6.x) crashes with SIGSEGV when loaded after TensorFlow, and these
# tests load TensorFlow first in the session: load XRootD before, as gridtrain.train does.
with contextlib.suppress(ImportError):
    import XRootD.client  # noqa: F401

import pytest
from models_helpers import CHANNELS, FEATURES, LENGTH

from gridtrain.models import InputSpec


@pytest.fixture
def spec() -> InputSpec:
    return InputSpec(features=FEATURES, groups={"constituents": (LENGTH, CHANNELS)})
