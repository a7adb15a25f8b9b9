"""What a sample adds to its events: its own weight, and whether it is collision data.

Conversion layer, between the readers and ``convert``. An analysis mixes collision data (weight
1, and no generator-weight branch in its files) with simulation weighted by a branch or an
expression (``genWeight``, ``genWeight * puWeight``); a sample's ``weight`` overrides
``dataset.weight``. The weight expressions are the selection's safe evaluator
(``gridtrain.data.selection``): a config never runs code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridtrain.config import DatasetConfig, Sample
from gridtrain.data.branches import InputReader
from gridtrain.data.selection import Selection


@dataclass(frozen=True)
class SampleWeight:
    """One sample's event weight: a constant or an expression."""

    sample: Sample
    definition: float | str  # what the config says: a number, a branch or an expression
    expression: Selection | None  # None: the constant ``definition``

    @property
    def names(self) -> list[str]:
        """The branches the weight reads."""
        return self.expression.names if self.expression is not None else []

    def base(self, flat: Mapping[str, np.ndarray], events: int) -> np.ndarray:
        """Each event's weight (float64), from N x width flat arrays."""
        if self.expression is None:
            return np.full(events, float(self.definition))
        arrays = {n: flat[n][:, 0] for n in self.names}
        return self.expression.values(arrays, events).astype(np.float64)

    def values(self, flat: Mapping[str, np.ndarray], events: int) -> np.ndarray:
        """Each event's weight as the shard stores it (float32)."""
        return self.base(flat, events).astype(np.float32)

    def check(self, reader: InputReader) -> None:
        """Every branch of the weight is a per-event number in this input."""
        for name in self.names:
            reader.check_flat(name, f"weight of sample {self.sample.name!r} = {self.definition}")

    def record(self) -> dict[str, Any]:
        """The sample's record in the manifest (events and yield are added from the counts)."""
        return {"data": self.sample.data, "weight": self.definition}


def sample_weights(dataset: DatasetConfig) -> list[SampleWeight]:
    """Every sample's weight, parsed (a syntax error is a ``ConfigError`` naming the sample)."""
    weights = []
    for sample in dataset.samples:
        definition = sample.event_weight(dataset.weight)
        expression = None
        if isinstance(definition, str):
            key = (
                f"dataset.samples {sample.name!r} weight"
                if sample.weight is not None
                else "dataset.weight"
            )
            expression = Selection(definition, key)
        weights.append(SampleWeight(sample, definition, expression))
    return weights
