"""Fixtures for the tuning tests: the training tests' small converted toy dataset."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.train.train_helpers import dataset_section


@pytest.fixture(scope="session")
def toy_dataset(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12k toy events as ~9 training and ~3 validation shards of 1000 events."""
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert

    out = tmp_path_factory.mktemp("dataset")
    convert(DatasetConfig.from_dict(dataset_section(toy_dir, out)), out)
    return out
