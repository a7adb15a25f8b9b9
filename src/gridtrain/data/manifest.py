"""The dataset manifest: the one file training reads to know a converted dataset.

Records only (dataclasses and JSON); writing is atomic (temporary name, fsync, rename). Shard paths
are relative to the manifest's directory, or root:// URLs, and are kept as strings: a URL never
passes through ``os.path``.

The task and the event weights. ``task`` is ``Task.to_dict()`` with the regression targets'
training-split mean and std; ``weights`` counts the events and weights of every sample and of
every class (both splits together, and the training split of each class)::

    {"branch": "genWeight",
     "samples": {"dy": {"events": 240, "sum": 212.0, "negative_events": 10,
                        "negative_sum": -10.0, "negative_share": 0.0431,
                        "non_finite_targets": 0}},          # regression only
     "classes": {"dy": {... the same five ..., "train_events": 190, "train_sum": 170.0,
                        "train_negative_sum": -8.0}}}

``negative_sum`` is the sum of the negative weights (a negative number) and ``negative_share``
their share of the sum of absolute weights. ``class_factors`` (one per class) make the classes'
training sums of weights equal when ``task.balance`` is true and are all 1 otherwise;
``class_factors()`` recomputes them for another treatment of negative weights. Manifests written
before tasks existed have none of the three and read as binary, unbalanced.

When a sample has its own weight, is data or has a cross-section (or ``dataset.lumi`` is set),
``weights`` also holds ``normalisation`` (``gridtrain.data.samples``)::

    "normalisation": {"lumi": 1000.0,
     "samples": {"ttbar": {"data": false, "weight": "genWeight", "xsec": 831.8,
                           "lumi": 1000.0, "sumw": 2.5e6, "sumw_source": "Runs.genEventSumw",
                           "factor": 0.333, "events": 240, "yield": 77.1}},
     "data": {"events": 300, "yield": 300.0}, "simulation": {"events": 240, "yield": 77.1}}

``events`` and ``yield`` are after the selection (the weights as the shards store them,
normalisation included); ``sumw`` is before it, and ``sumw_source`` says where it came from: the
``Runs`` branch read (``Runs.genEventSumw``, or older NanoAOD's ``Runs.genEventSumw_``) or
``events`` (summed from the events' weight).

Derived features. ``features`` names every column, and ``derived`` says which are computed from
branches and how (``gridtrain.data.layout.Derived``; ``fill`` is null where none was given)::

    "derived": {"lead_jet_pt": {"expr": "Jet_pt[0]", "fill": -1.0},
                "met_ratio": {"expr": "MET_pt / MET_sumEt", "fill": null}}

With ``dataset.reweight``, ``weights`` also holds ``reweight``: the bins, the training split's
per-class histograms and the per-class weights for each treatment of negative weights
(``gridtrain.data.reweight``); the class factors then equalise the reweighted sums.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gridtrain.checksum import adler32_file
from gridtrain.data import reweight
from gridtrain.errors import ConversionError, ShardError
from gridtrain.files import write_text
from gridtrain.paths import below, is_url
from gridtrain.task import Task

MANIFEST_NAME = "manifest.json"
FORMAT = "gridtrain-manifest"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class ShardEntry:
    path: str
    events: int
    bytes: int
    adler32: str


@dataclass(frozen=True)
class SourceEntry:
    sample: str
    path: str
    tree: str
    label: int | str | None
    entry_start: int
    entry_stop: int
    selected: int
    kind: str = "TTree"  # or "RNTuple"


@dataclass
class Manifest:
    """Everything about a converted dataset that training and staging need."""

    name: str
    gridtrain_version: str
    config_hash: str
    codec: str
    chunk_events: int
    features: list[str]
    jagged: list[dict[str, Any]]
    event_id: list[str]
    weight: str | None
    split: dict[str, Any]
    stats: dict[str, Any]
    sources: list[SourceEntry]
    shards: dict[str, list[ShardEntry]] = field(default_factory=dict)
    # name, branches, shape (with the channel axis when several branches), statistics
    images: list[dict[str, Any]] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)  # Task.to_dict(); {}: binary
    weights: dict[str, Any] = field(default_factory=dict)  # see the module docstring
    class_factors: list[float] = field(default_factory=list)  # []: all 1
    # the feature columns that are expressions: name -> {"expr": "Jet_pt[0]", "fill": -1.0}
    derived: dict[str, dict[str, Any]] = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def events(self, split: str) -> int:
        return sum(s.events for s in self.shards.get(split, []))

    def learning_task(self) -> Task:
        """The task this dataset was converted for (binary for manifests without one)."""
        return Task.from_dict(self.task)

    def factors(self) -> list[float]:
        """``class_factors``, or 1 for every class of a manifest that has none."""
        task = self.learning_task()
        return list(self.class_factors) or [1.0] * len(task.classes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["sources"] = [SourceEntry(**s) for s in data["sources"]]
        data["shards"] = {k: [ShardEntry(**s) for s in v] for k, v in data["shards"].items()}
        return cls(**data)


WEIGHT_FIELDS = ("events", "sum", "negative_events", "negative_sum")
TRAIN_FIELDS = ("train_events", "train_sum", "train_negative_sum")
NEGATIVE_WEIGHTS = ("keep", "abs", "zero")


def weight_record(values: dict[str, float]) -> dict[str, Any]:
    """One sample's or class's record from its sums (``WEIGHT_FIELDS``, maybe ``TRAIN_FIELDS``
    and ``non_finite_targets``), with the negative share filled in."""
    record: dict[str, Any] = {}
    for key, value in values.items():
        record[key] = int(value) if key.endswith("events") or key.startswith("non_") else value
    absolute = values["sum"] - 2.0 * values["negative_sum"]
    record["negative_share"] = -values["negative_sum"] / absolute + 0.0 if absolute > 0 else 0.0
    return record


def merge_weights(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``weights`` record of several conversion jobs' (a grid-parallel conversion)."""
    merged: dict[str, Any] = {"branch": parts[0].get("branch")}
    for kind in ("samples", "classes"):
        sums: dict[str, dict[str, float]] = {}
        for part in parts:
            for name, record in part.get(kind, {}).items():
                total = sums.setdefault(name, {})
                for key, value in record.items():
                    if key != "negative_share":
                        total[key] = total.get(key, 0) + value
        merged[kind] = {name: weight_record(values) for name, values in sums.items()}
    if "normalisation" in parts[0]:  # the same factors in every group: the counts are summed
        first = parts[0]["normalisation"]
        own = {
            name: {k: v for k, v in record.items() if k not in ("events", "yield")}
            for name, record in first["samples"].items()
        }
        merged["normalisation"] = normalisation_record(first["lumi"], own, merged["samples"])
    if "reweight" in parts[0]:  # the histograms are summed, the weights computed from the sums
        merged["reweight"] = reweight.merge_records([part["reweight"] for part in parts])
    return merged


def normalisation_record(
    lumi: float | None, own: dict[str, dict[str, Any]], samples: dict[str, Any]
) -> dict[str, Any]:
    """The ``weights.normalisation`` record: each sample's weight and normalisation (``own``:
    ``data``, ``weight``, ``xsec``, ``lumi``, ``sumw``, ``sumw_source``, ``factor``) with its
    selected events and weighted yield from ``samples`` (the ``weights.samples`` records), and
    the events and yield of data and of simulation apart."""
    records = {}
    totals = {kind: {"events": 0, "yield": 0.0} for kind in ("data", "simulation")}
    for name, record in own.items():
        counts = samples.get(name, {})
        events, weighted = int(counts.get("events", 0)), float(counts.get("sum", 0.0))
        records[name] = {**record, "events": events, "yield": weighted}
        total = totals["data" if record["data"] else "simulation"]
        total["events"] += events
        total["yield"] += weighted
    return {"lumi": lumi, "samples": records, **totals}


def class_factors(
    weights: dict[str, Any], classes: tuple[str, ...], balance: bool, negative: str = "keep"
) -> list[float]:
    """One factor per class that gives every class the same training sum of weights
    (``balance``; otherwise all 1). ``negative`` is how training treats negative weights:
    ``keep`` them, take their ``abs``olute value or ``zero`` them, which changes the sums."""
    if not balance:
        return [1.0] * len(classes)
    if negative not in NEGATIVE_WEIGHTS:
        raise ValueError(f"negative weights {negative!r}: choose one of {NEGATIVE_WEIGHTS}")
    sums = []
    for name in classes:
        record = weights["classes"].get(name, {})
        total, negative_sum = record.get("train_sum", 0.0), record.get("train_negative_sum", 0.0)
        sums.append(
            {"keep": total, "abs": total - 2 * negative_sum, "zero": total - negative_sum}[negative]
        )
    if "reweight" in weights:  # the classes' sums after kinematic reweighting
        sums = reweight.class_sums(weights["reweight"], classes, negative)
    for name, total in zip(classes, sums, strict=True):
        if not total > 0:
            raise ConversionError(
                f"task.balance: class {name!r} has a training sum of weights of {total:g} "
                f"(negative weights {negative}); it cannot be scaled to the others': set "
                "task.balance: false, or treat negative weights with abs or zero"
            )
    mean = sum(sums) / len(sums)
    return [mean / total for total in sums]


def write_manifest(manifest: Manifest, directory: str | Path) -> Path:
    final = Path(directory) / MANIFEST_NAME
    write_text(final, manifest.to_json())
    return final


def load_manifest(path: str | Path) -> Manifest:
    """Load ``manifest.json`` (or the folder holding it); raise ``ShardError`` naming the file."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ShardError(f"{p}: no manifest; run 'gridtrain convert' first") from None
    except json.JSONDecodeError as err:
        raise ShardError(f"{p}: not valid JSON ({err}); re-run 'gridtrain convert'") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShardError(f"{p}: not a gridtrain manifest (no format: {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{p}: manifest format version {data.get('format_version')} is not "
            f"{FORMAT_VERSION}; convert again with this gridtrain"
        )
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError) as err:
        raise ShardError(
            f"{p}: manifest is incomplete ({err}); re-run 'gridtrain convert'"
        ) from None


def verify_local(manifest: Manifest, directory: str | Path) -> list[str]:
    """Check every local shard's size and adler32; return one problem line per bad shard."""
    problems = []
    for split, entries in manifest.shards.items():
        for entry in entries:
            location = below(str(directory), entry.path)
            if is_url(location):
                continue
            try:
                size = os.path.getsize(location)
            except FileNotFoundError:
                problems.append(f"{location}: missing ({split} shard)")
                continue
            if size != entry.bytes:
                problems.append(f"{location}: {size} bytes, manifest says {entry.bytes}")
                continue
            actual = adler32_file(location)
            if actual != entry.adler32:
                problems.append(f"{location}: adler32 {actual}, manifest says {entry.adler32}")
    return problems
