"""The shared center: staleness refusal, DynSGD, synchronous rounds, consistency under threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
from ps_helpers import described, run_threads

from gridtrain.ps.center import REFUSED_DUPLICATE, REFUSED_FUTURE, REFUSED_STALE, CenterStore
from gridtrain.ps.rules import AlgorithmConfig


def ones(value: float = 1.0) -> list[np.ndarray]:
    return [np.full((2, 3), value), np.full(4, value)]


def test_pushes_advance_the_version_and_measure_staleness() -> None:
    store = CenterStore(ones(0.0), AlgorithmConfig(optimizer="add"))
    first = store.apply_push(ones(), 0, worker_id=1)
    second = store.apply_push(ones(), 0, worker_id=2)
    assert (first.accepted, first.version, first.staleness) == (True, 1, 0)
    assert (second.accepted, second.version, second.staleness) == (True, 2, 1)
    version, center = store.copy_center()
    assert version == 2
    np.testing.assert_array_equal(center[1], 2.0)


def test_updates_older_than_max_staleness_are_refused() -> None:
    store = CenterStore(ones(0.0), AlgorithmConfig(optimizer="add", max_staleness=1))
    assert store.apply_push(ones(), 0, 1).accepted
    assert store.apply_push(ones(), 0, 1).accepted  # staleness 1: allowed
    refused = store.apply_push(ones(), 0, 1)
    assert (refused.accepted, refused.reason, refused.staleness) == (False, REFUSED_STALE, 2)
    assert "2 versions stale, the limit is 1; pull the center first" in refused.message
    assert store.precheck(0) is not None
    assert store.precheck(2) is None
    assert store.version == 2
    np.testing.assert_array_equal(store.copy_center()[1][0], 2.0)
    assert store.counter_values() == {
        "pushes_accepted": 2,
        "pushes_refused": 2,
        "updates_applied": 2,
    }


def test_push_from_the_future_is_refused_not_fatal() -> None:
    store = CenterStore(ones(0.0), AlgorithmConfig(optimizer="add"), version=5)
    refused = store.apply_push(ones(), 9, 1)
    assert (refused.accepted, refused.reason, refused.version) == (False, REFUSED_FUTURE, 5)
    assert "restarted from a checkpoint" in refused.message


def test_dynsgd_scales_by_one_over_staleness_plus_one() -> None:
    store = CenterStore(ones(0.0), AlgorithmConfig(optimizer="add", staleness_scaling="dynsgd"))
    store.apply_push(ones(), 0, 1)  # scale 1
    store.apply_push(ones(), 0, 2)  # staleness 1: scale 1/2
    store.apply_push(ones(), 0, 3)  # staleness 2: scale 1/3
    np.testing.assert_allclose(store.copy_center()[1][0], 1 + 1 / 2 + 1 / 3)


def test_synchronous_round_with_a_backup_worker() -> None:
    config = AlgorithmConfig(optimizer="add", algorithm="sync", sync_workers=2, backup_workers=1)
    store = CenterStore(ones(0.0), config)
    first = store.apply_push(ones(1.0), 0, worker_id=1)
    assert first.accepted
    assert store.version == 0
    duplicate = store.apply_push(ones(5.0), 0, worker_id=1)
    assert (duplicate.accepted, duplicate.reason) == (False, REFUSED_DUPLICATE)
    second = store.apply_push(ones(3.0), 0, worker_id=2)
    assert second.accepted
    assert store.version == 1
    backup = store.apply_push(ones(100.0), 0, worker_id=3)  # the slow one of N + b
    assert (backup.accepted, backup.reason) == (False, REFUSED_STALE)
    np.testing.assert_array_equal(store.copy_center()[1][0], 2.0)  # mean of 1 and 3
    # the next round starts clean
    store.apply_push(ones(2.0), 1, worker_id=3)
    store.apply_push(ones(4.0), 1, worker_id=1)
    assert store.version == 2
    np.testing.assert_array_equal(store.copy_center()[1][1], 5.0)


def test_sync_round_with_sgd_applies_the_mean_gradient() -> None:
    config = AlgorithmConfig(algorithm="sync", optimizer="sgd", learning_rate=0.5, sync_workers=2)
    store = CenterStore(ones(0.0), config)
    store.apply_push(ones(1.0), 0, 1)
    store.apply_push(ones(3.0), 0, 2)
    np.testing.assert_array_equal(store.copy_center()[1][0], -1.0)  # -0.5 * mean(1, 3)


def test_a_held_generation_never_changes_under_the_reader() -> None:
    store = CenterStore(ones(0.0), AlgorithmConfig(optimizer="add"))
    held = store.acquire()
    store.apply_push(ones(), 0, 1)  # copy-on-write: the reader keeps version 0
    assert held.version == 0
    np.testing.assert_array_equal(held.arrays[0], 0.0)
    newer = store.acquire()
    assert newer.version == 1
    np.testing.assert_array_equal(newer.arrays[0], 1.0)
    store.release(held)
    store.release(newer)
    store.apply_push(ones(), 1, 1)  # no reader: in place
    np.testing.assert_array_equal(store.copy_center()[1][0], 2.0)


def test_wait_for_version_returns_when_the_round_closes() -> None:
    config = AlgorithmConfig(optimizer="add", algorithm="sync", sync_workers=2)
    store = CenterStore(ones(0.0), config)
    store.apply_push(ones(), 0, 1)
    result: list[int] = []
    errors = run_threads(
        [
            lambda: result.append(store.wait_for_version(0, timeout=10.0)),
            lambda: store.apply_push(ones(), 0, 2) and None,
        ]
    )
    assert not errors, described(errors)
    assert result == [1]
    assert store.wait_for_version(1, timeout=0.05) == 1  # times out, returns the version


def test_a_round_the_server_stops_is_not_answered_as_complete() -> None:
    config = AlgorithmConfig(optimizer="add", algorithm="sync", sync_workers=2)
    store = CenterStore(ones(0.0), config)
    store.apply_push(ones(), 0, 1)
    result: list[int | None] = []
    waiting = threading.Thread(target=lambda: result.append(store.wait_for_version(0, 30.0)))
    waiting.start()
    store.close()
    waiting.join(10)
    assert result == [None]  # the session closes the connection instead of sending the center
    assert store.wait_for_version(0, timeout=0.05) is None


def test_readers_never_observe_a_half_applied_update() -> None:
    """Every push adds 1 everywhere, so a consistent center is constant and equals its version."""
    shapes = [(300, 200), (1000,), (50, 40)]
    store = CenterStore([np.zeros(s, np.float32) for s in shapes], AlgorithmConfig(optimizer="add"))
    stop = threading.Event()
    seen: list[int] = []

    def reader() -> None:
        while not stop.is_set():
            generation = store.acquire()
            try:
                values = {float(np.min(a)) for a in generation.arrays}
                values |= {float(np.max(a)) for a in generation.arrays}
                assert values == {float(generation.version)}, (values, generation.version)
                seen.append(generation.version)
            finally:
                store.release(generation)

    def writer(worker: int) -> None:
        try:
            for _ in range(150):
                update = [np.ones(s, np.float32) for s in shapes]
                assert store.apply_push(update, store.version, worker).accepted
                time.sleep(0.001)  # let the readers in between updates as well as during them
        finally:
            stop.set()

    errors = run_threads([reader, reader, lambda: writer(1), lambda: writer(2)])
    assert not errors, described(errors)
    assert store.version == 300
    np.testing.assert_array_equal(store.copy_center()[1][0], 300.0)
    assert len(set(seen)) > 1


def test_integer_weights_are_refused_with_the_way_out() -> None:
    with pytest.raises(ValueError, match="tensor 1 has dtype int64"):
        CenterStore([np.zeros(2), np.zeros(2, np.int64)], AlgorithmConfig())


def test_receive_buffer_becomes_the_center_while_readers_hold_the_old_one() -> None:
    """Memory stays bounded: the pool gets the old center back instead of a new allocation."""
    store = CenterStore(ones(0.0), AlgorithmConfig(optimizer="add"))
    returned: list[list[np.ndarray]] = []
    store.set_recycler(returned.append)
    held = store.acquire()
    update = ones(2.0)
    outcome = store.apply_push(update, 0, 1, consumable=True)
    assert outcome.consumed
    newer = store.acquire()
    assert newer.arrays[0] is update[0]  # exchanged, not copied
    np.testing.assert_array_equal(newer.arrays[0], 2.0)
    np.testing.assert_array_equal(held.arrays[0], 0.0)
    assert returned == []
    store.release(held)  # the old center's last reader is done: it repays the pool
    assert len(returned) == 1
    assert returned[0][0] is held.arrays[0]
    store.release(newer)
    assert not store.apply_push(ones(), 1, 1, consumable=True).consumed  # no reader: in place
