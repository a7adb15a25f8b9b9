"""Image inputs: fixed-size array branches stay tensors equal to what uproot reads, with global or
per-pixel training statistics; and the toy's jet images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import uproot

from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.shards import ShardReader
from gridtrain.data.toy import IMAGE_BRANCHES, generate_events, jet_images, write_toy_dataset
from tests.conftest import toy_section

SIZE = 8


@pytest.fixture(scope="module")
def image_toy(tmp_path_factory) -> Path:
    toy = tmp_path_factory.mktemp("images")
    write_toy_dataset(toy, 2000, seed=5, file_format="rntuple", image_size=SIZE)
    return toy


def read_split(out: Path, manifest, split: str) -> dict[str, np.ndarray]:
    parts = []
    for entry in manifest.shards[split]:
        with ShardReader(out / entry.path) as reader:
            parts.append(reader.read())
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def test_image_tensors_and_their_statistics_equal_uproot(image_toy, tmp_path):
    images = {
        "jet_image": {"branches": list(IMAGE_BRANCHES)},  # two channels, global statistics
        "charged": {"branches": ["jet_image_charged"], "statistics": "per-pixel"},
    }
    section = toy_section(image_toy, tmp_path, images=images, shard_events=600, step_events=500)
    manifest = convert(DatasetConfig.from_dict(section))
    assert manifest.images == [
        {
            "name": "jet_image",
            "branches": list(IMAGE_BRANCHES),
            "shape": [SIZE, SIZE, 2],
            "statistics": "global",
        },
        {
            "name": "charged",
            "branches": ["jet_image_charged"],
            "shape": [SIZE, SIZE],
            "statistics": "per-pixel",
        },
    ]
    read = {}
    for name, label in (("signal", 1), ("background", 0)):
        tree = uproot.open(image_toy / f"{name}.root")["events"]
        arrays = tree.arrays(["event", *IMAGE_BRANCHES], library="np")
        for i, event in enumerate(arrays["event"]):
            read[(label, int(event))] = [arrays[b][i] for b in IMAGE_BRANCHES]
    train = read_split(tmp_path, manifest, "train")
    for split in ("train", "validation"):
        data = train if split == "train" else read_split(tmp_path, manifest, split)
        assert data["jet_image"].shape[1:] == (SIZE, SIZE, 2)
        assert data["charged"].shape[1:] == (SIZE, SIZE)
        for i, (label, event) in enumerate(zip(data["label"], data["event_id"][:, 2], strict=True)):
            charged, neutral = read[(int(label), int(event))]
            np.testing.assert_array_equal(data["jet_image"][i, ..., 0], charged)
            np.testing.assert_array_equal(data["jet_image"][i, ..., 1], neutral)
            np.testing.assert_array_equal(data["charged"][i], charged)
    # Statistics of the training split only: per channel over all pixels, or per pixel.
    pixels = train["jet_image"].reshape(-1, 2).astype(np.float64)
    stats = manifest.stats["jet_image"]
    assert stats["count"] == len(pixels)
    np.testing.assert_allclose(stats["mean"], pixels.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(stats["std"], pixels.std(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(stats["max"], pixels.max(axis=0))
    per_pixel = train["charged"].reshape(len(train["charged"]), -1).astype(np.float64)
    stats = manifest.stats["charged"]
    assert stats["count"] == len(per_pixel)
    assert len(stats["mean"]) == SIZE * SIZE
    np.testing.assert_allclose(stats["mean"], per_pixel.mean(axis=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["std"], per_pixel.std(axis=0), rtol=1e-6, atol=1e-9)


def test_a_three_dimensional_calorimeter_tensor_from_a_ttree(tmp_path):
    rng = np.random.default_rng(3)
    cells = rng.exponential(1.0, (300, 5, 4, 3)).astype(np.float32)
    path = tmp_path / "calo.root"
    with uproot.recreate(path) as f:
        f.mktree("showers", {"cells": np.dtype((np.float32, (5, 4, 3))), "e": np.float64})
        f["showers"].extend({"cells": cells, "e": cells.sum(axis=(1, 2, 3)).astype(np.float64)})
    assert uproot.open(path)["showers"]["cells"].interpretation.to_dtype.shape == (5, 4, 3)
    cfg = DatasetConfig.from_dict(
        {
            "tree": "showers",
            "samples": [{"name": "e", "files": [str(path)], "label": 1}],
            "features": ["e"],
            "images": {"cells": {"branches": ["cells"]}},
            "event_id": [],
            "validation_fraction": 0.1,
            "outdir": str(tmp_path / "out"),
        }
    )
    manifest = convert(cfg)
    parts = {}
    for split in ("train", "validation"):
        data = read_split(tmp_path / "out", manifest, split)
        for i, entry in enumerate(data["event_id"][:, 1]):
            parts[int(entry)] = data["cells"][i]
    assert sorted(parts) == list(range(300))
    np.testing.assert_array_equal(np.stack([parts[i] for i in range(300)]), cells)
    assert manifest.images[0]["shape"] == [5, 4, 3]


def test_toy_jet_images_hold_the_constituent_pt_in_their_window():
    events = generate_events(400, True, np.random.default_rng(2), 0)
    images = jet_images(events.counts, events.constituents, 12)
    assert images.shape == (400, 2, 12, 12)
    owner = np.repeat(np.arange(400), events.counts)
    charged = events.constituents["charge"] != 0
    expected = np.bincount(owner[charged], events.constituents["pt"][charged], minlength=400)
    np.testing.assert_allclose(images[:, 0].sum(axis=(1, 2)), expected, rtol=1e-5)
    # the prongs sit near the centre: the central quarter holds most of the pt
    centre = images[:, :, 3:9, 3:9].sum() / images.sum()
    assert centre > 0.8


def test_large_images_at_the_default_sizes_warn_how_to_use_less_memory(caplog):
    from gridtrain.data.layout import Image, Layout, check_memory

    section = {"tree": "t", "samples": [{"name": "s", "files": ["x.root"], "label": 0}]}
    dataset = DatasetConfig.from_dict({**section, "images": {"cells": {"branches": ["c"]}}})
    cells = Image("cells", ("c",), (25, 25, 25), "global")
    with caplog.at_level("WARNING", logger="gridtrain.data.layout"):
        check_memory(dataset, Layout((), (), (), (cells,)))
    assert "lower dataset.step_events and dataset.shard_events" in caplog.text
    caplog.clear()
    small = Image("jet", ("c",), (32, 32), "global")
    with caplog.at_level("WARNING", logger="gridtrain.data.layout"):
        check_memory(dataset, Layout((), (), (), (small,)))
    assert caplog.text == ""
