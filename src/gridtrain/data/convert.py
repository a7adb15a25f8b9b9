"""ROOT TTrees to HDF5 training shards with a checksummed manifest.

The conversion layer: plans entry ranges, drives the reader (``rootio``), the pure array functions
(``arrays``, ``selection``) and the shard writer (``shards``), and commits the result atomically.

How it streams. The events of all samples are cut into steps of about ``step_events``; each step
takes from every sample a share proportional to the sample's size, so inputs ordered by sample
still give class-mixed shards. A step is permuted (seeded by the dataset seed and the step index)
and split into training and validation by a hash of the event id, then copied into preallocated
shard buffers. Full shards go to a writer thread, which compresses, checksums and accumulates the
training statistics while the main thread reads the next step; uproot decompresses baskets in a
thread pool. Memory is bounded by a step plus at most three shards, whatever the input size.

How it commits. Shards are written as ``.NAME.part``; only when every shard is complete are they
renamed, stale shards of an earlier run removed, and the manifest written last (also atomically).
A failed or interrupted run leaves no file under a final name and removes its parts.

One job of a grid-parallel conversion converts a ``FileGroup`` (``gridtrain.data.groups``): its
files or file slices, into the group's own folder, with the group's shuffle seed.
"""

from __future__ import annotations

import bisect
import logging
import math
import os
import queue
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gridtrain import __version__
from gridtrain.checksum import adler32_file
from gridtrain.config import DatasetConfig, Sample
from gridtrain.data.arrays import RunningStats, pad_group, validation_mask
from gridtrain.data.groups import FileGroup, FileSlice, group_dir
from gridtrain.data.manifest import (
    MANIFEST_NAME,
    SPLITS,
    Manifest,
    ShardEntry,
    SourceEntry,
    write_manifest,
)
from gridtrain.data.rootio import FlatBranch, TreeReader
from gridtrain.data.selection import Selection
from gridtrain.data.shards import write_shard
from gridtrain.errors import ConversionError

log = logging.getLogger(__name__)

_SHARD_NAME = re.compile(r"^(train|validation)-\d{5}\.h5$")
_PART_NAME = re.compile(r"^\.(train|validation)-\d{5}\.h5\.part$")
ProgressCallback = Callable[[int, int], None]
_PieceReader = Callable[["_Input", int, int], "_Piece"]


@dataclass(frozen=True)
class Layout:
    """What each event becomes: the resolved feature columns and the jagged groups."""

    features: tuple[FlatBranch, ...]
    groups: tuple[tuple[str, tuple[str, ...], int, float], ...]
    event_id: tuple[str, ...]

    @property
    def feature_columns(self) -> tuple[str, ...]:
        return tuple(c for f in self.features for c in f.columns())

    def row_shapes(self) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        shapes: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
        if self.feature_columns:
            shapes["features"] = ((len(self.feature_columns),), np.dtype(np.float32))
        for name, branches, length, _ in self.groups:
            shapes[name] = ((length, len(branches)), np.dtype(np.float32))
            shapes[f"{name}_count"] = ((), np.dtype(np.int32))
        shapes["label"] = ((), np.dtype(np.int32))
        shapes["weight"] = ((), np.dtype(np.float32))
        shapes["event_id"] = ((len(self.event_id) or 2,), np.dtype(np.uint64))
        return shapes


@dataclass
class _Input:
    sample: Sample
    sample_index: int
    reader: TreeReader
    offset: int  # where entry ``start`` of this file lies in the sample's concatenated entries
    start: int  # the file's entries this job reads: [start, stop)
    stop: int
    selected: int = 0

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
                reader = TreeReader(piece.path, sample.tree)
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


def _check_layout(
    dataset: DatasetConfig, inputs: list[list[_Input]], selection: Selection | None
) -> Layout:
    features: tuple[FlatBranch, ...] = ()
    jagged_names = {b for g in dataset.jagged for b in g.branches}
    for files in inputs:
        for item in files:
            r = item.reader
            these = tuple(r.check_flat(name, "feature") for name in dataset.features)
            if features and these != features:
                raise ConversionError(
                    f"{r.path}: feature branch shapes {these} differ from the first input's "
                    f"{features}; all inputs must share one layout"
                )
            features = these
            for group in dataset.jagged:
                for name in group.branches:
                    r.check_jagged(name, group.name)
            for name in dataset.event_id:
                r.check_flat(name, "event id")
            if dataset.weight:
                r.check_flat(dataset.weight, "weight")
            if isinstance(item.sample.label, str):
                r.check_flat(item.sample.label, f"label of sample {item.sample.name!r}")
            for name in selection.names if selection else ():
                if name in jagged_names:
                    raise ConversionError(
                        f"dataset.selection {dataset.selection!r}: {name!r} is jagged; cut on "
                        "per-event branches only"
                    )
                r.check_flat(name, "selection")
    groups = tuple((g.name, g.branches, g.length, g.fill) for g in dataset.jagged)
    return Layout(features, groups, dataset.event_id)


@dataclass
class _Piece:
    """Selected events of one file's entry range, as read: flat columns and unpadded groups."""

    entries: np.ndarray  # sample-level entry number of each event
    flat: dict[str, np.ndarray]  # branch -> N x width
    groups: dict[str, tuple[np.ndarray, list[np.ndarray]]]  # group -> (counts, channel contents)
    label: np.ndarray
    sample_index: int

    def __len__(self) -> int:
        return len(self.entries)

    def split(self, k: int) -> tuple[_Piece, _Piece]:
        """The first ``k`` events and the rest (views, no copies)."""
        heads, tails = {}, {}
        for name, (counts, contents) in self.groups.items():
            cut = int(counts[:k].sum())
            heads[name] = (counts[:k], [c[:cut] for c in contents])
            tails[name] = (counts[k:], [c[cut:] for c in contents])
        flat_head = {n: a[:k] for n, a in self.flat.items()}
        flat_tail = {n: a[k:] for n, a in self.flat.items()}
        return (
            _Piece(self.entries[:k], flat_head, heads, self.label[:k], self.sample_index),
            _Piece(self.entries[k:], flat_tail, tails, self.label[k:], self.sample_index),
        )


def _read_piece(
    item: _Input,
    start: int,
    stop: int,
    flat_names: list[str],
    layout: Layout,
    selection: Selection | None,
    pool: ThreadPoolExecutor,
) -> _Piece:
    """Read one file's entry range, every branch in parallel, and apply the selection."""
    r = item.reader
    flat_futures = {n: pool.submit(r.read_flat, n, start, stop) for n in flat_names}
    group_futures = {
        g: pool.submit(r.read_jagged, branches, g, start, stop)
        for g, branches, _, _ in layout.groups
    }
    flat = {n: f.result() for n, f in flat_futures.items()}
    groups = {}
    for g, future in group_futures.items():
        read = future.result()
        groups[g] = (read.counts, [read.contents[b] for b in read.contents])
    entries = np.arange(start, stop) + (item.offset - item.start)
    if selection is not None:
        keep = selection.mask({n: flat[n][:, 0] for n in selection.names})
        entries = entries[keep]
        flat = {n: a[keep] for n, a in flat.items()}
        for g, (counts, contents) in groups.items():
            inner = np.repeat(keep, counts)
            groups[g] = (counts[keep], [c[inner] for c in contents])
    item.selected += len(entries)
    label = item.sample.label
    if isinstance(label, str):
        labels = flat[label][:, 0].astype(np.int32)
    else:
        labels = np.full(len(entries), label, dtype=np.int32)
    return _Piece(entries, flat, groups, labels, item.sample_index)


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


def _assemble(pieces: list[_Piece], layout: Layout, weight: str | None) -> dict[str, np.ndarray]:
    """Pad and convert the pieces of one step straight into preallocated step arrays."""
    n = sum(len(p) for p in pieces)
    step = {
        name: np.empty((n, *shape), dtype=dtype)
        for name, (shape, dtype) in layout.row_shapes().items()
    }
    offset = 0
    for piece in pieces:
        rows = slice(offset, offset + len(piece))
        column = 0
        for branch in layout.features:
            step["features"][rows, column : column + branch.width] = piece.flat[branch.name]
            column += branch.width
        for name, _, length, fill in layout.groups:
            counts, contents = piece.groups[name]
            step[f"{name}_count"][rows] = pad_group(
                counts, contents, length, fill, step[name][rows]
            )
        step["label"][rows] = piece.label
        step["weight"][rows] = piece.flat[weight][:, 0] if weight else 1.0
        for k, name in enumerate(layout.event_id):
            step["event_id"][rows, k] = piece.flat[name][:, 0]
        if not layout.event_id:  # no id branches: the event's place in its sample is its id
            step["event_id"][rows, 0] = piece.sample_index
            step["event_id"][rows, 1] = piece.entries
        offset += len(piece)
    return step


@dataclass
class _Writer:
    """The writer thread: compresses, checksums and gathers statistics, off the read path."""

    outdir: Path
    dataset: DatasetConfig
    layout: Layout
    jobs: queue.Queue[tuple[str, int, dict[str, np.ndarray]] | None] = field(
        default_factory=lambda: queue.Queue(maxsize=1)
    )
    entries: dict[str, list[ShardEntry]] = field(default_factory=lambda: {s: [] for s in SPLITS})
    parts: list[Path] = field(default_factory=list)
    error: BaseException | None = None

    def __post_init__(self) -> None:
        self.feature_stats = RunningStats(len(self.layout.feature_columns))
        self.group_stats = {g[0]: RunningStats(len(g[1])) for g in self.layout.groups}
        self.thread = threading.Thread(target=self._run, name="gridtrain-shard-writer", daemon=True)
        self.thread.start()

    def submit(self, split: str, index: int, arrays: dict[str, np.ndarray]) -> None:
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
        columns = {"features": list(self.layout.feature_columns)}
        columns.update({g[0]: list(g[1]) for g in self.layout.groups})
        while (job := self.jobs.get()) is not None:
            if self.error is not None:
                continue
            split, index, arrays = job
            name = f"{split}-{index:05d}.h5"
            part = self.outdir / f".{name}.part"
            self.parts.append(part)
            try:
                write_shard(part, arrays, self.dataset.codec, self.dataset.chunk_events, columns)
                if split == "train":
                    self._accumulate(arrays)
                entry = ShardEntry(
                    name, len(arrays["label"]), part.stat().st_size, adler32_file(part)
                )
                self.entries[split].append(entry)
            except BaseException as err:  # handed to the main thread, which re-raises it
                self.error = err

    def _accumulate(self, arrays: dict[str, np.ndarray]) -> None:
        if self.layout.feature_columns:
            self.feature_stats.update(arrays["features"])
        for name, _, length, _ in self.layout.groups:
            valid = np.arange(length)[None, :] < arrays[f"{name}_count"][:, None]
            self.group_stats[name].update(arrays[name][valid])


class _ShardBuffer:
    """Preallocated arrays for the shard being filled for one split."""

    def __init__(self, split: str, layout: Layout, size: int, writer: _Writer) -> None:
        self.split, self.layout, self.size, self.writer = split, layout, size, writer
        self.index = 0
        self._new()

    def _new(self) -> None:
        self.fill = 0
        self.arrays = {
            name: np.empty((self.size, *shape), dtype=dtype)
            for name, (shape, dtype) in self.layout.row_shapes().items()
        }

    def add(self, step: dict[str, np.ndarray], rows: np.ndarray) -> None:
        taken = 0
        while taken < len(rows):
            k = min(self.size - self.fill, len(rows) - taken)
            chosen = rows[taken : taken + k]
            for name, array in step.items():
                np.take(array, chosen, axis=0, out=self.arrays[name][self.fill : self.fill + k])
            self.fill += k
            taken += k
            if self.fill == self.size:
                self.flush()

    def flush(self) -> None:
        if self.fill == 0:
            return
        arrays = {name: a[: self.fill] for name, a in self.arrays.items()}
        self.writer.submit(self.split, self.index, arrays)
        self.index += 1
        self._new()


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
            layout = _check_layout(dataset, inputs, selection)
            out.mkdir(parents=True, exist_ok=True)
            writer = _Writer(out, dataset, layout)
            try:
                _stream(dataset, inputs, layout, selection, writer, pool, progress, seed)
                writer.finish()
            except BaseException:
                writer.abort()
                _remove(writer.parts)
                raise
        finally:
            _close(inputs)
    if not writer.entries["train"] and not writer.entries["validation"] and file_group is None:
        raise ConversionError(
            f"dataset.selection {dataset.selection!r} keeps no event of "
            f"{sum(f.entries for files in inputs for f in files)}; loosen it"
        )
    manifest = _manifest(dataset, layout, inputs, writer)
    _commit(out, writer.parts, manifest)
    return manifest


def _stream(
    dataset: DatasetConfig,
    inputs: list[list[_Input]],
    layout: Layout,
    selection: Selection | None,
    writer: _Writer,
    pool: ThreadPoolExecutor,
    progress: ProgressCallback | None,
    seed: tuple[int, ...],
) -> None:
    sizes = [sum(f.entries for f in files) for files in inputs]
    total = sum(sizes)
    steps = max(1, math.ceil(total / dataset.step_events))
    buffers = {s: _ShardBuffer(s, layout, dataset.shard_events, writer) for s in SPLITS}
    names = _branch_names(dataset, layout, selection)  # basket boundaries are common to all of them
    jagged = {b for g in layout.groups for b in g[1]}
    flat_names = [n for n in names if n not in jagged]

    def read(item: _Input, start: int, stop: int) -> _Piece:
        return _read_piece(item, start, stop, flat_names, layout, selection, pool)

    streams = [_SampleStream(files, names, read) for files in inputs]

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
            if not any(len(p) for p in pieces):
                continue
            arrays = _assemble(pieces, layout, dataset.weight)
            is_validation = validation_mask(
                arrays["event_id"], dataset.validation_fraction, dataset.seed
            )
            order = np.random.default_rng([*seed, step]).permutation(len(is_validation))
            buffers["train"].add(arrays, order[~is_validation[order]])
            buffers["validation"].add(arrays, order[is_validation[order]])
    for buffer in buffers.values():
        buffer.flush()


def _branch_names(dataset: DatasetConfig, layout: Layout, selection: Selection | None) -> list[str]:
    names = [f.name for f in layout.features] + [b for g in layout.groups for b in g[1]]
    names += list(layout.event_id) + ([dataset.weight] if dataset.weight else [])
    names += [s.label for s in dataset.samples if isinstance(s.label, str)]
    return sorted(set(names) | set(selection.names if selection else ()))


def _manifest(
    dataset: DatasetConfig, layout: Layout, inputs: list[list[_Input]], writer: _Writer
) -> Manifest:
    stats: dict[str, object] = {}
    if layout.feature_columns:
        stats["features"] = writer.feature_stats.as_dict()
    for name, stat in writer.group_stats.items():
        stats[name] = stat.as_dict()
    return Manifest(
        name=dataset.name,
        gridtrain_version=__version__,
        config_hash=dataset.content_hash(),
        codec=dataset.codec,
        chunk_events=dataset.chunk_events,
        features=list(layout.feature_columns),
        jagged=[
            {"name": n, "branches": list(b), "length": length, "fill": fill, "count": f"{n}_count"}
            for n, b, length, fill in layout.groups
        ],
        event_id=list(layout.event_id) or ["sample_index", "entry"],
        weight=dataset.weight,
        split={
            "validation_fraction": dataset.validation_fraction,
            "seed": dataset.seed,
            "method": "splitmix64 hash of the event id columns salted with the seed",
        },
        stats=stats,
        sources=[
            SourceEntry(
                sample=f.sample.name,
                path=f.reader.path,
                tree=f.sample.tree,
                label=f.sample.label,
                entry_start=f.start,
                entry_stop=f.stop,
                selected=f.selected,
            )
            for files in inputs
            for f in files
        ],
        shards={s: sorted(writer.entries[s], key=lambda e: e.path) for s in SPLITS},
    )


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
