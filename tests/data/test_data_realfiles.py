"""Conversion of real ROOT files that nobody here wrote (scikit-hep-testdata 0.3.12)."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import skhep_testdata
import uproot

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.shards import ShardReader

HZZ_CODECS = ["uncompressed", "zlib", "lz4", "lzma", "zstd"]
MUONS = ["Muon_Px", "Muon_Py", "Muon_Pz", "Muon_E", "Muon_Charge"]


def hzz_config(path: str, out) -> DatasetConfig:
    return DatasetConfig.from_dict(
        {
            "tree": "events",
            "samples": [{"name": "hzz", "files": [path], "label": 1}],
            "features": ["MET_px", "MET_py", "NPrimaryVertices", "triggerIsoMu24"],
            "jagged": {"muons": {"branches": MUONS, "length": 3, "fill": -9.0}},
            "weight": "EventWeight",
            "event_id": [],
            "shard_events": 1000,
            "outdir": str(out),
        }
    )


def all_events(out, manifest) -> dict[str, np.ndarray]:
    parts = []
    for split in ("train", "validation"):
        for entry in manifest.shards[split]:
            with ShardReader(out / entry.path) as reader:
                parts.append(reader.read())
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(merged["event_id"][:, 1])  # by entry number
    return {k: v[order] for k, v in merged.items()}


@pytest.fixture(scope="module")
def hzz_converted(tmp_path_factory):
    out = tmp_path_factory.mktemp("hzz")
    manifest = convert(hzz_config(skhep_testdata.data_path("uproot-HZZ.root"), out))
    return all_events(out, manifest)


def test_hzz_flat_and_jagged_equal_uproot(hzz_converted):
    tree = uproot.open(skhep_testdata.data_path("uproot-HZZ.root"))["events"]
    assert len(hzz_converted["label"]) == tree.num_entries == 2421
    np.testing.assert_array_equal(hzz_converted["event_id"][:, 1], np.arange(2421))
    features = ["MET_px", "MET_py", "NPrimaryVertices", "triggerIsoMu24"]
    flat = tree.arrays([*features, "EventWeight"], library="np")
    for column, name in enumerate(features):
        expected = flat[name].astype(np.float32)
        np.testing.assert_array_equal(hzz_converted["features"][:, column], expected, err_msg=name)
    np.testing.assert_array_equal(hzz_converted["weight"], flat["EventWeight"])
    muons = tree.arrays(MUONS)
    for channel, name in enumerate(MUONS):
        padded = ak.to_numpy(ak.fill_none(ak.pad_none(muons[name], 3, clip=True), -9.0))
        np.testing.assert_array_equal(hzz_converted["muons"][:, :, channel], padded)
    counts = np.minimum(ak.to_numpy(ak.num(muons["Muon_Px"])), 3)
    np.testing.assert_array_equal(hzz_converted["muons_count"], counts)


@pytest.mark.parametrize("codec", HZZ_CODECS)
def test_the_same_content_in_every_input_codec_converts_identically(hzz_converted, codec, tmp_path):
    path = skhep_testdata.data_path(f"uproot-HZZ-{codec}.root")
    converted = all_events(tmp_path, convert(hzz_config(path, tmp_path)))
    for name, array in hzz_converted.items():
        np.testing.assert_array_equal(converted[name], array, err_msg=f"{codec}: {name}")


def test_nested_directories_and_fixed_size_arrays(tmp_path):
    path = skhep_testdata.data_path("uproot-nesteddirs.root")
    config = DatasetConfig.from_dict(
        {
            "tree": "one/two/tree",
            "samples": [{"name": "n", "files": [path], "label": 0}],
            "features": ["Int32", "UInt64", "Float64", "ArrayFloat32"],
            "event_id": [],
            "outdir": str(tmp_path),
        }
    )
    manifest = convert(config)
    assert manifest.features[:3] == ["Int32", "UInt64", "Float64"]
    assert manifest.features[3:] == [f"ArrayFloat32[{i}]" for i in range(10)]
    data = all_events(tmp_path, manifest)
    tree = uproot.open(path)["one/two/tree"]
    for column, name in enumerate(["Int32", "UInt64", "Float64"]):
        expected = tree[name].array(library="np").astype(np.float32)
        np.testing.assert_array_equal(data["features"][:, column], expected, err_msg=name)
    np.testing.assert_array_equal(data["features"][:, 3:], tree["ArrayFloat32"].array(library="np"))


def test_zmumu_with_its_own_event_ids(tmp_path):
    path = skhep_testdata.data_path("uproot-Zmumu.root")
    features = ["pt1", "eta1", "pt2", "eta2", "M"]
    config = DatasetConfig.from_dict(
        {
            "tree": "events",
            "samples": [{"name": "z", "files": [path, path], "label": 1}],  # a file twice
            "features": features,
            "event_id": ["Run", "Event"],
            "selection": "M > 60 && M < 120",
            "outdir": str(tmp_path),
        }
    )
    manifest = convert(config)
    assert manifest.event_id == ["Run", "Event"]
    read = uproot.open(path)["events"].arrays(["Run", "Event", *features], library="np")
    passing = (read["M"] > 60) & (read["M"] < 120)
    assert [s.selected for s in manifest.sources] == [int(passing.sum())] * 2

    # every selected entry, from each of the two files: its (Run, Event) from uproot and the
    # features of that same entry
    def rows(ids: np.ndarray, values: np.ndarray) -> list[tuple]:
        return sorted(zip(*(c.tolist() for c in (*ids.T, *values.T)), strict=True))

    expected = rows(
        np.column_stack([read["Run"][passing], read["Event"][passing]]).astype(np.uint64),
        np.column_stack([read[f][passing] for f in features]).astype(np.float32),
    )
    splits = {}
    for split in ("train", "validation"):
        parts = []
        for entry in manifest.shards[split]:
            with ShardReader(tmp_path / entry.path, ["event_id", "features"]) as reader:
                parts.append(reader.read())
        splits[split] = {k: np.concatenate([p[k] for p in parts]) for k in ("event_id", "features")}
    got = rows(
        np.concatenate([data["event_id"] for data in splits.values()]),
        np.concatenate([data["features"] for data in splits.values()]),
    )
    assert got == sorted(expected + expected)
    # the ids decide the split: an event never lands on both sides, not even from two files
    train, validation = ({tuple(r) for r in d["event_id"].tolist()} for d in splits.values())
    assert train
    assert validation
    assert not train & validation
