"""Fixtures for the parameter-server tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ps_helpers import running_server

from gridtrain.ps.server import ParameterServer


@pytest.fixture
def server() -> Iterator[tuple[ParameterServer, bytes]]:
    """A running server with the small model and optimizer ``add``, and its secret."""
    with running_server() as running:
        yield running
