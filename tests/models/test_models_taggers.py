"""ParticleNet and the Particle Transformer: sizes against the papers, padding, pairs, groups."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from models_helpers import with_garbage

from gridtrain.errors import ConfigError
from gridtrain.models import MODELS, InputSpec, arrange_inputs, build_model, load_model
from gridtrain.task import Task

PARTICLES = ("part_deta", "part_dphi", "part_logpt", "part_pt", "part_energy", "part_charge")
SVS = ("sv_deta", "sv_dphi", "sv_pt", "sv_mass")
LENGTH, SV_LENGTH = 16, 3
TINY = {
    "particlenet": {"edge_convs": [[4, [8, 8]], [4, [8]]], "fc": [8]},
    "part": {"embed_dims": [8], "pair_embed_dims": [4], "num_heads": 2, "num_layers": 2},
}
MULTICLASS = Task("multiclass", classes=("qcd", "wz", "top"))


def particle_spec(task: Task = MULTICLASS, svs: bool = False) -> InputSpec:
    groups = {"particles": (LENGTH, PARTICLES)}
    if svs:
        groups["svs"] = (SV_LENGTH, SVS)
    return InputSpec((), groups, task=task)


def jets(n: int, seed: int = 0, svs: bool = False) -> dict[str, np.ndarray]:
    """Plausible jets: (deta, dphi) within 0.4, pt 1-100 GeV, massless energies; padding 0."""
    rng = np.random.default_rng(seed)
    count = rng.integers(2, LENGTH + 1, n).astype(np.int32)
    count[0] = LENGTH  # a full jet: no padding at all
    pt = rng.uniform(1.0, 100.0, (n, LENGTH))
    deta, dphi = rng.normal(0, 0.2, (2, n, LENGTH))
    energy = pt * np.cosh(0.5 + deta)
    charge = rng.choice([-1.0, 0.0, 1.0], (n, LENGTH))
    values = np.stack([deta, dphi, np.log(pt), pt, energy, charge], -1).astype(np.float32)
    values[np.arange(LENGTH)[None, :] >= count[:, None]] = 0.0
    batch = {"particles": values, "particles_count": count}
    if svs:
        sv_count = rng.integers(0, SV_LENGTH + 1, n).astype(np.int32)
        sv = rng.normal(0, 1, (n, SV_LENGTH, len(SVS))).astype(np.float32)
        sv[np.arange(SV_LENGTH)[None, :] >= sv_count[:, None]] = 0.0
        batch.update(svs=sv, svs_count=sv_count)
    return batch


def predict(model, batch):  # type: ignore[no-untyped-def]
    return model.predict_on_batch(arrange_inputs(model, batch))


def test_both_are_registered_with_presets() -> None:
    assert set(MODELS["particlenet"].params) >= {"preset", "groups", "points", "edge_convs"}
    assert set(MODELS["part"].params) >= {"preset", "groups", "fourmomentum", "num_heads"}


def trainable(model) -> int:  # type: ignore[no-untyped-def]
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


@pytest.mark.parametrize(("preset", "paper"), [("lite", 26_000), ("full", 366_000)])
def test_particlenet_presets_have_the_papers_sizes(preset: str, paper: int) -> None:
    # The paper's (arXiv:1902.08570, table 2) counts are for 7 particle features and 2 softmax
    # outputs; our binary head has one sigmoid unit, so add the second unit's weights.
    features = ("deta", "dphi", "logpt", "loge", "logptrel", "logerel", "dr")
    spec = InputSpec((), {"particles": (100, features)}, task=Task())
    model = build_model("particlenet", {"preset": preset}, spec, learning_rate=1e-3, seed=1)
    fc = model.get_layer("probability").input.shape[-1]
    count = trainable(model) + fc + 1
    assert count == {"lite": 26_416, "full": 366_160}[preset]  # weaver's ParticleNet, counted
    assert abs(count - paper) / paper < 0.02


def test_part_paper_preset_has_the_papers_size() -> None:
    # ParT on JetClass (arXiv:2202.03772, table 3): 17 particle features, 10 classes, 2.14M.
    features = (*(f"x_{i}" for i in range(13)), "part_pt", "part_deta", "part_dphi", "e")
    task = Task("multiclass", classes=tuple(f"c{i}" for i in range(10)))
    spec = InputSpec((), {"particles": (128, features)}, task=task)
    model = build_model("part", {"preset": "paper"}, spec, learning_rate=1e-3, seed=1)
    assert abs(trainable(model) - 2_140_000) / 2_140_000 < 0.005


@pytest.mark.parametrize("name", ["particlenet", "part"])
@pytest.mark.parametrize("svs", [False, True], ids=["particles", "particles+svs"])
def test_padding_contents_never_matter(name: str, svs: bool) -> None:
    model = build_model(name, TINY[name], particle_spec(svs=svs), learning_rate=1e-3, seed=2)
    batch = jets(24, seed=3, svs=svs)
    reference = predict(model, batch)
    groups = ("particles", "svs") if svs else ("particles",)
    garbage = with_garbage(batch, groups)
    assert np.isnan(garbage["particles"]).any()
    np.testing.assert_allclose(predict(model, garbage), reference, atol=1e-5, rtol=0)
    # The real particles matter: one fewer changes the output.
    fewer = {**batch, "particles_count": np.maximum(batch["particles_count"] - 1, 1)}
    changed = predict(model, fewer)
    assert not np.allclose(changed[1:], reference[1:], atol=1e-6)
    if svs:  # and so do the secondary vertices
        none = {**batch, "svs_count": np.zeros_like(batch["svs_count"])}
        has = batch["svs_count"] > 0
        assert not np.allclose(predict(model, none)[has], reference[has], atol=1e-6)


@pytest.mark.parametrize("name", ["particlenet", "part"])
def test_the_order_of_the_particles_does_not_matter(name: str) -> None:
    model = build_model(name, TINY[name], particle_spec(), learning_rate=1e-3, seed=4)
    batch = jets(16, seed=5)
    rng = np.random.default_rng(7)
    shuffled = batch["particles"].copy()
    for i, n in enumerate(batch["particles_count"]):
        shuffled[i, :n] = batch["particles"][i, rng.permutation(n)]
    np.testing.assert_allclose(
        predict(model, {**batch, "particles": shuffled}), predict(model, batch), atol=1e-5
    )


def test_pair_features_are_the_papers() -> None:
    from gridtrain.models.part import PairFeatures

    # two massless particles (pt, eta, phi, m) and a massive one; phi across the +-pi seam
    particles = np.array([[[50.0, 0.1, 3.1, 0.0], [20.0, -0.2, -3.1, 0.0], [10.0, 0.3, 0.5, 2.0]]])
    out = np.asarray(PairFeatures()(particles.astype(np.float32)))
    pt, eta, phi, m = particles[0].T
    mt = np.hypot(pt, m)
    y = np.arcsinh(pt * np.sinh(eta) / mt)
    for i, j in ((0, 1), (0, 2), (1, 2)):
        dphi = (phi[i] - phi[j] + np.pi) % (2 * np.pi) - np.pi
        delta = np.hypot(y[i] - y[j], dphi)
        e = [mt[k] * np.cosh(y[k]) for k in (i, j)]
        p = [np.array([pt[k] * np.cos(phi[k]), pt[k] * np.sin(phi[k]), mt[k] * np.sinh(y[k])])
             for k in (i, j)]  # fmt: skip
        m2 = (e[0] + e[1]) ** 2 - np.sum((p[0] + p[1]) ** 2)
        low = min(pt[i], pt[j])
        expected = [np.log(delta), np.log(low * delta), np.log(low / (pt[i] + pt[j])), np.log(m2)]
        np.testing.assert_allclose(out[0, i, j], expected, rtol=1e-4)
        np.testing.assert_allclose(out[0, j, i], expected, rtol=1e-4)
    assert np.isclose(out[0, 0, 1, 0], np.log(np.hypot(0.3, 2 * np.pi - 6.2)), rtol=1e-4)


def test_the_pairs_come_from_the_physical_values() -> None:
    from gridtrain.models.sets import physical

    # A group standardised by the worker: the model undoes it for the four-momenta.
    mean, std = (0.0, 0.0, 2.0, 30.0, 40.0, 0.0), (0.2, 0.2, 1.0, 20.0, 25.0, 0.0)
    raw = jets(4, seed=1)["particles"]
    standardised = (raw - np.array(mean)) / np.where(np.array(std) > 0, std, 1.0)
    names = ["part_pt", "part_energy", "part_charge"]
    back = np.asarray(physical(standardised.astype(np.float32), PARTICLES, names, (mean, std), "p"))
    np.testing.assert_allclose(back, raw[..., [3, 4, 5]], rtol=1e-5, atol=1e-4)


@pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")
@pytest.mark.parametrize("name", ["particlenet", "part"])
def test_saved_and_loaded_the_model_scores_the_same(name: str, tmp_path: Path) -> None:
    model = build_model(name, TINY[name], particle_spec(svs=True), learning_rate=1e-3, seed=6)
    batch = jets(8, seed=8, svs=True)
    rng = np.random.default_rng(8)  # every weight moved off its initial value, as training does
    moved = [w + rng.normal(0, 0.1, w.shape).astype(w.dtype) for w in model.get_weights()]
    model.set_weights(moved)
    model.optimizer.build(model.trainable_variables)  # saved with its state, as a run's model is
    model.save(tmp_path / "m.keras")
    again = load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(predict(again, batch), predict(model, batch), atol=1e-6)


def test_channels_are_found_by_name_or_refused_in_one_line() -> None:
    spec = InputSpec((), {"particles": (LENGTH, ("a", "b", "c"))}, task=MULTICLASS)
    with pytest.raises(ConfigError, match=r"points: \{particles: \[particles_deta"):
        build_model("particlenet", TINY["particlenet"], spec, learning_rate=1e-3, seed=1)
    with pytest.raises(ConfigError, match=r"fourmomentum: \{pt: particles_pt"):
        build_model("part", TINY["part"], spec, learning_rate=1e-3, seed=1)
    with pytest.raises(ConfigError, match="'nope', which group 'particles' does not have"):
        build_model(
            "particlenet", {**TINY["particlenet"], "points": ["nope", "b"]}, spec,
            learning_rate=1e-3, seed=1,
        )  # fmt: skip
    with pytest.raises(ConfigError, match="k = 16 neighbours and the jets hold at most 16"):
        build_model("particlenet", {"preset": "full"}, particle_spec(), learning_rate=1e-3, seed=1)
    with pytest.raises(ConfigError, match=r"preset.*lite or full"):
        build_model("particlenet", {"preset": "big"}, particle_spec(), learning_rate=1e-3, seed=1)


def test_points_and_fourmomentum_can_be_named() -> None:
    from gridtrain.models.taggers import resolve_fourmomentum, resolve_points

    channels = {"particles": PARTICLES, "svs": SVS}
    groups = ["particles", "svs"]
    assert resolve_points("particlenet", None, groups, channels) == {
        "particles": ["part_deta", "part_dphi"],
        "svs": ["sv_deta", "sv_dphi"],
    }
    found = resolve_fourmomentum("part", None, groups, channels)
    assert found["particles"] == {"pt": "part_pt", "eta": "part_deta", "phi": "part_dphi"}
    assert found["svs"] == {"pt": "sv_pt", "eta": "sv_deta", "phi": "sv_dphi", "mass": "sv_mass"}
    named = {"particles": {"pt": "part_pt", "eta": "part_deta", "phi": "part_dphi"}}
    assert resolve_fourmomentum("part", named, ["particles"], channels) == named
