"""Particle-level toy jets from a simple parton shower: QCD one-prong, W/Z two-prong, top
three-prong, whose classes differ in their substructure.

Data layer, source end: pure numpy, vectorised over every jet of a block (no loop over jets or
particles); ``gridtrain.data.toy`` writes what it returns. It knows nothing about files.

How a jet is made (all angles are (delta eta, delta phi) offsets from the jet axis):

1. **Hard partons.** A QCD jet is one parton (a gluon in half the jets, else a quark), carrying
   the jet's pt. A W/Z jet is the boson's two quarks (W at 80.4 GeV or Z at 91.2, half each,
   with their widths), sharing the pt as z and 1 - z (z uniform in [0.1, 0.9]) at the opening
   angle the mass sets, ``m^2 = z (1 - z) pt^2 dR^2``. A top jet is the b quark (share z1) and
   the W's two quarks, the b-W angle from the top mass and the q-q' one from the W mass. The
   partons are placed so that their pt-weighted centroid is the jet axis. Jet pt: 400 GeV plus
   an exponential of mean 150 GeV (at most 1.2 TeV).
2. **Shower.** Eight rounds in which each parton may split in two. Its chance to split
   grows with the phase space it has, ``c ln(theta_max / 0.01) ln(pt theta_max / 1 GeV)``
   (c = 0.12 for a quark, 2.25 c for a gluon: the colour factors' ratio), capped at 0.9. A split
   takes an angle log-uniform in [0.01, theta_max] (collinear enhanced) and a momentum share z
   log-uniform in [z_min, 0.5] (soft enhanced), with z_min such that the splitting's
   kT = z pt theta is above 1 GeV; the daughters keep the parent's pt-weighted position and
   their theta_max is the splitting's angle (angular ordering). theta_max starts at 0.8 for a
   QCD jet's parton and at the decay's opening angle for the decay products of a colour singlet
   (W, Z, and the W of the top), so their radiation stays inside the pair.
3. **Hadronisation and detector.** Every parton becomes 1 + Poisson(2.5) hadrons sharing its pt
   (Dirichlet), spread by 0.015 around it; a hadron is charged (62%: pi+-, 3% of them muons), a
   photon (25%) or a neutral hadron (13%, K_L). Measured pt: charged 1%, photons 5%, neutral
   hadrons 10% resolution; neutral directions smeared by 0.01. Hadrons below 0.5 GeV or outside
   dR 0.8 are dropped; at most ``max_particles`` (128) hardest are kept, pt-ordered.
4. **Secondary vertices.** A b quark gives one in 70% of cases (mass 1-4.5 GeV, 2-6 tracks,
   3D impact significance 3 + Exp(10)), a c quark from W -> cs in 30% (0.5-2 GeV, 3 + Exp(5)), any
   light parton a fake one in 3% (0.3-1.5 GeV, 3 + Exp(1)): the b and c counted as in the SM
   (W -> cs in a third of the hadronic W decays, Z -> bb in 15% of the Z's).

The classes differ in how particles cluster into prongs and in the prongs' pairwise masses and
kT, which a model that sees pairs reads directly; but they also differ in sums: the jet mass and
a few moments separate most jets (QCD reaches the W and top masses only through its tail), so on
this sample a model that sums per-particle functions does well too (docs/reference/benchmarks.md,
"Jet taggers"). ``qcd-matched`` jets take that away from the mass: their first splitting is hard
enough for a jet mass uniform in 40-220 GeV, at a soft-enhanced share (log-uniform z), with
radiation out to the jet radius (a colour octet's), so a W/Z or top mass window keeps QCD jets
that differ from the signal in how the pt is shared between the prongs and radiated around them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

W_MASS, W_WIDTH = 80.4, 2.1
Z_MASS, Z_WIDTH = 91.2, 2.5
TOP_MASS, TOP_WIDTH = 172.7, 1.4
THETA_MIN, Q0, ROUNDS = 0.01, 1.0, 8
SPLIT_QUARK, GLUON_FACTOR, SPLIT_CAP = 0.12, 2.25, 0.9
JET_RADIUS, MIN_PT = 0.8, 0.5
HADRON_SPREAD, NEUTRAL_SMEAR, HADRONS = 0.015, 0.01, 2.5
PION_MASS, KAON_MASS = 0.1396, 0.4976
MAX_PARTICLES, MAX_SV = 128, 5
JETS = ("qcd", "qcd-matched", "wz", "top")
MATCHED_MASS = (40.0, 220.0)  # qcd-matched: the jet mass of the hard splitting, uniform
# flavour codes of a hard parton: light quark, gluon, b, c
LIGHT, GLUON, BOTTOM, CHARM = 0, 1, 2, 3


@dataclass(frozen=True)
class ShowerJets:
    """A block of jets: per jet ``pt``, ``eta``, ``phi``; the particles flattened jet by jet
    (``particle_counts``) and the secondary vertices likewise (``sv_counts``)."""

    pt: np.ndarray
    eta: np.ndarray
    phi: np.ndarray
    particle_counts: np.ndarray
    particles: dict[str, np.ndarray]
    sv_counts: np.ndarray
    svs: dict[str, np.ndarray]


@dataclass
class _Partons:
    """Flat partons of a block: owning jet, pt, offsets from the axis, theta_max, flavour."""

    owner: np.ndarray
    pt: np.ndarray
    deta: np.ndarray
    dphi: np.ndarray
    theta_max: np.ndarray
    flavour: np.ndarray

    def take(self, keep: np.ndarray) -> _Partons:
        return _Partons(*(getattr(self, f)[keep] for f in _FIELDS))

    @staticmethod
    def join(parts: list[_Partons]) -> _Partons:
        return _Partons(*(np.concatenate([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("owner", "pt", "deta", "dphi", "theta_max", "flavour")


def _two_body(
    pt: np.ndarray, mass: np.ndarray, z: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Opening angle and the unit direction (cos, sin) of a decay to shares z, 1 - z."""
    angle = np.clip(mass / (pt * np.sqrt(z * (1.0 - z))), 0.02, JET_RADIUS)
    azimuth = rng.uniform(0.0, 2.0 * np.pi, len(pt))
    return angle, np.cos(azimuth), np.sin(azimuth)


def _hard_partons(kind: str, pt: np.ndarray, rng: np.random.Generator) -> _Partons:
    n = len(pt)
    jets = np.arange(n)
    if kind == "qcd":
        flavour = np.where(rng.random(n) < 0.5, GLUON, LIGHT)
        return _Partons(jets, pt, np.zeros(n), np.zeros(n), np.full(n, JET_RADIUS), flavour)
    if kind == "qcd-matched":
        return _matched_qcd(pt, rng)
    if kind == "wz":
        z_boson = rng.random(n) < 0.5
        mass = np.where(z_boson, rng.normal(Z_MASS, Z_WIDTH, n), rng.normal(W_MASS, W_WIDTH, n))
        share = rng.uniform(0.1, 0.9, n)
        angle, ux, uy = _two_body(pt, mass, share, rng)
        heavy = np.where(
            z_boson,
            np.where(rng.random(n) < 0.15, BOTTOM, LIGHT),
            np.where(rng.random(n) < 1 / 3, CHARM, LIGHT),
        )
        # prong 1 carries 1 - share, prong 2 share; centroid on the axis
        offsets = (-share * angle, (1.0 - share) * angle)
        return _Partons(
            np.concatenate([jets, jets]),
            np.concatenate([(1.0 - share) * pt, share * pt]),
            np.concatenate([offsets[0] * ux, offsets[1] * ux]),
            np.concatenate([offsets[0] * uy, offsets[1] * uy]),
            np.concatenate([angle, angle]),
            np.concatenate([np.where(z_boson, heavy, LIGHT), heavy]),
        )
    # top: b (share z1) and W -> q q' (shares z2, 1 - z2 of the rest)
    m_top = rng.normal(TOP_MASS, TOP_WIDTH, n)
    m_w = rng.normal(W_MASS, W_WIDTH, n)
    z1 = rng.uniform(0.15, 0.6, n)
    excess = np.clip(m_top**2 - m_w**2 / (1.0 - z1), 100.0, None)
    bw, ux, uy = _two_body(pt, np.sqrt(excess), z1, rng)
    z2 = rng.uniform(0.1, 0.9, n)
    qq, vx, vy = _two_body((1.0 - z1) * pt, m_w, z2, rng)
    w_eta, w_phi = -z1 * bw * ux, -z1 * bw * uy
    charm = np.where(rng.random(n) < 1 / 3, CHARM, LIGHT)
    return _Partons(
        np.concatenate([jets, jets, jets]),
        np.concatenate([z1 * pt, (1.0 - z1) * (1.0 - z2) * pt, (1.0 - z1) * z2 * pt]),
        np.concatenate([(1.0 - z1) * bw * ux, w_eta - z2 * qq * vx, w_eta + (1.0 - z2) * qq * vx]),
        np.concatenate([(1.0 - z1) * bw * uy, w_phi - z2 * qq * vy, w_phi + (1.0 - z2) * qq * vy]),
        np.concatenate([np.full(n, JET_RADIUS), qq, qq]),
        np.concatenate([np.full(n, BOTTOM), charm, np.full(n, LIGHT)]),
    )


def _matched_qcd(pt: np.ndarray, rng: np.random.Generator) -> _Partons:
    """QCD jets whose first splitting is hard enough for a jet mass uniform in MATCHED_MASS, as
    QCD jets selected in the W/Z and top mass windows are: the parent (a gluon in half of the
    jets) emits a gluon with a soft-enhanced share (log-uniform z, at an angle the jet holds).
    Both keep theta_max = 0.8: a colour octet's radiation is not confined to the pair."""
    n = len(pt)
    jets = np.arange(n)
    flavour = np.where(rng.random(n) < 0.5, GLUON, LIGHT)
    mass = rng.uniform(*MATCHED_MASS, n)
    reach = np.clip(4.0 * (mass / (JET_RADIUS * pt)) ** 2, 0.0, 1.0)  # z (1 - z) >= reach / 4
    z_low = np.clip(0.5 * (1.0 - np.sqrt(1.0 - reach)), 0.05, 0.45)
    z = z_low * (0.5 / z_low) ** rng.random(n)
    angle, ux, uy = _two_body(pt, mass, z, rng)
    offsets = (-z * angle, (1.0 - z) * angle)
    return _Partons(
        np.concatenate([jets, jets]),
        np.concatenate([(1.0 - z) * pt, z * pt]),
        np.concatenate([offsets[0] * ux, offsets[1] * ux]),
        np.concatenate([offsets[0] * uy, offsets[1] * uy]),
        np.full(2 * n, JET_RADIUS),
        np.concatenate([flavour, np.full(n, GLUON)]),
    )


def _shower(partons: _Partons, rng: np.random.Generator) -> _Partons:
    """``ROUNDS`` rounds of collinear/soft splittings with angular ordering."""
    for _ in range(ROUNDS):
        phase = np.log(np.maximum(partons.theta_max / THETA_MIN, 1.0)) * np.log(
            np.maximum(partons.pt * partons.theta_max / Q0, 1.0)
        )
        colour = np.where(partons.flavour == GLUON, GLUON_FACTOR, 1.0)
        chance = np.minimum(SPLIT_QUARK * colour * phase, SPLIT_CAP)
        splits = rng.random(len(partons.pt)) < chance
        parent = partons.take(splits)
        m = len(parent.pt)
        theta = THETA_MIN * (parent.theta_max / THETA_MIN) ** rng.random(m)
        z_min = Q0 / (parent.pt * theta)
        possible = z_min < 0.5
        z = np.where(possible, z_min * (0.5 / np.minimum(z_min, 0.5)) ** rng.random(m), 0.0)
        azimuth = rng.uniform(0.0, 2.0 * np.pi, m)
        ux, uy = np.cos(azimuth), np.sin(azimuth)
        hard = _Partons(
            parent.owner,
            (1.0 - z) * parent.pt,
            parent.deta - z * theta * ux,
            parent.dphi - z * theta * uy,
            np.where(possible, theta, parent.theta_max),
            parent.flavour,
        )
        # a gluon emitted off anything, or a g -> q q-bar with a gluon parent (1 in 10)
        soft_flavour = np.where((parent.flavour == GLUON) & (rng.random(m) < 0.1), LIGHT, GLUON)
        soft = _Partons(
            parent.owner,
            z * parent.pt,
            parent.deta + (1.0 - z) * theta * ux,
            parent.dphi + (1.0 - z) * theta * uy,
            theta,
            soft_flavour,
        ).take(possible)
        partons = _Partons.join([partons.take(~splits), hard, soft])
    return partons


def _hadronise(
    partons: _Partons, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Hadrons of the partons: (owner, pt, deta, dphi, kind) with kind 0 charged, 1 lepton,
    2 photon, 3 neutral hadron."""
    per = 1 + rng.poisson(HADRONS, len(partons.pt))
    source = np.repeat(np.arange(len(partons.pt)), per)
    share = rng.gamma(1.0, 1.0, len(source))
    share /= np.bincount(source, weights=share)[source]
    pt = partons.pt[source] * share
    deta = partons.deta[source] + rng.normal(0.0, HADRON_SPREAD, len(source))
    dphi = partons.dphi[source] + rng.normal(0.0, HADRON_SPREAD, len(source))
    draw = rng.random(len(source))
    kind = np.where(draw < 0.62, 0, np.where(draw < 0.87, 2, 3))
    kind = np.where((kind == 0) & (rng.random(len(source)) < 0.03), 1, kind)
    resolution = np.array([0.01, 0.01, 0.05, 0.10])[kind]
    pt = pt * np.clip(1.0 + resolution * rng.normal(0.0, 1.0, len(source)), 0.1, None)
    neutral = kind >= 2
    deta = deta + neutral * rng.normal(0.0, NEUTRAL_SMEAR, len(source))
    dphi = dphi + neutral * rng.normal(0.0, NEUTRAL_SMEAR, len(source))
    return partons.owner[source], pt, deta, dphi, kind


def _secondary_vertices(
    hard: _Partons, rng: np.random.Generator
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per hard parton at most one vertex; (owner, fields)."""
    n = len(hard.pt)
    chance = np.select([hard.flavour == BOTTOM, hard.flavour == CHARM], [0.7, 0.3], 0.03)
    made = rng.random(n) < chance
    src = hard.take(made)
    m = len(src.pt)
    bottom, charm = src.flavour == BOTTOM, src.flavour == CHARM
    low = np.select([bottom, charm], [1.0, 0.5], 0.3)
    high = np.select([bottom, charm], [4.5, 2.0], 1.5)
    scale = np.select([bottom, charm], [10.0, 5.0], 1.0)
    fields = {
        "pt": (src.pt * rng.uniform(0.3, 0.8, m)).astype(np.float32),
        "deta": (src.deta + rng.normal(0.0, 0.01, m)).astype(np.float32),
        "dphi": (src.dphi + rng.normal(0.0, 0.01, m)).astype(np.float32),
        "mass": rng.uniform(low, high).astype(np.float32),
        "ntracks": (2 + rng.binomial(4, np.where(bottom, 0.6, 0.3))).astype(np.int32),
        "sip3d": (3.0 + rng.exponential(scale)).astype(np.float32),
    }
    return src.owner, fields


def _group_by_jet(
    owner: np.ndarray, pt: np.ndarray, n: int, limit: int
) -> tuple[np.ndarray, np.ndarray]:
    """An order putting each jet's entries together, hardest first, at most ``limit`` per jet;
    returns (order, counts)."""
    order = np.lexsort((-pt, owner))
    owner_sorted = owner[order]
    starts = np.searchsorted(owner_sorted, np.arange(n))
    rank = np.arange(len(order)) - starts[owner_sorted]
    keep = rank < limit
    return order[keep], np.bincount(owner_sorted[keep], minlength=n).astype(np.int32)


def generate_jets(
    kind: str, n: int, rng: np.random.Generator, max_particles: int = MAX_PARTICLES
) -> ShowerJets:
    """``n`` jets of ``kind``: qcd, qcd-matched (QCD with a jet mass spread over the W/Z and
    top masses by a hard first splitting), wz or top."""
    if kind not in JETS:
        raise ValueError(f"jet kind {kind!r}: choose one of {', '.join(JETS)}")
    pt = np.minimum(400.0 + rng.exponential(150.0, n), 1200.0)
    eta = rng.uniform(-2.0, 2.0, n)
    phi = rng.uniform(-np.pi, np.pi, n)
    hard = _hard_partons(kind, pt, rng)
    owner, hpt, deta, dphi, species = _hadronise(_shower(hard, rng), rng)
    inside = (hpt > MIN_PT) & (np.hypot(deta, dphi) < JET_RADIUS)
    owner, hpt, deta, dphi, species = (a[inside] for a in (owner, hpt, deta, dphi, species))
    order, counts = _group_by_jet(owner, hpt, n, max_particles)
    owner, hpt, deta, dphi, species = (a[order] for a in (owner, hpt, deta, dphi, species))
    total = len(hpt)
    sign = rng.choice(np.array([-1, 1], dtype=np.int32), total)
    charge = np.where(species <= 1, sign, 0).astype(np.int32)
    pid = np.choose(species, [211 * charge, 13 * charge, np.full(total, 22), np.full(total, 130)])
    mass = np.choose(species, [PION_MASS, 0.1057, 0.0, KAON_MASS])
    peta = eta[owner] + deta
    pphi = (phi[owner] + dphi + np.pi) % (2.0 * np.pi) - np.pi
    energy = np.sqrt((hpt * np.cosh(peta)) ** 2 + mass**2)
    jet_pt = np.bincount(owner, weights=hpt, minlength=n)
    jet_energy = np.bincount(owner, weights=energy, minlength=n)
    particles = {
        "pt": hpt,
        "eta": peta,
        "phi": pphi,
        "energy": energy,
        "deta": deta,
        "dphi": dphi,
        "charge": charge,
        "pid": pid.astype(np.int32),
        "logpt": np.log(hpt),
        "logenergy": np.log(energy),
        "logptrel": np.log(hpt / jet_pt[owner]),
        "logerel": np.log(energy / jet_energy[owner]),
        "dr": np.hypot(deta, dphi),
    }
    particles = {
        k: v if v.dtype == np.int32 else v.astype(np.float32) for k, v in particles.items()
    }
    sv_owner, sv = _secondary_vertices(hard, rng)
    sv_order, sv_counts = _group_by_jet(sv_owner, sv["pt"], n, MAX_SV)
    svs = {k: v[sv_order] for k, v in sv.items()}
    return ShowerJets(pt, eta, phi, counts, particles, sv_counts, svs)
