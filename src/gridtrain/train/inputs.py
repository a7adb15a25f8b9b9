"""Model inputs from shards: standardised with the manifest's statistics, shuffled, batched.

Layer: train, data. Reads one local shard at a time (never a whole dataset) into the arrays the
model's named inputs take (``gridtrain.models`` convention):

* ``features``        (N, F) float32, the chosen flat columns, (x - mean) / std;
* ``<group>``         (N, L, C) float32, per-channel standardised, padded entries exactly 0;
* ``<group>_count``   (N,) int32, entries before padding;
* ``<image>``         (N, *shape) float32, standardised per channel or per pixel (as converted);

plus what the model is fit to (``y``: 0/1 labels, one-hot rows or standardised regression
targets, ``gridtrain.train.targets``), the sample weights training uses (event weight after
``train.negative_weights``, times the kinematic reweighting factor of ``dataset.reweight`` looked
up from the unstandardised feature columns, times the class factor) and the event weights as
converted (for metrics). A loaded shard is permuted once (a seed per epoch and
shard) and batches are views into it, so a training step copies nothing. ``Prefetcher`` loads the
next shard in a thread while the current one trains; h5py is opened only in the process that
reads (after any fork).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from gridtrain.data.folds import FoldRows
from gridtrain.data.manifest import Manifest, class_factors
from gridtrain.data.reweight import event_factors
from gridtrain.data.shards import ShardReader
from gridtrain.train.targets import (
    DEFAULT_NEGATIVE_WEIGHTS,
    sample_weights,
    standardise_targets,
    training_labels,
)

log = logging.getLogger(__name__)

Float = npt.NDArray[np.float32]
Inputs = dict[str, npt.NDArray[np.generic]]
Locate = Callable[[], Path]  # returns a local copy of a shard (staging it when needed)


def standardisation(
    stats: dict[str, list[float]], index: list[int] | None = None
) -> tuple[Float, Float]:
    """``(mean, 1 / std)`` in float32, as training applies them: ``(x - mean) * inverse``; a
    constant column (std 0) keeps inverse 1, so it becomes 0, not NaN."""
    mean = np.asarray(stats["mean"], dtype=np.float64)
    std = np.asarray(stats["std"], dtype=np.float64)
    if index is not None:
        mean, std = mean[index], std[index]
    std = np.where(std > 0, std, 1.0)  # a constant column stays 0, not NaN
    return mean.astype(np.float32), (1.0 / std).astype(np.float32)


def _image_scale(stats: dict[str, list[float]], image: dict[str, Any]) -> tuple[Float, Float]:
    """An image's ``(mean, 1 / std)``, shaped to broadcast: per pixel over the whole tensor, or
    global, one per channel (the last axis when the image has several branches)."""
    mean, inverse = standardisation(stats)
    if image["statistics"] == "per-pixel":
        return mean.reshape(image["shape"]), inverse.reshape(image["shape"])
    if len(image["branches"]) == 1:
        return mean.reshape(()), inverse.reshape(())
    return mean, inverse


@dataclass
class ShardData:
    """One shard's model inputs, what the model is fit to (``labels``: (N,) or (N, K|T)), the
    sample weights training uses and the event weights as converted, in memory."""

    inputs: Inputs
    labels: Float
    weights: Float
    event_weights: Float

    @property
    def events(self) -> int:
        return int(self.labels.shape[0])

    def shuffled(self, seed: int) -> ShardData:
        order = np.random.default_rng(seed).permutation(self.events)
        return ShardData(
            {name: np.take(array, order, axis=0) for name, array in self.inputs.items()},
            np.take(self.labels, order, axis=0),
            np.take(self.weights, order),
            np.take(self.event_weights, order),
        )

    def batches(self, batch_size: int) -> Iterator[tuple[Inputs, Float, Float]]:
        for start in range(0, self.events, batch_size):
            stop = start + batch_size
            yield (
                {name: array[start:stop] for name, array in self.inputs.items()},
                self.labels[start:stop],
                self.weights[start:stop],
            )


class InputBuilder:
    """Turns shard files into ``ShardData`` for the model inputs named in ``wanted``."""

    def __init__(
        self,
        manifest: Manifest,
        features: tuple[str, ...],
        groups: dict[str, tuple[int, tuple[str, ...]]],
        wanted: list[str],
        negative_weights: str = DEFAULT_NEGATIVE_WEIGHTS,
        rows: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        self.wanted = wanted
        self.rows = rows  # k-fold: the events of a shard this role keeps, from their event ids
        self.task = manifest.learning_task()
        self.negative_weights = negative_weights
        self._factors: list[float] = []
        if self.task.is_classifier:  # balanced for the weights as training treats them
            self._factors = (
                class_factors(
                    manifest.weights, self.task.classes, self.task.balance, negative_weights
                )
                if manifest.weights and self.task.balance
                else manifest.factors()
            )
        self._columns = [manifest.features.index(name) for name in features]
        self._reweight = manifest.weights.get("reweight") if self.task.is_classifier else None
        self._reweight_columns = [
            manifest.features.index(name) for name in (self._reweight or {}).get("variables", ())
        ]
        self._feature_scale = (
            standardisation(manifest.stats["features"], self._columns) if features else None
        )
        self._groups = {
            name: standardisation(manifest.stats[name])
            for name in groups
            if name in wanted or f"{name}_count" in wanted
        }
        self._images = {
            image["name"]: _image_scale(manifest.stats[image["name"]], image)
            for image in manifest.images
            if image["name"] in wanted
        }
        self._datasets = ["weight", "label" if self.task.is_classifier else "target"]
        if "features" in wanted or self._reweight:
            self._datasets.append("features")
        for name in self._groups:
            self._datasets += [name, f"{name}_count"]
        self._datasets += list(self._images)
        if rows is not None:
            self._datasets.append("event_id")

    def load(self, path: str | Path) -> ShardData:
        with ShardReader(path, self._datasets) as reader:
            raw = reader.read()
        if self.rows is not None:
            keep = self.rows(raw.pop("event_id"))
            raw = {name: array[keep] for name, array in raw.items()}
        inputs: Inputs = {}
        reweight_values = raw["features"][:, self._reweight_columns] if self._reweight else None
        if "features" in self.wanted:
            assert self._feature_scale is not None
            table = raw["features"]
            if len(self._columns) != table.shape[1] or self._columns != sorted(self._columns):
                table = table[:, self._columns]
            mean, inverse = self._feature_scale
            table -= mean
            table *= inverse
            inputs["features"] = table
        for name, (mean, inverse) in self._groups.items():
            count = raw[f"{name}_count"]
            if name in self.wanted:
                values = raw[name]
                values -= mean
                values *= inverse
                mask = np.arange(values.shape[1]) < count[:, None]
                values *= mask[:, :, None]
                inputs[name] = values
            if f"{name}_count" in self.wanted:
                inputs[f"{name}_count"] = count
        for name, (mean, inverse) in self._images.items():
            values = raw[name]
            values -= mean
            values *= inverse
            inputs[name] = values
        event_weights = np.asarray(raw["weight"], dtype=np.float32)
        if self.task.is_classifier:
            labels = raw["label"]
            y = training_labels(self.task, labels, str(path))
            reweight = None
            if self._reweight is not None and reweight_values is not None:
                reweight = event_factors(
                    self._reweight, self.negative_weights, reweight_values, labels
                )
            weights = sample_weights(
                event_weights, labels, self.negative_weights, self._factors, reweight
            )
        else:
            y = standardise_targets(self.task, raw["target"], str(path))
            weights = sample_weights(event_weights, (), self.negative_weights, ())
        return ShardData(inputs, y, weights, event_weights)


def fold_rows(manifest: Manifest, fold: int | None, folds: int | None, validation: bool) -> Any:
    """The rows a k-fold run's role keeps (``gridtrain.data.folds.FoldRows``), or None for a
    run of one model, which reads every row of its shards."""
    if fold is None or folds is None:
        return None
    return FoldRows(fold, folds, int(manifest.split["seed"]), validation)


class Prefetcher:
    """Loads shards in one background thread: ``submit`` early, ``get`` when needed.

    With a ``seed`` the shard is also permuted in that thread, so the training loop gets it ready.
    """

    def __init__(self, builder: InputBuilder) -> None:
        self._builder = builder
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="shard-load")
        self._pending: dict[str, Future[ShardData]] = {}

    def submit(
        self, key: str, path: Locate, seed: int | None = None, builder: InputBuilder | None = None
    ) -> None:
        """Start loading ``path`` under ``key`` (with ``builder``, else the prefetcher's)."""
        if key not in self._pending:
            self._pending[key] = self._pool.submit(self._load, path, seed, builder)

    def get(
        self, key: str, path: Locate, seed: int | None = None, builder: InputBuilder | None = None
    ) -> ShardData:
        self.submit(key, path, seed, builder)
        return self._pending.pop(key).result()

    def _load(self, path: Locate, seed: int | None, builder: InputBuilder | None) -> ShardData:
        data = (builder or self._builder).load(path())
        return data if seed is None else data.shuffled(seed)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending.clear()
