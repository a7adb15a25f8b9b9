"""Kinematic reweighting (``dataset.reweight``, issue 28): every class weighted to one
distribution in one or two per-event variables.

The inputs are small ROOT files written here with uproot: three classes whose ``jet_pt`` and
``jet_eta`` are drawn from different distributions, with event weights, some negative. The checks
are made with numpy on the shards' events, apart from ``gridtrain.data.reweight``: the histograms
of the training split are counted again, and the weights training forms (``InputBuilder``) are
applied to the **validation** events, which the histograms never saw, whose classes must then
agree within their statistical errors (a chi2 with a p-value above 0.001, the errors of the
validation events and those the weights carry from the training histograms), where before
reweighting they did not (below 1e-6).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.gather import gather
from gridtrain.data.groups import group_count, plan_group
from gridtrain.data.manifest import Manifest, class_factors, load_manifest
from gridtrain.data.reweight import (
    ReweightHistograms,
    bin_index,
    event_factors,
    reweight_record,
)
from gridtrain.data.shards import ShardReader
from gridtrain.errors import ConfigError
from gridtrain.train.inputs import InputBuilder
from gridtrain.train.targets import sample_weights
from tests.conftest import convert_cli_line

CLASSES = ["qcd", "wjets", "top"]
EVENTS = 6000  # per class, in two files
# per class: the slope of jet_pt's linear density on [20, 200], the width of jet_eta
SHAPES = {"qcd": (-0.8, 1.2), "wjets": (0.0, 1.6), "top": (0.8, 2.0)}
NEGATIVE = {"qcd": 0.0, "wjets": 0.0, "top": 0.12}  # share of negative weights (NLO)
PT_BINS = {"n": 6, "lo": 20.0, "hi": 200.0}
ETA_EDGES = [-2.5, -1.5, -0.5, 0.5, 1.5, 2.5]
AGREE = 1e-3  # the p-value above which histograms agree within their statistical errors
DISAGREE = 1e-6  # and below which they do not (as before reweighting)


def write_class(path: Path, name: str, seed: int, events: int, first_event: int) -> None:
    """One file of a class: per-event jet_pt, jet_eta, genWeight, the event id, and a jagged
    Jet_pt (to be refused as a reweighting variable)."""
    rng = np.random.default_rng(seed)
    slope, width = SHAPES[name]
    # jet_pt: density 1 + slope (2u - 1) on u in [0, 1], drawn by its inverse CDF
    u = rng.uniform(size=events)
    x = u if slope == 0 else ((slope - 1) + np.sqrt((1 - slope) ** 2 + 4 * slope * u)) / (2 * slope)
    counts = rng.integers(1, 4, events)
    sign = np.where(rng.uniform(size=events) < NEGATIVE[name], -1.0, 1.0)
    branches = {
        "run": np.ones(events, dtype=np.uint32),
        "luminosityBlock": np.full(events, seed, dtype=np.uint32),
        "event": np.arange(first_event, first_event + events, dtype=np.uint64),
        "jet_pt": (20.0 + 180.0 * x).astype(np.float32),
        "jet_eta": rng.normal(0.0, width, events).astype(np.float32),
        "genWeight": (sign * rng.uniform(0.5, 1.5, events)).astype(np.float32),
        "Jet": ak.zip({"pt": ak.unflatten(rng.exponential(30.0, counts.sum()), counts)}),
    }
    types = {
        k: v.dtype if isinstance(v, np.ndarray) else v.type.content for k, v in branches.items()
    }
    with uproot.recreate(path) as file:
        file.mktree("Events", types).extend(branches)  # Jet: uproot writes nJet and Jet_pt


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reweight-inputs")
    for k, name in enumerate(CLASSES):
        half = EVENTS // 2
        write_class(out / f"{name}_1.root", name, 10 * k + 1, half, 0)
        write_class(out / f"{name}_2.root", name, 10 * k + 2, EVENTS - half, half)
    return out


def section(inputs: Path, out: Path, reweight: dict[str, Any] | None, **overrides: Any) -> dict:
    return {
        "tree": "Events",
        "samples": [
            {
                "name": name,
                "files": [str(inputs / f"{name}_{i}.root") for i in (1, 2)],
                "class": name,
            }
            for name in CLASSES
        ],
        "features": ["jet_pt", "jet_eta"],
        "jagged": {"jets": {"branches": ["Jet_pt"], "length": 3}},
        "weight": "genWeight",
        "validation_fraction": 0.35,
        "shard_events": 4000,
        "step_events": 5000,
        "outdir": str(out),
        "reweight": reweight,
        **overrides,
    }


def config(inputs: Path, out: Path, reweight: dict[str, Any] | None, **task: Any) -> DatasetConfig:
    dataset = section(inputs, out, reweight)
    return DatasetConfig.from_dict(dataset, {"kind": "multiclass", "classes": CLASSES, **task})


def split_arrays(out: Path, manifest: Manifest, split: str) -> dict[str, np.ndarray]:
    parts = []
    for entry in manifest.shards[split]:
        with ShardReader(out / entry.path) as reader:
            parts.append(reader.read())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def training_weights(
    out: Path, manifest: Manifest, split: str, policy: str = "abs"
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The split's events as stored, and the sample weights training forms for them."""
    builder = InputBuilder(manifest, tuple(manifest.features), {}, ["features"], policy)
    weights = [builder.load(out / entry.path).weights for entry in manifest.shards[split]]
    return split_arrays(out, manifest, split), np.concatenate(weights)


def folded(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Values moved into the edge bins, as the reweighting counts them (numpy's last bin is
    closed, so the last edge is inside)."""
    return np.clip(values, edges[0], edges[-1])


def histogram(
    arrays: dict[str, np.ndarray], weights: np.ndarray, label: int, edges: list[np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """A class's histogram of weights and of squared weights in the variables (numpy only)."""
    mine = arrays["label"] == label
    columns = [folded(arrays["features"][mine, k], e) for k, e in enumerate(edges)]
    w = weights[mine].astype(np.float64)
    total, _ = np.histogramdd(np.stack(columns, axis=1), bins=edges, weights=w)
    squared, _ = np.histogramdd(np.stack(columns, axis=1), bins=edges, weights=w * w)
    return total.reshape(-1), squared.reshape(-1)


def reweighted(
    validation: dict[str, np.ndarray],
    weights: np.ndarray,
    label: int,
    edges: list[np.ndarray],
    train: dict[str, np.ndarray],
    sources: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """A class's reweighted validation histogram; its variance counts the validation events and
    the statistical error that the weights carry from the training histograms they were made of
    (the class's and, weighted to a class, the reference's: ``sources``)."""
    total, variance = histogram(validation, weights, label, edges)
    relative = np.zeros_like(total)
    for k in sources:
        s, v = histogram(train, np.abs(train["weight"]), k, edges)
        relative += v / s**2
    return total, variance + total**2 * relative


def projected(h: tuple[np.ndarray, np.ndarray], shape: tuple[int, ...], axis: int) -> tuple:
    """A 2-D histogram (and its variance) summed over the other variable."""
    other = 1 - axis
    return tuple(np.asarray(a).reshape(shape).sum(axis=other) for a in h)


def p_value(chi2: float, ndf: int) -> float:
    """The chance of a chi2 at least this large with ``ndf`` degrees of freedom (Wilson and
    Hilferty's normal approximation, good to a few per cent here; no scipy)."""
    z = ((chi2 / ndf) ** (1 / 3) - (1 - 2 / (9 * ndf))) / math.sqrt(2 / (9 * ndf))
    return 0.5 * math.erfc(z / math.sqrt(2))


def agreement(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> float:
    """The p-value of two histograms' shapes (each normalised to 1) being one, in their errors."""
    (wa, va), (wb, vb) = a, b
    pa, pb = wa / wa.sum(), wb / wb.sum()
    variance = va / wa.sum() ** 2 + vb / wb.sum() ** 2
    used = variance > 0
    return p_value(float(((pa - pb)[used] ** 2 / variance[used]).sum()), int(used.sum()) - 1)


def flat_agreement(a: tuple[np.ndarray, np.ndarray]) -> float:
    """The p-value of a histogram's shape being the same share in every bin, in its errors."""
    w, v = a
    share = w / w.sum()
    return p_value(float(((share - 1 / len(w)) ** 2 / (v / w.sum() ** 2)).sum()), len(w) - 1)


def edges_of(manifest: Manifest) -> list[np.ndarray]:
    return [np.asarray(e) for e in manifest.weights["reweight"]["edges"]]


@pytest.fixture(scope="module")
def flat_1d(inputs: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    out = tmp_path_factory.mktemp("flat-1d")
    reweight = {"variables": ["jet_pt"], "bins": {"jet_pt": PT_BINS}, "to": "flat"}
    return out, convert(config(inputs, out, reweight))


def test_flat_1d_classes_agree_on_events_the_histograms_never_saw(flat_1d):
    out, manifest = flat_1d
    edges = edges_of(manifest)
    np.testing.assert_allclose(edges[0], np.linspace(20, 200, 7))
    validation, weights = training_weights(out, manifest, "validation")
    train = split_arrays(out, manifest, "train")
    unweighted = np.abs(validation["weight"])  # as training treats them (abs), not reweighted
    after = [reweighted(validation, weights, k, edges, train, (k,)) for k in range(3)]
    for k in range(3):
        assert flat_agreement(after[k]) > AGREE, CLASSES[k]
        if k != 1:  # wjets is flat already; the others are far from it
            assert flat_agreement(histogram(validation, unweighted, k, edges)) < DISAGREE
    for a, b in ((0, 1), (0, 2), (1, 2)):
        assert agreement(after[a], after[b]) > AGREE, (a, b)
    before = [histogram(validation, unweighted, k, edges) for k in (0, 2)]
    assert agreement(*before) < DISAGREE


def test_flat_1d_training_split_is_flat_and_the_record_counts_it(flat_1d):
    out, manifest = flat_1d
    record = manifest.weights["reweight"]
    edges = edges_of(manifest)
    train, weights = training_weights(out, manifest, "train")
    for k, name in enumerate(CLASSES):
        mine = train["label"] == k
        pt = train["features"][mine, 0]
        events, _ = np.histogram(folded(pt, edges[0]), bins=edges[0])
        sums, _ = np.histogram(
            folded(pt, edges[0]), bins=edges[0], weights=train["weight"][mine].astype(np.float64)
        )
        counted = record["histograms"][name]
        np.testing.assert_array_equal(counted["events"], events)
        np.testing.assert_allclose(counted["sum"], sums, rtol=1e-6)
        assert counted["outside_events"] == int(((pt < 20) | (pt > 200)).sum())
        assert record["weights"]["abs"][name]["capped_events"] == 0
        # on the events they were made from, the weights give every bin the same share exactly
        after, _ = histogram(train, weights, k, edges)
        np.testing.assert_allclose(after / after.sum(), np.full(6, 1 / 6), rtol=1e-5)
    assert record["to"] == "flat"
    assert record["max_weight"] == 10.0  # the default
    assert record["variables"] == ["jet_pt"]
    assert record["classes"] == CLASSES


def test_the_manifest_record_round_trips(flat_1d):
    out, manifest = flat_1d
    loaded = load_manifest(out)
    assert loaded.weights["reweight"] == manifest.weights["reweight"]
    assert json.loads(json.dumps(manifest.weights["reweight"])) == loaded.weights["reweight"]
    assert loaded.class_factors == manifest.class_factors


def test_2d_to_a_class_gives_every_class_the_references_distribution(inputs, tmp_path):
    out = tmp_path / "out"
    reweight = {
        "variables": ["jet_pt", "jet_eta"],
        "bins": {"jet_pt": {"n": 4, "lo": 20, "hi": 200}, "jet_eta": ETA_EDGES},
        "to": "wjets",
        "max_weight": 20,
    }
    manifest = convert(config(inputs, out, reweight))
    record = manifest.weights["reweight"]
    assert np.asarray(record["weights"]["abs"]["qcd"]["weights"]).shape == (4, 5)
    edges = edges_of(manifest)
    validation, weights = training_weights(out, manifest, "validation")
    train = split_arrays(out, manifest, "train")
    reference = histogram(validation, weights, 1, edges)
    # the reference class keeps its weights: factor 1
    wjets = validation["label"] == 1
    np.testing.assert_allclose(weights[wjets], np.abs(validation["weight"][wjets]), rtol=1e-6)
    unweighted = np.abs(validation["weight"])
    for k in (0, 2):
        after = reweighted(validation, weights, k, edges, train, (k, 1))
        assert agreement(after, reference) > AGREE, CLASSES[k]
        assert agreement(histogram(validation, unweighted, k, edges), reference) < DISAGREE
        # each variable alone agrees too (the projections the report draws)
        for axis in (0, 1):
            one, other = projected(after, (4, 5), axis), projected(reference, (4, 5), axis)
            assert agreement(one, other) > AGREE, (CLASSES[k], axis)
    # outside |eta| < 2.5: folded into the edge bins and counted
    for k, name in enumerate(CLASSES):
        eta = train["features"][train["label"] == k, 1]
        assert record["histograms"][name]["outside_events"] == int((np.abs(eta) > 2.5).sum())
    assert record["histograms"]["top"]["outside_events"] > 0


def test_the_cap_bounds_every_weight_and_counts_the_capped_events(inputs, tmp_path):
    out = tmp_path / "out"
    reweight = {"variables": ["jet_pt"], "bins": {"jet_pt": PT_BINS}, "to": "flat",
                "max_weight": 1.5}  # fmt: skip
    manifest = convert(config(inputs, out, reweight))
    record = manifest.weights["reweight"]
    edges = edges_of(manifest)
    train, weights = training_weights(out, manifest, "train")
    factors = weights / np.abs(train["weight"])
    assert factors.max() == pytest.approx(1.5, rel=1e-6)
    assert (factors <= 1.5 * (1 + 1e-6)).all()
    for k, name in enumerate(CLASSES):
        # numpy's own ratio of the flat share to the class's share, bin by bin
        mine = train["label"] == k
        pt = folded(train["features"][mine, 0], edges[0])
        sums, _ = np.histogram(
            pt, bins=edges[0], weights=np.abs(train["weight"][mine]).astype(np.float64)
        )
        ratio = (1 / 6) / (sums / sums.sum())
        capped = ratio > 1.5
        events, _ = np.histogram(pt, bins=edges[0])
        applied = record["weights"]["abs"][name]
        assert applied["capped_events"] == int(events[capped].sum())
        assert applied["capped_bins"] == int(capped.sum())
        np.testing.assert_allclose(applied["weights"], np.minimum(ratio, 1.5), rtol=1e-9)
    assert record["weights"]["abs"]["qcd"]["capped_events"] > 0


def test_training_weights_are_the_event_weight_times_the_bins_factor_times_the_class_factor(
    inputs, tmp_path
):
    out = tmp_path / "out"
    # capped: reweighting changes the classes' sums, which balancing must then equalise
    reweight = {"variables": ["jet_pt"], "bins": {"jet_pt": PT_BINS}, "to": "qcd", "max_weight": 2}
    manifest = convert(config(inputs, out, reweight, balance=True))
    record = manifest.weights["reweight"]
    assert record["weights"]["abs"]["top"]["capped_events"] > 0
    edges = edges_of(manifest)
    for policy, treat in (("abs", np.abs), ("zero", lambda w: np.maximum(w, 0.0))):
        train, weights = training_weights(out, manifest, "train", policy)
        factors = class_factors(manifest.weights, tuple(CLASSES), True, policy)
        bins = np.clip(np.searchsorted(edges[0], train["features"][:, 0], side="right") - 1, 0, 5)
        table = np.asarray([record["weights"][policy][n]["weights"] for n in CLASSES])
        expected = treat(train["weight"]) * table[train["label"], bins]
        expected = expected * np.asarray(factors)[train["label"]]
        np.testing.assert_allclose(weights, expected, rtol=1e-5)
        # class balancing on top: every class's reweighted training sum is the same
        sums = [weights[train["label"] == k].astype(np.float64).sum() for k in range(3)]
        np.testing.assert_allclose(sums, np.full(3, np.mean(sums)), rtol=1e-4)


def test_sample_weights_multiply_the_reweighting_factor():
    w = np.array([1.0, -2.0, 3.0, 0.5], dtype=np.float32)
    labels = np.array([0, 1, 1, 0])
    factors = [2.0, 0.5]
    np.testing.assert_allclose(
        sample_weights(w, labels, "abs", factors, np.array([1.0, 3.0, 0.0, 10.0])),
        [2.0, 3.0, 0.0, 10.0],
    )
    np.testing.assert_allclose(sample_weights(w, labels, "abs", factors), [2.0, 1.0, 1.5, 1.0])


def test_bins_fold_values_outside_the_edges_into_the_edge_bins():
    edges = [[0.0, 1.0, 2.0, 4.0]]
    values = np.array([-5.0, 0.0, 0.99, 1.0, 3.99, 4.0, 9.0, np.nan, np.inf, -np.inf])
    flat, outside = bin_index(edges, values[:, None])
    assert flat.tolist() == [0, 0, 0, 1, 2, 2, 2, 2, 2, 0]
    assert outside.tolist() == [True, False, False, False, False, False, True, True, True, True]
    two, _ = bin_index([[0.0, 1.0, 2.0], [0.0, 10.0, 20.0, 30.0]], np.array([[1.5, 25.0]]))
    assert two.tolist() == [1 * 3 + 2]  # C order: the last variable varies fastest


def test_event_factors_look_up_the_class_and_bin():
    from gridtrain.config import Reweight

    histograms = ReweightHistograms(Reweight(("x",), ((0.0, 1.0, 2.0),), "flat", 10.0), ("a", "b"))
    histograms.add(np.array([0.5, 0.5, 0.5, 1.5, 0.5, 1.5]), [0, 0, 0, 0, 1, 1], np.ones(6))
    record = reweight_record(histograms)
    # a: 3/4 and 1/4 of its weight in the two bins, flat wants 1/2 each: 2/3 and 2
    assert record["weights"]["keep"]["a"]["weights"] == pytest.approx([2 / 3, 2.0])
    assert record["weights"]["keep"]["b"]["weights"] == pytest.approx([1.0, 1.0])
    got = event_factors(record, "keep", np.array([[0.2], [1.7], [5.0]]), [0, 0, 1])
    np.testing.assert_allclose(got, [2 / 3, 2.0, 1.0], rtol=1e-6)


def test_a_grouped_conversion_records_what_one_job_does(inputs, tmp_path):
    reweight = {"variables": ["jet_pt", "jet_eta"],
                "bins": {"jet_pt": PT_BINS, "jet_eta": ETA_EDGES}, "to": "top"}  # fmt: skip
    one = convert(config(inputs, tmp_path / "one", reweight, balance=True))
    dataset = DatasetConfig.from_dict(
        section(inputs, tmp_path / "grouped", reweight, files_per_job=1),
        {"kind": "multiclass", "classes": CLASSES, "balance": True},
    )
    for index in range(group_count(dataset)):
        convert(dataset, file_group=plan_group(dataset, index))
    grouped = gather(dataset)
    a, b = one.weights["reweight"], grouped.weights["reweight"]
    assert a.keys() == b.keys()
    for name in CLASSES:
        np.testing.assert_array_equal(
            a["histograms"][name]["events"], b["histograms"][name]["events"]
        )
        for policy in ("keep", "abs", "zero"):
            mine, theirs = a["weights"][policy][name], b["weights"][policy][name]
            np.testing.assert_allclose(mine["weights"], theirs["weights"], rtol=1e-9)
    np.testing.assert_allclose(grouped.class_factors, one.class_factors, rtol=1e-9)


def test_a_derived_feature_can_be_reweighted_in(inputs, tmp_path):
    out = tmp_path / "out"
    reweight = {
        "variables": ["lead_jet_pt"],
        "bins": {"lead_jet_pt": {"n": 5, "lo": 1, "hi": 200, "log": True}},
        "to": "flat",
    }
    dataset = section(inputs, out, reweight)
    dataset["features"] = ["jet_pt", {"name": "lead_jet_pt", "expr": "Jet_pt[0]", "fill": -1}]
    manifest = convert(
        DatasetConfig.from_dict(dataset, {"kind": "multiclass", "classes": CLASSES})
    )  # fmt: skip
    record = manifest.weights["reweight"]
    edges = edges_of(manifest)
    np.testing.assert_allclose(edges[0], np.geomspace(1, 200, 6))
    train, weights = training_weights(out, manifest, "train")
    column = manifest.features.index("lead_jet_pt")
    for k, name in enumerate(CLASSES):
        lead = train["features"][train["label"] == k, column]
        events, _ = np.histogram(folded(lead, edges[0]), bins=edges[0])
        np.testing.assert_array_equal(record["histograms"][name]["events"], events)
        assert record["histograms"][name]["outside_events"] == int(
            ((lead < 1) | (lead > 200)).sum()
        )
        one = {**train, "features": train["features"][:, [column]]}
        after, _ = histogram(one, weights, k, edges)
        np.testing.assert_allclose(after / after.sum(), np.full(5, 0.2), rtol=1e-5)


@pytest.mark.parametrize(
    ("reweight", "message"),
    [
        ({"variables": ["jet_phi"], "bins": {"jet_phi": [0, 1]}, "to": "flat"},
         "dataset.reweight.variables: 'jet_phi' is not a flat feature of the dataset "
         "(jet_pt, jet_eta); add it to dataset.features"),
        ({"variables": ["Jet_pt"], "bins": {"Jet_pt": [0, 1]}, "to": "flat"},
         "'Jet_pt' is a jagged branch"),
        ({"variables": ["jet_pt"], "bins": {"jet_pt": [0, 50, 40]}, "to": "flat"},
         "dataset.reweight.bins.jet_pt: edges [0, 50, 40] are not finite and increasing"),
        ({"variables": ["jet_pt"], "bins": {"jet_pt": {"n": 5, "lo": 0, "hi": 100, "log": True}},
          "to": "flat"}, "both above 0 for log: true"),
        ({"variables": ["jet_pt"], "bins": {"jet_eta": [0, 1]}, "to": "flat"},
         "variable 'jet_pt' has no bins"),
        ({"variables": ["jet_pt"], "bins": {"jet_pt": [0, 1]}, "to": "ttbar"},
         "dataset.reweight.to: 'ttbar' is not a class of the task (qcd, wjets, top); name one"),
    ],
)  # fmt: skip
def test_bad_reweighting_fails_in_one_line_and_writes_nothing(inputs, tmp_path, reweight, message):
    out = tmp_path / "out"
    with pytest.raises(ConfigError) as err:
        convert(config(inputs, out, reweight))
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert not out.exists()


def test_a_regression_cannot_be_reweighted_by_class(inputs, tmp_path):
    dataset = section(inputs, tmp_path / "out", {"variables": ["jet_pt"],
                      "bins": {"jet_pt": [20, 200]}, "to": "flat"})  # fmt: skip
    for sample in dataset["samples"]:
        sample.pop("class")
    task = {"kind": "regression", "targets": [{"name": "pt", "expression": "jet_pt"}]}
    with pytest.raises(ConfigError, match="a regression has no classes"):
        DatasetConfig.from_dict(dataset, task)


def test_the_cli_names_a_missing_variable_in_one_line(inputs, tmp_path):
    out = tmp_path / "out"
    dataset = section(inputs, out, {"variables": ["lead_jet_pt"],
                      "bins": {"lead_jet_pt": {"n": 10, "lo": 20, "hi": 500, "log": True}},
                      "to": "flat"})  # fmt: skip
    path = tmp_path / "config.yaml"
    task = {"kind": "multiclass", "classes": CLASSES}
    path.write_text(yaml.safe_dump({"dataset": dataset, "task": task}))
    line = convert_cli_line(path)
    assert "'lead_jet_pt' is not a flat feature of the dataset" in line
    assert not out.exists()
