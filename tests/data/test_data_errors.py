"""Bad input: a one-line error naming the file and the problem, and nothing left behind."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import skhep_testdata
import uproot
import yaml

from gridtrain.config import DatasetConfig, load_config
from gridtrain.data.convert import convert
from gridtrain.errors import ConfigError, ConversionError
from tests.conftest import convert_cli_line, toy_config, toy_section


def real(name: str) -> str:
    return skhep_testdata.data_path(name)


def config_for(path: str, tree: str, out: Path, **overrides) -> DatasetConfig:
    section = {
        "tree": tree,
        "samples": [{"name": "s", "files": [path], "label": 0}],
        "event_id": [],
        "outdir": str(out),
        **overrides,
    }
    return DatasetConfig.from_dict(section)


def assert_nothing_written(out: Path) -> None:
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], f"left behind: {left}"


def test_a_file_that_is_not_root(tmp_path):
    bogus = tmp_path / "notes.root"
    bogus.write_text("this is a text file, not ROOT\n" * 100)
    with pytest.raises(ConversionError, match=r"notes\.root: cannot be opened as a ROOT file"):
        convert(config_for(str(bogus), "events", tmp_path / "out", features=["x"]))
    assert_nothing_written(tmp_path / "out")


def test_a_missing_file(tmp_path):
    with pytest.raises(ConversionError, match=r"nowhere\.root: no such file"):
        convert(config_for(str(tmp_path / "nowhere.root"), "t", tmp_path / "o", features=["x"]))


def test_a_truncated_file(tmp_path):
    cut = tmp_path / "cut.root"
    data = Path(real("uproot-HZZ.root")).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ConversionError, match=r"cut\.root"):
        convert(config_for(str(cut), "events", tmp_path / "out", features=["MET_px"]))
    assert_nothing_written(tmp_path / "out")


def test_a_missing_tree_lists_the_trees_there(tmp_path):
    with pytest.raises(ConversionError, match=r"no TTree or RNTuple 'Events'.*\['events'\]"):
        convert(config_for(real("uproot-HZZ.root"), "Events", tmp_path, features=["MET_px"]))


def test_a_missing_branch_suggests_and_lists(tmp_path):
    with pytest.raises(ConversionError, match=r"no branch 'MET_pz'.*did you mean.*MET_px"):
        convert(config_for(real("uproot-HZZ.root"), "events", tmp_path, features=["MET_pz"]))


def test_a_string_branch_cannot_become_a_float_array(tmp_path):
    path = real("uproot-Zmumu.root")
    with pytest.raises(ConversionError, match=r"'Type'.*cannot become a fixed-size float array"):
        convert(config_for(path, "events", tmp_path, features=["E1", "Type"]))


def test_a_doubly_jagged_branch_is_refused(tmp_path):
    jagged = {"x": {"branches": ["x"], "length": 4}}
    with pytest.raises(ConversionError, match=r"'x'.*lists of lists"):
        convert(config_for(real("uproot-vectorVectorDouble.root"), "t", tmp_path, jagged=jagged))


def test_a_jagged_branch_configured_as_flat(tmp_path):
    with pytest.raises(ConversionError, match=r"'Jet_Px' \(feature\) is jagged.*dataset.jagged"):
        convert(config_for(real("uproot-HZZ.root"), "events", tmp_path, features=["Jet_Px"]))


def test_a_flat_branch_configured_as_jagged(tmp_path):
    jagged = {"met": {"branches": ["MET_px"], "length": 2}}
    with pytest.raises(ConversionError, match=r"'MET_px'.*is flat.*dataset.features"):
        convert(config_for(real("uproot-HZZ.root"), "events", tmp_path, jagged=jagged))


def test_an_empty_selection(toy_dir, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"keeps no event of 12000; loosen it"):
        convert(toy_config(toy_dir, out, selection="jet_pt < 0"))
    assert_nothing_written(out)


def test_an_empty_tree(tmp_path):
    empty = tmp_path / "empty.root"
    with uproot.recreate(empty) as f:
        f.mktree("events", {"x": np.float32})
    with pytest.raises(ConversionError, match=r"empty\.root.*has no entries"):
        convert(config_for(str(empty), "events", tmp_path / "out", features=["x"]))
    assert_nothing_written(tmp_path / "out")


def test_a_selection_on_a_jagged_branch(toy_dir, tmp_path):
    # a list per event enters a cut through an element or a reduction (part_pt[0], max(part_pt))
    with pytest.raises(
        ConversionError, match=r"'part_pt' is jagged \(a list per event\).*\(part_pt\[0\]\)"
    ):
        convert(toy_config(toy_dir, tmp_path, selection="part_pt > 3"))


def copy_with_small_baskets(source: Path, target: Path, per_basket: int) -> None:
    tree = uproot.open(source)["events"]
    names = tree.keys()  # iterating a TTree yields branches, not names
    flat = tree.arrays([k for k in names if not k.startswith(("part_", "npart"))])
    jagged = tree.arrays([k for k in names if k.startswith("part_")])
    with uproot.recreate(target) as f:
        out = None
        for start in range(0, tree.num_entries, per_basket):
            part = ak.zip({k[5:]: jagged[k][start : start + per_basket] for k in jagged.fields})
            data = {k: flat[k][start : start + per_basket].to_numpy() for k in flat.fields}
            if out is None:
                types = {k: v.dtype for k, v in data.items()} | {"part": part.type.content}
                out = f.mktree("events", types)
            out.extend({**data, "part": part})


def test_a_corrupt_basket_mid_conversion_leaves_nothing(toy_dir, tmp_path):
    bad = tmp_path / "in" / "background.root"
    bad.parent.mkdir()
    copy_with_small_baskets(toy_dir / "background.root", bad, per_basket=1000)
    branch = uproot.open(bad)["events"]["part_pt"]
    assert branch.num_baskets == 6
    seek = int(branch.member("fBasketSeek")[4])
    with open(bad, "r+b") as f:
        f.seek(seek + 100)
        f.write(b"\xa5" * 2000)
    samples = toy_section(toy_dir, tmp_path)["samples"]
    samples[1]["files"] = [str(bad)]
    out = tmp_path / "out"
    with pytest.raises(ConversionError, match=r"background\.root: branch 'part_pt'") as error:
        convert(toy_config(toy_dir, out, samples=samples, step_events=500, shard_events=500))
    # the failure came late: shards of earlier steps had been written, and are gone again
    assert "entries 4000-5000" in str(error.value)
    assert_nothing_written(out)


def test_cli_reports_one_line_and_exits_non_zero(toy_dir, tmp_path):
    config = tmp_path / "config.yaml"
    section = toy_section(toy_dir, tmp_path / "out", features=["jet_pt", "jet_nope"])
    config.write_text(yaml.safe_dump({"dataset": section}))
    line = convert_cli_line(config)
    assert "signal.root" in line
    assert "'jet_nope'" in line
    assert_nothing_written(tmp_path / "out")


def test_invalid_config_names_the_key(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("dataset:\n  tree: events\n  samples: []\n")
    with pytest.raises(ConfigError, match=r"config\.yaml: dataset\.samples: .*"):
        load_config(config)
    config.write_text("dataset: {tree: t, samples: [{name: a, files: [x], label: 1}], codec: zip}")
    with pytest.raises(ConfigError, match=r"dataset\.codec: 'zip' is not one of"):
        load_config(config)
    with pytest.raises(ConfigError, match=r"missing\.yaml: no such configuration file"):
        load_config(tmp_path / "missing.yaml")


def test_sigkill_mid_run_leaves_no_final_name_and_a_rerun_completes(toy_dir, tmp_path):
    out = tmp_path / "out"
    section = toy_section(toy_dir, out, step_events=200, shard_events=200, codec="gzip")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"dataset": section}))
    command = [sys.executable, "-m", "gridtrain", "-q", "convert", "-c", str(config)]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if out.exists() and any(p.name.endswith(".part") for p in out.iterdir()):
                break
            if process.poll() is not None:
                pytest.fail("conversion finished before it could be interrupted")
            subprocess.run(["sleep", "0.02"], check=True)
        process.kill()
    finally:
        process.wait(timeout=30)
    names = [p.name for p in out.iterdir()]
    assert names, "the run was killed before it wrote anything"
    assert all(n.startswith(".") and n.endswith(".part") for n in names), names
    subprocess.run(command, check=True, timeout=300)
    assert not any(n.endswith(".part") for n in os.listdir(out))
    assert (out / "manifest.json").exists()
