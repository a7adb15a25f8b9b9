"""Derived and indexed features, targets and weights on real NanoAOD (issue 28).

The inputs are coffea's three NanoAOD test files (tests/data/nanoaod/README.md): Drell-Yan
simulation whose ``Runs`` tree has the older ``genEventSumw_``, ttbar simulation, and collision
data with an event without jets. Every expected value is computed from the files with uproot
and awkward, apart from gridtrain, and matched to the shards' rows by event id.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import awkward as ak
import numpy as np
import pytest
import uproot
import yaml

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.manifest import load_manifest
from gridtrain.errors import ConfigError, ConversionError
from gridtrain.export.graph import describe_inputs
from tests.conftest import convert_cli_line, read_all

NANO = Path(__file__).parent / "nanoaod"
DY, TTBAR, DATA = NANO / "nano_dy.root", NANO / "nano_tree.root", NANO / "nano_dimuon.root"
ID = ("run", "luminosityBlock", "event")

DERIVED = [
    {"name": "lead_jet_pt", "expr": "Jet_pt[0]", "fill": -1},
    {"name": "sublead_jet_pt", "expr": "Jet_pt[1]", "fill": -2},
    {"name": "last_jet_pt", "expr": "Jet_pt[-1]", "fill": -3},
    {"name": "n_jets", "expr": "len(Jet_pt)"},
    {"name": "ht", "expr": "sum(Jet_pt)"},
    {"name": "max_jet_pt", "expr": "max(Jet_pt)", "fill": -4},
    {"name": "met_ratio", "expr": "MET_pt / MET_sumEt"},
    {"name": "lead_over_met", "expr": "Jet_pt[0] / MET_pt", "fill": -5},
]


def sample_list(*which: str) -> list[dict[str, Any]]:
    listed = {
        "dy": {"name": "dy", "files": [str(DY)], "label": 0},
        "ttbar": {"name": "ttbar", "files": [str(TTBAR)], "label": 1},
        "data": {"name": "data", "files": [str(DATA)], "label": 0, "data": True},
    }
    return [listed[name] for name in which]


def section(out: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "tree": "Events",
        "samples": sample_list("dy", "ttbar", "data"),
        "features": ["MET_pt", *DERIVED],
        "weight": "genWeight",
        "shard_events": 16,
        "step_events": 32,
        "outdir": str(out),
        **overrides,
    }


def rows_by_id(arrays: dict[str, np.ndarray]) -> dict[tuple[int, ...], int]:
    rows = {tuple(int(x) for x in ids): row for row, ids in enumerate(arrays["event_id"])}
    assert len(rows) == len(arrays["event_id"])  # the ids are unique across the three files
    return rows


def events(path: Path) -> Any:
    """The file's event ids and the branches the expressions read, as uproot gives them."""
    names = [*ID, "Jet_pt", "MET_pt", "MET_sumEt"]
    if path != DATA:
        names.append("genWeight")
    return uproot.open(path)["Events"].arrays(names)


def ids(tree: Any) -> list[tuple[int, ...]]:
    columns = [ak.to_numpy(tree[name]).astype(np.uint64) for name in ID]
    return [tuple(int(x) for x in row) for row in zip(*columns, strict=True)]


def expected_features(tree: Any) -> dict[str, np.ndarray]:
    """What each derived feature must be, from awkward (float64)."""
    jets = ak.values_astype(tree["Jet_pt"], np.float64)
    met = ak.to_numpy(tree["MET_pt"]).astype(np.float64)
    padded = ak.pad_none(jets, 2, axis=1)

    def filled(values: Any, fill: float) -> np.ndarray:
        return ak.to_numpy(ak.fill_none(values, fill)).astype(np.float64)

    lead = filled(padded[:, 0], np.nan)
    return {
        "MET_pt": met,
        "lead_jet_pt": filled(padded[:, 0], -1),
        "sublead_jet_pt": filled(padded[:, 1], -2),
        "last_jet_pt": filled(ak.firsts(jets[:, ::-1]), -3),
        "n_jets": ak.to_numpy(ak.num(jets)).astype(np.float64),
        "ht": ak.to_numpy(ak.sum(jets, axis=1)),
        "max_jet_pt": filled(ak.max(jets, axis=1), -4),
        "met_ratio": met / ak.to_numpy(tree["MET_sumEt"]).astype(np.float64),
        "lead_over_met": np.where(np.isnan(lead), -5, lead / met),
    }


def test_derived_features_match_uproot_event_by_event(tmp_path):
    out = tmp_path / "out"
    manifest = convert(DatasetConfig.from_dict(section(out)))
    arrays = read_all(out, manifest)
    rows = rows_by_id(arrays)
    columns = manifest.features
    assert columns == ["MET_pt", *(d["name"] for d in DERIVED)]
    checked = 0
    for path in (DY, TTBAR, DATA):
        tree = events(path)
        expected = expected_features(tree)
        got = arrays["features"][[rows[i] for i in ids(tree)]]
        for k, name in enumerate(columns):
            np.testing.assert_allclose(got[:, k], expected[name], rtol=1e-6, err_msg=name)
        checked += len(got)
    assert checked == len(arrays["label"]) == 90
    # the files hold the cases a fill is for: data has an event without jets, DY one with one
    n_jets = arrays["features"][:, columns.index("n_jets")]
    assert n_jets.min() == 0
    assert (n_jets == 1).any()
    assert manifest.derived == {
        d["name"]: {"expr": d["expr"], "fill": float(d["fill"]) if "fill" in d else None}
        for d in DERIVED
    }
    # and the manifest on disk says the same
    assert load_manifest(out).derived == manifest.derived


def test_the_export_json_names_each_derived_column_with_its_expression(tmp_path):
    out = tmp_path / "out"
    manifest = convert(DatasetConfig.from_dict(section(out)))
    spec = SimpleNamespace(
        manifest=json.loads(manifest.to_json()),
        features=("MET_pt", "lead_jet_pt", "met_ratio"),
        groups={},
    )
    (features,) = describe_inputs(spec, ["features"])  # type: ignore[arg-type]
    assert features.to_json() == {
        "name": "features",
        "shape": (None, 3),
        "dtype": "float32",
        "columns": ("MET_pt", "lead_jet_pt", "met_ratio"),
        "derived": {
            "lead_jet_pt": {"expr": "Jet_pt[0]", "fill": -1.0},
            "met_ratio": {"expr": "MET_pt / MET_sumEt", "fill": None},
        },
    }
    plain = SimpleNamespace(manifest=spec.manifest, features=("MET_pt",), groups={})
    assert "derived" not in describe_inputs(plain, ["features"])[0].to_json()  # type: ignore[arg-type]


def test_a_derived_target_weight_and_selection(tmp_path):
    out = tmp_path / "out"
    config = section(
        out,
        samples=sample_list("dy", "ttbar"),
        features=["MET_pt", {"name": "n_jets", "expr": "len(Jet_pt)"}],
        # the second jet exists in every selected event, so the weight is defined
        selection="len(Jet_pt) >= 2 && Jet_pt[0] > 30",
        weight="genWeight * Jet_pt[1] / 50",
    )
    task = {
        "kind": "regression",
        "targets": [{"name": "balance", "expression": "Jet_pt[0] / MET_pt"}],
    }
    manifest = convert(DatasetConfig.from_dict(config, task))
    arrays = read_all(out, manifest)
    rows = rows_by_id(arrays)
    selected = 0
    for path in (DY, TTBAR):
        tree = events(path)
        jets = tree["Jet_pt"]
        padded = ak.to_numpy(ak.fill_none(ak.pad_none(jets, 2, axis=1), 0.0)[:, :2])
        keep = (ak.to_numpy(ak.num(jets)) >= 2) & (padded[:, 0] > 30)
        assert keep.any()
        wanted = [i for i, k in zip(ids(tree), keep, strict=True) if k]
        got = [rows[i] for i in wanted]
        met = ak.to_numpy(tree["MET_pt"])[keep].astype(np.float64)
        target = (padded[keep, 0] / met).astype(np.float32)
        np.testing.assert_allclose(arrays["target"][got, 0], target, rtol=1e-6)
        gen = ak.to_numpy(tree["genWeight"])[keep].astype(np.float64)
        weight = (gen * padded[keep, 1] / 50).astype(np.float32)
        np.testing.assert_allclose(arrays["weight"][got], weight, rtol=1e-6)
        selected += len(got)
        assert not set(rows) & {i for i, k in zip(ids(tree), keep, strict=True) if not k}
    assert selected == len(arrays["label"]) < 50  # the cut removed events


def test_an_undefined_target_is_a_bad_target(tmp_path):
    # the data file has events with fewer than two jets: their Jet_pt[1] is undefined
    task = {"kind": "regression", "targets": [{"name": "j2", "expression": "Jet_pt[1]"}]}
    config = section(tmp_path / "refused", samples=sample_list("data"))
    with pytest.raises(ConversionError, match=r"NaN or infinite target \(j2; NaN also where an "):
        convert(DatasetConfig.from_dict(config, task))
    dropped = section(tmp_path / "dropped", samples=sample_list("data"))
    manifest = convert(DatasetConfig.from_dict(dropped, {**task, "on_bad_target": "drop"}))
    jets = events(DATA)["Jet_pt"]
    short = int((ak.to_numpy(ak.num(jets)) < 2).sum())
    assert short > 0
    assert manifest.weights["samples"]["data"]["non_finite_targets"] == short
    assert manifest.events("train") + manifest.events("validation") == len(jets) - short


def test_sumw_is_read_from_the_older_genEventSumw_(tmp_path, caplog):
    out = tmp_path / "out"
    config = section(out, samples=[{**sample_list("dy")[0], "xsec": 6077.2}], lumi=1000.0)
    with caplog.at_level(logging.WARNING):
        manifest = convert(DatasetConfig.from_dict(config))
    runs = uproot.open(DY)["Runs"]
    assert "genEventSumw" not in runs
    sumw = float(runs["genEventSumw_"].array(library="np").astype(np.float64).sum())
    record = manifest.weights["normalisation"]["samples"]["dy"]
    assert record["sumw_source"] == "Runs.genEventSumw_"
    assert record["sumw"] == pytest.approx(sumw, rel=1e-12)
    assert record["sumw"] == pytest.approx(1.52e10, rel=0.01)  # README: over 850 098 events
    assert record["factor"] == pytest.approx(6077.2 * 1000.0 / sumw, rel=1e-12)
    arrays = read_all(out, manifest)
    rows = rows_by_id(arrays)
    tree = events(DY)
    gen = ak.to_numpy(tree["genWeight"]).astype(np.float64)
    expected = (gen * record["factor"]).astype(np.float32)
    np.testing.assert_array_equal(arrays["weight"][[rows[i] for i in ids(tree)]], expected)
    assert not [r for r in caplog.records if "summed from the events" in r.getMessage()]


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())


def feature(name: str, expr: str, fill: float | None = -1) -> dict[str, Any]:
    return {"name": name, "expr": expr} | ({} if fill is None else {"fill": fill})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (  # a branch the files lack: the reader's "did you mean"
            {"features": ["MET_pt", feature("lead", "Jet_ptt[0]")]},
            r"nano_dy\.root: tree 'Events' has no branch 'Jet_ptt' \(feature 'lead' = "
            r"Jet_ptt\[0\]\); did you mean \['Jet_pt'",
        ),
        (  # an index on a per-event branch
            {"features": [feature("met0", "MET_pt[0]")]},
            r"dataset\.features 'met0' expr 'MET_pt\[0\]': 'MET_pt\[0\]' takes an element or a "
            r"reduction of a list, but 'MET_pt' is one number per event in .*nano_dy\.root; "
            r"write MET_pt itself",
        ),
        (  # a reduction of a per-event branch
            {"features": [feature("m", "max(MET_pt)")]},
            r"'max\(MET_pt\)' takes an element or a reduction of a list, but 'MET_pt' is one "
            r"number per event",
        ),
        (  # an index that is no whole number
            {"features": [feature("j", "Jet_pt[0.5]")]},
            r"dataset\.features 'j' expr 'Jet_pt\[0\.5\]': 'Jet_pt\[0\.5\]': an index is a "
            r"whole number, e.g\. Jet_pt\[0\]",
        ),
        (
            {"features": [feature("j", "Jet_pt[n]")]},
            r"'Jet_pt\[n\]': an index is a whole number",
        ),
        (  # a list used as one number
            {"features": [feature("r", "Jet_pt / MET_pt")]},
            r"dataset\.features 'r' expr 'Jet_pt / MET_pt': 'Jet_pt' is jagged \(a list per "
            r"event\) in .*; take an element \(Jet_pt\[0\]\) or reduce it",
        ),
        (  # an element without a fill
            {"features": [feature("lead", "Jet_pt[0]", fill=None)]},
            r"dataset\.features 'lead' expr 'Jet_pt\[0\]': some events may have no "
            r"Jet_pt\[0\] .*fill: -1",
        ),
        (  # the name of a branch of the files
            {"features": [feature("nJet", "len(Jet_pt)")]},
            r"dataset\.features 'nJet' expr 'len\(Jet_pt\)': .*nano_dy\.root has a branch "
            r"'nJet'; give the derived feature a name of its own",
        ),
        (  # the name of a jagged branch
            {"features": [feature("Muon_pt", "len(Jet_pt)")]},
            r"nano_dy\.root has a branch 'Muon_pt'; give the derived feature a name",
        ),
        (  # the name of another feature
            {"features": ["MET_pt", feature("MET_pt", "MET_pt / MET_sumEt")]},
            r"dataset\.features: the derived feature 'MET_pt' \(MET_pt / MET_sumEt\) has the "
            r"name of another feature",
        ),
        (
            {"features": [feature("a", "len(Jet_pt)"), feature("a", "sum(Jet_pt)")]},
            r"the derived feature 'a' \(len\(Jet_pt\)\) has the name of another feature",
        ),
        (  # a weight undefined for a selected event (DY has an event with one jet)
            {"features": ["MET_pt"], "weight": "genWeight * Jet_pt[1]"},
            r"nano_dy\.root: sample 'dy': its weight 'genWeight \* Jet_pt\[1\]' is undefined "
            r"for 2 of 40 selected events .*dataset\.selection: len\(Jet_pt\) >= 2$",
        ),
        (  # the same, with a selection that keeps those events
            {"features": ["MET_pt"], "weight": "genWeight * Jet_pt[1]", "selection": "MET_pt > 0"},
            r"'genWeight \* Jet_pt\[1\]' is undefined for 2 of 40 selected events",
        ),
        (  # a reduction in a target of a per-event branch
            {
                "task": {
                    "kind": "regression",
                    "targets": [{"name": "t", "expression": "sum(MET_pt)"}],
                }
            },
            r"task\.targets 't' expression 'sum\(MET_pt\)': 'sum\(MET_pt\)' takes an element",
        ),
    ],
)
def test_bad_derived_inputs_fail_in_one_line_and_write_nothing(tmp_path, changes, message):
    out = tmp_path / "out"
    task = changes.pop("task", None)
    config = {"dataset": section(out, samples=sample_list("dy"), **changes)}
    if task is not None:
        config["task"] = task
    with pytest.raises((ConfigError, ConversionError), match=message) as caught:
        convert(DatasetConfig.from_config(config))
    assert "\n" not in str(caught.value)
    assert_nothing_written(out)


@pytest.mark.parametrize(
    ("features", "weight", "message"),
    [
        (["MET_pt", feature("lead", "Jet_ptt[0]")], "genWeight", r"did you mean \['Jet_pt'"),
        ([feature("met0", "MET_pt[0]")], "genWeight", r"'MET_pt' is one number per event"),
        (["MET_pt"], "genWeight * Jet_pt[1]", r"is undefined for 2 of 40 selected events"),
    ],
)
def test_the_cli_refuses_them_in_one_line(tmp_path, features, weight, message):
    out = tmp_path / "out"
    config = section(out, samples=sample_list("dy"), features=features, weight=weight)
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"dataset": config}))
    line = convert_cli_line(path)
    assert re.search(message, line), line
    assert_nothing_written(out)
