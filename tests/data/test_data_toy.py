"""The toy dataset: real TTrees, deterministic, and a task with the right difficulty."""

from __future__ import annotations

import numpy as np
import uproot

from gridtrain.data.toy import JET_FEATURES, generate_events


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    ranks = np.empty(len(scores))
    ranks[np.argsort(scores)] = np.arange(1, len(scores) + 1)
    positive = labels == 1
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def logistic_regression(x: np.ndarray, y: np.ndarray, steps: int = 25) -> np.ndarray:
    """Newton's method with a small ridge term; returns the weights (bias last)."""
    x = np.c_[x, np.ones(len(x))]
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        hessian = (x * (p * (1 - p))[:, None]).T @ x + 1e-3 * np.eye(x.shape[1])
        w -= np.linalg.solve(hessian, x.T @ (p - y) + 1e-3 * w)
    return w


def test_toy_files_are_ttrees_with_the_documented_branches(toy_dir):
    with uproot.open(toy_dir / "signal.root") as f:
        assert f.classnames() == {"events;1": "TTree"}
        tree = f["events"]
        for name in (*JET_FEATURES, "weight", "run", "luminosityBlock", "event", "npart"):
            assert name in tree
        counts = tree["npart"].array(library="np")
        pt = tree["part_pt"].array()
        assert (counts <= 64).all()
        assert counts.max() > 45
        assert np.array_equal(counts, [len(x) for x in pt.tolist()])
        assert tree["jet_pt"].interpretation.to_dtype == np.float32


def test_generation_is_deterministic_for_a_seed():
    a = generate_events(500, True, np.random.default_rng(3), 0)
    b = generate_events(500, True, np.random.default_rng(3), 0)
    c = generate_events(500, True, np.random.default_rng(4), 0)
    for name in JET_FEATURES:
        np.testing.assert_array_equal(a.flat[name], b.flat[name])
    assert not np.array_equal(a.flat["jet_mass"], c.flat["jet_mass"])


def test_a_linear_classifier_separates_well_but_not_perfectly():
    events = [generate_events(15_000, s, np.random.default_rng(11 + s), 0) for s in (0, 1)]
    x = np.concatenate([np.stack([e.flat[k] for k in JET_FEATURES], 1) for e in events])
    x = np.c_[x, x**2].astype(np.float64)
    x = (x - x.mean(0)) / (x.std(0) + 1e-12)
    y = np.r_[np.zeros(15_000), np.ones(15_000)]
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order]
    w = logistic_regression(x[:20_000], y[:20_000])
    auc = roc_auc(y[20_000:], np.c_[x[20_000:], np.ones(10_000)] @ w)
    assert 0.85 < auc < 0.97, auc
    for k in range(len(JET_FEATURES)):  # no single feature gives the answer away
        single = roc_auc(y, x[:, k])
        assert max(single, 1 - single) < 0.85, JET_FEATURES[k]


def test_top_jets_have_the_top_mass_and_more_prongs_than_w_jets():
    from gridtrain.data.toy import generate_top

    top = generate_top(3000, np.random.default_rng(1), 0)
    w = generate_events(3000, True, np.random.default_rng(1), 0)
    qcd = generate_events(3000, False, np.random.default_rng(1), 0)
    assert 160 < np.median(top.flat["jet_mass"]) < 190
    assert 75 < np.median(w.flat["jet_mass"]) < 95
    assert np.median(qcd.flat["jet_mass"]) < 70
    # A third prong spreads the pt: the leading constituent carries less of it.
    assert np.median(top.flat["jet_lead_frac"]) < np.median(w.flat["jet_lead_frac"])
    assert np.median(top.flat["jet_nconst"]) > np.median(w.flat["jet_nconst"])


def test_the_regression_toy_keeps_the_generator_level_jet_beside_the_measured_one():
    from gridtrain.data.toy import TRUE_FEATURES, smear_jets

    true = generate_events(3000, False, np.random.default_rng(2), 0)
    measured = smear_jets(true, np.random.default_rng(3))
    for name in TRUE_FEATURES:
        np.testing.assert_array_equal(measured.flat[name], true.flat[name.removesuffix("_true")])
    np.testing.assert_array_equal(measured.counts, true.counts)
    # Neutral hadrons are measured at 0.7: jets with more of them need a larger correction.
    response = measured.flat["jet_pt_true"] / measured.flat["jet_pt"]
    assert 1.0 < np.median(response) < 1.15
    owner = np.repeat(np.arange(len(true.counts)), true.counts)
    hadron_pt = true.constituents["pt"] * (true.constituents["pid"] == 130)
    share = np.bincount(owner, weights=hadron_pt) / np.bincount(owner, true.constituents["pt"])
    assert np.corrcoef(share, response)[0, 1] > 0.8
    # Constituents stay pt-ordered within each jet, as measured.
    starts = np.cumsum(measured.counts) - measured.counts
    assert (measured.constituents["pt"][starts] >= measured.constituents["pt"][starts + 1]).all()
