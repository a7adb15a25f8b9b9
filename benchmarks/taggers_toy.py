"""Is the tagger toy one where pairs of particles pay? What sums see against what pairs see.

``benchmarks/taggers.py`` found ParticleNet-Lite only 1.04 times Deep Sets' W/Z rejection on the
``substructure-matched`` toy. Either the pairwise models fail to learn what the toy offers, or
the toy offers little that a sum over particles does not already see. This script asks the toy,
without any of the taggers: on the same converted jets (``--dataset``, the shards taggers.py
writes), two small classifiers of W/Z against QCD jets, trained and scored alike:

  sums    observables that are sums over the particles, or functions of a few such sums (what a
          Deep Sets model computes by construction): the jet mass from the summed four-momenta,
          multiplicity, pT_D, girth, the pt-weighted second moments in (eta, phi) and the share of
          pt in 10 rings of distance to the jet axis;
  + pairs the same plus observables that need pairs or triples of particles (what ParticleNet and
          ParT see directly, and a sum cannot compute exactly): the energy correlation functions
          e2 and e3 at beta = 1 and 0.5 (over the 24 hardest particles), their ratios D2 and C2,
          the mean and largest pairwise kT, and the two hardest kT-pairs' angle and pt balance.

Each classifier is an MLP (two layers of 64) fitted with Keras ``fit`` to the training shards and
scored on the validation shards; per side the W/Z rejection 1/eps_QCD at 50 % W/Z efficiency
(R50, as taggers.py computes it, W/Z against QCD jets only). Last line: R50 (+ pairs) / R50
(sums). Near 1: the toy's W/Z and QCD jets differ in what sums see, and no pairwise model can beat
Deep Sets by much on it (the toy is at fault); well above 1.5: the information is there and the
pairwise taggers do not extract it in their budget (the models, or their budget, are).

    python benchmarks/taggers_toy.py                       # substructure-matched, as taggers.py
    python benchmarks/taggers_toy.py --toy substructure    # the unmatched toy
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401 - the shards' Blosc filter
import numpy as np

from taggers import add_toy_arguments, dataset

RINGS = np.array([0.0, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8001])
HARDEST = 24  # particles in the pair and triple sums


def read(folder: Path, split: str, names: list[str]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The particles' (pt, energy, deta, dphi) and the labels of ``split``'s shards."""
    manifest = json.loads((folder / "manifest.json").read_text())
    group = next(g for g in manifest["jagged"] if g["name"] == "particles")
    index = {name: group["branches"].index(name) for name in names}
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in names}
    labels = []
    for entry in manifest["shards"][split]:
        with h5py.File(folder / entry["path"]) as shard:
            particles = shard["particles"][:]
            counts = shard["particles_count"][:]
            real = np.arange(particles.shape[1])[None, :] < counts[:, None]
            for name in names:
                arrays[name].append(np.where(real, particles[..., index[name]], 0.0))
            labels.append(shard["label"][:])
    return {n: np.concatenate(a) for n, a in arrays.items()}, np.concatenate(labels)


def sum_observables(p: dict[str, np.ndarray]) -> np.ndarray:
    pt, energy, deta, dphi = p["part_pt"], p["part_energy"], p["part_deta"], p["part_dphi"]
    total = pt.sum(1, keepdims=True)
    z = pt / np.maximum(total, 1e-9)
    # four-momenta about the jet axis (eta, phi offsets small): the mass from the sums
    px, py = (pt * np.cos(dphi)).sum(1), (pt * np.sin(dphi)).sum(1)
    pz = (pt * np.sinh(deta)).sum(1)
    e = energy.sum(1)
    mass = np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))
    dr = np.hypot(deta, dphi)
    rings = [
        ((dr >= lo) & (dr < hi) & (pt > 0)).astype(float) * z
        for lo, hi in itertools.pairwise(RINGS)
    ]
    columns = [
        mass,
        total[:, 0],
        (pt > 0).sum(1),
        (z**2).sum(1),
        (z * dr).sum(1),
        (z * deta**2).sum(1),
        (z * dphi**2).sum(1),
        (z * deta * dphi).sum(1),
        *[ring.sum(1) for ring in rings],
    ]
    return np.stack(columns, 1).astype(np.float32)


def pair_observables(p: dict[str, np.ndarray], chunk: int = 8192) -> np.ndarray:
    """``pair_block`` over blocks of ``chunk`` jets (a block's pair arrays fit in memory)."""
    jets = len(p["part_pt"])
    return np.concatenate(
        [pair_block({n: a[s : s + chunk] for n, a in p.items()}) for s in range(0, jets, chunk)]
    )


def pair_block(p: dict[str, np.ndarray]) -> np.ndarray:
    pt, deta, dphi = (
        p[n][:, :HARDEST].astype(np.float64) for n in ("part_pt", "part_deta", "part_dphi")
    )
    z = pt / np.maximum(pt.sum(1, keepdims=True), 1e-9)
    dr = np.hypot(deta[:, :, None] - deta[:, None, :], dphi[:, :, None] - dphi[:, None, :])
    zz = z[:, :, None] * z[:, None, :]
    upper = np.triu(np.ones((HARDEST, HARDEST), bool), 1)[None]
    columns = []
    for beta in (1.0, 0.5):
        angle = dr**beta
        e2 = (zz * angle * upper).sum((1, 2))
        # e3 = sum over i<j<k of z_i z_j z_k dR_ij dR_jk dR_ki: a sixth of the sum over all
        # ordered triples (a repeated index contributes nothing: dR_ii = 0)
        weighted = zz * angle  # z_i z_j dR_ij
        e3 = np.einsum("nij,njk,nki,nk->n", weighted, angle, angle, z, optimize=True) / 6.0
        columns += [e2, e3, e3 / np.maximum(e2**3, 1e-12), e3 / np.maximum(e2**2, 1e-12)]
    kt = np.minimum(pt[:, :, None], pt[:, None, :]) * dr
    real = (pt[:, :, None] > 0) & (pt[:, None, :] > 0) & upper
    kt_real = np.where(real, kt, 0.0)
    columns += [
        kt_real.sum((1, 2)) / np.maximum(real.sum((1, 2)), 1),
        kt_real.reshape(len(pt), -1).max(1),
    ]
    # the pair of particles with the largest kT: its angle and pt balance (a hard splitting)
    flat = kt_real.reshape(len(pt), -1).argmax(1)
    i, j = np.divmod(flat, HARDEST)
    rows = np.arange(len(pt))
    columns += [
        dr[rows, i, j],
        np.minimum(pt[rows, i], pt[rows, j]) / np.maximum(pt[rows, i] + pt[rows, j], 1e-9),
    ]
    return np.stack(columns, 1).astype(np.float32)


def r50(signal: np.ndarray, background: np.ndarray) -> float:
    """1 / (the background share above the signal's median score)."""
    cut = np.quantile(signal, 0.5)
    passed = float(np.mean(background > cut))
    return 1.0 / passed if passed > 0 else float("inf")


def classify(
    x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, seed: int
) -> float:
    import keras

    keras.utils.set_random_seed(seed)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    model = keras.Sequential(
        [
            keras.Input((x_train.shape[1],)),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(keras.optimizers.Adam(1e-3), "binary_crossentropy", steps_per_execution=32)
    stop = keras.callbacks.EarlyStopping(patience=5, restore_best_weights=True)
    model.fit(
        (x_train - mean) / std,
        y_train,
        batch_size=256,
        epochs=60,
        verbose=0,
        validation_split=0.2,
        callbacks=[stop],
    )
    scores = model.predict((x_val - mean) / std, batch_size=4096, verbose=0)[:, 0]
    return r50(scores[y_val == 1], scores[y_val == 0])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_toy_arguments(parser, "substructure-matched")  # made as taggers.py makes it, or reused
    parser.add_argument("--seeds", type=int, default=2, help="classifiers per side (fresh seeds)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    args.dataset = Path(dataset(args.work, args.per_class, args.toy)["outdir"])
    manifest = json.loads((args.dataset / "manifest.json").read_text())
    classes = manifest["task"]["classes"]
    qcd, wz = classes.index("qcd"), classes.index("wz")
    names = ["part_pt", "part_energy", "part_deta", "part_dphi"]
    began = time.perf_counter()
    sides: dict[str, dict[str, np.ndarray]] = {}
    labels = {}
    for split in ("train", "validation"):
        particles, label = read(args.dataset, split, names)
        keep = (label == qcd) | (label == wz)
        particles = {n: a[keep] for n, a in particles.items()}
        labels[split] = (label[keep] == wz).astype(np.float32)
        sums = sum_observables(particles)
        sides.setdefault("sums", {})[split] = sums
        sides.setdefault("sums + pairs", {})[split] = np.concatenate(
            [sums, pair_observables(particles)], 1
        )
    print(
        f"{len(labels['train']):,} training and {len(labels['validation']):,} validation W/Z "
        "and QCD jets "
        f"({args.dataset}); observables in {time.perf_counter() - began:.0f} s"
    )
    results = {}
    for side, arrays in sides.items():
        figures = [
            classify(
                arrays["train"], labels["train"], arrays["validation"], labels["validation"], seed
            )
            for seed in range(1, args.seeds + 1)
        ]
        results[side] = float(np.mean(figures))
        print(
            f"{side:<14} {arrays['train'].shape[1]:>3} observables  R50 W/Z "
            + ", ".join(f"{f:.1f}" for f in figures)
            + f"  (mean {results[side]:.1f})"
        )
    print(
        f"ratio R50 W/Z (sums + pairs) / (sums), MLP on observables, mean of {args.seeds}: "
        f"{results['sums + pairs'] / results['sums']:.2f}"
    )


if __name__ == "__main__":
    main()
