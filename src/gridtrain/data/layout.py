"""What each event becomes in a shard, checked against every input file before anything is written.

Conversion layer, pure apart from asking the readers about branch types: the resolved feature
columns (branches and derived features, ``Derived``), the jagged groups, the image tensors, the
regression targets and the event id. Every input (TTree or RNTuple) must give each branch the same
type and shape; the first one that does not stops the conversion with a message naming both
files, before any shard exists. Every expression (selection, targets, weights, derived features)
is checked to read each branch as it is: one number per event where it uses a number, a jagged
branch where it takes an element or a reduction.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from gridtrain.config import DatasetConfig, Sample
from gridtrain.data.branches import FlatBranch, InputReader
from gridtrain.data.selection import Lists, Selection
from gridtrain.errors import ConfigError, ConversionError
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
class Derived:
    """A derived feature: a column computed from branches by ``expression``, ``fill`` where the
    expression is undefined (an element past the end of a list, max or min of an empty one)."""

    name: str
    expression: Selection
    fill: float | None

    def values(self, arrays: Mapping[str, np.ndarray | Lists], events: int) -> np.ndarray:
        """The column for ``events`` events (float32; a comparison gives 0 or 1)."""
        with np.errstate(all="ignore"):
            result, undefined = self.expression.evaluate(arrays, events)
            values = result.astype(np.float32)
        if undefined is not None:
            assert self.fill is not None  # derived_features requires it where undefined can be
            values[undefined] = self.fill
        return values

    def record(self) -> dict[str, Any]:
        """What the manifest and export.json say of it."""
        return {"expr": self.expression.expression, "fill": self.fill}


@dataclass(frozen=True)
class Layout:
    """What each event becomes: feature columns (the derived ones in ``derived`` too), jagged
    groups, images, the event id, the regression targets' names (the ``target`` dataset's
    columns), and the jagged branches that expressions read as lists (``lists``)."""

    features: tuple[FlatBranch, ...]
    groups: tuple[tuple[str, tuple[str, ...], int, float], ...]
    event_id: tuple[str, ...]
    images: tuple[Image, ...] = ()
    targets: tuple[str, ...] = ()
    derived: tuple[Derived, ...] = ()
    lists: tuple[str, ...] = ()  # of the derived features, the selection and the targets

    def feature_branches(self) -> list[str]:
        """The branches the feature columns read: the plain features', then the per-event
        branches of the derived ones' expressions (their lists are in ``lists``)."""
        derived = {d.name for d in self.derived}
        names = [f.name for f in self.features if f.name not in derived]
        names += [n for d in self.derived for n in d.expression.numbers]
        return list(dict.fromkeys(names))

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


def derived_features(dataset: DatasetConfig) -> tuple[Derived, ...]:
    """The derived features, parsed; a syntax error, or an element or max/min of a list without
    a fill, is a ``ConfigError`` naming the feature."""
    derived = []
    for feature in dataset.derived:
        key = f"dataset.features {feature.name!r} expr"
        expression = Selection(feature.expr, key)
        if expression.undefinable and feature.fill is None:
            uses = ", ".join(expression.list_uses.values())
            raise ConfigError(
                f"{key} {feature.expr!r}: some events may have no {uses} (an element past the "
                "end of the list, or max/min of an empty one); give the feature's value for "
                f"them: {{name: {feature.name}, expr: {feature.expr!r}, fill: -1}} (a value "
                "outside its range)"
            )
        derived.append(Derived(feature.name, expression, feature.fill))
    return tuple(derived)


def check_expression(reader: InputReader, expression: Selection, role: str) -> None:
    """Every branch of ``expression`` is what it uses in this input: one number per event, or
    a jagged branch where it takes an element or len, sum, max, min."""
    where = f"{expression.key} {expression.expression!r}"
    for name in expression.numbers:
        try:
            width = reader.check_flat(name, role).width
        except ConversionError:
            if not _is_jagged(reader, name, role):
                raise
            raise ConversionError(
                f"{where}: {name!r} is jagged (a list per event) in {reader.path}; take an "
                f"element ({name}[0]) or reduce it (len({name}), sum({name}), max({name}), "
                f"min({name}))"
            ) from None
        if width != 1:
            raise ConversionError(
                f"{reader.path}: branch {name!r} ({role}) holds {width} numbers per event; an "
                "expression takes one number per event: list the branch under dataset.features "
                "for its columns, or name a per-event branch"
            )
    for name in expression.lists:
        try:
            reader.check_flat(name, role)
        except ConversionError as err:
            if not _is_jagged(reader, name, role):
                raise err from None  # no such branch (did you mean), or not numbers
            continue
        raise ConversionError(
            f"{where}: {expression.list_uses[name]!r} takes an element or a reduction of a list, "
            f"but {name!r} is one number per event in {reader.path}; write {name} itself "
            "(len, sum, max, min and an index are for jagged branches such as Jet_pt)"
        )


def _is_jagged(reader: InputReader, name: str, role: str) -> bool:
    """Whether ``name`` is a jagged branch (a list of numbers per event) in this input."""
    try:
        reader.check_jagged(name, role)
    except ConversionError:
        return False
    return True


def _check_derived_name(reader: InputReader, feature: Derived) -> None:
    """A derived feature's name is not a branch of the input (its column would pass for it)."""
    try:
        reader.check_flat(feature.name, "derived feature")
    except ConversionError:
        if not _is_jagged(reader, feature.name, "derived feature"):
            return
    raise ConversionError(
        f"dataset.features {feature.name!r} expr {feature.expression.expression!r}: "
        f"{reader.path} has a branch {feature.name!r}; give the derived feature a name of its "
        f"own (e.g. {feature.name}_derived), or list the branch itself"
    )


def check_layout(
    dataset: DatasetConfig,
    inputs: list[Input],
    selection: Selection | None,
    targets: list[Selection] | None = None,
    derived: tuple[Derived, ...] | None = None,
) -> Layout:
    """Check every input against the config; return the layout all of them share."""
    targets = targets if targets is not None else target_expressions(dataset.task)
    derived = derived if derived is not None else derived_features(dataset)
    by_name = {d.name: d for d in derived}
    features: tuple[FlatBranch, ...] = ()
    shapes: dict[str, tuple[tuple[int, ...], str]] = {}  # image branch -> (shape, first file)
    first = ""
    for item in inputs:
        r = item.reader
        for feature in derived:
            _check_derived_name(r, feature)
            check_expression(
                r, feature.expression, f"feature {feature.name!r} = {feature.expression.expression}"
            )
        these = tuple(
            FlatBranch(name, 1) if name in by_name else r.check_flat(name, "feature")
            for name in dataset.features
        )
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
        if selection is not None:
            check_expression(r, selection, "selection")
        for target, expression in zip(dataset.task.targets, targets, strict=True):
            check_expression(r, expression, f"target {target.name!r} = {expression.expression}")
    for branch in features:
        if branch.width > 1:
            log.info("feature %r is an array of %d values: one column each", branch.name,
                     branch.width)  # fmt: skip
    groups = tuple((g.name, g.branches, g.length, g.fill) for g in dataset.jagged)
    names = tuple(t.name for t in dataset.task.targets)
    expressions = [d.expression for d in derived] + targets + ([selection] if selection else [])
    lists = tuple(sorted({n for e in expressions for n in e.lists}))
    images = _images(dataset, shapes)
    return Layout(features, groups, dataset.event_id, images, names, derived, lists)


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
    names = layout.feature_branches() + list(layout.lists) + sorted(layout.jagged_names())
    names += sorted(layout.image_names())
    names += list(layout.event_id)  # and each sample's weight branches (gridtrain.data.samples)
    names += [s.label for s in dataset.samples if isinstance(s.label, str)]
    names += [n for expression in target_expressions(dataset.task) for n in expression.names]
    return sorted(set(names) | set(selection.names if selection else ()))
