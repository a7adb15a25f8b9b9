"""What a sample adds to its events: its weight, its cross-section normalisation, branch aliases.

Conversion layer, between the readers and ``convert``. An analysis mixes collision data (weight
1) with simulation weighted by a generator-weight branch or expression (``genWeight``,
``genWeight * puWeight``) and normalised to a luminosity: each simulated event of a sample with
an ``xsec`` weighs ``weight x xsec x lumi / sumw``, where ``sumw`` is the sum of generator
weights before any selection. NanoAOD stores it in its ``Runs`` tree (``genEventSumw``, in
NanoAOD before v6 ``genEventSumw_``; one entry per run and job, summed over entries and files
here, and the manifest names the branch read); without one, ``sumw`` is the sum of
the events' weight over every entry of the sample's files, and a warning says so. Branch aliases
let samples of different NanoAOD versions share a config: ``AliasedReader`` shows a file's
branch under the name the config uses. The weight expressions are the selection's safe
evaluator (``gridtrain.data.selection``): a config never runs code, and a weight may take an
element or a reduction of a jagged branch like any expression.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from gridtrain.config import DatasetConfig, Sample
from gridtrain.data.branches import (
    FlatBranch,
    FlatRead,
    ImageBranch,
    InputReader,
    Jagged,
    read_errors,
    short,
)
from gridtrain.data.layout import check_expression
from gridtrain.data.rootio import open_input
from gridtrain.data.selection import Lists, Selection
from gridtrain.errors import ConfigError, ConversionError

log = logging.getLogger(__name__)

RUNS_TREE = "Runs"
RUNS_SUMW = "genEventSumw"
RUNS_SUMW_OLD = "genEventSumw_"  # NanoAOD before v6 (2019) names it so
SUMW_FROM_RUNS = "Runs.genEventSumw"  # or "Runs.genEventSumw_": the branch read
SUMW_FROM_EVENTS = "events"  # the sum of the events' weight over every entry, before selection
_SUM_STEP = 1 << 20  # entries summed at a time when sumw comes from the events


@dataclass(frozen=True)
class SampleWeight:
    """One sample's event weight: a constant or an expression, times its normalisation
    ``factor`` (``xsec x lumi / sumw``; 1 without an ``xsec``)."""

    sample: Sample
    definition: float | str  # what the config says: a number, a branch or an expression
    expression: Selection | None  # None: the constant ``definition``
    factor: float = 1.0
    sumw: float | None = None
    sumw_source: str | None = None  # SUMW_FROM_RUNS (the Runs branch read) or SUMW_FROM_EVENTS

    @property
    def names(self) -> list[str]:
        """The branches the weight reads."""
        return self.expression.names if self.expression is not None else []

    @property
    def lists(self) -> list[str]:
        """The jagged branches the weight reads as lists (``Jet_pt[0]``, ``len(Jet_pt)``)."""
        return self.expression.lists if self.expression is not None else []

    def base(
        self, arrays: Mapping[str, np.ndarray | Lists], events: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Each event's weight before normalisation (float64) from the per-event branches and
        the lists, and the events where it is undefined (``None``: none)."""
        if self.expression is None:
            return np.full(events, float(self.definition)), None
        with np.errstate(all="ignore"):
            result, undefined = self.expression.evaluate(arrays, events)
        if result.dtype == np.bool_:
            raise ConfigError(
                f"{self.expression.key} {self.definition!r}: evaluates to a boolean, not a "
                "number; write arithmetic of branches, e.g. 'genWeight * puWeight'"
            )
        return result.astype(np.float64), undefined

    def evaluate(
        self, arrays: Mapping[str, np.ndarray | Lists], events: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Each event's weight as the shard stores it (float32), normalisation included, and
        the events where it is undefined (``None``: none)."""
        base, undefined = self.base(arrays, events)
        return (base * self.factor).astype(np.float32), undefined

    def guard(self) -> str:
        """A cut that keeps the events where the weight is defined ('' when it always is)."""
        return self.expression.guard() if self.expression is not None else ""

    def check(self, reader: InputReader) -> None:
        """Every branch of the weight is in this input as the weight uses it: one number per
        event, or a jagged branch where it takes an element or a reduction."""
        if self.expression is not None:
            role = f"weight of sample {self.sample.name!r} = {self.definition}"
            check_expression(reader, self.expression, role)

    def record(self, lumi: float | None) -> dict[str, Any]:
        """The sample's normalisation record (events and yield are added from the counts)."""
        return {
            "data": self.sample.data,
            "weight": self.definition,
            "xsec": self.sample.xsec,
            "lumi": lumi if self.sample.xsec is not None else None,
            "sumw": self.sumw,
            "sumw_source": self.sumw_source,
            "factor": self.factor,
        }


def sample_weights(dataset: DatasetConfig) -> list[SampleWeight]:
    """Every sample's weight, parsed (a syntax error is a ``ConfigError`` naming the sample);
    not yet normalised."""
    weights = []
    for sample in dataset.samples:
        definition = sample.event_weight(dataset.weight)
        expression = None
        if isinstance(definition, str):
            key = (
                f"dataset.samples {sample.name!r} weight"
                if sample.weight is not None
                else "dataset.weight"
            )
            expression = Selection(definition, key)
        weights.append(SampleWeight(sample, definition, expression))
    return weights


def normalised(weight: SampleWeight, lumi: float | None) -> SampleWeight:
    """``weight`` with its factor ``xsec x lumi / sumw`` (unchanged without an ``xsec``); reads
    every file of the sample (all of them, also in one group of a grid-parallel conversion)."""
    sample = weight.sample
    if sample.xsec is None or lumi is None:
        return weight
    sumw, source = sum_of_weights(weight)
    if not sumw > 0:
        raise ConversionError(
            f"{', '.join(sample.files)}: sample {sample.name!r} has a sum of generator weights "
            f"of {sumw:g} ({source}); it cannot be normalised to its xsec: check the files and "
            "its weight, or remove its xsec"
        )
    factor = sample.xsec * lumi / sumw
    log.info(
        "sample %r: xsec %g pb x lumi %g pb^-1 / sumw %g (%s) = factor %g",
        sample.name, sample.xsec, lumi, sumw, source, factor,
    )  # fmt: skip
    return SampleWeight(sample, weight.definition, weight.expression, factor, sumw, source)


def sum_of_weights(weight: SampleWeight) -> tuple[float, str]:
    """The sample's sum of generator weights before selection, and where it came from: every
    file's ``Runs`` tree's ``genEventSumw`` (or older NanoAOD's ``genEventSumw_``: the source
    names the branch read), else the events' weight over every entry."""
    sample = weight.sample
    total = 0.0
    branches = []
    for path in sample.files:
        runs = _runs_sumw(path)
        if runs is None:
            log.warning(
                "sample %r: %s has no %s tree with %s or %s; its sum of weights before "
                "selection is summed from the events' weight (%s) over every entry instead, "
                "which is right only when the files hold every generated event",
                sample.name, path, RUNS_TREE, RUNS_SUMW, RUNS_SUMW_OLD, weight.definition,
            )  # fmt: skip
            return _events_sumw(weight), SUMW_FROM_EVENTS
        total += runs[0]
        branches.append(runs[1])
    return total, ", ".join(f"{RUNS_TREE}.{b}" for b in sorted(set(branches)))


def _runs_sumw(path: str) -> tuple[float, str] | None:
    """The sum of ``Runs/genEventSumw`` (else ``genEventSumw_``) in one file, and the branch
    read; ``None`` when it has neither."""
    import uproot

    try:
        with uproot.open(path, array_cache=None) as file:
            if RUNS_TREE not in file:
                return None
            runs = file[RUNS_TREE]
            branch = next((b for b in (RUNS_SUMW, RUNS_SUMW_OLD) if b in runs), None)
            if branch is None:
                return None
            values = runs[branch].array(library="np")
            return float(np.sum(np.asarray(values, dtype=np.float64))), branch
    except read_errors() as err:
        raise ConversionError(
            f"{path}: its {RUNS_TREE} tree cannot be read ({short(err)}); the file is truncated "
            "or corrupt, copy it again"
        ) from None


def _events_sumw(weight: SampleWeight) -> float:
    """The sum of the sample's event weights over every entry of its files."""
    sample = weight.sample
    total = 0.0
    for path in sample.files:
        reader = aliased(open_input(path, sample.tree), sample)
        try:
            weight.check(reader)
            for start in range(0, reader.entries, _SUM_STEP):
                stop = min(start + _SUM_STEP, reader.entries)
                arrays: dict[str, np.ndarray | Lists] = {
                    n: reader.read_flat(n, start, stop)[:, 0]
                    for n in weight.names
                    if n not in weight.lists
                }
                for n in weight.lists:
                    read = reader.read_jagged((n,), n, start, stop)
                    arrays[n] = Lists(read.counts, read.contents[n])
                base, undefined = weight.base(arrays, stop - start)
                if undefined is not None and undefined.any():
                    raise ConversionError(
                        f"{path}: sample {sample.name!r}: its weight {weight.definition!r} is "
                        f"undefined for {int(undefined.sum())} events in entries {start}-{stop} "
                        "(an element past the end of a list, or max/min of an empty one), so "
                        "its sum over every entry, the sum of weights the xsec needs, cannot be "
                        "taken: give the files a Runs tree with genEventSumw, or a weight "
                        "defined for every event"
                    )
                total += float(base.sum())
        finally:
            reader.close()
    return total


def aliased(reader: InputReader, sample: Sample) -> InputReader:
    """``reader`` showing the sample's aliased branches under the config's names."""
    return AliasedReader(reader, dict(sample.aliases)) if sample.aliases else reader


class AliasedReader:
    """An ``InputReader`` whose branches named in ``aliases`` (the file's name -> the config's
    name) are asked for and handed on under the config's names."""

    def __init__(self, reader: InputReader, aliases: Mapping[str, str]) -> None:
        self._reader = reader
        self._to_file = {config: file for file, config in aliases.items()}
        self._to_config = dict(aliases)
        self.path = reader.path
        self.tree_name = reader.tree_name
        self.kind = reader.kind
        self.entries = reader.entries

    def _file(self, name: str) -> str:
        return self._to_file.get(name, name)

    def _role(self, name: str, role: str) -> str:
        """``role``, saying which config name an aliased branch stands for (for messages)."""
        return (
            f"{role}, as {name!r} through the sample's aliases" if name in self._to_file else role
        )

    def _config(self, arrays: Mapping[str, Any]) -> dict[str, Any]:
        return {self._to_config.get(n, n): a for n, a in arrays.items()}

    def close(self) -> None:
        self._reader.close()

    def check_flat(self, name: str, role: str) -> FlatBranch:
        return FlatBranch(
            name, self._reader.check_flat(self._file(name), self._role(name, role)).width
        )

    def check_jagged(self, name: str, group: str) -> None:
        self._reader.check_jagged(self._file(name), self._role(name, group))

    def check_image(self, name: str, image: str) -> ImageBranch:
        return ImageBranch(
            name, self._reader.check_image(self._file(name), self._role(name, image)).shape
        )

    def boundaries(self, names: list[str]) -> list[int]:
        return self._reader.boundaries([self._file(n) for n in names])

    def read_flat(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._reader.read_flat(self._file(name), start, stop)

    def flat_reads(self, names: list[str], start: int, stop: int) -> list[FlatRead]:
        reads = self._reader.flat_reads([self._file(n) for n in names], start, stop)
        return [partial(self._renamed, read) for read in reads]

    def _renamed(self, read: FlatRead) -> dict[str, np.ndarray]:
        return self._config(read())

    def read_jagged(self, names: tuple[str, ...], group: str, start: int, stop: int) -> Jagged:
        read = self._reader.read_jagged(tuple(self._file(n) for n in names), group, start, stop)
        return Jagged(read.counts, self._config(read.contents))

    def read_image(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._reader.read_image(self._file(name), start, stop)
