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


def scatter_group(
    counts: np.ndarray, contents: list[np.ndarray], length: int, rows: np.ndarray, out: np.ndarray
) -> np.ndarray:
    """Scatter flattened jagged channels sharing ``counts`` into rows ``rows`` of ``out``.

    ``out`` is a C-contiguous (R x length x C) array the caller has filled with the fill value;
    event i goes to row ``rows[i]`` and keeps its first ``length`` entries. Returns the clipped
    counts. One index computation serves every channel, and the events land in their final
    (shuffled) rows directly, so no padded copy is made and gathered again.
    """
    clipped = np.minimum(counts, length)
    if len(counts) == 0:
        return clipped
    starts = np.cumsum(counts) - counts
    positions = np.repeat(rows.astype(np.int64) * length - starts, counts)
    positions += np.arange(len(positions))
    keep = clip_mask(counts, length)
    if keep is not None:
        positions = positions[keep]
    table = out.reshape(-1, out.shape[-1])
    if not np.shares_memory(table, out):
        raise ValueError("scatter_group needs a C-contiguous output array")
    for channel, content in enumerate(contents):
        table[:, channel][positions] = content if keep is None else content[keep]
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

    def update_columns(self, columns: list[np.ndarray]) -> None:
        """Add one block given as one 1-D array per column (equal lengths), e.g. the contents
        of a jagged group's channels as read: no 2-D block or float64 copy is made."""
        n = len(columns[0]) if columns else 0
        if n == 0:
            return
        mean = np.empty(self.columns)
        m2 = np.empty(self.columns)
        minimum = np.empty(self.columns)
        maximum = np.empty(self.columns)
        for k, column in enumerate(columns):
            # The values as the shard stores them (float32), so the statistics describe those.
            values = column if column.dtype == np.float32 else column.astype(np.float32)
            mean[k] = np.add.reduce(values, dtype=np.float64) / n
            # Deviations from the mean rounded to float32; the sum of squares is corrected for
            # that rounding of the centre: sum (x - c)^2 = m2 + n (mean - c)^2.
            centre = np.float32(mean[k])
            deviation = values - centre
            np.square(deviation, out=deviation)
            shift = mean[k] - float(centre)
            m2[k] = max(float(np.add.reduce(deviation, dtype=np.float64)) - n * shift**2, 0.0)
            minimum[k], maximum[k] = values.min(), values.max()
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
