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
