"""An analysis's sample set: data beside simulation, per-sample weights, cross-section
normalisation to a luminosity, and per-sample branch aliases (issue 28).

The inputs are small NanoAOD-like ROOT files written here with uproot: simulated ``Events`` with
``genWeight`` (some negative, as NLO generators give) and a ``Runs`` tree with ``genEventSumw``
larger than the events' sum (a skim keeps part of the generated events), and collision data
without ``genWeight``. Every expected number is computed from the files with uproot and numpy,
apart from gridtrain.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
import yaml

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.gather import gather
from gridtrain.data.groups import group_count, plan_group
from gridtrain.errors import ConfigError, ConversionError
from tests.conftest import convert_cli_line, read_all

LUMI = 1000.0  # pb^-1
XSEC = {"ttbar": 831.8, "dy": 6077.2}
CUT = "MET_pt > 20"


def write_nano(
    path: Path,
    seed: int,
    events: int,
    *,
    mc: bool,
    runs: list[float] | None = None,
    rho: str = "fixedGridRhoFastjetAll",
    first_event: int = 0,
    rntuple: bool = False,
) -> None:
    """A NanoAOD-like file: ``Events`` (and ``Runs`` with ``genEventSumw`` when given), as
    TTrees or, with ``rntuple``, as RNTuples."""
    rng = np.random.default_rng(seed)
    branches: dict[str, np.ndarray] = {
        "run": np.full(events, 1 if mc else 275000 + seed, dtype=np.uint32),
        "luminosityBlock": np.full(events, seed, dtype=np.uint32),
        "event": np.arange(first_event, first_event + events, dtype=np.uint64),
        "MET_pt": rng.exponential(40.0, events).astype(np.float32),
        "PV_npvs": rng.integers(5, 60, events).astype(np.int32),
        rho: rng.uniform(5.0, 40.0, events).astype(np.float32),
    }
    if mc:
        sign = np.where(rng.random(events) < 0.15, -1.0, 1.0)
        branches["genWeight"] = (sign * rng.uniform(500.0, 700.0, events)).astype(np.float32)
        branches["puWeight"] = rng.uniform(0.5, 1.5, events).astype(np.float32)
    trees = {"Events": branches}
    if runs is not None:
        trees["Runs"] = {
            "run": np.ones(len(runs), dtype=np.uint32),
            "genEventSumw": np.asarray(runs, dtype=np.float64),
            "genEventCount": np.full(len(runs), events, dtype=np.int64),
        }
    with uproot.recreate(path) as file:
        for name, arrays in trees.items():
            if rntuple:
                file.mkrntuple(name, arrays)
            else:
                file.mktree(name, {k: v.dtype for k, v in arrays.items()}).extend(arrays)


@pytest.fixture(scope="module")
def nano(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nano")
    # ttbar: two files, each with a Runs tree of two entries (two generator jobs)
    write_nano(out / "ttbar_1.root", 1, 900, mc=True, runs=[2.1e6, 1.9e6])
    write_nano(out / "ttbar_2.root", 2, 700, mc=True, runs=[1.5e6], first_event=900,
               rntuple=True)  # fmt: skip
    # dy: an older NanoAOD that names rho differently, and no Runs tree
    write_nano(out / "dy_1.root", 3, 800, mc=True, rho="Rho_fixedGridRhoFastjetAll")
    write_nano(out / "dy_2.root", 4, 600, mc=True, rho="Rho_fixedGridRhoFastjetAll",
               first_event=800, rntuple=True)  # fmt: skip
    # data: no genWeight at all
    write_nano(out / "data_1.root", 5, 1000, mc=False)
    write_nano(out / "data_2.root", 6, 500, mc=False, rntuple=True)
    return out


def samples(nano: Path, **changes: dict[str, Any]) -> list[dict[str, Any]]:
    listed = [
        {"name": "data", "files": [str(nano / "data_1.root"), str(nano / "data_2.root")],
         "label": 0, "data": True},
        {"name": "ttbar", "files": [str(nano / "ttbar_1.root"), str(nano / "ttbar_2.root")],
         "label": 1, "xsec": XSEC["ttbar"]},
        {"name": "dy", "files": [str(nano / "dy_1.root"), str(nano / "dy_2.root")],
         "label": 0, "xsec": XSEC["dy"],
         "aliases": {"Rho_fixedGridRhoFastjetAll": "fixedGridRhoFastjetAll"}},
    ]  # fmt: skip
    for sample in listed:
        sample.update(changes.get(sample["name"], {}))
    return listed


def section(nano: Path, out: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "tree": "Events",
        "samples": samples(nano),
        "features": ["MET_pt", "PV_npvs", "fixedGridRhoFastjetAll"],
        "weight": "genWeight",
        "lumi": LUMI,
        "selection": CUT,
        "shard_events": 500,
        "step_events": 700,
        "outdir": str(out),
        **overrides,
    }


def branch(files: list[Path], name: str) -> np.ndarray:
    return np.concatenate([uproot.open(f)["Events"][name].array(library="np") for f in files])


def runs_sumw(files: list[Path]) -> float:
    return float(sum(uproot.open(f)["Runs"]["genEventSumw"].array(library="np").sum()
                     for f in files))  # fmt: skip


def expected_weights(files: list[Path], factor: float) -> np.ndarray:
    """The selected events' weights as gridtrain must store them, from the files directly."""
    keep = branch(files, "MET_pt") > 20
    gen = branch(files, "genWeight").astype(np.float64)
    return (gen[keep] * factor).astype(np.float32)


def by_event(arrays: dict[str, np.ndarray], run: int | None = None) -> dict[int, int]:
    """Row of each event number (of one run, when given)."""
    ids = arrays["event_id"]
    rows = np.flatnonzero(ids[:, 0] == run) if run is not None else np.arange(len(ids))
    return {int(ids[r, 2]): int(r) for r in rows}


def test_data_and_simulation_convert_together_normalised_to_the_luminosity(nano, tmp_path, caplog):
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING):
        manifest = convert(DatasetConfig.from_dict(section(nano, out)))
    norm = manifest.weights["normalisation"]
    arrays = read_all(out, manifest)
    ttbar_files = [nano / "ttbar_1.root", nano / "ttbar_2.root"]
    dy_files = [nano / "dy_1.root", nano / "dy_2.root"]
    data_files = [nano / "data_1.root", nano / "data_2.root"]

    # ttbar: sumw from Runs/genEventSumw, summed over entries and files, before the selection
    sumw = runs_sumw(ttbar_files)
    assert sumw == pytest.approx(5.5e6)
    ttbar = norm["samples"]["ttbar"]
    assert ttbar["sumw_source"] == "Runs.genEventSumw"
    assert ttbar["sumw"] == pytest.approx(sumw, rel=1e-12)
    assert ttbar["factor"] == pytest.approx(XSEC["ttbar"] * LUMI / sumw, rel=1e-12)
    expected = expected_weights(ttbar_files, XSEC["ttbar"] * LUMI / sumw)
    assert ttbar["events"] == len(expected)
    assert ttbar["yield"] == pytest.approx(float(expected.astype(np.float64).sum()), rel=1e-6)
    assert (ttbar["xsec"], ttbar["lumi"], ttbar["data"]) == (XSEC["ttbar"], LUMI, False)

    # dy: no Runs tree, so sumw is the sum of genWeight over every entry (before the selection)
    dy = norm["samples"]["dy"]
    dy_sumw = float(branch(dy_files, "genWeight").astype(np.float64).sum())
    assert dy["sumw_source"] == "events"
    assert dy["sumw"] == pytest.approx(dy_sumw, rel=1e-9)
    assert dy["factor"] == pytest.approx(XSEC["dy"] * LUMI / dy_sumw, rel=1e-9)
    dy_expected = expected_weights(dy_files, XSEC["dy"] * LUMI / dy_sumw)
    assert dy["yield"] == pytest.approx(float(dy_expected.astype(np.float64).sum()), rel=1e-6)
    warned = [r.getMessage() for r in caplog.records if "'dy'" in r.getMessage()]
    assert any("no Runs tree with genEventSumw" in m for m in warned), warned
    assert not any("'ttbar'" in r.getMessage() and "Runs" in r.getMessage()
                   for r in caplog.records)  # fmt: skip

    # each simulated event's stored weight is its genWeight x xsec x lumi / sumw
    ttbar_rows = np.flatnonzero(arrays["event_id"][:, 0] == 1)  # MC run number
    stored = {int(arrays["event_id"][r, 2]): arrays["weight"][r] for r in ttbar_rows
              if arrays["label"][r] == 1}  # fmt: skip
    events = branch(ttbar_files, "event")[branch(ttbar_files, "MET_pt") > 20]
    np.testing.assert_array_equal([stored[int(e)] for e in events], expected)

    # data: weight 1 without a genWeight branch, counted apart from simulation
    data_keep = branch(data_files, "MET_pt") > 20
    data = norm["samples"]["data"]
    assert (data["data"], data["factor"], data["sumw"]) == (True, 1.0, None)
    assert data["events"] == int(data_keep.sum()) == data["yield"]
    assert norm["data"] == {"events": int(data_keep.sum()), "yield": float(data_keep.sum())}
    assert norm["simulation"]["events"] == ttbar["events"] + dy["events"]
    assert norm["simulation"]["yield"] == pytest.approx(ttbar["yield"] + dy["yield"])
    data_rows = arrays["event_id"][:, 0] > 1000
    assert data_rows.sum() == data["events"]
    assert (arrays["weight"][data_rows] == 1.0).all()
    assert norm["lumi"] == LUMI
    # the class sums are the normalised weights'
    signal = manifest.weights["classes"]["signal"]
    assert signal["sum"] == pytest.approx(ttbar["yield"], rel=1e-9)


def test_aliases_read_each_file_under_the_configs_name(nano, tmp_path):
    out = tmp_path / "out"
    manifest = convert(DatasetConfig.from_dict(section(nano, out)))
    arrays = read_all(out, manifest)
    column = manifest.features.index("fixedGridRhoFastjetAll")
    # dy's files only have Rho_fixedGridRhoFastjetAll; its events (run 1, label 0) carry it
    dy_files = [nano / "dy_1.root", nano / "dy_2.root"]
    keep = branch(dy_files, "MET_pt") > 20
    rho = branch(dy_files, "Rho_fixedGridRhoFastjetAll")[keep]
    rows = {(int(i[1]), int(i[2])): r for r, i in enumerate(arrays["event_id"]) if i[0] == 1}
    lumis = branch(dy_files, "luminosityBlock")[keep]
    events = branch(dy_files, "event")[keep]
    got = [
        arrays["features"][rows[(int(lb), int(e))], column]
        for lb, e in zip(lumis, events, strict=True)
    ]
    np.testing.assert_array_equal(got, rho)
    # and without the alias, dy's files lack the branch
    plain = section(nano, tmp_path / "plain", samples=samples(nano, dy={"aliases": {}}))
    with pytest.raises(ConversionError, match=r"dy_1\.root: tree 'Events' has no branch "
                       r"'fixedGridRhoFastjetAll'"):  # fmt: skip
        convert(DatasetConfig.from_dict(plain))
    # an alias naming a branch the file lacks says which config name it stands for
    wrong = {"aliases": {"Rho_fixedGridRhoFastjet": "fixedGridRhoFastjetAll"}}
    bad = section(nano, tmp_path / "bad", samples=samples(nano, dy=wrong))
    with pytest.raises(ConversionError, match=r"no branch 'Rho_fixedGridRhoFastjet' \(feature, "
                       r"as 'fixedGridRhoFastjetAll' through the sample's aliases\)"):  # fmt: skip
        convert(DatasetConfig.from_dict(bad))
    assert not (tmp_path / "bad").exists()
    twice = {"aliases": {"Rho_fixedGridRhoFastjetAll": "rho", "fixedGridRhoFastjetAll": "rho"}}
    with pytest.raises(ConfigError, match=r"sample 'dy' aliases .* give one config name to "):
        DatasetConfig.from_dict(section(nano, tmp_path / "x", samples=samples(nano, dy=twice)))


def test_a_samples_own_weight_overrides_the_datasets(nano, tmp_path):
    out = tmp_path / "out"
    changes = {
        "ttbar": {"weight": "genWeight * puWeight"},  # an expression
        "dy": {"weight": 0.5},  # a number (and no xsec: removed below)
        "data": {"weight": 2},
    }
    listed = samples(nano, **changes)
    del listed[2]["xsec"]
    manifest = convert(DatasetConfig.from_dict(section(nano, out, samples=listed)))
    arrays = read_all(out, manifest)
    ttbar_files = [nano / "ttbar_1.root", nano / "ttbar_2.root"]
    keep = branch(ttbar_files, "MET_pt") > 20
    gen = branch(ttbar_files, "genWeight") * branch(ttbar_files, "puWeight")
    factor = XSEC["ttbar"] * LUMI / runs_sumw(ttbar_files)
    expected = (gen[keep].astype(np.float64) * factor).astype(np.float32)
    signal = arrays["label"] == 1
    order = np.argsort(arrays["event_id"][signal][:, 2])
    np.testing.assert_allclose(arrays["weight"][signal][order], expected, rtol=1e-6)
    dy_rows = (arrays["event_id"][:, 0] == 1) & (arrays["label"] == 0)
    assert (arrays["weight"][dy_rows] == 0.5).all()
    assert (arrays["weight"][arrays["event_id"][:, 0] > 1000] == 2.0).all()
    records = manifest.weights["normalisation"]["samples"]
    assert records["ttbar"]["weight"] == "genWeight * puWeight"
    assert (records["dy"]["weight"], records["dy"]["factor"]) == (0.5, 1.0)
    assert records["dy"]["sumw_source"] is None


def test_class_balance_works_on_the_normalised_weights(nano, tmp_path):
    out = tmp_path / "out"
    manifest = convert(
        DatasetConfig.from_dict(section(nano, out), {"kind": "binary", "balance": True})
    )
    classes = manifest.weights["classes"]
    sums = [classes["background"]["train_sum"], classes["signal"]["train_sum"]]
    mean = sum(sums) / 2
    assert manifest.class_factors == pytest.approx([mean / s for s in sums])
    arrays = read_all(out, manifest)
    train = np.zeros(len(arrays["label"]), dtype=bool)
    train[: manifest.events("train")] = True
    signal_sum = arrays["weight"][train & (arrays["label"] == 1)].astype(np.float64).sum()
    assert sums[1] == pytest.approx(signal_sum, rel=1e-6)


def test_a_grouped_conversion_normalises_every_group_alike(nano, tmp_path):
    one = convert(DatasetConfig.from_dict(section(nano, tmp_path / "one")))
    grouped = DatasetConfig.from_dict(section(nano, tmp_path / "grouped", files_per_job=1))
    for index in range(group_count(grouped)):
        convert(grouped, file_group=plan_group(grouped, index))
    gathered = gather(grouped).weights["normalisation"]
    expected = one.weights["normalisation"]
    assert len(plan_group(grouped, 0).samples[1]) == 1  # each group has one of ttbar's files
    for name, record in expected["samples"].items():
        got = gathered["samples"][name]
        assert got.keys() == record.keys()
        for key, value in record.items():
            if isinstance(value, float):
                assert got[key] == pytest.approx(value, rel=1e-9), (name, key)
            else:
                assert got[key] == value, (name, key)
    for key in ("lumi", "data", "simulation"):
        assert gathered[key] == pytest.approx(expected[key], rel=1e-9)


def assert_nothing_written(out: Path) -> None:
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        (
            {"data": {"xsec": 1.0}},
            ConfigError,
            r"sample 'data' is data: true and has xsec: 1; .*remove the xsec",
        ),
        (
            {"lumi": None},
            ConfigError,
            r"sample 'ttbar' has xsec: 831.8 \(pb\) but dataset.lumi is not set; .*dataset.lumi",
        ),
        (
            {"ttbar": {"weight": "genWeight * L1PreFiringWeight_Nom"}},
            ConversionError,
            r"ttbar_1\.root: tree 'Events' has no branch 'L1PreFiringWeight_Nom' \(weight of "
            r"sample 'ttbar' = genWeight \* L1PreFiringWeight_Nom\)",
        ),
        (
            {"data": {"data": False}},  # data without data: true gets dataset.weight
            ConversionError,
            r"data_1\.root: tree 'Events' has no branch 'genWeight' \(weight of sample 'data'",
        ),
    ],
)
def test_bad_inputs_fail_in_one_line_and_write_nothing(nano, tmp_path, changes, error, message):
    out = tmp_path / "out"
    lumi = changes.pop("lumi", LUMI)
    config = section(nano, out, samples=samples(nano, **changes), lumi=lumi)
    with pytest.raises(error, match=message) as caught:
        convert(DatasetConfig.from_dict(config))
    assert "\n" not in str(caught.value)
    assert_nothing_written(out)


def test_the_cli_refuses_an_xsec_without_lumi_in_one_line(nano, tmp_path):
    config = tmp_path / "config.yaml"
    out = tmp_path / "out"
    config.write_text(yaml.safe_dump({"dataset": section(nano, out, lumi=None)}))
    line = convert_cli_line(config)
    assert "dataset.lumi is not set" in line
    assert_nothing_written(out)
