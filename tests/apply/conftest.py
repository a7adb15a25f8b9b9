"""The runs the apply tests score, trained once per session (``apply_helpers.Runs``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from apply_helpers import Runs

from tests.stage.conftest import xrootd_server  # noqa: F401 (a real server for root:// inputs)


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(tmp_path_factory.mktemp("apply-runs"))
