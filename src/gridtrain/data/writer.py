"""The shard end of a conversion: shard buffers, the writer thread, the training statistics.

Conversion layer. A step's events arrive already shuffled and split (training rows first, then
validation rows, see ``gridtrain.data.convert``), so filling a shard is a contiguous copy. Full
shards go to one writer thread, which compresses, writes under a temporary ``.NAME.part`` name and
checksums while the main thread reads and assembles the next step; h5py and the compressors
release the GIL, so the two overlap. The statistics are taken from the training split only,
from the values as stored (float32), before padding: padded entries never count. The event
weights are tallied per sample and class (``WeightTally``) for the manifest's ``weights``.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridtrain.checksum import adler32_file
from gridtrain.config import DatasetConfig
from gridtrain.data.arrays import RunningStats
from gridtrain.data.layout import Image, Layout
from gridtrain.data.manifest import SPLITS, ShardEntry, weight_record
from gridtrain.data.shards import write_shard

Arrays = dict[str, np.ndarray]


@dataclass
class Writer:
    """The writer thread: compresses, writes and checksums full shards, off the read path."""

    outdir: Path
    dataset: DatasetConfig
    layout: Layout
    jobs: queue.Queue[tuple[str, int, Arrays] | None] = field(
        default_factory=lambda: queue.Queue(maxsize=1)
    )
    entries: dict[str, list[ShardEntry]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    parts: list[Path] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.thread = threading.Thread(target=self._run, name="gridtrain-shard-writer", daemon=True)
        self.thread.start()

    def submit(self, split: str, index: int, arrays: Arrays) -> None:
        while True:
            if self.error is not None:
                raise self.error
            try:
                self.jobs.put((split, index, arrays), timeout=0.5)
                return
            except queue.Full:
                continue

    def finish(self) -> None:
        self.jobs.put(None)
        self.thread.join()
        if self.error is not None:
            raise self.error

    def abort(self) -> None:
        while True:  # drop queued shards so the thread can see the stop marker
            try:
                self.jobs.get_nowait()
            except queue.Empty:
                break
        self.jobs.put(None)
        self.thread.join()

    def _run(self) -> None:
        columns = self.layout.columns()
        while (job := self.jobs.get()) is not None:
            if self.error is not None:
                continue
            split, index, arrays = job
            name = f"{split}-{index:05d}.h5"
            part = self.outdir / f".{name}.part"
            self.parts.append(part)
            try:
                write_shard(part, arrays, self.dataset.codec, self.dataset.chunk_events, columns)
                entry = ShardEntry(
                    name, len(arrays["label"]), part.stat().st_size, adler32_file(part)
                )
                self.entries[split].append(entry)
            except BaseException as err:  # handed to the main thread, which re-raises it
                self.error = err


class ShardBuffer:
    """Preallocated arrays for the shard being filled for one split."""

    def __init__(self, split: str, layout: Layout, size: int, writer: Writer) -> None:
        self.split, self.layout, self.size, self.writer = split, layout, size, writer
        self.index = 0
        self._new()

    def _new(self) -> None:
        self.fill = 0
        self.arrays = {
            name: np.empty((self.size, *shape), dtype=dtype)
            for name, (shape, dtype) in self.layout.row_shapes().items()
        }

    def add(self, step: Arrays, start: int, stop: int) -> None:
        """Append rows [start, stop) of the step arrays, sending every shard that fills up."""
        while start < stop:
            k = min(self.size - self.fill, stop - start)
            for name, array in step.items():
                self.arrays[name][self.fill : self.fill + k] = array[start : start + k]
            self.fill += k
            start += k
            if self.fill == self.size:
                self.flush()

    def flush(self) -> None:
        if self.fill == 0:
            return
        arrays = {name: a[: self.fill] for name, a in self.arrays.items()}
        self.writer.submit(self.split, self.index, arrays)
        self.index += 1
        self._new()


class WeightTally:
    """Events and sums of weights per sample and class, in float64, as the shards store them.

    Columns of each (sample, class, split) cell: events, sum, negative events, negative sum.
    Labels outside 0 .. classes-1 (a binary task's label branch with other values) count for
    their sample only.
    """

    def __init__(self, samples: int, classes: int) -> None:
        self.classes = classes
        self.cells = np.zeros((samples, max(classes, 1), len(SPLITS), 4))
        self.outside = np.zeros((samples, 4))  # events whose label is no class

    def add(self, sample: int, labels: np.ndarray, weights: np.ndarray, train: np.ndarray) -> None:
        w = weights.astype(np.float64)
        negative = w < 0
        columns = (np.ones_like(w), w, negative.astype(np.float64), np.where(negative, w, 0.0))
        if self.classes == 0:  # a regression: one cell per sample and split
            labels = np.zeros(len(w), dtype=np.int64)
        inside = (labels >= 0) & (labels < max(self.classes, 1))
        cell = np.where(inside, labels, 0) * len(SPLITS) + np.where(train, 0, 1)
        size = max(self.classes, 1) * len(SPLITS)
        for k, column in enumerate(columns):
            sums = np.bincount(cell[inside], weights=column[inside], minlength=size)
            self.cells[sample, :, :, k] += sums.reshape(-1, len(SPLITS))
            self.outside[sample, k] += column[~inside].sum()

    def class_events(self) -> np.ndarray:
        """Events of each class, both splits."""
        return self.cells[:, :, :, 0].sum(axis=(0, 2))

    def record(
        self,
        branch: str | None,
        samples: list[str],
        classes: tuple[str, ...],
        non_finite: list[int] | None = None,
    ) -> dict[str, object]:
        """The manifest's ``weights`` record (``gridtrain.data.manifest``)."""
        keys = ("events", "sum", "negative_events", "negative_sum")
        by_sample = self.cells.sum(axis=(1, 2)) + self.outside
        sample_records = {}
        for index, name in enumerate(samples):
            values = dict(zip(keys, by_sample[index].tolist(), strict=True))
            if non_finite is not None:
                values["non_finite_targets"] = non_finite[index]
            sample_records[name] = weight_record(values)
        class_records = {}
        for index, name in enumerate(classes):
            cells = self.cells[:, index]  # samples x splits x 4
            values = dict(zip(keys, cells.sum(axis=(0, 1)).tolist(), strict=True))
            train = cells[:, 0].sum(axis=0).tolist()
            values.update(train_events=train[0], train_sum=train[1], train_negative_sum=train[3])
            class_records[name] = weight_record(values)
        return {"branch": branch, "samples": sample_records, "classes": class_records}


class Statistics:
    """Training-split statistics of the features, each jagged group, each image and the
    regression targets (``target``)."""

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.features = RunningStats(len(layout.feature_columns))
        self.groups = {g[0]: RunningStats(len(g[1])) for g in layout.groups}
        self.images = {i.name: RunningStats(_stat_columns(i)) for i in layout.images}
        self.target = RunningStats(len(layout.targets))

    def add_target(self, values: np.ndarray) -> None:
        """Training events' targets (N x T, float32 as stored)."""
        if self.layout.targets:
            self.target.update(values)

    def add_features(self, table: np.ndarray) -> None:
        if self.layout.feature_columns:
            self.features.update(table)

    def add_group(self, name: str, contents: list[np.ndarray]) -> None:
        """Unpadded, clipped contents of the training events, one 1-D array per channel."""
        self.groups[name].update_columns(contents)

    def add_image(self, image: Image, values: np.ndarray) -> None:
        """Training events' image tensors (N x shape)."""
        if len(values) == 0:
            return
        if image.statistics == "per-pixel":
            self.images[image.name].update(values.reshape(len(values), -1))
        elif image.channels == 1:
            self.images[image.name].update_columns([values.reshape(-1)])
        else:
            pixels = values.reshape(-1, image.channels)
            self.images[image.name].update_columns([pixels[:, c] for c in range(image.channels)])

    def as_dict(self) -> dict[str, object]:
        stats: dict[str, object] = {}
        if self.layout.feature_columns:
            stats["features"] = self.features.as_dict()
        for name, stat in (self.groups | self.images).items():
            stats[name] = stat.as_dict()
        if self.layout.targets:
            stats["target"] = self.target.as_dict()
        return stats


def _stat_columns(image: Image) -> int:
    """Per-pixel: one column per value of the tensor; global: one per channel."""
    return int(np.prod(image.shape)) if image.statistics == "per-pixel" else image.channels
