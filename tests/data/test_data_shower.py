"""The substructure toy: particle-level QCD, W/Z and top jets from the parton shower."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from gridtrain.data.shower import MAX_PARTICLES, generate_jets
from gridtrain.data.toy import write_toy_dataset


def masses(kind: str, n: int = 4000, seed: int = 1) -> tuple[np.ndarray, object]:
    jets = generate_jets(kind, n, np.random.default_rng(seed))
    p = jets.particles
    owner = np.repeat(np.arange(n), jets.particle_counts)
    px = np.bincount(owner, p["pt"] * np.cos(p["phi"]), n)
    py = np.bincount(owner, p["pt"] * np.sin(p["phi"]), n)
    pz = np.bincount(owner, p["pt"] * np.sinh(p["eta"]), n)
    e = np.bincount(owner, p["energy"], n)
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0)), jets


def test_the_classes_have_their_prongs_masses() -> None:
    qcd, _ = masses("qcd")
    wz, _ = masses("wz")
    top, jets = masses("top")
    assert 78 < np.median(wz) < 100  # W (80.4) and Z (91.2), half each
    assert 160 < np.median(top) < 185
    assert np.median(qcd) < 60
    assert np.quantile(qcd, 0.95) > 80  # QCD reaches the W mass through its tail
    # b quarks: most top jets have a secondary vertex, few QCD jets do
    _, qcd_jets = masses("qcd", 2000)
    assert np.mean(jets.sv_counts > 0) > 0.6
    assert np.mean(qcd_jets.sv_counts > 0) < 0.1


def test_matched_qcd_takes_the_mass_away() -> None:
    # In the mass window holding the middle half of the W/Z (top) jets, the default QCD jets are
    # rare: the mass alone rejects them. qcd-matched puts several times as many there.
    for signal in ("wz", "top"):
        lo, hi = np.quantile(masses(signal)[0], [0.25, 0.75])
        inside = {
            kind: np.mean((masses(kind)[0] > lo) & (masses(kind)[0] < hi))
            for kind in ("qcd", "qcd-matched")
        }
        assert inside["qcd-matched"] > 3 * inside["qcd"], (signal, inside)
        assert inside["qcd-matched"] > 0.05


def test_the_jets_are_particles_pt_ordered_and_bounded() -> None:
    jets = generate_jets("top", 3000, np.random.default_rng(2))
    counts = jets.particle_counts
    assert counts.min() >= 2
    assert counts.max() <= MAX_PARTICLES
    assert np.median(counts) > 20
    p = jets.particles
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    owner = np.repeat(np.arange(len(counts)), counts)
    first = np.zeros(len(owner), bool)
    first[starts] = True
    assert np.all((np.diff(p["pt"]) <= 0) | first[1:])  # hardest first within each jet
    assert np.all(np.hypot(p["deta"], p["dphi"]) < 0.8)
    assert np.all(p["pt"] > 0.5)
    kind = (p["pid"] == 22) * 1 + (p["pid"] == 130) * 2 + (np.abs(p["pid"]) == 13) * 3
    mass = np.choose(kind, [0.1396, 0.0, 0.4976, 0.1057])
    expected = np.sqrt((p["pt"].astype(np.float64) * np.cosh(p["eta"])) ** 2 + mass**2)
    np.testing.assert_allclose(p["energy"], expected, rtol=1e-5)
    assert set(np.unique(p["pid"])) <= {211, -211, 13, -13, 22, 130}


def test_the_same_seed_gives_the_same_jets_and_it_is_fast() -> None:
    start = time.perf_counter()
    a = generate_jets("wz", 20_000, np.random.default_rng(5))
    assert time.perf_counter() - start < 10  # vectorised: well under a second unloaded
    b = generate_jets("wz", 20_000, np.random.default_rng(5))
    for name in a.particles:
        np.testing.assert_array_equal(a.particles[name], b.particles[name])


def test_the_matched_toy_writes_its_own_qcd(tmp_path: Path) -> None:
    import uproot

    plain = write_toy_dataset(tmp_path / "plain", 300, task="substructure")
    matched = write_toy_dataset(tmp_path / "matched", 300, task="substructure-matched")
    assert [f.name for f in matched] == ["qcd.root", "wz.root", "top.root"]
    with uproot.open(plain[0]) as a, uproot.open(matched[0]) as b:
        assert np.median(b["events"]["jet_mass"].array()) > 2 * np.median(
            a["events"]["jet_mass"].array()
        )
    with uproot.open(plain[1]) as a, uproot.open(matched[1]) as b:  # the same W/Z jets
        np.testing.assert_array_equal(
            a["events"]["jet_mass"].array(), b["events"]["jet_mass"].array()
        )


@pytest.mark.parametrize("file_format", ["ttree", "rntuple"])
def test_the_toy_writes_particles_and_secondary_vertices(tmp_path: Path, file_format: str) -> None:
    import uproot

    files = write_toy_dataset(tmp_path, 600, task="substructure", file_format=file_format)
    assert [f.name for f in files] == ["qcd.root", "wz.root", "top.root"]
    with uproot.open(files[2]) as f:
        tree = f["events"]
        arrays = tree.arrays(["npart", "part_pt", "part_energy", "nsv", "sv_mass", "jet_nsv"])
    assert len(arrays) == 200
    np.testing.assert_array_equal(np.asarray(arrays["nsv"]), np.asarray(arrays["jet_nsv"]))
    assert [len(x) for x in arrays["part_pt"]] == list(arrays["npart"])
    assert sum(len(x) for x in arrays["sv_mass"]) == int(np.sum(arrays["nsv"])) > 100
