"""Toy collision events for jet tagging and jet calibration, written as real ROOT TTrees.

Data layer, source end: pure numpy generation (``generate_events``, ``generate_top``,
``smear_jets``) and one writer at the edge (``write_toy_dataset``). It knows nothing about shards
or training.

The physics is deliberately simple but shaped like the real thing. A W jet (the binary toy's
signal) is a W boson decaying to two quarks: two prongs separated by
``dR ~ m_W / (pt * sqrt(z (1 - z)))``. A QCD jet (the background) is one prong with a soft, wide
second emission, more constituents and broader radiation (gluon-like). A top jet (the multiclass
toy's third class) has three prongs: the b quark and the W's two quarks, the b-W opening angle set
by the top mass and the q-q' one by the W mass. Constituents carry the prong structure; the 16
high-level jet features are lossy summaries of them, so a model on constituents can beat one on
the features, and the classes overlap enough that a good classifier stays well below an AUC of 1.

The regression toy measures QCD and W jets with a simple detector: charged constituents to 1%,
photons with a response of 0.98 and 5% resolution, neutral hadrons with 0.7 and 15% (the
calorimeter's non-compensation). The generator-level jet (``jet_pt_true`` ...) is kept beside the
detector-level branches, so the jet's true pt, or the correction ``jet_pt_true / jet_pt``, can be
learned from the measured constituents (whose neutral-hadron share sets the correction).

The substructure toy (``task="substructure"``: ``qcd.root``, ``wz.root``, ``top.root``) is
particle-level: jets from a simple parton shower with hadronisation and detector smearing
(``gridtrain.data.shower``), up to 128 particles with pt, eta, phi, energy, charge and type and the
secondary vertices ``sv_*``, for the taggers that read pairs of particles.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gridtrain.files import atomic_path

log = logging.getLogger(__name__)

TREE_NAME = "events"
JET_FEATURES = (
    "jet_pt",
    "jet_eta",
    "jet_phi",
    "jet_mass",
    "jet_energy",
    "jet_nconst",
    "jet_ncharged",
    "jet_girth",
    "jet_ptd",
    "jet_lead_frac",
    "jet_sublead_frac",
    "jet_major_axis",
    "jet_minor_axis",
    "jet_charge",
    "jet_frac_r01",
    "jet_lead_dr",
)
CONSTITUENT_FIELDS = ("pt", "eta", "phi", "deta", "dphi", "charge", "pid")
MAX_CONSTITUENTS = 64
SAMPLES = {"signal": 1, "background": 0}  # the binary toy: file name -> label
# Each toy task: file name -> the kind of jet it holds.
TOYS = {
    "binary": {"signal": "w", "background": "qcd"},
    "multiclass": {"qcd": "qcd", "w": "w", "top": "top"},
    "regression": {"jets": "mixed"},
    "substructure": {"qcd": "shower-qcd", "wz": "shower-wz", "top": "shower-top"},
    "substructure-matched": {"qcd": "shower-qcd-matched", "wz": "shower-wz", "top": "shower-top"},
}
# Seeds of each kind of jet; W and QCD keep the binary toy's (signal 1, background 0).
_JET_SEEDS = {"qcd": 0, "w": 1, "top": 2, "mixed": 3, "shower-qcd": 4, "shower-wz": 5,
              "shower-top": 6, "shower-qcd-matched": 7}  # fmt: skip
TRUE_FEATURES = ("jet_pt_true", "jet_eta_true", "jet_phi_true", "jet_mass_true", "jet_energy_true")
_TOP_MASS = 172.7
TOP_MULT, TOP_MT, TOP_MW, TOP_SPREAD = 30.0, 18.0, 12.0, 0.023
_W_MASS = 80.4
# Tuned so that gradient-boosted trees on the 16 jet features reach a ROC AUC of about 0.93.
SIG_MULT, SIG_Z, SIG_MW, SIG_SPREAD = 19.0, 0.05, 14.0, 0.023
BKG_MULT, BKG_ZB, BKG_DR, BKG_SPREAD = 22.0, 2.0, 0.30, 0.025
_CHUNK = 100_000
_BASKET = 10_000  # events per basket: clusters of real files are this order, not whole files


@dataclass(frozen=True)
class ToyEvents:
    """One block of generated events: flat per-event arrays and flattened constituents."""

    flat: dict[str, np.ndarray]
    counts: np.ndarray
    constituents: dict[str, np.ndarray]
    # further collections: name -> (counts, fields), written as <name>_<field> with n<name>
    collections: dict[str, tuple[np.ndarray, dict[str, np.ndarray]]] = field(default_factory=dict)


def generate_events(n: int, signal: bool, rng: np.random.Generator, first_event: int) -> ToyEvents:
    """Generate ``n`` W jets (``signal``) or QCD jets; ``first_event`` numbers them within the
    sample."""
    pt = 250.0 + rng.exponential(150.0, n)
    eta = rng.uniform(-2.0, 2.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)

    if signal:
        mult = 6 + rng.poisson(SIG_MULT, n)
        z = rng.uniform(SIG_Z, 1.0 - SIG_Z, n)
        mass = rng.normal(_W_MASS, SIG_MW, n)
        dr12 = np.clip(mass / (pt * np.sqrt(z * (1.0 - z))), 0.05, 0.8)
        spread = np.full(n, SIG_SPREAD)
    else:
        mult = 6 + rng.poisson(BKG_MULT * (pt / 400.0) ** 0.25, n)
        z = 0.01 + 0.49 * rng.beta(1.0, BKG_ZB, n)
        dr12 = np.clip(0.04 + rng.exponential(BKG_DR, n), 0.04, 0.8)
        spread = np.full(n, BKG_SPREAD)
    mult = np.clip(mult, 2, MAX_CONSTITUENTS)

    # Prong axes are placed so that the pt-weighted centroid is the jet axis.
    angle = rng.uniform(0.0, 2.0 * np.pi, n)
    ux, uy = np.cos(angle), np.sin(angle)
    total = int(mult.sum())
    owner = np.repeat(np.arange(n), mult)
    second = rng.random(total) < np.repeat(z, mult)
    prong = second.astype(np.int64)
    frac_prong = np.where(second, np.repeat(z, mult), np.repeat(1.0 - z, mult))
    offset = np.where(second, np.repeat(1.0 - z, mult), -np.repeat(z, mult)) * np.repeat(dr12, mult)
    prongs = _Prongs(
        2, prong, frac_prong, offset * np.repeat(ux, mult), offset * np.repeat(uy, mult)
    )
    xsec = 1.0 if signal else 3.0
    return _constituents(pt, eta, phi, mult, owner, prongs, spread, rng, first_event, xsec)


@dataclass(frozen=True)
class _Prongs:
    """Each constituent's prong, the share of the jet's pt its prong carries and the prong's
    axis relative to the jet's (delta eta, delta phi)."""

    count: int
    index: np.ndarray
    fraction: np.ndarray
    eta: np.ndarray
    phi: np.ndarray


def generate_top(n: int, rng: np.random.Generator, first_event: int) -> ToyEvents:
    """Generate ``n`` top jets: three prongs, a b quark (pt share ``z1``) and the W's two quarks
    (shares ``(1 - z1)(1 - z2)`` and ``(1 - z1) z2``), the b-W opening angle set by the top mass
    (``m_t^2 ~ m_W^2 / (1 - z1) + z1 (1 - z1) pt^2 dR^2``) and the q-q' one by the W mass."""
    pt = 350.0 + rng.exponential(150.0, n)
    eta = rng.uniform(-2.0, 2.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    mult = np.clip(6 + rng.poisson(TOP_MULT, n), 3, MAX_CONSTITUENTS)
    z1 = rng.uniform(0.15, 0.6, n)
    z2 = rng.uniform(0.1, 0.9, n)
    m_top = rng.normal(_TOP_MASS, TOP_MT, n)
    m_w = np.clip(rng.normal(_W_MASS, TOP_MW, n), 30.0, None)
    excess = np.clip(m_top**2 - m_w**2 / (1.0 - z1), 100.0, None)
    dr_bw = np.clip(np.sqrt(excess) / (pt * np.sqrt(z1 * (1.0 - z1))), 0.05, 0.8)
    dr_qq = np.clip(m_w / ((1.0 - z1) * pt * np.sqrt(z2 * (1.0 - z2))), 0.05, 0.8)
    u, v = rng.uniform(0.0, 2.0 * np.pi, n), rng.uniform(0.0, 2.0 * np.pi, n)
    # Prong axes (b, q, q') with the pt-weighted centroid on the jet axis.
    w_axis = -z1 * dr_bw
    axes_eta = np.stack(
        [
            (1.0 - z1) * dr_bw * np.cos(u),
            w_axis * np.cos(u) + z2 * dr_qq * np.cos(v),
            w_axis * np.cos(u) - (1.0 - z2) * dr_qq * np.cos(v),
        ],
        axis=1,
    )
    axes_phi = np.stack(
        [
            (1.0 - z1) * dr_bw * np.sin(u),
            w_axis * np.sin(u) + z2 * dr_qq * np.sin(v),
            w_axis * np.sin(u) - (1.0 - z2) * dr_qq * np.sin(v),
        ],
        axis=1,
    )
    shares = np.stack([z1, (1.0 - z1) * (1.0 - z2), (1.0 - z1) * z2], axis=1)
    owner = np.repeat(np.arange(n), mult)
    draw = rng.random(len(owner))
    cumulative = np.cumsum(shares, axis=1)[owner]
    prong = (draw[:, None] > cumulative[:, :2]).sum(axis=1)
    prongs = _Prongs(3, prong, shares[owner, prong], axes_eta[owner, prong], axes_phi[owner, prong])
    spread = np.full(n, TOP_SPREAD)
    return _constituents(pt, eta, phi, mult, owner, prongs, spread, rng, first_event, 0.5)


def _constituents(
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    mult: np.ndarray,
    owner: np.ndarray,
    prongs: _Prongs,
    spread: np.ndarray,
    rng: np.random.Generator,
    first_event: int,
    xsec: float,
) -> ToyEvents:
    """The constituents of jets whose prongs are placed: their pt shares, spread around the
    prong axes, charges and particle ids, and the jet features, ids and weights."""
    n, total = len(pt), len(owner)
    raw = rng.exponential(1.0, total) ** 1.6
    group = prongs.count * owner + prongs.index
    group_sum = np.bincount(group, weights=raw, minlength=prongs.count * n)
    cpt = np.repeat(pt, mult) * prongs.fraction * raw / group_sum[group]
    width = np.repeat(spread, mult) * np.clip(cpt / np.repeat(pt, mult), 1e-4, 1.0) ** -0.4
    deta = np.clip(prongs.eta + rng.normal(0.0, 1.0, total) * width, -0.8, 0.8)
    dphi = np.clip(prongs.phi + rng.normal(0.0, 1.0, total) * width, -0.8, 0.8)

    charged = rng.random(total) < 0.62
    charge = np.where(charged, rng.choice(np.array([-1, 1]), total), 0).astype(np.int32)
    lepton = charged & (rng.random(total) < 0.03)
    photon = ~charged & (rng.random(total) < 0.7)
    pid = np.where(charged, 211 * charge, 130)
    pid = np.where(lepton, 11 * charge, pid)
    pid = np.where(photon, 22, pid).astype(np.int32)

    # Constituents are stored pt-ordered within each jet, as reconstruction writes them.
    order = np.argsort(owner + 1.0 / (2.0 + cpt), kind="stable")
    cpt, deta, dphi, charge, pid = cpt[order], deta[order], dphi[order], charge[order], pid[order]
    ceta = np.repeat(eta, mult) + deta
    cphi = _wrap(np.repeat(phi, mult) + dphi)

    flat = _jet_features(mult, owner, cpt, ceta, cphi, deta, dphi, charge)
    run = np.ones(n, dtype=np.uint32)
    event = np.arange(first_event + 1, first_event + n + 1, dtype=np.uint64)
    flat["run"] = run
    flat["luminosityBlock"] = (event // 500 + 1).astype(np.uint32)
    flat["event"] = event
    flat["weight"] = (xsec * rng.lognormal(0.0, 0.25, n)).astype(np.float32)
    constituents = {
        "pt": cpt.astype(np.float32),
        "eta": ceta.astype(np.float32),
        "phi": cphi.astype(np.float32),
        "deta": deta.astype(np.float32),
        "dphi": dphi.astype(np.float32),
        "charge": charge,
        "pid": pid,
    }
    return ToyEvents(flat=flat, counts=mult.astype(np.int32), constituents=constituents)


def _wrap(phi: np.ndarray) -> np.ndarray:
    return (phi + np.pi) % (2.0 * np.pi) - np.pi


def _jet_features(
    mult: np.ndarray,
    owner: np.ndarray,
    pt: np.ndarray,
    eta: np.ndarray,
    phi: np.ndarray,
    deta: np.ndarray,
    dphi: np.ndarray,
    charge: np.ndarray,
) -> dict[str, np.ndarray]:
    n = len(mult)

    def per_jet(values: np.ndarray) -> np.ndarray:
        return np.bincount(owner, weights=values, minlength=n)

    px, py = per_jet(pt * np.cos(phi)), per_jet(pt * np.sin(phi))
    pz, energy = per_jet(pt * np.sinh(eta)), per_jet(pt * np.cosh(eta))
    jet_pt = np.hypot(px, py)
    jet_mass = np.sqrt(np.maximum(energy**2 - px**2 - py**2 - pz**2, 0.0))
    scalar_pt = per_jet(pt)
    dr = np.hypot(deta, dphi)
    starts = np.concatenate(([0], np.cumsum(mult)[:-1]))
    w2 = pt**2
    sum_w2 = per_jet(w2)
    cee = per_jet(w2 * deta**2) / sum_w2
    cpp = per_jet(w2 * dphi**2) / sum_w2
    cep = per_jet(w2 * deta * dphi) / sum_w2
    half_trace, det = 0.5 * (cee + cpp), cee * cpp - cep**2
    root = np.sqrt(np.maximum(half_trace**2 - det, 0.0))
    features = {
        "jet_pt": jet_pt,
        "jet_eta": np.arcsinh(pz / np.maximum(jet_pt, 1e-9)),
        "jet_phi": np.arctan2(py, px),
        "jet_mass": jet_mass,
        "jet_energy": energy,
        "jet_nconst": mult.astype(np.float64),
        "jet_ncharged": per_jet((charge != 0).astype(np.float64)),
        "jet_girth": per_jet(pt * dr) / scalar_pt,
        "jet_ptd": np.sqrt(sum_w2) / scalar_pt,
        "jet_lead_frac": pt[starts] / scalar_pt,
        "jet_sublead_frac": pt[starts + 1] / scalar_pt,
        "jet_major_axis": np.sqrt(half_trace + root),
        "jet_minor_axis": np.sqrt(np.maximum(half_trace - root, 0.0)),
        "jet_charge": per_jet(np.sqrt(pt) * charge) / np.sqrt(scalar_pt),
        "jet_frac_r01": per_jet(pt * (dr < 0.1)) / scalar_pt,
        "jet_lead_dr": dr[starts],
    }
    return {name: features[name].astype(np.float32) for name in JET_FEATURES}


def smear_jets(events: ToyEvents, rng: np.random.Generator) -> ToyEvents:
    """The jets as a detector measures them: constituent pts scaled by the response of their
    kind (charged 1.0 +- 1%, photons 0.98 +- 5%, neutral hadrons 0.7 +- 15%), re-ordered by
    measured pt and the jet features computed from them; the generator-level jet's pt, eta, phi,
    mass and energy kept as ``jet_*_true``."""
    c = events.constituents
    total = len(c["pt"])
    charged, photon = c["charge"] != 0, c["pid"] == 22
    response = np.where(charged, 1.0, np.where(photon, 0.98, 0.7))
    resolution = np.where(charged, 0.01, np.where(photon, 0.05, 0.15))
    scale = np.clip(response * (1.0 + resolution * rng.normal(0.0, 1.0, total)), 0.05, None)
    measured = (c["pt"] * scale).astype(np.float32)
    owner = np.repeat(np.arange(len(events.counts)), events.counts)
    order = np.lexsort((-measured, owner))
    constituents = {k: v[order] for k, v in c.items()}
    constituents["pt"] = measured[order]
    flat = _jet_features(
        events.counts, owner, constituents["pt"].astype(np.float64),
        constituents["eta"].astype(np.float64), constituents["phi"].astype(np.float64),
        constituents["deta"].astype(np.float64), constituents["dphi"].astype(np.float64),
        constituents["charge"],
    )  # fmt: skip
    for name in TRUE_FEATURES:
        flat[name] = events.flat[name.removesuffix("_true")]
    for name in ("run", "luminosityBlock", "event", "weight"):
        flat[name] = events.flat[name]
    return ToyEvents(flat=flat, counts=events.counts, constituents=constituents)


def _blocks(
    n: int, jet: str, seed: int, negative_fraction: float | None = None
) -> Iterator[ToyEvents]:
    """``n`` jets of one kind in blocks; with ``negative_fraction`` (not ``None``) also
    ``genWeight``: the weight with its sign flipped in that share of the events."""
    # One child generator per block keeps the output identical whatever the block size history.
    children = np.random.SeedSequence([seed, _JET_SEEDS[jet]]).spawn((n + _CHUNK - 1) // _CHUNK)
    extras = np.random.SeedSequence([seed, _JET_SEEDS[jet], 1]).spawn(len(children))
    for index, (child, extra) in enumerate(zip(children, extras, strict=True)):
        size = min(_CHUNK, n - index * _CHUNK)
        rng, other = np.random.default_rng(child), np.random.default_rng(extra)
        if jet.startswith("shower-"):
            block = shower_block(jet.removeprefix("shower-"), size, rng, index * _CHUNK)
        elif jet == "top":
            block = generate_top(size, rng, index * _CHUNK)
        elif jet == "mixed":  # the regression toy: W and QCD jets, measured
            w = np.arange(size) % 3 == 0
            block = generate_events(size, False, rng, index * _CHUNK)
            block = _merge(block, generate_events(size, True, rng, index * _CHUNK), w)
            block = smear_jets(block, other)
        else:
            block = generate_events(size, jet == "w", rng, index * _CHUNK)
        if negative_fraction is not None:
            sign = np.where(other.random(size) < negative_fraction, -1.0, 1.0)
            block.flat["genWeight"] = (sign * block.flat["weight"]).astype(np.float32)
        yield block


def shower_block(kind: str, n: int, rng: np.random.Generator, first_event: int) -> ToyEvents:
    """``n`` particle-level jets of ``kind`` (qcd, wz, top) from ``data.shower``: the particles
    as constituents, the secondary vertices as the collection ``sv``, the 16 jet features from
    the particles, and event ids and weights as the other toys have them."""
    from gridtrain.data.shower import generate_jets

    jets = generate_jets(kind, n, rng)
    p = jets.particles
    owner = np.repeat(np.arange(n), jets.particle_counts)
    flat = _jet_features(
        jets.particle_counts, owner, p["pt"].astype(np.float64), p["eta"].astype(np.float64),
        p["phi"].astype(np.float64), p["deta"].astype(np.float64), p["dphi"].astype(np.float64),
        p["charge"],
    )  # fmt: skip
    flat["jet_nsv"] = jets.sv_counts.astype(np.float32)
    event = np.arange(first_event + 1, first_event + n + 1, dtype=np.uint64)
    flat["run"] = np.ones(n, dtype=np.uint32)
    flat["luminosityBlock"] = (event // 500 + 1).astype(np.uint32)
    flat["event"] = event
    flat["weight"] = rng.lognormal(0.0, 0.25, n).astype(np.float32)
    return ToyEvents(flat, jets.particle_counts, p, {"sv": (jets.sv_counts, jets.svs)})


def _merge(qcd: ToyEvents, w: ToyEvents, take_w: np.ndarray) -> ToyEvents:
    """Per event, the W jet where ``take_w`` and the QCD jet elsewhere (ids from ``qcd``)."""
    flat = {k: np.where(take_w, w.flat[k], v) for k, v in qcd.flat.items()}
    for name in ("run", "luminosityBlock", "event"):
        flat[name] = qcd.flat[name]
    counts = np.where(take_w, w.counts, qcd.counts)
    pick_w = np.repeat(take_w, w.counts)
    pick_qcd = np.repeat(~take_w, qcd.counts)
    # Concatenate per event: the chosen jet's constituents in event order.
    source = np.concatenate([np.repeat(np.arange(len(counts)), qcd.counts)[pick_qcd],
                             np.repeat(np.arange(len(counts)), w.counts)[pick_w]])  # fmt: skip
    order = np.argsort(source, kind="stable")
    constituents = {
        k: np.concatenate([qcd.constituents[k][pick_qcd], w.constituents[k][pick_w]])[order]
        for k in qcd.constituents
    }
    return ToyEvents(flat=flat, counts=counts, constituents=constituents)


IMAGE_BRANCHES = ("jet_image_charged", "jet_image_neutral")
IMAGE_HALF_WIDTH = 0.8  # the images span |delta eta|, |delta phi| < 0.8, the constituents' range
FORMATS = ("ttree", "rntuple")


def jet_images(counts: np.ndarray, constituents: dict[str, np.ndarray], size: int) -> np.ndarray:
    """Two ``size`` x ``size`` images per jet in (delta eta, delta phi): the pt of its charged and
    of its neutral constituents per pixel (N x 2 x size x size, float32)."""
    n = len(counts)
    pixel = (constituents["deta"] + IMAGE_HALF_WIDTH) * (size / (2 * IMAGE_HALF_WIDTH))
    row = np.clip(pixel.astype(np.int64), 0, size - 1)
    pixel = (constituents["dphi"] + IMAGE_HALF_WIDTH) * (size / (2 * IMAGE_HALF_WIDTH))
    column = np.clip(pixel.astype(np.int64), 0, size - 1)
    neutral = (constituents["charge"] == 0).astype(np.int64)
    owner = np.repeat(np.arange(n), counts)
    index = ((owner * 2 + neutral) * size + row) * size + column
    images = np.bincount(index, weights=constituents["pt"], minlength=n * 2 * size * size)
    return images.astype(np.float32).reshape(n, 2, size, size)


def toy_files(task: str = "binary") -> tuple[str, ...]:
    """The file names (without ``.root``) the toy of a task writes."""
    return tuple(TOYS[task])


def write_toy_dataset(
    outdir: str | Path,
    events: int,
    seed: int = 1,
    file_format: str = "ttree",
    image_size: int | None = None,
    task: str = "binary",
    negative_weight_fraction: float = 0.0,
) -> list[Path]:
    """Write the toy of ``task`` with ``events`` events in all, shared equally by its files.

    ``binary``: ``signal.root`` (W jets) and ``background.root`` (QCD jets). ``multiclass``:
    ``qcd.root``, ``w.root`` and ``top.root``. ``substructure``: ``qcd.root``, ``wz.root`` and
    ``top.root``, particle-level jets from ``data.shower`` with their secondary vertices
    (``sv_pt``, ``sv_deta``, ``sv_dphi``, ``sv_mass``, ``sv_ntracks``, ``sv_sip3d``, counter
    ``nsv``) and ``jet_nsv``; ``substructure-matched`` the same with QCD jets whose mass spreads
    over the W/Z and top masses (``data.shower``'s ``qcd-matched``). ``regression``:
    ``jets.root``, W and QCD jets (one in three a W) as measured, with the generator-level
    ``jet_pt_true``, ``jet_eta_true``, ``jet_phi_true``, ``jet_mass_true`` and
    ``jet_energy_true`` (``smear_jets``).

    Each file holds one tree ``events``, a TTree (``mktree``) or, with ``file_format="rntuple"``,
    an RNTuple (``mkrntuple``, RNTuple 1.0): the 16 float32 jet features, the constituents
    ``part_*`` (lists per jet) with their counter ``npart``, ``weight`` and the event id
    ``run``/``luminosityBlock``/``event``, in baskets (clusters) of 10,000 events; the names are
    the same in both formats. With ``image_size`` N, also ``jet_image_charged[N][N]`` and
    ``jet_image_neutral[N][N]`` (``jet_images``). Files are written under a temporary name and
    renamed when complete. The same seed gives the same events in either format.

    ``negative_weight_fraction`` above 0 (and always in the multiclass and regression toys) adds
    ``genWeight``: ``weight`` with its sign flipped in that share of the events, as NLO
    generators give. The binary toy without it is what it always was, event for event.
    """
    if file_format not in FORMATS:
        raise ValueError(f"file_format {file_format!r}: choose one of {FORMATS}")
    if task not in TOYS:
        raise ValueError(f"toy task {task!r}: choose one of {', '.join(TOYS)}")
    if not 0.0 <= negative_weight_fraction <= 0.5:
        raise ValueError(f"negative_weight_fraction {negative_weight_fraction}: 0 .. 0.5")
    negative = negative_weight_fraction if negative_weight_fraction or task != "binary" else None
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    files = TOYS[task]
    for index, (name, jet) in enumerate(files.items()):
        n = events // len(files) + (events % len(files) if index == 0 else 0)
        final = out / f"{name}.root"
        with atomic_path(final) as tmp:
            blocks = _blocks(n, jet, seed, negative)
            _write_sample(tmp, name, blocks, file_format, image_size)
        log.info("wrote %d %s events to %s (%s)", n, name, final, file_format)
        written.append(final)
    return written


def _write_sample(
    path: Path, name: str, blocks: Iterator[ToyEvents], file_format: str, image_size: int | None
) -> None:
    import uproot

    with uproot.recreate(path) as f:
        tree = None
        for block in blocks:
            offsets = np.concatenate([[0], np.cumsum(block.counts)])
            for start in range(0, len(block.counts), _BASKET):
                stop = min(start + _BASKET, len(block.counts))
                data = _basket(block, start, stop, offsets, file_format, image_size)
                if tree is None:
                    title = f"gridtrain toy {name}"
                    if file_format == "ttree":
                        tree = f.mktree(TREE_NAME, _types(data, file_format), title=title)
                    else:
                        tree = f.mkrntuple(TREE_NAME, _types(data, file_format), description=title)
                tree.extend(data)


def _types(data: dict[str, Any], file_format: str) -> dict[str, Any]:
    """Branch (field) types: numpy dtypes, a fixed-size dtype for a TTree's image leaf, the
    Awkward type otherwise (lists, the RNTuple's std::array images)."""
    import awkward as ak

    types: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, np.ndarray) and value.ndim == 1:
            types[key] = value.dtype
        elif isinstance(value, np.ndarray) and file_format == "ttree":
            types[key] = np.dtype((value.dtype, value.shape[1:]))
        else:
            types[key] = ak.Array(value[:1]).type.content
    return types


def _basket(
    block: ToyEvents,
    start: int,
    stop: int,
    offsets: np.ndarray,
    file_format: str,
    image_size: int | None,
) -> dict[str, Any]:
    import awkward as ak

    constituents = {k: v[offsets[start] : offsets[stop]] for k, v in block.constituents.items()}
    data: dict[str, Any] = {k: v[start:stop] for k, v in block.flat.items()}
    collections = {"part": (block.counts, block.constituents), **block.collections}
    for name, (all_counts, fields) in collections.items():
        ends = np.concatenate([[0], np.cumsum(all_counts)])
        counts = all_counts[start:stop]
        values = {k: v[ends[start] : ends[stop]] for k, v in fields.items()}
        if file_format == "ttree":  # a record: uproot writes the counter n<name> and <name>_*
            data[name] = ak.zip({k: ak.unflatten(v, counts) for k, v in values.items()})
        else:
            data[f"n{name}"] = counts.astype(np.int32)
            data.update({f"{name}_{k}": ak.unflatten(v, counts) for k, v in values.items()})
    counts = block.counts[start:stop]
    if image_size is not None:
        images = jet_images(counts, constituents, image_size)
        data.update({b: images[:, c] for c, b in enumerate(IMAGE_BRANCHES)})
    return data
