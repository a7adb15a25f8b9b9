"""What each event becomes in a shard, checked against every input file before anything is written.

Conversion layer, pure apart from asking the readers about branch types: the resolved feature
columns, the jagged groups, the image tensors, the regression targets and the event id. Every
input (TTree or RNTuple)
must give each branch the same type and shape; the first one that does not stops the conversion
with a message naming both files, before any shard exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from gridtrain.config import DatasetConfig, Sample
from gridtrain.data.branches import FlatBranch, InputReader
from gridtrain.data.selection import Selection
from gridtrain.errors import ConversionError
from gridtrain.task import Task

log = logging.getLogger(__name__)

FLOAT32 = np.dtype(np.float32)


@dataclass(frozen=True)
class Image:
    """One image tensor: its branches (stacked as channels when several), its shape per event
    (with the channel axis when several) and the kind of statistics recorded."""

    name: str
    branches: tuple[str, ...]
    shape: tuple[int, ...]
    statistics: str

    @property
    def channels(self) -> int:
        return len(self.branches)


@dataclass(frozen=True)
class Layout:
    """What each event becomes: feature columns, jagged groups, images, the event id and the
    regression targets' names (the ``target`` dataset's columns)."""

    features: tuple[FlatBranch, ...]
    groups: tuple[tuple[str, tuple[str, ...], int, float], ...]
    event_id: tuple[str, ...]
    images: tuple[Image, ...] = ()
    targets: tuple[str, ...] = ()

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return tuple(c for f in self.features for c in f.columns())

    def row_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        if self.feature_columns:
            shapes["features"] = ((len(self.feature_columns),), FLOAT32)
        for name, branches, length, _ in self.groups:
            shapes[name] = ((length, len(branches)), FLOAT32)
            shapes[f"{name}_count"] = ((), np.dtype(np.int32))
        for image in self.images:
            shapes[image.name] = (image.shape, FLOAT32)
        shapes["label"] = ((), np.dtype(np.int32))
        if self.targets:
            shapes["target"] = ((len(self.targets),), FLOAT32)
        shapes["weight"] = ((), FLOAT32)
        shapes["event_id"] = ((len(self.event_id) or 2,), np.dtype(np.uint64))
        return shapes

    def columns(self) -> dict[str, list[str]]:
        """The ``columns`` attribute of each shard dataset that has named columns or channels."""
        columns = {"features": list(self.feature_columns)}
        columns.update({g[0]: list(g[1]) for g in self.groups})
        columns.update({i.name: list(i.branches) for i in self.images if i.channels > 1})
        if self.targets:
            columns["target"] = list(self.targets)
        return columns

    def row_bytes(self) -> int:
        """Bytes of one event in the step arrays and shard buffers."""
        return sum(
            int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            for shape, dtype in self.row_shapes().values()
        )

    def image_names(self) -> set[str]:
        return {b for image in self.images for b in image.branches}

    def jagged_names(self) -> set[str]:
        return {b for g in self.groups for b in g[1]}


@dataclass(frozen=True)
class Input:
    """The reader of one input file with the sample it belongs to (for the checks)."""

    sample: Sample
    reader: InputReader


def target_expressions(task: Task) -> list[Selection]:
    """The regression targets' expressions, parsed (none for a classifier); a syntax error is a
    ``ConfigError`` naming the target."""
    return [Selection(t.expression, f"task.targets {t.name!r} expression") for t in task.targets]


def check_layout(
    dataset: DatasetConfig,
    inputs: list[Input],
    selection: Selection | None,
    targets: list[Selection] | None = None,
) -> Layout:
    """Check every input against the config; return the layout all of them share."""
    targets = targets if targets is not None else target_expressions(dataset.task)
    features: tuple[FlatBranch, ...] = ()
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}  # image branch -> (shape, first file)
    jagged_names = {b for g in dataset.jagged for b in g.branches}
    first = ""
    for item in inputs:
        r = item.reader
        these = tuple(r.check_flat(name, "feature") for name in dataset.features)
        if features and these != features:
            raise ConversionError(
                f"{r.path}: feature branch shapes {these} differ from {first}'s {features}; "
                "all inputs must share one layout"
            )
        features, first = these, first or r.path
        for group in dataset.jagged:
            for name in group.branches:
                r.check_jagged(name, group.name)
        for image in dataset.images:
            for name in image.branches:
                shape = r.check_image(name, image.name).shape
                seen, where = shapes.setdefault(name, (shape, r.path))
                if shape != seen:
                    raise ConversionError(
                        f"{r.path}: image branch {name!r} ({image.name!r}) has shape "
                        f"{_dims(shape)} here but {_dims(seen)} in {where}; an image has one "
                        "shape in every file: convert files of each shape as their own dataset, "
                        "or rebin them to one shape first"
                    )
        for name in dataset.event_id:
            r.check_flat(name, "event id")
        if isinstance(item.sample.label, str):
            r.check_flat(item.sample.label, f"label of sample {item.sample.name!r}")
        for name in selection.names if selection else ():
            if name in jagged_names:
                raise ConversionError(
                    f"dataset.selection {dataset.selection!r}: {name!r} is jagged; cut on "
                    "per-event branches only"
                )
            r.check_flat(name, "selection")
        for target, expression in zip(dataset.task.targets, targets, strict=True):
            _check_target(r, target.name, expression, jagged_names)
    for branch in features:
        if branch.width > 1:
            log.info("feature %r is an array of %d values: one column each", branch.name,
                     branch.width)  # fmt: skip
    groups = tuple((g.name, g.branches, g.length, g.fill) for g in dataset.jagged)
    names = tuple(t.name for t in dataset.task.targets)
    return Layout(features, groups, dataset.event_id, _images(dataset, shapes), names)


def _check_target(
    reader: InputReader, name: str, expression: Selection, jagged_names: set[str]
) -> None:
    """Every branch of a target's expression is one number per event in this input."""
    role = f"target {name!r} = {expression.expression}"
    for branch in expression.names:
        if branch in jagged_names:
            raise ConversionError(
                f"task.targets {name!r} expression {expression.expression!r}: {branch!r} is "
                "jagged; a target is one number per event (e.g. the leading jet's, from a "
                "per-event branch)"
            )
        width = reader.check_flat(branch, role).width
        if width != 1:
            raise ConversionError(
                f"{reader.path}: branch {branch!r} ({role}) holds {width} numbers per event; "
                "a target is one number per event: name a per-event branch"
            )


def _images(
    dataset: DatasetConfig, shapes: dict[str, tuple[tuple[int, ...], str]]
) -> tuple[Image, ...]:
    images = []
    for image in dataset.images:
        first = shapes[image.branches[0]][0]
        for name in image.branches[1:]:
            if shapes[name][0] != first:
                raise ConversionError(
                    f"{shapes[name][1]}: branches of image {image.name!r} differ in shape "
                    f"({image.branches[0]!r} {_dims(first)}, {name!r} {_dims(shapes[name][0])}); "
                    "channels of one image must share a shape: make them separate images"
                )
        shape = first if len(image.branches) == 1 else (*first, len(image.branches))
        images.append(Image(image.name, image.branches, shape, image.statistics))
    return tuple(images)


MEMORY_WARNING_BYTES = 4 << 30


def check_memory(dataset: DatasetConfig, layout: Layout) -> None:
    """Warn when a step and three shards of these rows would take more than 4 GiB (large
    images at the default sizes): the way out is smaller steps and shards."""
    need = (dataset.step_events + 3 * dataset.shard_events) * layout.row_bytes()
    if need > MEMORY_WARNING_BYTES:
        per_event = layout.row_bytes() / 1024
        log.warning(
            "an event takes %.0f KiB in the shard arrays, so a step of %d and three shards of %d "
            "events take about %.1f GiB; lower dataset.step_events and dataset.shard_events "
            "(e.g. to %d) to convert in less memory",
            per_event, dataset.step_events, dataset.shard_events, need / 2**30,
            max(1, MEMORY_WARNING_BYTES // 8 // layout.row_bytes()),
        )  # fmt: skip


def _dims(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


def branch_names(dataset: DatasetConfig, layout: Layout, selection: Selection | None) -> list[str]:
    """Every branch conversion reads (their common basket boundaries plan the reads)."""
    names = [f.name for f in layout.features] + sorted(layout.jagged_names())
    names += sorted(layout.image_names())
    names += list(layout.event_id)  # and each sample's weight branches (gridtrain.data.samples)
    names += [s.label for s in dataset.samples if isinstance(s.label, str)]
    names += [n for expression in target_expressions(dataset.task) for n in expression.names]
    return sorted(set(names) | set(selection.names if selection else ()))
