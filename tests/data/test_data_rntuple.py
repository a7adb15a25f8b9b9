"""RNTuple inputs: real files nobody here wrote convert to what uproot reads, and the same events
stored as a TTree and as an RNTuple (or a mix) convert to byte-identical shards."""

from __future__ import annotations

from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.gather import gather
from gridtrain.data.groups import group_count, plan_group
from gridtrain.data.shards import ShardReader
from gridtrain.data.toy import IMAGE_BRANCHES, write_toy_dataset
from tests.conftest import toy_section

FILES = Path(__file__).parent / "rntuple"
MUONS = ["Muon_pt", "Muon_eta", "Muon_phi", "Muon_mass", "Muon_charge"]


def config(path: Path, tree: str, out: Path, **section) -> DatasetConfig:
    return DatasetConfig.from_dict(
        {
            "tree": tree,
            "samples": [{"name": "s", "files": [str(path)], "label": 1}],
            "event_id": [],
            "outdir": str(out),
            **section,
        }
    )


def by_entry(out: Path, manifest) -> dict[str, np.ndarray]:
    """Both splits, ordered by entry number (the id when a file has no id branches)."""
    parts = []
    for split in ("train", "validation"):
        for entry in manifest.shards[split]:
            with ShardReader(out / entry.path) as reader:
                parts.append(reader.read())
    merged = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    order = np.argsort(merged["event_id"][:, 1], kind="stable")
    return {k: v[order] for k, v in merged.items()}


def padded(array: ak.Array, length: int, fill: float) -> np.ndarray:
    return ak.to_numpy(ak.fill_none(ak.pad_none(array, length, clip=True), fill))


def test_cms_open_data_muons_equal_uproot(tmp_path):
    path = FILES / "Run2012BC_DoubleMuParked_Muons_1000evts_rntuple_v1-0-0-0.root"
    cfg = config(
        path,
        "Events",
        tmp_path,
        features=["nMuon"],
        jagged={"muons": {"branches": MUONS, "length": 3, "fill": -9.0}},
        shard_events=300,
        step_events=250,
    )
    manifest = convert(cfg)
    assert [s.kind for s in manifest.sources] == ["RNTuple"]
    data = by_entry(tmp_path, manifest)
    ntuple = uproot.open(path)["Events"]
    assert len(data["label"]) == ntuple.num_entries == 1000
    np.testing.assert_array_equal(data["event_id"][:, 1], np.arange(1000))
    np.testing.assert_array_equal(data["features"][:, 0], ntuple["nMuon"].array(library="np"))
    muons = ntuple.arrays(MUONS)
    for channel, name in enumerate(MUONS):
        np.testing.assert_array_equal(data["muons"][:, :, channel], padded(muons[name], 3, -9.0))
    counts = ak.to_numpy(ak.num(muons["Muon_pt"]))
    np.testing.assert_array_equal(data["muons_count"], np.minimum(counts, 3))


def test_nanoaod_imported_as_rntuple_with_ids_and_a_collection_subfield(tmp_path):
    path = FILES / "cmsopendata2015_ttbar_19980_NANOAOD_RNTupleImporter_rntuple_v1-0-0-1.root"
    # Jet_pt is the RVec field; _collection10.Jet_eta the same collection's member by its path.
    jets = ["Jet_pt", "_collection10.Jet_eta", "Jet_btagDeepFlavB"]
    cfg = config(
        path,
        "Events",
        tmp_path,
        features=["MET_pt", "MET_phi", "PV_npvs"],
        jagged={"jets": {"branches": jets, "length": 6}},
        event_id=["run", "luminosityBlock", "event"],
        weight="genWeight",
        validation_fraction=0.3,
    )
    manifest = convert(cfg)
    ntuple = uproot.open(path)["Events"]
    read = {n: ntuple[n].array() for n in [*jets, "MET_pt", "MET_phi", "PV_npvs", "event"]}
    rows = {}
    for split in ("train", "validation"):
        for entry in manifest.shards[split]:
            with ShardReader(tmp_path / entry.path) as reader:
                data = reader.read()
            for i, event in enumerate(data["event_id"][:, 2]):
                rows[int(event)] = {k: v[i] for k, v in data.items()}
    assert sorted(rows) == ak.to_list(read["event"])
    for i, event in enumerate(ak.to_list(read["event"])):
        row = rows[event]
        expected = [ak.to_numpy(read[f])[i] for f in ("MET_pt", "MET_phi", "PV_npvs")]
        np.testing.assert_array_equal(row["features"], np.asarray(expected, dtype=np.float32))
        for channel, name in enumerate(jets):
            np.testing.assert_array_equal(row["jets"][:, channel], padded(read[name], 6, 0.0)[i])
        assert row["weight"] == np.float32(ntuple["genWeight"].array(library="np")[i])


def test_atlas_physlite_electrons_and_jets_equal_uproot(tmp_path):
    path = FILES / "uproot-physlite-rntuple_v1-0-0-0.root"
    electrons = [f"AnalysisElectronsAuxDyn:{v}" for v in ("pt", "eta", "phi")]
    jets = [f"AnalysisJetsAuxDyn:{v}" for v in ("pt", "eta", "phi")]
    pileup = "EventInfoAuxDyn:averageInteractionsPerCrossing"
    cfg = config(
        path,
        "EventData",  # an RNTuple, beside TTrees of metadata in the same file
        tmp_path,
        features=[pileup],
        jagged={
            "electrons": {"branches": electrons, "length": 2},
            "jets": {"branches": jets, "length": 4, "fill": -1.0},
        },
        event_id=["EventInfoAuxDyn:runNumber", "EventInfoAuxDyn:eventNumber"],
        selection=f"`{pileup}` > 30",  # a name that is no identifier, between backquotes
    )
    manifest = convert(cfg)
    ntuple = uproot.open(path)["EventData"]
    read = {n: ntuple[n].array() for n in [*electrons, *jets, pileup]}
    keep = ak.to_numpy(read[pileup]) > 30
    events = ak.to_list(ntuple["EventInfoAuxDyn:eventNumber"].array()[keep])
    read = {n: a[keep] for n, a in read.items()}
    assert manifest.events("train") + manifest.events("validation") == len(events)
    assert 20 < len(events) < 100
    rows = {}
    for split in ("train", "validation"):
        for entry in manifest.shards[split]:
            with ShardReader(tmp_path / entry.path) as reader:
                data = reader.read()
            for i, event in enumerate(data["event_id"][:, 1]):
                rows[int(event)] = {k: v[i] for k, v in data.items()}
    for i, event in enumerate(events):
        row = rows[event]
        assert row["features"][0] == np.float32(ak.to_numpy(read[pileup])[i])
        for channel, name in enumerate(electrons):
            np.testing.assert_array_equal(
                row["electrons"][:, channel], padded(read[name], 2, 0.0)[i]
            )
        for channel, name in enumerate(jets):
            np.testing.assert_array_equal(row["jets"][:, channel], padded(read[name], 4, -1.0)[i])


def test_staff_integers_with_a_selection_and_a_label_field(tmp_path):
    path = FILES / "ntpl001_staff_rntuple_v1-0-0-0.root"
    features = ["Age", "Service", "Children", "Grade", "Step", "Hrweek", "Cost"]
    cfg = DatasetConfig.from_dict(
        {
            "tree": "Staff",
            "samples": [{"name": "staff", "files": [str(path)], "label": "Flag"}],
            "features": features,
            "event_id": [],
            "selection": "Age > 40 && Cost < 10000",
            "outdir": str(tmp_path),
        }
    )
    manifest = convert(cfg)
    read = uproot.open(path)["Staff"].arrays([*features, "Flag"], library="np")
    keep = (read["Age"] > 40) & (read["Cost"] < 10000)
    assert manifest.sources[0].selected == int(keep.sum()) > 0
    data = by_entry(tmp_path, manifest)
    np.testing.assert_array_equal(data["event_id"][:, 1], np.flatnonzero(keep))
    expected = np.stack([read[f][keep] for f in features], axis=1).astype(np.float32)
    np.testing.assert_array_equal(data["features"], expected)
    np.testing.assert_array_equal(data["label"], read["Flag"][keep])


def test_twelve_clusters_streamed_in_small_steps(tmp_path):
    path = FILES / "test_multiple_cluster_groups_rntuple_v1-0-0-0.root"
    cfg = config(
        path,
        "ntuple",
        tmp_path,
        features=["one"],
        jagged={"v": {"branches": ["int_vector"], "length": 5, "fill": -1}},
        step_events=70,
        shard_events=90,
    )
    manifest = convert(cfg)
    data = by_entry(tmp_path, manifest)
    ntuple = uproot.open(path)["ntuple"]
    np.testing.assert_array_equal(data["features"][:, 0], ntuple["one"].array(library="np"))
    np.testing.assert_array_equal(data["v"][:, :, 0], padded(ntuple["int_vector"].array(), 5, -1))


def test_a_record_field_is_read_by_its_numeric_subfields(tmp_path):
    path = FILES / "test_int_vfloat_tlv_vtlv_rntuple_v1-0-0-0.root"
    cfg = config(
        path,
        "ntuple",
        tmp_path,
        features=["one_integers", "three_LV.pt", "three_LV.mass"],
        jagged={"floats": {"branches": ["two_v_floats"], "length": 4}},
    )
    data = by_entry(tmp_path, convert(cfg))
    ntuple = uproot.open(path)["ntuple"]
    for column, name in enumerate(["one_integers", "three_LV.pt", "three_LV.mass"]):
        expected = ak.to_numpy(ntuple[name].array()).astype(np.float32)
        np.testing.assert_array_equal(data["features"][:, column], expected, err_msg=name)
    np.testing.assert_array_equal(
        data["floats"][:, :, 0], padded(ntuple["two_v_floats"].array(), 4, 0.0)
    )


@pytest.fixture(scope="module")
def both_formats(tmp_path_factory) -> dict[str, Path]:
    """The same 3000 toy events (with 8 x 8 jet images) as TTrees and as RNTuples."""
    folders = {}
    for file_format in ("ttree", "rntuple"):
        folder = tmp_path_factory.mktemp(file_format)
        write_toy_dataset(folder, 3000, seed=11, file_format=file_format, image_size=8)
        folders[file_format] = folder
    return folders


def image_section(toy: Path, out: Path, **overrides) -> dict:
    images = {"jet_image": {"branches": list(IMAGE_BRANCHES)}}
    return toy_section(toy, out, images=images, shard_events=700, step_events=600, **overrides)


def shard_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.h5"))}


def test_a_ttree_and_an_rntuple_of_the_same_events_give_identical_shards(both_formats, tmp_path):
    assert uproot.open(both_formats["ttree"] / "signal.root").classnames() == {"events;1": "TTree"}
    assert uproot.open(both_formats["rntuple"] / "signal.root").classnames() == {
        "events;1": "ROOT::RNTuple"
    }
    manifests = {}
    for file_format, toy in both_formats.items():
        cfg = DatasetConfig.from_dict(image_section(toy, tmp_path / file_format))
        manifests[file_format] = convert(cfg)
    ttree, rntuple = manifests["ttree"], manifests["rntuple"]
    assert shard_bytes(tmp_path / "ttree") == shard_bytes(tmp_path / "rntuple")
    assert ttree.shards == rntuple.shards
    assert ttree.stats == rntuple.stats
    assert [s.kind for s in rntuple.sources] == ["RNTuple", "RNTuple"]

    # A dataset mixing the two: signal as a TTree, background as an RNTuple, same shards again.
    mixed = image_section(both_formats["ttree"], tmp_path / "mixed")
    mixed["samples"][1]["files"] = [str(both_formats["rntuple"] / "background.root")]
    manifest = convert(DatasetConfig.from_dict(mixed))
    assert [s.kind for s in manifest.sources] == ["TTree", "RNTuple"]
    assert shard_bytes(tmp_path / "mixed") == shard_bytes(tmp_path / "ttree")


def test_grouped_conversion_of_mixed_files_gathers_the_one_job_events(both_formats, tmp_path):
    section = image_section(both_formats["ttree"], tmp_path / "one")
    section["samples"][0]["files"] = [
        str(both_formats["ttree"] / "signal.root"),
        str(both_formats["rntuple"] / "signal.root"),
    ]
    section["samples"][1]["files"] = [
        str(both_formats["rntuple"] / "background.root"),
        str(both_formats["ttree"] / "background.root"),
    ]
    one = convert(DatasetConfig.from_dict(section))
    section.update(outdir=str(tmp_path / "g"), files_per_job=1)
    grouped = DatasetConfig.from_dict(section)
    for k in range(group_count(grouped)):
        convert(grouped, file_group=plan_group(grouped, k))
    gathered = gather(grouped)
    assert sorted(s.kind for s in gathered.sources) == ["RNTuple"] * 2 + ["TTree"] * 2
    for split in ("train", "validation"):
        assert gathered.events(split) == one.events(split)
    for name, stats in one.stats.items():
        for key in ("count", "mean", "std", "min", "max"):
            np.testing.assert_allclose(gathered.stats[name][key], stats[key], rtol=1e-7)
