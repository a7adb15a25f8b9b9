"""Conversion of the toy TTrees: round trip, manifest, statistics, mixing, split, reruns."""

from __future__ import annotations

import zlib
from pathlib import Path

import awkward as ak
import h5py
import numpy as np
import pytest
import uproot

from gridtrain.data.arrays import validation_mask
from gridtrain.data.convert import convert
from gridtrain.data.manifest import load_manifest, verify_local
from gridtrain.data.shards import ShardReader
from gridtrain.data.toy import JET_FEATURES
from tests.conftest import TOY_EVENTS, toy_config

CHANNELS = ["part_pt", "part_deta", "part_dphi", "part_charge", "part_pid"]


@pytest.fixture(scope="module")
def converted(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("converted")
    manifest = convert(toy_config(toy_dir, out))
    return out, manifest


def read_all(out: Path, manifest, split: str) -> dict[str, np.ndarray]:
    parts = []
    for entry in manifest.shards[split]:
        with ShardReader(out / entry.path) as reader:
            parts.append(reader.read())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def uproot_reference(toy_dir: Path, length: int) -> dict[int, tuple]:
    """What uproot reads, padded by hand, keyed by (label, event number)."""
    reference = {}
    for name, label in (("signal", 1), ("background", 0)):
        tree = uproot.open(toy_dir / f"{name}.root")["events"]
        flat = tree.arrays([*JET_FEATURES, "weight", "event"], library="np")
        jagged = tree.arrays(CHANNELS)
        padded = np.stack(
            [
                ak.to_numpy(ak.fill_none(ak.pad_none(jagged[c], length, clip=True), 0.0))
                for c in CHANNELS
            ],
            axis=-1,
        )
        counts = np.minimum(ak.to_numpy(ak.num(jagged[CHANNELS[0]])), length)
        features = np.stack([flat[f] for f in JET_FEATURES], axis=1)
        for i, event in enumerate(flat["event"]):
            reference[(label, int(event))] = (
                features[i],
                padded[i],
                counts[i],
                flat["weight"][i],
            )
    return reference


def test_every_value_equals_what_uproot_reads(converted, toy_dir):
    out, manifest = converted
    reference = uproot_reference(toy_dir, 40)
    seen = set()
    for split in ("train", "validation"):
        data = read_all(out, manifest, split)
        for i in range(len(data["label"])):
            key = (int(data["label"][i]), int(data["event_id"][i, 2]))
            assert key not in seen, f"event {key} written twice"
            seen.add(key)
            features, padded, count, weight = reference[key]
            np.testing.assert_array_equal(data["features"][i], features)
            np.testing.assert_array_equal(data["constituents"][i], padded)
            assert data["constituents_count"][i] == count
            assert data["weight"][i] == weight
    assert len(seen) == TOY_EVENTS == len(reference)


def test_manifest_checksums_and_sizes_match_the_files(converted):
    out, manifest = converted
    assert verify_local(manifest, out) == []
    for entry in manifest.shards["train"] + manifest.shards["validation"]:
        data = (out / entry.path).read_bytes()
        assert len(data) == entry.bytes
        assert f"{zlib.adler32(data):08x}" == entry.adler32
    # the manifest on disk is what convert returned
    assert load_manifest(out) == manifest


def test_a_flipped_byte_is_reported_by_verify(converted, tmp_path):
    out, manifest = converted
    entry = manifest.shards["validation"][0]
    copy = tmp_path / entry.path
    data = bytearray((out / entry.path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    (tmp_path / "manifest.json").write_text((out / "manifest.json").read_text())
    problems = verify_local(load_manifest(tmp_path), tmp_path)
    assert any(entry.path in p and "adler32" in p for p in problems)
    assert any("missing" in p for p in problems)  # the other shards were not copied


def test_statistics_match_numpy_on_the_training_split(converted):
    out, manifest = converted
    train = read_all(out, manifest, "train")
    features = train["features"].astype(np.float64)
    stats = manifest.stats["features"]
    assert stats["count"] == len(features) == manifest.events("train")
    np.testing.assert_allclose(stats["mean"], features.mean(0), rtol=1e-10)
    np.testing.assert_allclose(stats["std"], features.std(0), rtol=1e-8)
    np.testing.assert_array_equal(stats["min"], features.min(0))
    np.testing.assert_array_equal(stats["max"], features.max(0))
    valid = np.arange(40)[None, :] < train["constituents_count"][:, None]
    constituents = train["constituents"][valid].astype(np.float64)
    np.testing.assert_allclose(manifest.stats["constituents"]["mean"], constituents.mean(0))
    np.testing.assert_allclose(manifest.stats["constituents"]["std"], constituents.std(0))
    assert manifest.stats["constituents"]["count"] == int(valid.sum())


def test_shards_are_class_mixed_although_inputs_come_by_sample(converted):
    out, manifest = converted
    for entry in manifest.shards["train"]:
        with ShardReader(out / entry.path, ["label"]) as reader:
            labels = reader.read()["label"]
        assert 0.4 < labels.mean() < 0.6, f"{entry.path} holds {labels.mean():.2f} signal"
        # shuffled: no long run of one class, as a sample-ordered shard would have
        assert np.abs(np.diff(labels)).sum() > len(labels) / 4


def test_split_is_decided_by_event_id_whatever_the_step_and_shard_size(toy_dir, tmp_path):
    a = convert(toy_config(toy_dir, tmp_path / "a", step_events=700, shard_events=3000))
    b = convert(toy_config(toy_dir, tmp_path / "b", step_events=5000, shard_events=1111))
    ids = {}
    for name, manifest in (("a", a), ("b", b)):
        data = read_all(tmp_path / name, manifest, "validation")
        ids[name] = {tuple(r) for r in np.c_[data["label"], data["event_id"]].tolist()}
        expected = validation_mask(data["event_id"], 0.25, seed=42)
        assert expected.all()
    assert ids["a"] == ids["b"]
    assert a.events("validation") == pytest.approx(0.25 * TOY_EVENTS, rel=0.1)


def test_rerun_gives_identical_files_and_removes_stale_shards(converted, toy_dir, tmp_path):
    out, manifest = converted
    again = convert(toy_config(toy_dir, tmp_path))
    assert again.shards == manifest.shards
    entries = [entry for split in again.shards.values() for entry in split]
    assert entries
    for entry in entries:  # the files themselves, byte for byte
        assert (tmp_path / entry.path).read_bytes() == (out / entry.path).read_bytes(), entry.path
    convert(toy_config(toy_dir, tmp_path, shard_events=6000))
    names = sorted(p.name for p in tmp_path.iterdir())
    fewer = load_manifest(tmp_path)
    assert names == sorted(["manifest.json"] + [e.path for v in fewer.shards.values() for e in v])
    stale = {entry.path for entry in entries} - set(names)
    assert stale  # there were shards to remove, and they are gone


def test_chunks_hold_a_batch_and_never_exceed_one_mebibyte(converted):
    out, manifest = converted
    with h5py.File(out / manifest.shards["train"][0].path) as f:
        assert f["features"].chunks == (256, len(JET_FEATURES))
        assert f["constituents"].chunks == (256, 40, 5)
        for dataset in f.values():
            assert np.prod(dataset.chunks) * dataset.dtype.itemsize <= 1 << 20
        assert list(f["constituents"].attrs["columns"]) == CHANNELS


def test_large_rows_get_smaller_chunks(toy_dir, tmp_path):
    jagged = {"constituents": {"branches": CHANNELS, "length": 60}}
    manifest = convert(toy_config(toy_dir, tmp_path, chunk_events=4096, jagged=jagged))
    with h5py.File(tmp_path / manifest.shards["train"][0].path) as f:
        rows = f["constituents"].chunks[0]
        assert rows == (1 << 20) // (60 * 5 * 4)


@pytest.mark.parametrize("codec", ["none", "lzf", "gzip"])
def test_every_codec_stores_the_same_arrays(converted, toy_dir, tmp_path, codec):
    out, manifest = converted
    other = convert(toy_config(toy_dir, tmp_path, codec=codec))
    assert [e.events for e in other.shards["train"]] == [e.events for e in manifest.shards["train"]]
    first, second = read_all(out, manifest, "train"), read_all(tmp_path, other, "train")
    for name, array in first.items():
        np.testing.assert_array_equal(second[name], array)


def test_selection_and_label_branch(toy_dir, tmp_path):
    section = {"name": "signal", "files": [str(toy_dir / "signal.root")], "label": "jet_nconst"}
    manifest = convert(
        toy_config(toy_dir, tmp_path, samples=[section], selection="jet_mass > 70 && jet_pt < 600")
    )
    data = read_all(tmp_path, manifest, "train")
    columns = list(JET_FEATURES)
    mass = data["features"][:, columns.index("jet_mass")]
    pt = data["features"][:, columns.index("jet_pt")]
    assert (mass > 70).all()
    assert (pt < 600).all()
    np.testing.assert_array_equal(data["label"], data["features"][:, columns.index("jet_nconst")])
    tree = uproot.open(toy_dir / "signal.root")["events"]
    passing = tree.arrays(["jet_mass", "jet_pt"], library="np")
    expected = int(((passing["jet_mass"] > 70) & (passing["jet_pt"] < 600)).sum())
    assert manifest.sources[0].selected == expected
    assert manifest.events("train") + manifest.events("validation") == expected
