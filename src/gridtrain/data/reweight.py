"""Kinematic reweighting: per-class histogram weights that give every class the same
distribution in a few per-event variables (``dataset.reweight``), so that a tagger cannot learn a
sample's kinematics instead of the physics that tells the classes apart.

Layer: data, pure numpy. It accumulates the training split's histograms while a conversion
streams (``ReweightHistograms``), turns them into the manifest's record (``reweight_record``),
merges the records of a grid-parallel conversion's groups (``merge_records``) and looks up the
weight of each event (``event_factors``); it reads no file and writes none.

The method (as weaver's ``weights:`` section, with an absolute cap instead of a percentile).
Per class ``c`` and bin ``b`` the sum of the events' weights ``s[c, b]`` (as training treats
negative weights: ``keep``, ``abs`` or ``zero``) gives the class's density
``p[c, b] = max(s[c, b], 0) / sum_b max(s[c, b], 0)``. The target density ``t[b]`` is the
reference class's ``p[ref, b]`` (``to: CLASS``) or ``1 / bins`` (``to: flat``: the same share in
every bin, so the bins' widths say in what the distribution is flat). An event of class ``c`` in
bin ``b`` gets ``min(t[b] / p[c, b], max_weight)``; the reference class gets exactly 1. A bin
where the class has no positive weight gives 0 (``zero_weight_events``), as does a bin the
reference leaves empty; capped bins are counted (``capped_bins``, ``capped_events``). The factor
averages 1 over a class's weight when nothing is capped or empty, so a class keeps its sum of
weights; ``train_sum`` records it after reweighting, and class balancing (``task.balance``)
works on top of it.

Events outside the edges, and values that are not numbers, are folded into the nearest edge bin
(NaN into the last), as weaver does; ``outside_events`` counts them per class.

The record (``manifest.weights["reweight"]``; histograms nested, one axis per variable)::

    {"variables": ["jet_pt", "jet_eta"], "edges": [[...], [...]], "to": "flat",
     "max_weight": 10.0, "classes": ["light", "b"],
     "histograms": {"light": {"events": [[...]], "sum": [[...]], "negative_sum": [[...]],
                              "outside_events": 3}},
     "weights": {"abs": {"light": {"weights": [[...]], "capped_bins": 1, "capped_events": 4,
                                   "zero_weight_events": 0, "train_sum": 1520.3}},
                 "keep": {...}, "zero": {...}}}
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from gridtrain.config import Reweight
from gridtrain.errors import ConfigError, ConversionError

FLAT = "flat"
POLICIES = ("keep", "abs", "zero")  # train.negative_weights (gridtrain.train.targets)


def feature_columns(
    reweight: Reweight, columns: Sequence[str], jagged: Sequence[str] = ()
) -> list[int]:
    """The feature column of each reweighting variable; a variable that is not one is a
    ``ConfigError`` naming it and the way out."""
    found = []
    for name in reweight.variables:
        if name in columns:
            found.append(list(columns).index(name))
            continue
        if name in jagged:
            why = (
                f"is a jagged branch, and reweighting weighs whole events: reweight in a "
                f"per-event feature such as a derived {{name: lead_{name}, expr: '{name}[0]'}}"
            )
        else:
            why = (
                f"is not a flat feature of the dataset ({', '.join(columns) or 'none'}); add it "
                "to dataset.features, or reweight in one of those"
            )
        raise ConfigError(f"dataset.reweight.variables: {name!r} {why}")
    return found


def bin_index(
    edges: Sequence[Sequence[float]], values: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.bool_]]:
    """The flat (C-order) bin of each row of ``values`` (N x variables) and whether any of its
    values lay outside the edges (folded into the edge bin; NaN into the last)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[:, None] if v.ndim == 1 else v
    shape = tuple(len(e) - 1 for e in edges)
    indices = []
    outside = np.zeros(len(v), dtype=bool)
    for axis, axis_edges in enumerate(edges):
        e = np.asarray(axis_edges, dtype=np.float64)
        x = v[:, axis]
        outside |= ~((x >= e[0]) & (x <= e[-1]))
        index = np.searchsorted(e, x, side="right") - 1  # the last edge belongs to the last bin
        indices.append(np.clip(index, 0, len(e) - 2))
    if not len(v):
        return np.zeros(0, dtype=np.int64), outside
    return np.ravel_multi_index(indices, shape).astype(np.int64), outside


@dataclass
class ReweightHistograms:
    """The training split's per-class histograms, filled step by step during a conversion."""

    reweight: Reweight
    classes: tuple[str, ...]
    events: npt.NDArray[np.int64] = field(init=False)
    sum: npt.NDArray[np.float64] = field(init=False)
    negative_sum: npt.NDArray[np.float64] = field(init=False)
    outside: npt.NDArray[np.int64] = field(init=False)

    def __post_init__(self) -> None:
        size = (len(self.classes), int(np.prod(self.reweight.shape)))
        self.events = np.zeros(size, dtype=np.int64)
        self.sum = np.zeros(size)
        self.negative_sum = np.zeros(size)
        self.outside = np.zeros(len(self.classes), dtype=np.int64)

    def add(self, values: npt.ArrayLike, labels: npt.ArrayLike, weights: npt.ArrayLike) -> None:
        """Count training events: their variables (N x variables), class indices and weights."""
        k, bins = self.events.shape
        flat, outside = bin_index(self.reweight.edges, values)
        label = np.asarray(labels, dtype=np.int64)
        w = np.asarray(weights, dtype=np.float64)
        known = (label >= 0) & (label < k)  # a binary label branch may give others (warned)
        if not known.all():
            flat, outside, label, w = flat[known], outside[known], label[known], w[known]
        cell = label * bins + flat
        self.events += np.bincount(cell, minlength=k * bins).reshape(k, bins)
        self.sum += np.bincount(cell, weights=w, minlength=k * bins).reshape(k, bins)
        negative = np.minimum(w, 0.0)
        self.negative_sum += np.bincount(cell, weights=negative, minlength=k * bins).reshape(
            k, bins
        )
        self.outside += np.bincount(label[outside], minlength=k)


def policy_sums(
    total: npt.ArrayLike, negative: npt.ArrayLike, policy: str
) -> npt.NDArray[np.float64]:
    """Sums of weights as training treats negative ones: ``keep``, ``abs`` or ``zero``."""
    s, n = np.asarray(total, dtype=np.float64), np.asarray(negative, dtype=np.float64)
    if policy == "keep":
        return s
    if policy == "abs":
        return s - 2.0 * n
    if policy == "zero":
        return s - n
    raise ConfigError(f"train.negative_weights is {policy!r}; choose one of {', '.join(POLICIES)}")


def class_weights(
    sums: npt.ArrayLike, reference: int | None, max_weight: float, strict: bool = True
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.bool_]]:
    """The weight of each class (rows) in each bin (columns) that gives every class the
    reference class's density (``reference``: its row) or a flat one (``None``), capped at
    ``max_weight``; and which bins were capped. ``strict``: a reference class without positive
    weight is a ``ConversionError`` (else everything weighs 0: a group of a grid-parallel
    conversion without its events)."""
    s = np.maximum(np.asarray(sums, dtype=np.float64), 0.0)
    totals = s.sum(axis=1, keepdims=True)
    density = np.divide(s, totals, out=np.zeros_like(s), where=totals > 0)
    if reference is None:
        target = np.full(s.shape[1], 1.0 / s.shape[1])
    else:
        target = density[reference]
        if not totals[reference, 0] > 0:
            if strict:
                raise ConversionError("no positive weight in the training split")
            return np.zeros_like(s), np.zeros(s.shape, dtype=bool)
    ratio = np.divide(target, density, out=np.zeros_like(s), where=density > 0)
    if reference is not None:
        ratio[reference] = (density[reference] > 0).astype(np.float64)
    capped = ratio > max_weight
    return np.minimum(ratio, max_weight), capped


def reweight_record(histograms: ReweightHistograms, strict: bool = True) -> dict[str, Any]:
    """The manifest's record (see the module docstring) of the training split's histograms."""
    reweight, classes, shape = histograms.reweight, histograms.classes, histograms.reweight.shape
    record: dict[str, Any] = {
        "variables": list(reweight.variables),
        "edges": [list(e) for e in reweight.edges],
        "to": reweight.to,
        "max_weight": reweight.max_weight,
        "classes": list(classes),
        "histograms": {
            name: {
                "events": histograms.events[k].reshape(shape).tolist(),
                "sum": histograms.sum[k].reshape(shape).tolist(),
                "negative_sum": histograms.negative_sum[k].reshape(shape).tolist(),
                "outside_events": int(histograms.outside[k]),
            }
            for k, name in enumerate(classes)
        },
        "weights": {},
    }
    reference = None if reweight.to == FLAT else classes.index(reweight.to)
    for policy in POLICIES:
        sums = policy_sums(histograms.sum, histograms.negative_sum, policy)
        try:
            weights, capped = class_weights(sums, reference, reweight.max_weight, strict)
        except ConversionError as err:
            raise ConversionError(
                f"dataset.reweight.to: class {reweight.to!r} has {err} (negative weights "
                f"{policy}) in {', '.join(reweight.variables)}; nothing to reweight to: choose "
                "another class, or to: flat"
            ) from None
        empty = weights == 0
        record["weights"][policy] = {
            name: {
                "weights": weights[k].reshape(shape).tolist(),
                "capped_bins": int(capped[k].sum()),
                "capped_events": int(histograms.events[k][capped[k]].sum()),
                "zero_weight_events": int(histograms.events[k][empty[k]].sum()),
                "train_sum": float((weights[k] * sums[k]).sum()),
            }
            for k, name in enumerate(classes)
        }
    return record


def histograms_of(record: dict[str, Any]) -> ReweightHistograms:
    """The histograms a record was made from (to merge them, or compute it again)."""
    reweight = Reweight(
        tuple(record["variables"]),
        tuple(tuple(e) for e in record["edges"]),
        record["to"],
        float(record["max_weight"]),
    )
    histograms = ReweightHistograms(reweight, tuple(record["classes"]))
    for k, name in enumerate(histograms.classes):
        counts = record["histograms"][name]
        histograms.events[k] = np.asarray(counts["events"], dtype=np.int64).reshape(-1)
        histograms.sum[k] = np.asarray(counts["sum"], dtype=np.float64).reshape(-1)
        histograms.negative_sum[k] = np.asarray(counts["negative_sum"]).reshape(-1)
        histograms.outside[k] = counts["outside_events"]
    return histograms


def merge_records(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The record of several conversion jobs' (a grid-parallel conversion): the histograms
    summed, the weights computed from the sums."""
    total = histograms_of(records[0])
    for record in records[1:]:
        part = histograms_of(record)
        total.events += part.events
        total.sum += part.sum
        total.negative_sum += part.negative_sum
        total.outside += part.outside
    return reweight_record(total)


def class_sums(record: dict[str, Any], classes: Sequence[str], policy: str) -> list[float]:
    """Each class's training sum of weights after reweighting, as ``policy`` treats negative
    weights (what class balancing equalises)."""
    if policy not in POLICIES:
        policy_sums(0.0, 0.0, policy)  # the ConfigError naming the choices
    applied = record["weights"][policy]
    return [float(applied[name]["train_sum"]) if name in applied else 0.0 for name in classes]


def event_factors(
    record: dict[str, Any], policy: str, values: npt.ArrayLike, labels: npt.ArrayLike
) -> npt.NDArray[np.float32]:
    """Each event's reweighting factor: its class's weight in its bin (``values``: N x
    variables, in the record's order; ``labels``: class indices)."""
    if policy not in POLICIES:
        policy_sums(0.0, 0.0, policy)  # the ConfigError naming the choices
    applied = record["weights"][policy]
    table = np.stack(
        [np.asarray(applied[name]["weights"], dtype=np.float64).reshape(-1)
         for name in record["classes"]]
    )  # fmt: skip
    flat, _ = bin_index(record["edges"], values)
    return table[np.asarray(labels, dtype=np.int64), flat].astype(np.float32)


def applied_histograms(record: dict[str, Any], policy: str) -> dict[str, Any]:
    """What a report draws: per class the training split's histogram of weights (as ``policy``
    treats negative ones) before and after reweighting, with the bins and what was capped."""
    histograms = histograms_of(record)
    sums = policy_sums(histograms.sum, histograms.negative_sum, policy)
    applied = record["weights"][policy]
    shape = histograms.reweight.shape
    weights = np.stack([np.asarray(applied[n]["weights"]).reshape(-1) for n in histograms.classes])
    return {
        "variables": record["variables"],
        "edges": record["edges"],
        "to": record["to"],
        "max_weight": record["max_weight"],
        "negative_weights": policy,
        "classes": record["classes"],
        "unweighted": sums.reshape(-1, *shape).tolist(),
        "weighted": (sums * weights).reshape(-1, *shape).tolist(),
        "capped_events": {n: applied[n]["capped_events"] for n in histograms.classes},
        "zero_weight_events": {n: applied[n]["zero_weight_events"] for n in histograms.classes},
    }
