"""The Snakemake chain on the image toy written as RNTuples: rule toy, then rule convert."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import uproot
import yaml

from gridtrain.data.manifest import load_manifest, verify_local
from gridtrain.data.shards import ShardReader
from gridtrain.data.toy import IMAGE_BRANCHES

REPO = Path(__file__).resolve().parents[2]
SNAKEMAKE = str(Path(sys.executable).with_name("snakemake"))


def test_rntuple_image_toy_runs_through_toy_and_convert(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["toy"].update({"events": 1000, "format": "rntuple", "image_size": 8})
    config["dataset"].update(
        shard_events=400, images={"jet_image": {"branches": list(IMAGE_BRANCHES)}}
    )
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    shutil.copytree(REPO / "profiles", tmp_path / "profiles")
    target = f"{config['dataset']['outdir']}/manifest.json"
    command = [SNAKEMAKE, "-s", str(REPO / "Snakefile"), "-d", str(tmp_path)]
    command += ["--profile", "profiles/local", target]
    run = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    assert run.returncode == 0, run.stderr[-3000:]

    toy = tmp_path / config["toy"]["outdir"]
    assert uproot.open(toy / "signal.root").classnames() == {"events;1": "ROOT::RNTuple"}
    dataset = tmp_path / config["dataset"]["outdir"]
    manifest = load_manifest(dataset)
    assert verify_local(manifest, dataset) == []
    assert manifest.images[0]["shape"] == [8, 8, 2]
    assert {s.kind for s in manifest.sources} == {"RNTuple"}
    images = {}
    for name, label in (("signal", 1), ("background", 0)):
        read = uproot.open(toy / f"{name}.root")["events"].arrays(
            ["event", *IMAGE_BRANCHES], library="np"
        )
        for i, event in enumerate(read["event"]):
            images[(label, int(event))] = np.stack([read[b][i] for b in IMAGE_BRANCHES], -1)
    seen = 0
    for entry in manifest.shards["train"] + manifest.shards["validation"]:
        with ShardReader(dataset / entry.path, ["jet_image", "label", "event_id"]) as reader:
            data = reader.read()
        for image, label, ids in zip(
            data["jet_image"], data["label"], data["event_id"], strict=True
        ):
            np.testing.assert_array_equal(image, images[(int(label), int(ids[2]))])
            seen += 1
    assert seen == 1000
