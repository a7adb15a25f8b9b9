"""Model inputs from shards: standardisation, masking of padded entries, column choice, batches."""

from __future__ import annotations

import threading
from pathlib import Path

import h5py
import numpy as np
import pytest

from gridtrain.data.manifest import load_manifest
from gridtrain.errors import ConfigError
from gridtrain.train.inputs import InputBuilder, Prefetcher, ShardData
from gridtrain.train.settings import select_inputs


def test_inputs_are_standardised_masked_and_complete(toy_dataset):
    manifest = load_manifest(toy_dataset)
    features, groups = select_inputs(manifest, None, "toy")
    builder = InputBuilder(
        manifest, features, groups, ["features", "constituents", "constituents_count"]
    )
    shards = [toy_dataset / entry.path for entry in manifest.shards["train"]]
    loaded = [builder.load(path) for path in shards]
    table = np.concatenate([data.inputs["features"] for data in loaded])
    np.testing.assert_allclose(table.mean(axis=0), 0, atol=2e-3)
    np.testing.assert_allclose(table.std(axis=0), 1, atol=2e-3)
    first = loaded[0]
    count = first.inputs["constituents_count"]
    values = first.inputs["constituents"]
    padded = np.arange(values.shape[1])[None, :] >= count[:, None]
    assert padded.any()
    assert not values[padded].any()  # padded entries are exactly 0
    real = values[~padded]
    assert abs(float(real[:, 0].mean())) < 0.2  # channels standardised on real entries
    with h5py.File(shards[0]) as raw:
        np.testing.assert_array_equal(first.labels, raw["label"][:].astype(np.float32))
        np.testing.assert_array_equal(first.weights, raw["weight"][:])
    assert sum(data.events for data in loaded) == manifest.events("train")


def test_a_feature_subset_picks_columns_by_name(toy_dataset):
    manifest = load_manifest(toy_dataset)
    features, groups = select_inputs(manifest, ("jet_mass", "jet_pt"), "toy")
    builder = InputBuilder(manifest, features, groups, ["features"])
    path = toy_dataset / manifest.shards["train"][0].path
    data = builder.load(path)
    assert set(data.inputs) == {"features"}
    with h5py.File(path) as raw:
        pt = raw["features"][:, manifest.features.index("jet_pt")]
    stats = manifest.stats["features"]
    index = manifest.features.index("jet_pt")
    expected = (pt - stats["mean"][index]) / stats["std"][index]
    np.testing.assert_allclose(data.inputs["features"][:, 1], expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ConfigError, match="'jet_charm' not in the dataset toy"):
        select_inputs(manifest, ("jet_charm",), "toy")


def test_shuffled_batches_cover_every_event_once(toy_dataset):
    manifest = load_manifest(toy_dataset)
    features, groups = select_inputs(manifest, None, "toy")
    builder = InputBuilder(manifest, features, groups, ["features"])
    data = builder.load(toy_dataset / manifest.shards["train"][0].path)
    shuffled = data.shuffled(seed=5)
    assert not np.array_equal(shuffled.labels, data.labels)
    batches = list(shuffled.batches(300))
    assert [len(labels) for _, labels, _ in batches][:-1] == [300] * (len(batches) - 1)
    rows = np.concatenate([inputs["features"] for inputs, _, _ in batches])
    order = np.lexsort(rows.T)
    np.testing.assert_array_equal(
        rows[order], data.inputs["features"][np.lexsort(data.inputs["features"].T)]
    )


def test_prefetch_loads_and_shuffles_in_the_background_before_get_asks(toy_dataset, monkeypatch):
    manifest = load_manifest(toy_dataset)
    features, groups = select_inputs(manifest, None, "toy")
    builder = InputBuilder(manifest, features, groups, ["features"])
    first, second = (toy_dataset / entry.path for entry in manifest.shards["train"][:2])
    calls: list[tuple[str, str]] = []  # (what, thread)
    started, release = threading.Event(), threading.Event()
    real_load = builder.load

    def locate() -> Path:  # stands in for a stage-in that takes a while
        calls.append(("locate", threading.current_thread().name))
        started.set()
        assert release.wait(10), "the test never let the load finish"
        return first

    def load(path):
        calls.append(("load", threading.current_thread().name))
        return real_load(path)

    real_shuffled = ShardData.shuffled

    def shuffled(self, seed):
        calls.append(("shuffle", threading.current_thread().name))
        return real_shuffled(self, seed)

    def not_again() -> Path:
        raise AssertionError("get located the shard again instead of taking the prefetched load")

    builder.load = load
    monkeypatch.setattr(ShardData, "shuffled", shuffled)
    prefetcher = Prefetcher(builder)
    try:
        prefetcher.submit("a", locate, seed=5)  # returns while the load is held up
        assert started.wait(10), "nothing was loaded before get asked for it"
        current = real_load(second)  # the consumer works meanwhile, in its own thread
        assert [what for what, _ in calls] == ["locate"]  # the prefetch is still held up
        release.set()
        data = prefetcher.get("a", not_again, seed=5)
        background = list(calls)
    finally:
        release.set()
        prefetcher.close()
    assert [what for what, _ in background] == ["locate", "load", "shuffle"]  # once each
    threads = {thread for _, thread in background}
    assert len(threads) == 1
    [thread] = threads
    assert thread != threading.current_thread().name
    assert thread.startswith("shard-load")
    expected = real_shuffled(real_load(first), 5)
    np.testing.assert_array_equal(data.labels, expected.labels)
    np.testing.assert_array_equal(data.inputs["features"], expected.inputs["features"])
    assert current.events == manifest.shards["train"][1].events
