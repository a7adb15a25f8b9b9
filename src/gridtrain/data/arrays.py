"""Pure array operations of the conversion: padding, the validation split, streaming statistics.

No I/O here: functions take and return numpy arrays, so each is testable on hand-made inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)


def clip_mask(counts: np.ndarray, length: int) -> np.ndarray | None:
    """Mask over the flattened contents keeping each row's first ``length`` entries; ``None``
    when no row is longer (nothing to clip)."""
    if len(counts) == 0 or int(counts.max()) <= length:
        return None
    starts = np.cumsum(counts) - counts
    local = np.arange(int(counts.sum())) - np.repeat(starts, counts)
    return local < length


def pad_group(
    counts: np.ndarray, contents: list[np.ndarray], length: int, fill: float, out: np.ndarray
) -> np.ndarray:
    """Scatter flattened jagged channels sharing ``counts`` into ``out`` (N x length x C).

    Each row keeps its first ``length`` entries (clipping longer lists); the rest is ``fill``.
    Returns the clipped counts.
    """
    clipped = np.minimum(counts, length)
    out.fill(fill)
    if len(counts) == 0:
        return clipped
    keep = clip_mask(counts, length)
    stacked = np.empty((int(clipped.sum()), len(contents)), dtype=out.dtype)
    for channel, content in enumerate(contents):
        stacked[:, channel] = content if keep is None else content[keep]
    out[np.arange(length)[None, :] < clipped[:, None]] = stacked
    return clipped


def _splitmix64(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        x = x + _GOLDEN
        x = (x ^ (x >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
        x = (x ^ (x >> _U64(27))) * _U64(0x94D049BB133111EB)
        return x ^ (x >> _U64(31))


def event_hash(event_id: np.ndarray, seed: int) -> np.ndarray:
    """A well-mixed 64-bit hash of each row of ``event_id`` (N x K unsigned), salted by ``seed``."""
    h = np.full(len(event_id), _U64(seed & 0xFFFFFFFFFFFFFFFF), dtype=_U64)
    for column in range(event_id.shape[1]):
        h = _splitmix64(h ^ event_id[:, column].astype(_U64))
    return h


def validation_mask(event_id: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """True for events of the validation split: decided by event id alone, so it is the same
    whatever the file order, step size or sharding."""
    threshold = _U64(min(int(fraction * 2.0**64), 2**64 - 1))
    return event_hash(event_id, seed) < threshold


@dataclass
class RunningStats:
    """Per-column count, mean, variance, min and max over a stream of 2-D blocks.

    Accumulates in float64 and merges blocks with Chan et al.'s pairwise update, so the result
    does not depend on cancellation in a running sum of squares.
    """

    columns: int
    count: int = 0
    mean: np.ndarray = field(init=False)
    m2: np.ndarray = field(init=False)
    minimum: np.ndarray = field(init=False)
    maximum: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.mean = np.zeros(self.columns)
        self.m2 = np.zeros(self.columns)
        self.minimum = np.full(self.columns, np.inf)
        self.maximum = np.full(self.columns, -np.inf)

    def update(self, block: np.ndarray) -> None:
        n = block.shape[0]
        if n == 0:
            return
        # One pass into contiguous float64 columns; every reduction after it is contiguous.
        columns = np.ascontiguousarray(block.T, dtype=np.float64)
        minimum, maximum = columns.min(axis=1), columns.max(axis=1)
        mean = columns.mean(axis=1)
        columns -= mean[:, None]
        m2 = np.einsum("ij,ij->i", columns, columns)
        self._combine(n, mean, m2, minimum, maximum)

    def merge(self, other: RunningStats) -> None:
        """Add the statistics of another stream (another conversion job's)."""
        if other.count:
            self._combine(other.count, other.mean, other.m2, other.minimum, other.maximum)

    def _combine(
        self, n: int, mean: np.ndarray, m2: np.ndarray, minimum: np.ndarray, maximum: np.ndarray
    ) -> None:
        total = self.count + n
        delta = mean - self.mean
        self.mean = self.mean + delta * (n / total)
        self.m2 = self.m2 + m2 + delta**2 * (self.count * n / total)
        self.count = total
        self.minimum = np.minimum(self.minimum, minimum)
        self.maximum = np.maximum(self.maximum, maximum)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunningStats:
        """The inverse of ``as_dict`` (the manifest's form)."""
        stats = cls(len(data["mean"]), int(data["count"]))
        stats.mean = np.asarray(data["mean"], dtype=np.float64)
        stats.m2 = np.asarray(data["std"], dtype=np.float64) ** 2 * stats.count
        stats.minimum = np.asarray(data["min"], dtype=np.float64)
        stats.maximum = np.asarray(data["max"], dtype=np.float64)
        return stats

    @property
    def std(self) -> np.ndarray:
        if self.count == 0:
            return np.zeros(self.columns)
        return np.sqrt(self.m2 / self.count)

    def as_dict(self) -> dict[str, object]:
        return {
            "count": self.count,
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "min": self.minimum.tolist(),
            "max": self.maximum.tolist(),
        }
