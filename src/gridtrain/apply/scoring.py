"""One input file scored block by block, in entry order, into its scores file.

Layer: apply, the pipeline of one file. The run's dataset section (``RUN_DIR/config.yaml``) says
which branches make the inputs; the file is opened and checked as conversion checks an input
(``gridtrain.data.rootio``, ``gridtrain.data.events.input_layout``: a missing tree or branch is
one line naming the file), its entries are read in basket-aligned blocks through conversion's own
reading, derived features and padding (``gridtrain.data.events``, ``gridtrain.data.derived``), the
next block read while the model scores this one, and every event is scored: the dataset's
selection is not applied. With ``selection`` the events it would keep are flagged in a
``selected`` branch (1 kept, 0 rejected) and still scored, so the scores file keeps one entry per
input entry.
"""

from __future__ import annotations

import bisect
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from gridtrain.apply.engines import Engine, ModelInput, RunModels, load_engine
from gridtrain.apply.outputs import (
    ENTRY,
    FOLD,
    SELECTED,
    Block,
    Request,
    finished,
    output_name,
    score_branches,
    write_scores,
)
from gridtrain.config import DatasetConfig
from gridtrain.data.branches import InputReader
from gridtrain.data.derived import complete_columns
from gridtrain.data.events import Columns, input_layout, read_columns, shard_arrays
from gridtrain.data.folds import fold_of
from gridtrain.data.layout import Layout
from gridtrain.data.rootio import open_input
from gridtrain.data.selection import Selection
from gridtrain.errors import ApplyError, ConversionError
from gridtrain.models.spec import COUNT_SUFFIX, FEATURES
from gridtrain.rundir import RunDir

log = logging.getLogger(__name__)

Arrays = dict[str, Any]  # what expressions evaluate on: numbers per event, and Lists
BLOCK_EVENTS = 1 << 14  # entries read and scored at a time (about 20 MB of the toy's inputs)
Progress = Callable[[int], None]  # events just scored
# The readers' advice for a branch an input lacks speaks of conversion's config; here the run's
# dataset section fixes the branches, so the file is what is wrong.
_CONVERSION_ADVICE = "every input file needs it: drop this file or the name from the config. "


@dataclass(frozen=True)
class ApplySettings:
    """Everything a process needs to score files (picklable: handed to ``--jobs`` processes)."""

    model: RunModels
    out: Path
    tree: str | None = None  # None: the run's dataset.tree
    selection: bool = False
    keep: tuple[str, ...] = ()
    format: str = "ttree"
    threads: int = 1
    overwrite: bool = False
    block_events: int = BLOCK_EVENTS


@dataclass(frozen=True)
class FileResult:
    input: str
    output: Path
    entries: int
    skipped: bool  # already finished and verified
    seconds: float


def run_dataset(run_dir: Path) -> DatasetConfig:
    """The dataset section the run was trained on (its ``config.yaml``)."""
    files = RunDir(run_dir)
    try:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 20 times faster
        return DatasetConfig.from_config(yaml.load(files.config.read_text(), Loader=loader))
    except (OSError, KeyError, TypeError) as err:
        raise ApplyError(
            f"{files.config}: no dataset section to read the inputs by ({err})"
        ) from None


class Scorer:
    """Scores files with a run's model (or a k-fold run's, each event by the fold model that
    never saw it); the models are loaded on the first file that needs them."""

    def __init__(self, settings: ApplySettings) -> None:
        self.settings = settings
        self.dataset = run_dataset(settings.model.run_dir)
        self.tree = settings.tree or self.dataset.samples[0].tree
        self.selection: Selection | None = None
        if settings.selection:
            if not self.dataset.selection:
                raise ApplyError(
                    f"--selection: the run's dataset has no selection "
                    f"({RunDir(settings.model.run_dir).config}); leave --selection out"
                )
            self.selection = Selection(self.dataset.selection)
        self.scores = score_branches(self.dataset.task)
        self._engines: list[Engine] = []

    @property
    def engines(self) -> list[Engine]:
        if not self._engines:
            threads = self.settings.threads
            self._engines = [load_engine(m, threads) for m in self.settings.model.models]
        return self._engines

    def open(self, path: str) -> tuple[InputReader, Layout]:
        """Open ``path``'s tree and check it as conversion checks an input; ``ApplyError``
        naming the file for a missing file, tree or branch."""
        try:
            reader = open_input(path, self.tree)
        except ConversionError as err:
            hint = "; name another tree with --tree" if "no TTree or RNTuple" in str(err) else ""
            message = str(err).removesuffix("; check dataset.samples[].files")
            raise ApplyError(f"{message}{hint}") from None
        try:
            layout = input_layout(self.dataset, reader, self.selection)
            for name in self.settings.keep:
                reader.check_flat(name, "--keep")
        except ConversionError as err:
            reader.close()
            raise ApplyError(str(err).replace(_CONVERSION_ADVICE, "")) from None
        except BaseException:
            reader.close()
            raise
        return reader, layout

    def request(self, path: str, reader: InputReader, layout: Layout) -> Request:
        ids = list(layout.event_id) or [ENTRY]
        extra = [SELECTED] if self.selection is not None else []
        extra += [FOLD] if self.settings.model.folds is not None else []
        branches = [*ids, *self.scores, *extra]
        branches += [name for name in self.settings.keep if name not in branches]
        if len(set(branches)) != len(branches) or set(self.settings.keep) & {*self.scores, *extra}:
            raise ApplyError(
                f"--keep {' '.join(self.settings.keep)}: a kept branch takes the name of a score "
                f"branch ({', '.join(self.scores + extra)}); keep it from the input as a friend"
            )
        return Request(
            path.rstrip("/").rsplit("/", 1)[-1],
            self.tree,
            reader.entries,
            self.settings.model.engine,
            self.settings.model.sha256,
            self.dataset.selection if self.selection is not None else None,
            tuple(branches),
            self.settings.format,
        )

    def score_file(self, path: str, progress: Progress | None = None) -> FileResult:
        began = time.perf_counter()
        final = self.settings.out / output_name(path)
        reader, layout = self.open(path)
        try:
            request = self.request(path, reader, layout)
            if not self.settings.overwrite and finished(final, request):
                log.info("%s: finished and verified already; skipped", final)
                if progress is not None:
                    progress(reader.entries)
                return FileResult(path, final, reader.entries, True, time.perf_counter() - began)
            feed = _feed_plan(self.engines[0].inputs, layout, path)
            blocks = self._blocks(reader, layout, request, feed, progress)
            entries = write_scores(final, request, blocks)
        finally:
            reader.close()
        if entries != request.entries:  # a reader that stopped short: never a silent gap
            final.unlink(missing_ok=True)
            raise ApplyError(f"{path}: read {entries} of {request.entries} entries; try again")
        return FileResult(path, final, entries, False, time.perf_counter() - began)

    def _blocks(
        self,
        reader: InputReader,
        layout: Layout,
        request: Request,
        feed: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        progress: Progress | None,
    ) -> Iterator[Block]:
        """The file's blocks, scored, each read while the one before it is scored."""
        # What conversion reads of a file, less labels, weights and targets: the features'
        # branches, the lists their expressions and the selection take, the event id.
        lists = layout.jagged_names() | layout.image_names() | set(layout.lists)
        flat = [*layout.feature_branches(), *layout.event_id, *self.settings.keep]
        flat += self.selection.numbers if self.selection is not None else []
        flat = [name for name in dict.fromkeys(flat) if name not in lists]
        names = sorted(set(flat) | lists)
        ranges = _ranges(reader.boundaries(names), reader.entries, self.settings.block_events)
        threads = max(1, self.settings.threads)
        with (
            ThreadPoolExecutor(threads, thread_name_prefix="gridtrain-apply-read") as pool,
            ThreadPoolExecutor(1, thread_name_prefix="gridtrain-apply-ahead") as ahead,
        ):

            def read(start: int, stop: int) -> tuple[Columns, Arrays]:
                columns = read_columns(reader, layout, flat, start, stop, pool)
                # the derived features into columns.flat, as conversion computes them
                arrays = complete_columns(
                    reader, layout, columns.flat, columns.groups, start, stop, pool
                )
                return columns, arrays

            upcoming = ahead.submit(read, *ranges[0])
            for k, (start, stop) in enumerate(ranges):
                columns, arrays = upcoming.result()
                if k + 1 < len(ranges):
                    upcoming = ahead.submit(read, *ranges[k + 1])
                yield self._score(columns, arrays, layout, request, feed, (start, stop))
                if progress is not None:
                    progress(stop - start)

    def _score(
        self,
        columns: Columns,
        arrays: Arrays,
        layout: Layout,
        request: Request,
        feed: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
        entries: tuple[int, int],
    ) -> Block:
        start, stop = entries
        n = stop - start
        block: Block = {}
        folds = self.settings.model.folds
        fold = None
        if folds is not None:  # as training split them: by the hash of the event id columns
            ids = np.stack([columns.flat[i][:, 0] for i in folds.event_id], axis=1)
            fold = fold_of(ids.astype(np.uint64), folds.folds, folds.seed)
        scores = self._scores(feed(shard_arrays(columns, layout, n)) if n else {}, n, fold)
        if scores.shape[1] != len(self.scores):
            raise ApplyError(
                f"the model gives {scores.shape[1]} outputs per event; the run's task "
                f"({self.dataset.task.kind}) has {len(self.scores)} ({', '.join(self.scores)})"
            )
        for name in layout.event_id:
            block[name] = _column(columns.flat[name])
        if not layout.event_id:
            block[ENTRY] = np.arange(start, stop, dtype=np.uint64)
        for k, name in enumerate(self.scores):
            block[name] = np.ascontiguousarray(scores[:, k])
        if self.selection is not None:
            block[SELECTED] = self.selection.mask(arrays).astype(np.bool_)
        if fold is not None:
            block[FOLD] = fold.astype(np.int32)
        for name in self.settings.keep:
            block.setdefault(name, _column(columns.flat[name]))
        return {name: block[name] for name in request.branches}

    def _scores(self, feed: dict[str, np.ndarray], n: int, fold: np.ndarray | None) -> np.ndarray:
        """(n, outputs) float32: every event by the one model, or each by its fold's."""
        if n == 0:
            return np.empty((0, len(self.scores)), dtype=np.float32)
        if fold is None:
            return np.asarray(self.engines[0].score(feed), dtype=np.float32).reshape(n, -1)
        scores = np.empty((n, len(self.scores)), dtype=np.float32)
        for k, engine in enumerate(self.engines):
            rows = np.flatnonzero(fold == k)
            if len(rows):
                part = engine.score({name: value[rows] for name, value in feed.items()})
                scores[rows] = np.asarray(part, dtype=np.float32).reshape(len(rows), -1)
        return scores


def _column(values: np.ndarray) -> np.ndarray:
    """A flat branch as read (N x width): a plain array for one number per event."""
    return np.ascontiguousarray(values[:, 0] if values.shape[1] == 1 else values)


def _ranges(bounds: list[int], entries: int, block: int) -> list[tuple[int, int]]:
    """Entry ranges of about ``block`` entries ending on common basket boundaries where one is
    near (never decompressing a basket twice), at most twice ``block`` long; one empty range
    for an empty tree."""
    ranges = []
    start = 0
    while start < entries:
        target = min(start + block, entries)
        at = bisect.bisect_left(bounds, target)
        stop = bounds[at] if at < len(bounds) and bounds[at] <= start + 2 * block else target
        stop = min(max(stop, start + 1), entries)
        ranges.append((start, stop))
        start = stop
    return ranges or [(0, 0)]


def _feed_plan(
    inputs: tuple[ModelInput, ...], layout: Layout, path: str
) -> Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]]:
    """How the model's raw inputs are taken from the shard arrays of a block: the features'
    chosen columns, each group padded as converted, counts as float32 (as exported)."""
    columns = list(layout.feature_columns)
    groups = {name: (branches, length) for name, branches, length, _ in layout.groups}
    picks: dict[str, list[int]] = {}
    for item in inputs:
        if item.counts is not None or item.name in {i.name for i in layout.images}:
            continue
        if item.name == FEATURES:
            missing = [c for c in item.columns if c not in columns]
            if missing:
                raise ApplyError(
                    f"{path}: the model reads feature columns {missing} that the run's dataset "
                    f"section does not give ({columns}); its config.yaml was changed after "
                    "conversion?"
                )
            picks[FEATURES] = [columns.index(c) for c in item.columns]
        elif groups.get(item.name) != (item.columns, item.length):
            raise ApplyError(
                f"{path}: the model reads group {item.name!r} as {item.columns} x {item.length}; "
                f"the run's dataset section gives {groups.get(item.name)}"
            )
    every = list(range(len(columns)))

    def feed(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {}
        for item in inputs:
            if item.counts is not None:
                out[item.name] = arrays[item.counts + COUNT_SUFFIX].astype(np.float32)
            elif item.name == FEATURES and picks[FEATURES] != every:
                out[item.name] = np.ascontiguousarray(arrays[FEATURES][:, picks[FEATURES]])
            else:
                out[item.name] = arrays[item.name]
        return out

    return feed
