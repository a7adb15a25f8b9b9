"""ROOT TTrees and RNTuples to HDF5 training shards with a checksummed manifest.

The conversion layer: plans entry ranges, drives the readers (``rootio``: TTree or RNTuple, mixed
freely), the pure array functions (``arrays``, ``selection``), the layout checks (``layout``) and
the shard writer (``writer``, ``shards``), and commits the result atomically.

How it streams. The events of all samples are cut into steps of about ``step_events``; each step
takes from every sample a share proportional to the sample's size, so inputs ordered by sample
still give class-mixed shards. A step is split into training and validation by a hash of the
event id and permuted (seeded by the dataset seed and the step index); every event is then
written once, straight into its shuffled row of the step arrays (training rows first), jagged
groups padded on the way and images kept as tensors, and the training statistics are taken from
the unpadded values. Shard buffers fill from the step by contiguous copies; full shards go to a
writer thread, which compresses and checksums while the main thread assembles the next step and
a read-ahead thread reads the one after it, every branch of a range on a pool of threads.
Memory is bounded by a step plus at most three shards, whatever the input size.

How it commits. Shards are written as ``.NAME.part``; only when every shard is complete are they
renamed, stale shards of an earlier run removed, and the manifest written last (also atomically).
A failed or interrupted run leaves no file under a final name and removes its parts.

One job of a grid-parallel conversion converts a ``FileGroup`` (``gridtrain.data.groups``): its
files or file slices, into the group's own folder, with the group's shuffle seed.

The task. Each event's ``label`` is its sample's class index or its label branch's value (checked
to be in 0 .. K-1 for a multiclass task); a regression also stores ``target`` (N x T float32, in
physical units) from the targets' expressions, and an event with a NaN or infinite target stops
the conversion or, with ``task.on_bad_target: drop``, is dropped and counted. The manifest
records the task with the targets' training-split statistics, the weights of every sample and
class, and the class factors (``gridtrain.data.manifest``).
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gridtrain import __version__
from gridtrain.config import DatasetConfig, Sample
from gridtrain.data.arrays import clip_mask, scatter_group, validation_mask
from gridtrain.data.branches import InputReader
from gridtrain.data.derived import complete_columns
from gridtrain.data.events import feature_table, read_columns
from gridtrain.data.groups import FileGroup, FileSlice, group_dir
from gridtrain.data.layout import (
    Input,
    Layout,
    branch_names,
    check_layout,
    check_memory,
    derived_features,
    target_expressions,
)
from gridtrain.data.manifest import (
    MANIFEST_NAME,
    SPLITS,
    Manifest,
    SourceEntry,
    class_factors,
    normalisation_record,
    write_manifest,
)
from gridtrain.data.reweight import ReweightHistograms, feature_columns, reweight_record
from gridtrain.data.rootio import open_input
from gridtrain.data.samples import SampleWeight, aliased, normalised, sample_weights
from gridtrain.data.selection import Selection
from gridtrain.data.writer import Arrays, ShardBuffer, Statistics, WeightTally, Writer
from gridtrain.errors import ConversionError
from gridtrain.task import Task

log = logging.getLogger(__name__)

_SHARD_NAME = re.compile(r"^(train|validation)-\d{5}\.h5$")
_PART_NAME = re.compile(r"^\.(train|validation)-\d{5}\.h5\.part$")
ProgressCallback = Callable[[int, int], None]
_PieceReader = Callable[["_Input", int, int], "_Piece"]


@dataclass
class _Input:
    sample: Sample
    sample_index: int
    reader: InputReader
    offset: int  # where entry ``start`` of this file lies in the sample's concatenated entries
    start: int  # the file's entries this job reads: [start, stop)
    stop: int
    selected: int = 0
    non_finite: int = 0  # events dropped for a NaN or infinite target (on_bad_target: drop)
    warned: bool = False  # a binary label branch's values outside 0 and 1 were reported

    @property
    def entries(self) -> int:
        return self.stop - self.start


def _open_inputs(dataset: DatasetConfig, file_group: FileGroup | None) -> list[list[_Input]]:
    inputs: list[list[_Input]] = []
    try:
        for sample_index, sample in enumerate(dataset.samples):
            files: list[_Input] = []
            inputs.append(files)
            offset = 0
            slices = (
                file_group.samples[sample_index]
                if file_group is not None
                else tuple(FileSlice(path) for path in sample.files)
            )
            for piece in slices:
                reader = aliased(open_input(piece.path, sample.tree), sample)
                start, stop = piece.entry_range(reader.entries)
                files.append(_Input(sample, sample_index, reader, offset, start, stop))
                offset += stop - start
            if not any(f.reader.entries for f in files):
                raise ConversionError(
                    f"{', '.join(s.path for s in slices)}: tree {sample.tree!r} of sample "
                    f"{sample.name!r} has no entries; check the files, or drop the sample"
                )
    except BaseException:
        _close(inputs)
        raise
    return inputs


def _close(inputs: list[list[_Input]]) -> None:
    for files in inputs:
        for item in files:
            item.reader.close()


@dataclass
class _Piece:
    """Selected events of one file's entry range, as read: flat columns, unpadded groups and
    image tensors."""

    entries: np.ndarray  # sample-level entry number of each event
    flat: dict[str, np.ndarray]  # branch -> N x width
    groups: dict[str, tuple[np.ndarray, list[np.ndarray]]]  # group -> (counts, channel contents)
    images: dict[str, np.ndarray]  # branch -> N x shape
    label: np.ndarray
    sample_index: int
    target: np.ndarray  # N x T float32 (T = 0 for a classifier)
    weight: np.ndarray  # N float32: the sample's weight, normalisation included

    def __len__(self) -> int:
        return len(self.entries)

    def split(self, k: int) -> tuple[_Piece, _Piece]:
        """The first ``k`` events and the rest (views, no copies)."""
        heads, tails = {}, {}
        for name, (counts, contents) in self.groups.items():
            cut = int(counts[:k].sum())
            heads[name] = (counts[:k], [c[:cut] for c in contents])
            tails[name] = (counts[k:], [c[cut:] for c in contents])
        head = {n: a[:k] for n, a in self.flat.items()}
        tail = {n: a[k:] for n, a in self.flat.items()}
        image_head = {n: a[:k] for n, a in self.images.items()}
        image_tail = {n: a[k:] for n, a in self.images.items()}
        entries, label, target, index = self.entries, self.label, self.target, self.sample_index
        weight = self.weight
        return (
            _Piece(entries[:k], head, heads, image_head, label[:k], index, target[:k], weight[:k]),
            _Piece(entries[k:], tail, tails, image_tail, label[k:], index, target[k:], weight[k:]),
        )


@dataclass(frozen=True)
class _TaskReading:
    """What reading needs of the task: the targets' expressions and what to do with bad ones."""

    task: Task
    targets: list[Selection]
    on_bad_target: str


def _read_piece(
    item: _Input,
    start: int,
    stop: int,
    flat_names: list[str],
    layout: Layout,
    selection: Selection | None,
    pool: ThreadPoolExecutor,
    reading: _TaskReading,
    weight: SampleWeight,
) -> _Piece:
    """Read one file's entry range, every branch in parallel, compute the derived features, the
    targets and the weights, apply the selection, and compute the labels."""
    read = read_columns(item.reader, layout, flat_names, start, stop, pool)
    flat, events = read.flat, stop - start
    arrays = complete_columns(
        item.reader, layout, flat, read.groups, start, stop, pool, weight.lists
    )
    target = np.empty((events, len(reading.targets)), dtype=np.float32)
    for k, expression in enumerate(reading.targets):
        target[:, k] = expression.values(arrays, events)
    values, undefined = weight.evaluate(arrays, events)
    entries = np.arange(start, stop) + (item.offset - item.start)
    piece = _Piece(
        entries, flat, read.groups, read.images, entries, item.sample_index, target, values
    )
    if selection is not None:
        keep = selection.mask(arrays)
        piece = _keep(piece, keep)
        undefined = undefined[keep] if undefined is not None else None
    if undefined is not None and undefined.any():
        raise ConversionError(
            f"{item.reader.path}: sample {item.sample.name!r}: its weight "
            f"{weight.definition!r} is undefined for {int(undefined.sum())} of {len(piece)} "
            f"selected events in entries {start}-{stop} (an element past the end of a list, or "
            "max/min of an empty one); cut those events with dataset.selection: "
            f"{weight.guard()}"
        )
    item.selected += len(piece)
    piece.label = _labels(item, piece, reading.task)
    if reading.targets:
        finite = np.isfinite(piece.target).all(axis=1)
        bad = len(piece) - int(finite.sum())
        if bad and reading.on_bad_target == "refuse":
            broken = ~np.isfinite(piece.target).all(axis=0)
            names = [t.name for t, b in zip(reading.task.targets, broken, strict=True) if b]
            raise ConversionError(
                f"{item.reader.path}: sample {item.sample.name!r}: {bad} of {len(piece)} "
                f"selected events in entries {start}-{stop} have a NaN or infinite target "
                f"({', '.join(names)}{_undefined_note(reading.targets)}); correct the inputs, "
                "cut those events with dataset.selection, or set task.on_bad_target: drop to "
                "drop them (counted in the manifest)"
            )
        if bad:
            item.non_finite += bad
            piece = _keep(piece, finite)
    return piece


def _undefined_note(targets: list[Selection]) -> str:
    """Why a target with an element or max/min of a list may be NaN."""
    if not any(t.undefinable for t in targets):
        return ""
    return "; NaN also where an element is past the end of a list or max/min has an empty one"


def _keep(piece: _Piece, keep: np.ndarray) -> _Piece:
    """The events of ``piece`` where ``keep`` is true."""
    groups = {}
    for g, (counts, contents) in piece.groups.items():
        inner = np.repeat(keep, counts)
        groups[g] = (counts[keep], [c[inner] for c in contents])
    return _Piece(
        piece.entries[keep],
        {n: a[keep] for n, a in piece.flat.items()},
        groups,
        {n: a[keep] for n, a in piece.images.items()},
        piece.label[keep],
        piece.sample_index,
        piece.target[keep],
        piece.weight[keep],
    )


def _labels(item: _Input, piece: _Piece, task: Task) -> np.ndarray:
    """The class index of each event: the sample's, or its label branch's value (0 for a
    regression sample without one)."""
    label = item.sample.label
    if not isinstance(label, str):
        return np.full(len(piece), label or 0, dtype=np.int32)
    values = piece.flat[label][:, 0]
    labels = values.astype(np.int32)
    outside = (labels < 0) | (labels >= max(len(task.classes), 1)) | (labels != values)
    if task.is_classifier and outside.any():
        first = int(np.flatnonzero(outside)[0])
        entry = int(piece.entries[first]) - item.offset + item.start  # the file's own entry
        where = (
            f"{item.reader.path}: label branch {label!r} of sample {item.sample.name!r} has "
            f"value {values[first]} in entry {entry}"
        )
        if task.kind == "multiclass":
            raise ConversionError(
                f"{where} ({int(outside.sum())} such events here); the multiclass task's "
                f"labels are 0 .. {len(task.classes) - 1} ({', '.join(task.classes)}): "
                "correct the branch or cut those events with dataset.selection"
            )
        if not item.warned:  # binary: as before, but said
            item.warned = True
            log.warning("%s; a binary task's labels are 0 and 1", where)
    return labels


class _SampleStream:
    """One sample's files, read in basket-aligned ranges and handed out by entry range.

    A step asks for the sample's entries below ``hi``; the stream reads whole baskets up to the
    first common basket boundary at or past ``hi`` and keeps the rest for the next step, so no
    basket is decompressed twice and memory holds at most a step plus one cluster.
    """

    def __init__(self, files: list[_Input], names: list[str], read: _PieceReader) -> None:
        self.files = files
        self.read = read
        self.bounds = [item.reader.boundaries(names) for item in files]
        self.read_to = 0
        self.pending: list[tuple[int, _Piece]] = []  # (sample entry where its range ends, piece)

    def take(self, hi: int) -> list[_Piece]:
        while self.read_to < hi:
            index = next(i for i, f in enumerate(self.files) if self.read_to < f.offset + f.entries)
            item, bounds = self.files[index], self.bounds[index]
            # In the file's own entries: read up to the first basket boundary at or past hi.
            target = item.start + min(hi - item.offset, item.entries)
            stop = min(bounds[bisect.bisect_left(bounds, target)], item.stop)
            piece = self.read(item, self.read_to - item.offset + item.start, stop)
            self.read_to = item.offset + stop - item.start
            self.pending.append((self.read_to, piece))
        out = []
        while self.pending:
            end, piece = self.pending[0]
            if end <= hi:
                out.append(piece)
                self.pending.pop(0)
                continue
            head, tail = piece.split(int(np.searchsorted(piece.entries, hi)))
            out.append(head)
            self.pending[0] = (end, tail)
            break
        return out


def _event_ids(pieces: list[_Piece], layout: Layout, n: int) -> np.ndarray:
    """The step's event id rows in reading order: the id branches, or (sample index, entry)."""
    ids = np.empty((n, len(layout.event_id) or 2), dtype=np.uint64)
    offset = 0
    for piece in pieces:
        rows = slice(offset, offset + len(piece))
        for k, name in enumerate(layout.event_id):
            ids[rows, k] = piece.flat[name][:, 0]
        if not layout.event_id:  # no id branches: the event's place in its sample is its id
            ids[rows, 0] = piece.sample_index
            ids[rows, 1] = piece.entries
        offset += len(piece)
    return ids


def _assemble(
    pieces: list[_Piece],
    layout: Layout,
    ids: np.ndarray,
    destination: np.ndarray,
    n_train: int,
    stats: Statistics,
    tally: WeightTally,
) -> Arrays:
    """Write every event of the step once, into row ``destination[i]`` of new step arrays.

    Training rows come first (``destination < n_train``). Jagged groups are padded on the way;
    their statistics are taken from the training events' unpadded contents, those of the
    features and images from the training rows.
    """
    n = len(destination)
    step = {
        name: np.empty((n, *shape), dtype=dtype)
        for name, (shape, dtype) in layout.row_shapes().items()
    }
    step["event_id"][destination] = ids
    for name, _, _, fill in layout.groups:
        step[name].fill(fill)
    offset = 0
    for piece in pieces:
        rows = destination[offset : offset + len(piece)]
        offset += len(piece)
        if layout.features:
            step["features"][rows] = feature_table(piece.flat, layout)
        train = rows < n_train
        for name, _, length, _ in layout.groups:
            counts, contents = piece.groups[name]
            step[f"{name}_count"][rows] = scatter_group(counts, contents, length, rows, step[name])
            stats.add_group(name, _training_contents(counts, contents, length, train))
        for image in layout.images:
            if image.channels == 1:
                step[image.name][rows] = piece.images[image.branches[0]]
            else:
                for channel, name in enumerate(image.branches):
                    step[image.name][rows, ..., channel] = piece.images[name]
        step["label"][rows] = piece.label
        step["weight"][rows] = piece.weight
        if layout.targets:
            step["target"][rows] = piece.target
        tally.add(piece.sample_index, piece.label, step["weight"][rows], train)
    if layout.features:
        stats.add_features(step["features"][:n_train])
    if layout.targets:
        stats.add_target(step["target"][:n_train])
    for image in layout.images:
        stats.add_image(image, step[image.name][:n_train])
    return step


def _training_contents(
    counts: np.ndarray, contents: list[np.ndarray], length: int, train: np.ndarray
) -> list[np.ndarray]:
    """The entries of the training events that padding keeps (the first ``length`` of each)."""
    keep = clip_mask(counts, length)
    if keep is None and train.all():
        return contents
    entries = np.repeat(train, counts)
    if keep is not None:
        entries &= keep
    return [c[entries] for c in contents]


def convert(
    dataset: DatasetConfig,
    outdir: str | Path | None = None,
    progress: ProgressCallback | None = None,
    threads: int | None = None,
    file_group: FileGroup | None = None,
) -> Manifest:
    """Convert the samples of ``dataset`` into shards and a manifest in ``outdir``; return it.

    With ``file_group`` only that group's files are converted, by default into its folder below
    ``dataset.outdir``; a group whose events the selection removes all of gets a manifest without
    shards (``gridtrain.data.gather`` refuses a dataset where every group is empty).
    """
    if outdir is None:
        outdir = (
            dataset.outdir if file_group is None else group_dir(dataset.outdir, file_group.index)
        )
    out = Path(outdir)
    selection = Selection(dataset.selection) if dataset.selection else None
    derived = derived_features(dataset)
    weights = sample_weights(dataset)
    reading = _TaskReading(dataset.task, target_expressions(dataset.task), dataset.on_bad_target)
    threads = threads or min(4, os.cpu_count() or 1)
    seed = file_group.shuffle_seed if file_group is not None else (dataset.seed,)
    if file_group is not None:
        log.info(
            "converting group %d of %d: %d files into %s",
            file_group.index, file_group.count, len(file_group.paths), out,
        )  # fmt: skip
    with ThreadPoolExecutor(threads, thread_name_prefix="gridtrain-read") as pool:
        inputs = _open_inputs(dataset, file_group)
        try:
            checked = [Input(f.sample, f.reader) for files in inputs for f in files]
            layout = check_layout(dataset, checked, selection, reading.targets, derived)
            for item in (f for files in inputs for f in files):
                weights[item.sample_index].check(item.reader)
            check_memory(dataset, layout)
            reweighting = _reweighting(dataset, layout)
            weights = [normalised(w, dataset.lumi) for w in weights]
            out.mkdir(parents=True, exist_ok=True)
            writer = Writer(out, dataset, layout)
            stats = Statistics(layout)
            tally = WeightTally(len(dataset.samples), len(dataset.task.classes))
            try:
                _stream(
                    dataset, inputs, layout, (selection, reading, weights), writer,
                    (stats, tally), pool, progress, seed, reweighting,
                )  # fmt: skip
                writer.finish()
                if writer.entries["train"] or writer.entries["validation"]:
                    if file_group is None:
                        check_classes(dataset, tally.class_events())
                    manifest = _manifest(dataset, layout, inputs, writer, (stats, tally), weights)
                    _add_reweight(manifest, reweighting, file_group is None)
            except BaseException:
                writer.abort()
                _remove(writer.parts)
                raise
        finally:
            _close(inputs)
    if not writer.entries["train"] and not writer.entries["validation"]:
        if file_group is None:
            raise ConversionError(
                f"dataset.selection {dataset.selection!r} keeps no event of "
                f"{sum(f.entries for files in inputs for f in files)}; loosen it"
            )
        manifest = _manifest(dataset, layout, inputs, writer, (stats, tally), weights)
        _add_reweight(manifest, reweighting, False)
    _commit(out, writer.parts, manifest)
    warn_negative_weights(manifest)
    return manifest


def check_classes(dataset: DatasetConfig, events: Sequence[float] | np.ndarray) -> None:
    """Refuse a multiclass dataset in which a class has no event (warn for a binary one)."""
    task = dataset.task
    for index, name in enumerate(task.classes):
        if events[index] > 0:
            continue
        samples = [s.name for s in dataset.samples if s.label == index]
        branches = [s.name for s in dataset.samples if isinstance(s.label, str)]
        sources = [f"samples {', '.join(map(repr, samples))} give none"] if samples else []
        if branches:
            sources.append(
                f"the label branches of {', '.join(map(repr, branches))} never give {index}"
            )
        source = " and ".join(sources) or f"no sample has class: {name}"
        message = (
            f"task.classes: class {name!r} (label {index}) has no events: {source}"
            + (f" after dataset.selection {dataset.selection!r}" if dataset.selection else "")
            + "; check the files and the selection, or remove the class from task.classes"
        )
        if task.kind == "multiclass":
            raise ConversionError(message)
        if dataset.task != Task() or samples:
            log.warning(message)


def warn_negative_weights(manifest: Manifest) -> None:
    """Name every sample with negative weights, their count and share, in a warning."""
    for name, record in manifest.weights.get("samples", {}).items():
        if record["negative_events"]:
            log.warning(
                "sample %r: %d of %d events have negative weights, %.1f%% of its sum of "
                "|weights| (sum %g, negative sum %g); training treats them as "
                "train.negative_weights says",
                name, record["negative_events"], record["events"],
                100 * record["negative_share"], record["sum"], record["negative_sum"],
            )  # fmt: skip


def _stream(
    dataset: DatasetConfig,
    inputs: list[list[_Input]],
    layout: Layout,
    reads: tuple[Selection | None, _TaskReading, list[SampleWeight]],
    writer: Writer,
    tallies: tuple[Statistics, WeightTally],
    pool: ThreadPoolExecutor,
    progress: ProgressCallback | None,
    seed: tuple[int, ...],
    reweighting: _Reweighting | None = None,
) -> None:
    selection, reading, weights = reads
    stats, tally = tallies
    sizes = [sum(f.entries for f in files) for files in inputs]
    total = sum(sizes)
    steps = max(1, math.ceil(total / dataset.step_events))
    buffers = {s: ShardBuffer(s, layout, dataset.shard_events, writer) for s in SPLITS}
    common = branch_names(dataset, layout, selection)
    # Each sample's branches: a weight may read branches that other samples' files lack.
    names = [sorted(set(common) | set(w.names)) for w in weights]  # basket boundaries of each
    tensors = layout.jagged_names() | layout.image_names() | set(layout.lists)
    flat_names = [
        [n for n in these if n not in tensors and n not in w.lists]
        for these, w in zip(names, weights, strict=True)
    ]

    def read(item: _Input, start: int, stop: int) -> _Piece:
        index = item.sample_index
        return _read_piece(
            item, start, stop, flat_names[index], layout, selection, pool, reading, weights[index]
        )

    streams = [
        _SampleStream(files, these, read) for files, these in zip(inputs, names, strict=True)
    ]

    def take(step: int) -> list[_Piece]:
        return [
            p
            for st, n in zip(streams, sizes, strict=True)
            for p in st.take(n * (step + 1) // steps)
        ]

    # Step s + 1 is read while step s is assembled and handed to the writer.
    with ThreadPoolExecutor(1, thread_name_prefix="gridtrain-read-ahead") as ahead:
        upcoming = ahead.submit(take, 0)
        for step in range(steps):
            pieces = upcoming.result()
            if step + 1 < steps:
                upcoming = ahead.submit(take, step + 1)
            if progress is not None:
                progress(sum(n * (step + 1) // steps for n in sizes), total)
            n = sum(len(p) for p in pieces)
            if n == 0:
                continue
            ids = _event_ids(pieces, layout, n)
            is_validation = validation_mask(ids, dataset.validation_fraction, dataset.seed)
            order = np.random.default_rng([*seed, step]).permutation(n)
            ordered = np.concatenate([order[~is_validation[order]], order[is_validation[order]]])
            destination = np.empty(n, dtype=np.int64)
            destination[ordered] = np.arange(n)
            n_train = n - int(is_validation.sum())
            arrays = _assemble(pieces, layout, ids, destination, n_train, stats, tally)
            if reweighting is not None:  # the training rows' variables, classes and weights
                columns, histograms = reweighting
                histograms.add(
                    arrays["features"][:n_train, columns],
                    arrays["label"][:n_train],
                    arrays["weight"][:n_train],
                )
            del pieces
            buffers["train"].add(arrays, 0, n_train)
            buffers["validation"].add(arrays, n_train, n)
    for buffer in buffers.values():
        buffer.flush()


def _manifest(
    dataset: DatasetConfig,
    layout: Layout,
    inputs: list[list[_Input]],
    writer: Writer,
    tallies: tuple[Statistics, WeightTally],
    weights: list[SampleWeight],
) -> Manifest:
    stats, tally = tallies
    task = dataset.task
    if task.targets and stats.target.count:  # a group without training events keeps 0 and 1
        task = task.with_statistics(stats.target.mean.tolist(), stats.target.std.tolist())
    samples = [s.name for s in dataset.samples]
    non_finite = None
    if task.targets:
        non_finite = [sum(f.non_finite for f in files) for files in inputs]
    record = tally.record(dataset.weight, samples, task.classes, non_finite)
    if dataset.lumi is not None or any(_own_weight(s) for s in dataset.samples):
        own = {w.sample.name: w.record(dataset.lumi) for w in weights}
        counts = record["samples"]
        assert isinstance(counts, dict)
        record["normalisation"] = normalisation_record(dataset.lumi, own, counts)
    return Manifest(
        name=dataset.name,
        gridtrain_version=__version__,
        config_hash=dataset.content_hash(),
        codec=dataset.codec,
        chunk_events=dataset.chunk_events,
        features=list(layout.feature_columns),
        derived={d.name: d.record() for d in layout.derived},
        jagged=[
            {"name": n, "branches": list(b), "length": length, "fill": fill, "count": f"{n}_count"}
            for n, b, length, fill in layout.groups
        ],
        images=[
            {
                "name": i.name,
                "branches": list(i.branches),
                "shape": list(i.shape),
                "statistics": i.statistics,
            }
            for i in layout.images
        ],
        event_id=list(layout.event_id) or ["sample_index", "entry"],
        weight=dataset.weight,
        split={
            "validation_fraction": dataset.validation_fraction,
            "seed": dataset.seed,
            "method": "splitmix64 hash of the event id columns salted with the seed",
        },
        stats=stats.as_dict(),
        sources=[
            SourceEntry(
                sample=f.sample.name,
                path=f.reader.path,
                tree=f.sample.tree,
                label=f.sample.label,
                entry_start=f.start,
                entry_stop=f.stop,
                selected=f.selected,
                kind=f.reader.kind,
            )
            for files in inputs
            for f in files
        ],
        shards={s: sorted(writer.entries[s], key=lambda e: e.path) for s in SPLITS},
        task=task.to_dict(),
        weights=record,
        class_factors=_factors(record, task, any(writer.entries["train"])),
    )


_Reweighting = tuple[list[int], ReweightHistograms]  # the variables' feature columns, histograms


def _reweighting(dataset: DatasetConfig, layout: Layout) -> _Reweighting | None:
    """The histograms ``dataset.reweight`` fills, with its variables' columns: checked to be
    flat features before anything is written."""
    if dataset.reweight is None:
        return None
    jagged = sorted(layout.jagged_names() | {g[0] for g in layout.groups})
    columns = feature_columns(dataset.reweight, layout.feature_columns, jagged)
    return columns, ReweightHistograms(dataset.reweight, dataset.task.classes)


def _add_reweight(manifest: Manifest, reweighting: _Reweighting | None, whole: bool) -> None:
    """Record the reweighting in ``manifest.weights`` and balance the reweighted classes;
    ``whole``: the whole dataset (not a group of a grid-parallel conversion, whose weights
    ``gather`` computes from every group's histograms)."""
    if reweighting is None or not manifest.weights:
        return
    manifest.weights["reweight"] = reweight_record(reweighting[1], strict=whole)
    task = manifest.learning_task()
    manifest.class_factors = _factors(manifest.weights, task, any(manifest.shards["train"]))
    record = manifest.weights["reweight"]["weights"]["keep"]
    for name, applied in record.items():
        if applied["capped_events"] or applied["zero_weight_events"]:
            log.info(
                "dataset.reweight: class %r: %d training events capped at weight %g, %d "
                "weighted 0 (in bins the target leaves empty or the class has no weight; "
                "negative weights kept)",
                name, applied["capped_events"], manifest.weights["reweight"]["max_weight"],
                applied["zero_weight_events"],
            )  # fmt: skip


def _own_weight(sample: Sample) -> bool:
    """The sample says something of its weight: the manifest records its normalisation."""
    return sample.data or sample.weight is not None or sample.xsec is not None


def _factors(weights: dict[str, object], task: Task, trained: bool) -> list[float]:
    """The class factors; a group of a grid-parallel conversion without training events has
    all 1 (gather computes them for the whole dataset)."""
    return class_factors(weights, task.classes, task.balance and trained)


def _commit(out: Path, parts: list[Path], manifest: Manifest) -> None:
    # The old manifest goes first, so no moment exists where it names a mix of old and new shards.
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    final = set()
    for part in parts:
        name = part.name[1 : -len(".part")]
        part.replace(out / name)
        final.add(name)
    remove_stale_shards(out, final)
    write_manifest(manifest, out)
    log.info(
        "wrote %d training and %d validation events in %d shards and %s",
        manifest.events("train"),
        manifest.events("validation"),
        len(parts),
        out / MANIFEST_NAME,
    )


def remove_stale_shards(out: Path, keep: set[str]) -> None:
    """Remove shards in ``out`` not named in ``keep`` (an earlier, larger run's) and parts."""
    for stale in out.iterdir():
        if (_SHARD_NAME.match(stale.name) and stale.name not in keep) or _PART_NAME.match(
            stale.name
        ):
            stale.unlink()


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
