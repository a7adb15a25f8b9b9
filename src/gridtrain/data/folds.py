"""k-fold training's split of the events: which fold each event belongs to, by its event id.

Pure logic (numpy). Event ``e`` is in fold ``fold_of(e) = ((h & 0xFFFFFFFF) * K) >> 32``,
where ``h`` is the same salted 64-bit hash of the event-id columns that decides the validation split
(``gridtrain.data.arrays.event_hash``: ``h = seed``, then ``h = splitmix64(h ^ id)`` for each
id column): its low 32 bits scaled to ``0 .. K-1``. The validation split compares the whole
hash (its top bits) with a threshold; the low bits are independent of it, so every fold takes
the same share of conversion's training and validation shards. The model of fold ``k`` trains on
the events of every other fold and validates on fold ``k``'s, so every event is scored once by
a model that never trained on it. The rule needs only the event-id branches, so C++ code
(``export.json``'s ``folds``) and ``gridtrain apply`` dispatch each event to its model exactly
as training split it.

A k-fold run reads every shard of the dataset, whatever split conversion put it in: its fold
``k``'s manifest (``fold_manifest``) lists all shards as training and as validation shards, and
the shard reader keeps each event in the one role its fold gives it (``FoldRows``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from gridtrain.data.arrays import event_hash

RULE = (
    "fold = ((h & 0xFFFFFFFF) * K) >> 32; h = seed, then h = splitmix64(h ^ id) per event-id column"
)


def fold_of(event_id: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0 .. folds-1, int64) of each row of ``event_id`` (N x C unsigned)."""
    ids = np.asarray(event_id)
    if ids.ndim == 1:
        ids = ids[:, None]
    low = event_hash(ids, seed) & np.uint64(0xFFFFFFFF)
    return ((low * np.uint64(folds)) >> np.uint64(32)).astype(np.int64)


@dataclass(frozen=True)
class FoldRows:
    """Which rows of a shard one role of fold ``index`` keeps: its validation events, or (with
    ``validation`` false) the training events of every other fold."""

    index: int
    folds: int
    seed: int
    validation: bool

    def __call__(self, event_id: np.ndarray) -> np.ndarray:
        inside = fold_of(event_id, self.folds, self.seed) == self.index
        return inside if self.validation else ~inside


def fold_record(index: int | None, folds: int, seed: int, event_id: list[str]) -> dict[str, Any]:
    """What a k-fold run writes down about its split (``folds.json``, ``export.json``)."""
    record: dict[str, Any] = {
        "folds": folds,
        "seed": seed,
        "event_id": list(event_id),
        "hash": "splitmix64",
        "rule": RULE,
    }
    if index is not None:
        record["index"] = index
    return record


def fold_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest a fold's run trains from: every shard both a training and a validation
    shard (the fold's rows are picked as each shard is read); the rest as converted."""
    every = [
        entry for split in ("train", "validation") for entry in manifest["shards"].get(split, [])
    ]
    return {**manifest, "shards": {"train": list(every), "validation": list(every)}}
