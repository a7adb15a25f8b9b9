"""Synthetic batches shaped as the worker feeds them, for the model zoo's tests."""

from __future__ import annotations

import numpy as np

LENGTH = 12
CHANNELS = ("pt", "deta", "dphi")
FEATURES = ("jet_pt", "jet_mass", "jet_girth", "jet_tau21")


def synthetic_batch(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Everything the worker offers for ``n`` events, padded slots 0, and a learnable label."""
    rng = np.random.default_rng(seed)
    count = rng.integers(1, LENGTH + 1, n).astype(np.int32)
    entries = rng.normal(size=(n, LENGTH, len(CHANNELS))).astype(np.float32)
    entries[np.arange(LENGTH)[None, :] >= count[:, None]] = 0.0
    total = entries[:, :, 0].sum(axis=1)
    features = rng.normal(size=(n, len(FEATURES))).astype(np.float32)
    features[:, 0] = total / 2.5 + 0.3 * features[:, 0]  # a lossy summary, as jet features are
    label = (total > 0).astype(np.float32)
    batch = {"features": features, "constituents": entries, "constituents_count": count}
    return batch, label


MUONS = 4
MUON_CHANNELS = ("pt", "eta")


def two_group_batch(n: int, seed: int = 0) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """``synthetic_batch`` with a second jagged group, ``muons`` (up to MUONS entries, some
    events none), and a label that needs both groups."""
    batch, _ = synthetic_batch(n, seed)
    rng = np.random.default_rng(seed + 100)
    count = rng.integers(0, MUONS + 1, n).astype(np.int32)
    muons = rng.normal(size=(n, MUONS, len(MUON_CHANNELS))).astype(np.float32)
    muons[np.arange(MUONS)[None, :] >= count[:, None]] = 0.0
    jets_total = batch["constituents"][:, :, 0].sum(axis=1)
    label = (jets_total + 3.0 * muons[:, :, 0].sum(axis=1) > 0).astype(np.float32)
    return {**batch, "muons": muons, "muons_count": count}, label


def with_garbage(
    batch: dict[str, np.ndarray], groups: tuple[str, ...], seed: int = 6
) -> dict[str, np.ndarray]:
    """``batch`` with every padded slot of ``groups`` holding garbage: +-1e3, and NaN in the
    last slot of each padded event."""
    rng = np.random.default_rng(seed)
    garbage = dict(batch)
    for group in groups:
        values = batch[group].copy()
        count = batch[group + "_count"]
        padded = np.arange(values.shape[1])[None, :] >= count[:, None]
        noise = rng.choice([-1e3, 1e3], size=values.shape).astype(np.float32)
        values[padded] = noise[padded]
        values[count < values.shape[1], -1] = np.nan
        garbage[group] = values
    return garbage
