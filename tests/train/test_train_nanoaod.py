"""The worked real sample set (config/nanoaod.yaml, docs/how-to/real-samples.md): a three-class
Drell-Yan / ttbar / data classifier on coffea's real NanoAOD files, converted and trained from the
config as it is in the repository (only its output folders are moved into the test's folder).

Every expected number is computed here from the files with uproot and numpy, apart from gridtrain:
each simulated sample's sum of generator weights from its ``Runs`` tree (``genEventSumw``, or the
older ``genEventSumw_``), its factor ``xsec x lumi / sumw`` and its yield; data counts its events.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uproot
import yaml

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "config" / "nanoaod.yaml"


def gridtrain(*args: str) -> subprocess.CompletedProcess[str]:
    """The CLI run from the repository's root, where the config's file paths start."""
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=REPO,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )


def expected_yields(config: dict[str, Any]) -> dict[str, dict[str, float]]:
    """Per sample: its selected events, sumw, factor and yield, from the files with uproot."""
    dataset = config["dataset"]
    found = {}
    for sample in dataset["samples"]:
        weights, sumw = [], 0.0
        for name in sample["files"]:
            with uproot.open(REPO / name) as file:
                events = file[dataset["tree"]]
                if sample.get("data"):
                    weights.append(np.ones(events.num_entries))
                    continue
                weights.append(events["genWeight"].array(library="np").astype(np.float64))
                runs = file["Runs"]
                branch = "genEventSumw" if "genEventSumw" in runs else "genEventSumw_"
                sumw += float(runs[branch].array(library="np").astype(np.float64).sum())
        w = np.concatenate(weights)
        factor = 1.0 if sample.get("data") else sample["xsec"] * dataset["lumi"] / sumw
        found[sample["name"]] = {
            "events": len(w),
            "sumw": sumw,
            "factor": factor,
            "yield": float(w.sum() * factor),
        }
    return found


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path, str]:
    tmp = tmp_path_factory.mktemp("nanoaod")
    config = yaml.safe_load(CONFIG.read_text())
    config["dataset"]["outdir"] = str(tmp / "dataset")
    config["train"]["run_dir"] = str(tmp / "run")
    path = tmp / "nanoaod.yaml"
    path.write_text(yaml.safe_dump(config))
    converted = gridtrain("convert", "-c", str(path))
    assert converted.returncode == 0, converted.stderr[-3000:]
    trained = gridtrain("train", "-c", str(path))
    assert trained.returncode == 0, trained.stderr[-3000:]
    reported = gridtrain("report", str(tmp / "run"))
    assert reported.returncode == 0, reported.stderr[-3000:]
    return config, tmp, converted.stdout + reported.stdout


def test_every_sample_is_normalised_as_uproot_computes_it(trained) -> None:
    config, tmp, _ = trained
    manifest = json.loads((tmp / "dataset" / "manifest.json").read_text())
    normalisation = manifest["weights"]["normalisation"]
    expected = expected_yields(config)
    assert set(normalisation["samples"]) == set(expected) == {"dy", "ttbar", "data"}
    for name, want in expected.items():
        got = normalisation["samples"][name]
        assert got["events"] == want["events"], name
        assert got["factor"] == pytest.approx(want["factor"], rel=1e-9), name
        assert got["yield"] == pytest.approx(want["yield"], rel=1e-6), name
    # the DY file is an older NanoAOD: Σw read from Runs.genEventSumw_, not summed from events
    assert normalisation["samples"]["dy"]["sumw"] == pytest.approx(expected["dy"]["sumw"])
    assert normalisation["samples"]["dy"]["sumw_source"] == "Runs.genEventSumw_"
    assert normalisation["samples"]["ttbar"]["sumw_source"] == "Runs.genEventSumw"
    assert normalisation["data"] == {"events": 40, "yield": pytest.approx(40.0)}


def test_the_printed_yield_tables_are_uproots(trained) -> None:
    """``gridtrain convert`` and ``gridtrain report`` both print the yield table."""
    config, _, printed = trained
    expected = expected_yields(config)
    rows = [line.split() for line in printed.splitlines() if line.startswith("  ")]
    for name, want in expected.items():
        tables = [row for row in rows if row[0] == name]
        assert len(tables) == 2, printed  # once by convert, once by report
        for row in tables:
            assert int(row[2]) == want["events"]
            assert float(row[-1]) == pytest.approx(want["yield"], rel=1e-5)
            assert float(row[-2]) == pytest.approx(want["factor"], rel=1e-5)


def test_the_how_to_shows_the_yield_table_convert_prints(trained) -> None:
    """docs/how-to/real-samples.md includes docs/examples/nanoaod-yields.txt: it must be what
    ``gridtrain convert -c config/nanoaod.yaml`` prints today."""
    _, _, printed = trained
    shown = (REPO / "docs" / "examples" / "nanoaod-yields.txt").read_text().splitlines()
    lines = printed.splitlines()
    start = lines.index(shown[0])
    assert lines[start : start + len(shown)] == shown


def test_the_model_reads_both_collections(trained) -> None:
    """Jets and muons each reach the output: changing either group's inputs changes the scores."""
    from gridtrain.models import load_model

    _, tmp, _ = trained
    model = load_model(tmp / "run" / "model.keras", compile=False)
    names = {tensor.name for tensor in model.inputs}
    assert {"jets", "muons"} <= names, names
    rng = np.random.default_rng(1)
    feed = {}
    for tensor in model.inputs:
        if "int" in str(tensor.dtype):  # a group's entry count: at least one entry each
            feed[tensor.name] = rng.integers(1, 4, size=32).astype(str(tensor.dtype))
        else:
            feed[tensor.name] = rng.normal(size=(32, *tensor.shape[1:])).astype("float32")
    base = np.asarray(model.predict(feed, verbose=0))
    for group in ("jets", "muons"):
        changed = dict(feed, **{group: feed[group] + 1.0})
        scores = np.asarray(model.predict(changed, verbose=0))
        assert np.abs(scores - base).max() > 1e-4, f"the scores ignore the {group}"
