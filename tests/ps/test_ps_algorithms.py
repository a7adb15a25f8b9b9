"""Update rules against hand-computed values; the server's in-place versions against them."""

from __future__ import annotations

import numpy as np
import pytest

from gridtrain.errors import ConfigError
from gridtrain.ps import algorithms
from gridtrain.ps.protocol import Signature
from gridtrain.ps.rules import AlgorithmConfig, Updater


def test_staleness_and_dynsgd_scale() -> None:
    assert algorithms.staleness(10, 7) == 3
    assert algorithms.staleness(4, 4) == 0
    with pytest.raises(ValueError, match="base version 5, newer than the center's 3"):
        algorithms.staleness(3, 5)
    assert algorithms.dynsgd_scale(0) == 1.0
    assert algorithms.dynsgd_scale(3) == 0.25
    with pytest.raises(ValueError, match=">= 0"):
        algorithms.dynsgd_scale(-1)


def test_sgd_step_with_momentum_by_hand() -> None:
    # v' = 0.9 * [0.5, 0] - 0.1 * [1, 2] = [0.35, -0.2]
    delta, velocity = algorithms.sgd_step(
        np.array([1.0, 2.0]), np.array([0.5, 0.0]), learning_rate=0.1, momentum=0.9
    )
    np.testing.assert_allclose(delta, [0.35, -0.2])
    np.testing.assert_allclose(velocity, [0.35, -0.2])
    assert delta is not velocity


def test_adam_two_steps_by_hand() -> None:
    # step 1, g = 2: m = 0.2, v = 0.004, m^ = 2, v^ = 4, delta = -0.1 * 2 / 2 = -0.1
    delta, m, v = algorithms.adam_step(
        np.array([2.0]), np.array([0.0]), np.array([0.0]), 1, learning_rate=0.1
    )
    np.testing.assert_allclose(delta, [-0.1], rtol=1e-6)
    np.testing.assert_allclose(m, [0.2])
    np.testing.assert_allclose(v, [0.004])
    # step 2, g = 1: m = 0.28, v = 0.004996, m^ = 0.28 / 0.19, v^ = 0.004996 / 0.001999
    delta, m, v = algorithms.adam_step(np.array([1.0]), m, v, 2, learning_rate=0.1)
    np.testing.assert_allclose(m, [0.28])
    np.testing.assert_allclose(v, [0.004996])
    np.testing.assert_allclose(delta, [-0.0932179], rtol=1e-5)
    with pytest.raises(ValueError, match="starts at 1"):
        algorithms.adam_step(np.array([1.0]), m, v, 0, learning_rate=0.1)


def test_easgd_elastic_difference_by_hand() -> None:
    delta = algorithms.easgd_step(np.array([1.0, 2.0]), np.array([3.0, 0.0]), alpha=0.25)
    np.testing.assert_allclose(delta, [0.5, -0.5])
    # Applying it moves center and worker toward each other; their sum is conserved.
    center, worker = np.array([1.0, 2.0]) + delta, np.array([3.0, 0.0]) - delta
    np.testing.assert_allclose(center + worker, [4.0, 2.0])


def test_adag_normalises_by_the_window() -> None:
    np.testing.assert_allclose(algorithms.adag_delta(np.array([4.0, -2.0]), 4), [1.0, -0.5])
    with pytest.raises(ValueError, match="window must be >= 1"):
        algorithms.adag_delta(np.array([1.0]), 0)


def test_gem_matches_the_proxy_energy_by_hand() -> None:
    # p' = 0.5 * [2, -2, 1, 0] + [1, -1, 0.5, 0] = [2, -2, 1, 0]; kappa |p'| = [2, 2, 1, 0]
    # room = kappa |p'| - |c| = [2, 2, 1, 0] - [1, 3, 0.5, 0] = [1, -1, 0.5, 0]
    # pi = room / |u| = [1, -1 -> 0, 1, 0 (u = 0)]; delta = pi u = [1, 0, 0.5, 0]
    proxy = np.array([2.0, -2.0, 1.0, 0.0])
    central = np.array([1.0, -3.0, 0.5, 0.0])
    update = np.array([1.0, -1.0, 0.5, 0.0])
    new_proxy = algorithms.gem_proxy(proxy, update, momentum=0.5)
    np.testing.assert_allclose(new_proxy, [2.0, -2.0, 1.0, 0.0])
    pi = algorithms.gem_scale(new_proxy, central, update, kappa=1.0)
    np.testing.assert_allclose(pi, [1.0, 0.0, 1.0, 0.0])
    delta, stepped_proxy, moment = algorithms.gem_step(
        proxy, central, update, momentum=0.5, kappa=1.0
    )
    np.testing.assert_allclose(delta, [1.0, 0.0, 0.5, 0.0])
    np.testing.assert_allclose(stepped_proxy, new_proxy)
    np.testing.assert_allclose(moment, delta)
    # The matched energy: where pi was not clipped, |c| + |delta| = kappa |p'|.
    np.testing.assert_allclose((np.abs(central) + np.abs(delta))[[0, 2]], [2.0, 1.0])


def test_gem_caps_pi_and_amplifies_a_quiet_center() -> None:
    # kappa |p| = 2 * 3 = 6 with a still center: pi = 6 / 0.5 = 12, capped at GEM_MAX_SCALE (5).
    pi = algorithms.gem_scale(np.array([3.0]), np.array([0.0]), np.array([0.5]), kappa=2.0)
    np.testing.assert_allclose(pi, [algorithms.GEM_MAX_SCALE])
    with pytest.raises(ValueError, match="kappa must be > 0"):
        algorithms.gem_scale(np.array([1.0]), np.array([0.0]), np.array([1.0]), kappa=0.0)
    with pytest.raises(ValueError, match="proxy momentum"):
        algorithms.gem_proxy(np.array([1.0]), np.array([1.0]), momentum=1.0)


def test_server_gem_matches_the_pure_function() -> None:
    config = AlgorithmConfig(algorithm="gem", gem_on="server", kappa=1.5, proxy_momentum=0.9)
    center = _tensors(0)
    updater = Updater(config, Signature.of(center))
    assert sorted(updater.state) == ["central_moment", "proxy"]
    expected = [c.copy() for c in center]
    proxy = [np.zeros_like(c) for c in center]
    moment = [np.zeros_like(c) for c in center]
    for step in range(1, 5):
        update = _tensors(step)
        updater.apply(center, [u.copy() for u in update], scale=0.5)
        for i, u in enumerate(update):
            delta, proxy[i], moment[i] = algorithms.gem_step(
                proxy[i], moment[i], 0.5 * u, momentum=0.9, kappa=1.5
            )
            expected[i] += delta
    for got, want in zip(center, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_gem_on_the_worker_leaves_the_server_adding() -> None:
    """With the paper's placement the worker rescales; the server keeps no GEM state and adds."""
    config = AlgorithmConfig(algorithm="gem", gem_on="worker")
    center = _tensors(0)
    before = [c.copy() for c in center]
    updater = Updater(config, Signature.of(center))
    assert updater.state == {}
    update = _tensors(1)
    updater.apply(center, [u.copy() for u in update], scale=0.5)
    for got, was, u in zip(center, before, update, strict=True):
        np.testing.assert_allclose(got, was + 0.5 * u)
    server_state = Updater(AlgorithmConfig(algorithm="gem", gem_on="server"), Signature.of(center))
    with pytest.raises(ConfigError, match="set gem_on: server"):  # a checkpoint of the other
        Updater(config, Signature.of(center), state=server_state.state)
    delta, proxy = algorithms.gem_worker_step(
        np.array([1.0, 1.0]), np.array([0.5, 3.0]), np.array([2.0, 2.0]), momentum=0.5, kappa=1.0
    )
    # p' = 0.5 + 2 = 2.5; pi = (2.5 - [0.5, 3]) / 2 = [1, < 0 -> 0]
    np.testing.assert_allclose(proxy, [2.5, 2.5])
    np.testing.assert_allclose(delta, [2.0, 0.0])


def test_average_and_backup_round() -> None:
    mean = algorithms.average_updates([[np.array([1.0, 3.0])], [np.array([3.0, 5.0])]])
    np.testing.assert_allclose(mean[0], [2.0, 4.0])
    with pytest.raises(ValueError, match="zero updates"):
        algorithms.average_updates([])
    assert algorithms.backup_round([5, 2, 9], 2) == ([5, 2], [9])


def _tensors(seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(5, 3)), rng.normal(size=4)]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_server_sgd_matches_the_pure_function(momentum: float) -> None:
    config = AlgorithmConfig(optimizer="sgd", learning_rate=0.05, momentum=momentum)
    center = _tensors(0)
    updater = Updater(config, Signature.of(center))
    expected = [c.copy() for c in center]
    velocity = [np.zeros_like(c) for c in center]
    for step in range(1, 4):
        gradient = _tensors(step)
        updater.apply(center, [g.copy() for g in gradient], scale=0.5)
        for i, g in enumerate(gradient):
            delta, velocity[i] = algorithms.sgd_step(0.5 * g, velocity[i], 0.05, momentum)
            expected[i] += delta
    for got, want in zip(center, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_server_adam_matches_the_pure_function() -> None:
    config = AlgorithmConfig(optimizer="adam", learning_rate=0.01)
    center = _tensors(0)
    updater = Updater(config, Signature.of(center))
    expected = [c.copy() for c in center]
    moments = [(np.zeros_like(c), np.zeros_like(c)) for c in center]
    for step in range(1, 4):
        gradient = _tensors(step)
        updater.apply(center, [g.copy() for g in gradient])
        for i, g in enumerate(gradient):
            delta, m, v = algorithms.adam_step(g, *moments[i], step, learning_rate=0.01)
            moments[i] = (m, v)
            expected[i] += delta
    assert updater.step == 3
    for got, want in zip(center, expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)


def test_server_easgd_returns_the_elastic_difference_in_the_update_buffer() -> None:
    config = AlgorithmConfig(algorithm="easgd", alpha=0.25)
    center = [np.array([1.0, 2.0])]
    buffer = [np.array([3.0, 0.0])]
    Updater(config, Signature.of(center)).apply(center, buffer)
    np.testing.assert_allclose(buffer[0], [0.5, -0.5])
    np.testing.assert_allclose(center[0], [1.5, 1.5])


def test_server_adag_and_add() -> None:
    center = [np.array([1.0, 1.0])]
    Updater(AlgorithmConfig(algorithm="adag", window=4), Signature.of(center)).apply(
        center, [np.array([4.0, -8.0])], scale=0.5
    )
    np.testing.assert_allclose(center[0], [1.5, 0.0])
    Updater(AlgorithmConfig(optimizer="add"), Signature.of(center)).apply(
        center, [np.array([1.0, 2.0])], scale=0.5
    )
    np.testing.assert_allclose(center[0], [2.0, 1.0])


def test_float32_center_stays_float32() -> None:
    center = [np.ones(3, np.float32)]
    for optimizer in ("add", "sgd", "adam"):
        Updater(AlgorithmConfig(optimizer=optimizer), Signature.of(center)).apply(
            center, [np.ones(3, np.float32)], scale=0.5
        )
    Updater(AlgorithmConfig(algorithm="gem", gem_on="server"), Signature.of(center)).apply(
        center, [np.ones(3, np.float32)], scale=0.5
    )
    assert center[0].dtype == np.float32


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"algorithm": "hogwild"}, "algorithm = 'hogwild' is invalid: expected one of downpour"),
        ({"learning_rate": 0.0}, "learning_rate = 0.0 is invalid"),
        ({"momentum": 1.0}, "momentum = 1.0"),
        ({"alpha": 1.5}, "EASGD moving rate"),
        ({"window": 0}, "window = 0"),
        ({"max_staleness": -1}, "max_staleness = -1"),
        ({"sync_workers": 0}, "sync_workers >= 1"),
        ({"algorithm": "gem", "kappa": 0.0}, "GEM proxy amplification"),
        ({"algorithm": "gem", "proxy_momentum": 1.0}, "proxy_momentum = 1.0"),
        ({"algorithm": "gem", "gem_on": "client"}, "gem_on = 'client'"),
    ],
)
def test_bad_settings_name_the_value(settings: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        AlgorithmConfig(**settings)  # type: ignore[arg-type]


def test_config_round_trips_and_refuses_unknown_keys() -> None:
    config = AlgorithmConfig(algorithm="easgd", alpha=0.2, max_staleness=3)
    assert AlgorithmConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ConfigError, match="unknown algorithm settings"):
        AlgorithmConfig.from_dict({"learning_rte": 0.1})


def test_optimizer_state_must_match_the_optimizer() -> None:
    center = [np.zeros(2)]
    with pytest.raises(ConfigError, match="needs \\['velocity'\\]"):
        Updater(AlgorithmConfig(momentum=0.9), Signature.of(center), state={})
