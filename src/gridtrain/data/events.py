"""A block of one input file's entries as read, and as the arrays a shard row holds.

Conversion layer, shared by ``gridtrain convert`` and ``gridtrain apply``: the one place that asks
a reader (TTree or RNTuple, ``gridtrain.data.branches``) for a range of entries of a layout's
branches, and that turns what was read into the model's arrays. Conversion writes those arrays
into shuffled shard rows; ``apply`` scores them in entry order. So an event scored by ``apply``
has exactly the inputs it would have in a shard: the same branches, fixed-size arrays spread into
columns, the same padding and clipping of jagged groups (``arrays.scatter_group``), the same image
channels. Nothing here selects events, computes labels, weights or targets (``convert`` does),
or writes.
"""

from __future__ import annotations

from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np

from gridtrain.config import DatasetConfig, Sample
from gridtrain.data.arrays import scatter_group
from gridtrain.data.branches import InputReader
from gridtrain.data.layout import FLOAT32, Input, Layout, check_layout, derived_features
from gridtrain.data.selection import Selection
from gridtrain.task import Task


@dataclass
class Columns:
    """Entries of one file as read: flat columns, unpadded jagged groups and image tensors."""

    flat: dict[str, np.ndarray]  # branch -> N x width
    groups: dict[str, tuple[np.ndarray, list[np.ndarray]]]  # group -> (counts, channel contents)
    images: dict[str, np.ndarray]  # branch -> N x shape


def input_layout(
    dataset: DatasetConfig, reader: InputReader, selection: Selection | None = None
) -> Layout:
    """The layout of a file to score: conversion's checks of its features (derived ones
    included), groups, images, event id (and selection) branches, without the labels, weights
    and targets a file being scored need not have (collision data has no generator weight or
    truth)."""
    sample = Sample("scored", (reader.path,), 0, reader.tree_name)
    scored = replace(dataset, samples=(sample,), task=Task())
    derived = derived_features(dataset)
    return check_layout(scored, [Input(sample, reader)], selection, [], derived)


def read_columns(
    reader: InputReader,
    layout: Layout,
    flat_names: list[str],
    start: int,
    stop: int,
    pool: Executor,
) -> Columns:
    """Entries [start, stop) of the layout's groups and images and of ``flat_names`` (the
    features and whatever else the caller needs per event), every read on ``pool``."""
    group_futures = {
        g: pool.submit(reader.read_jagged, branches, g, start, stop)
        for g, branches, _, _ in layout.groups
    }  # the jagged groups first: they take longest
    image_futures = {
        n: pool.submit(reader.read_image, n, start, stop) for n in sorted(layout.image_names())
    }
    flat_futures = [pool.submit(read) for read in reader.flat_reads(flat_names, start, stop)]
    flat = {n: a for f in flat_futures for n, a in f.result().items()}
    images = {n: f.result() for n, f in image_futures.items()}
    groups = {}
    for g, future in group_futures.items():
        read = future.result()
        groups[g] = (read.counts, [read.contents[b] for b in read.contents])
    return Columns(flat, groups, images)


def feature_table(flat: dict[str, np.ndarray], layout: Layout) -> np.ndarray:
    """The ``features`` rows (N x the layout's feature columns, float32), in column order."""
    events = len(flat[layout.features[0].name]) if layout.features else 0
    table = np.empty((events, len(layout.feature_columns)), dtype=FLOAT32)
    column = 0
    for feature in layout.features:
        table[:, column : column + feature.width] = flat[feature.name]
        column += feature.width
    return table


def image_tensor(images: dict[str, np.ndarray], branches: tuple[str, ...]) -> np.ndarray:
    """One image's rows (N x shape, channels last when several branches), float32."""
    if len(branches) == 1:
        return np.asarray(images[branches[0]], dtype=FLOAT32)
    return np.stack([images[name] for name in branches], axis=-1).astype(FLOAT32, copy=False)


def shard_arrays(columns: Columns, layout: Layout, events: int) -> dict[str, np.ndarray]:
    """The model-input datasets of a shard for these events, in entry order: ``features``, each
    group padded to its length (and ``<group>_count``), each image."""
    arrays: dict[str, np.ndarray] = {}
    if layout.features:
        arrays["features"] = feature_table(columns.flat, layout)
    rows = np.arange(events)
    for name, branches, length, fill in layout.groups:
        counts, contents = columns.groups[name]
        padded = np.full((events, length, len(branches)), fill, dtype=FLOAT32)
        # conversion's own padding (into rows in entry order here, shuffled rows there)
        clipped = scatter_group(counts, contents, length, rows, padded)
        arrays[f"{name}_count"] = clipped.astype(np.int32)
        arrays[name] = padded
    for image in layout.images:
        arrays[image.name] = image_tensor(columns.images, image.branches)
    return arrays
