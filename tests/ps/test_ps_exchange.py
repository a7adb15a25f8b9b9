"""The worker-side exchange helpers against a real server."""

from __future__ import annotations

import numpy as np
import pytest
from ps_helpers import connected, running_server

from gridtrain.ps.exchange import Exchange
from gridtrain.ps.rules import AlgorithmConfig

WEIGHTS = [np.zeros((2, 2)), np.zeros(3)]


def shifted(weights: list[np.ndarray], by: float) -> list[np.ndarray]:
    return [w + by for w in weights]


def test_downpour_pushes_the_delta_accumulated_over_the_window() -> None:
    config = AlgorithmConfig(optimizer="add")
    with running_server(WEIGHTS, config) as (ps, secret), connected(ps, secret, WEIGHTS) as client:
        exchange = Exchange(client, every=2)
        local = exchange.start()
        assert exchange.after_step(shifted(local, 1.0)) is None  # step 1: local only
        new = exchange.after_step(shifted(local, 2.0))  # step 2: push delta 2
        assert new is not None
        np.testing.assert_array_equal(new[0], 2.0)
        assert exchange.version == 1
        with connected(ps, secret, WEIGHTS) as other:  # another worker moves the center
            other.push(shifted(WEIGHTS, 10.0), 1)
        exchange.after_step(shifted(new, 0.5))
        new = exchange.after_step(shifted(new, 1.0))  # delta 1 on top of the other's 10
        assert new is not None
        np.testing.assert_array_equal(new[1], 13.0)
        assert exchange.version == 3


def test_adag_server_normalises_by_the_window() -> None:
    config = AlgorithmConfig(algorithm="adag", window=4)
    with running_server(WEIGHTS, config) as (ps, secret), connected(ps, secret, WEIGHTS) as client:
        exchange = Exchange(client, every=4)
        local = exchange.start()
        new = None
        for step in range(1, 5):
            new = exchange.after_step(shifted(local, float(step)))
        assert new is not None
        np.testing.assert_array_equal(new[0], 1.0)  # delta 4 over a window of 4


def test_easgd_moves_worker_and_center_toward_each_other() -> None:
    config = AlgorithmConfig(algorithm="easgd", alpha=0.5, max_staleness=0)
    with running_server(WEIGHTS, config) as (ps, secret), connected(ps, secret, WEIGHTS) as client:
        exchange = Exchange(client, every=1)
        exchange.start()
        new = exchange.after_step(shifted(WEIGHTS, 4.0))
        assert new is not None
        np.testing.assert_array_equal(new[0], 2.0)  # 4 - 0.5 * (4 - 0)
        np.testing.assert_array_equal(client.pull()[1][0], 2.0)
        exchange.version = 0  # EASGD pushes are whole variables: never refused as stale
        assert exchange.after_step(shifted(WEIGHTS, 6.0)) is not None
        assert exchange.refused == 0


def test_gradients_for_a_server_side_optimizer() -> None:
    config = AlgorithmConfig(optimizer="sgd", learning_rate=0.1)
    with running_server(WEIGHTS, config) as (ps, secret), connected(ps, secret, WEIGHTS) as client:
        exchange = Exchange(client, every=2)
        exchange.start()
        with pytest.raises(ValueError, match="call push_gradients"):
            exchange.after_step(WEIGHTS)
        assert exchange.push_gradients(shifted(WEIGHTS, 1.0)) is None
        new = exchange.push_gradients(shifted(WEIGHTS, 1.0))
        assert new is not None
        np.testing.assert_allclose(new[0], -0.2)  # -0.1 * (1 + 1)


def test_refused_update_costs_one_pull() -> None:
    config = AlgorithmConfig(optimizer="add", max_staleness=0)
    with (
        running_server(WEIGHTS, config) as (ps, secret),
        connected(ps, secret, WEIGHTS) as slow,
        connected(ps, secret, WEIGHTS) as fast,
    ):
        exchange = Exchange(slow, every=1)
        exchange.start()
        fast.push(shifted(WEIGHTS, 5.0), 0)
        new = exchange.after_step(shifted(WEIGHTS, 1.0))  # based on version 0: refused
        assert new is not None
        np.testing.assert_array_equal(new[0], 5.0)  # the pulled center, without our delta
        assert (exchange.refused, exchange.version) == (1, 1)
        new = exchange.after_step(shifted(new, 1.0))
        assert new is not None
        np.testing.assert_array_equal(new[0], 6.0)


def test_flush_sends_the_steps_of_an_unfinished_window_once() -> None:
    config = AlgorithmConfig(optimizer="add")
    with running_server(WEIGHTS, config) as (ps, secret), connected(ps, secret, WEIGHTS) as client:
        exchange = Exchange(client, every=8)
        local = exchange.start()
        for step in (1.0, 2.0, 3.0):
            assert exchange.after_step(shifted(local, step)) is None
        assert client.pull()[0] == 0  # nothing sent yet: the window is not full
        new = exchange.flush(lambda: shifted(local, 3.0))
        assert new is not None
        np.testing.assert_array_equal(client.pull()[1][0], 3.0)
        assert exchange.flush(lambda: shifted(new, 1.0)) is None  # nothing pending
        for _ in range(7):  # a fresh window after the flush: 7 steps do not exchange
            assert exchange.after_step(lambda: shifted(new, 1.0)) is None
        assert exchange.after_step(lambda: shifted(new, 1.0)) is not None


def test_gem_on_the_worker_matches_its_proxy_against_the_others_moves() -> None:
    """The paper's placement: pi from this worker's proxy and the center's move between pulls."""
    kappa, mu = 0.2, 0.9
    config = AlgorithmConfig(algorithm="gem", gem_on="worker", kappa=kappa, proxy_momentum=mu)
    with running_server(WEIGHTS, config) as (ps, secret), connected(ps, secret, WEIGHTS) as client:
        exchange = Exchange(client, every=1)
        start = exchange.start()
        # first push: no move seen yet, proxy = delta, pi = kappa |d| / |d| = kappa
        first = exchange.after_step(shifted(start, 1.0))
        assert first is not None
        np.testing.assert_allclose(first[0], kappa * 1.0)  # the server added what was sent
        with connected(ps, secret, WEIGHTS) as other:  # another worker moves the center by 3
            other.push(shifted(WEIGHTS, 3.0), exchange.version)
        # second push: the center moved kappa (ours) since the pull before; the proxy is
        # mu * 1 + 2 = 2.9; pi = (kappa * 2.9 - kappa) / 2 = 0.19
        second = exchange.after_step(shifted(first, 2.0))
        assert second is not None
        expected = kappa + 3.0 + (kappa * (mu * 1.0 + 2.0) - kappa) / 2.0 * 2.0
        np.testing.assert_allclose(second[1], expected)
        # third push: the center moved 3 (the other) + 0.38 (ours) between our last two pulls,
        # more than kappa times the proxy (0.2 * (0.9 * 2.9 + 1) = 0.722): pi = 0, nothing moves
        third = exchange.after_step(shifted(second, 1.0))
        assert third is not None
        np.testing.assert_allclose(third[0], second[0])
