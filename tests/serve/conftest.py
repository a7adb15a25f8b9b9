"""Fixtures for gridtrain serve: a converted toy dataset, configs over it, and real services.

Each service is ``gridtrain serve --port 0`` in its own process on 127.0.0.1, stopped by its PID
in a ``finally``; the trainings it starts are detached drivers, cancelled at the end if still
running.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import Service

from tests.conftest import toy_section


@pytest.fixture(scope="session")
def serve_dataset(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The toy events as 2000-event shards: a few shards, so a training takes seconds."""
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert

    out = tmp_path_factory.mktemp("serve-dataset")
    convert(DatasetConfig.from_dict(toy_section(toy_dir, out)), out)
    return out


@pytest.fixture
def start_service(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Start services on demand (``start_service(root, *args)``); all stopped at the end.

    A test that trains on ``serve_dataset`` gets services that may read it and the toy files
    (``--allow-data``): a service reads data only from its root and those folders.
    """
    started: list[Service] = []
    data: list[str] = []
    if "serve_dataset" in request.fixturenames:
        for name in ("toy_dir", "serve_dataset"):
            data += ["--allow-data", str(request.getfixturevalue(name))]

    def start(root: Path | None = None, *args: str) -> Service:
        service = Service(root or tmp_path / "runs", *data, *args).start()
        started.append(service)
        return service

    try:
        yield start
    finally:
        for service in started:
            service.stop()
        for service in started:
            if service.root.exists():
                service.cancel_all()
