"""Shard leases: exactly once per epoch, expiry, release on disconnect, validation, stopping."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pytest
from ps_helpers import connected, running_server, small_model

from gridtrain.errors import RemoteError
from gridtrain.ps import auth
from gridtrain.ps.center import CenterStore
from gridtrain.ps.cli import format_status
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.leases import EpochSnapshots, LeaseBook, LeasePlan, LeaseState
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.ps.server import ParameterServer

SHARDS = [f"train-{i:05d}.h5" for i in range(4)]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def book(**plan: Any) -> tuple[LeaseBook, list[dict[str, Any]], list[dict[str, Any]], Clock]:
    clock = Clock()
    lease_log: list[dict[str, Any]] = []
    history: list[dict[str, Any]] = []
    settings: dict[str, Any] = {"validation_shards": ["validation-00000.h5"], "epochs": 2}
    settings.update(plan)
    leases = LeaseBook(
        LeasePlan(train_shards=list(SHARDS), timeout=10.0, **settings),
        lease_log=lease_log.append,
        history=history.append,
        clock=clock,
    )
    return leases, lease_log, history, clock


def completed_per_epoch(lease_log: list[dict[str, Any]]) -> dict[int, Counter[str]]:
    done: dict[int, Counter[str]] = {}
    for record in lease_log:
        if record["event"] == "completed" and record["kind"] == "train":
            done.setdefault(record["epoch"], Counter())[record["shard"]] += 1
    return done


def test_every_shard_exactly_once_per_epoch_then_validation_then_done() -> None:
    leases, lease_log, history, _ = book()
    seen = []
    while True:
        task = leases.grant("w", connection=1)
        if task["kind"] == "done":
            break
        assert task["kind"] in ("train", "validate")
        seen.append((task["kind"], task["epoch"]))
        result = {"loss": 0.5} if task["kind"] == "train" else {"loss": 0.4, "auc": 0.9}
        assert leases.complete(task["lease"], 1, result)["accepted"]
    assert completed_per_epoch(lease_log) == {e: Counter(SHARDS) for e in (0, 1)}
    assert seen.count(("validate", 0)) == 1
    assert seen.count(("validate", 1)) == 1
    assert [r["epoch"] for r in history if r["type"] == "epoch"] == [0, 1]
    assert leases.state.stopped == "trained 2 epochs"


def test_shard_order_is_shuffled_per_epoch_and_reproducible() -> None:
    def order(seed: int) -> list[list[str]]:
        leases, *_ = book(seed=seed, validation_shards=[])
        epochs: list[list[str]] = [[], []]
        while (task := leases.grant("w", 1))["kind"] == "train":
            epochs[task["epoch"]].append(task["shards"][0])
            leases.complete(task["lease"], 1, {})
        return epochs

    assert order(3) == order(3)
    first = order(3)
    assert sorted(first[0]) == sorted(SHARDS)
    assert any(order(seed)[0] != order(seed)[1] for seed in range(5))


def test_a_lost_connection_returns_its_shard_and_a_late_completion_is_refused() -> None:
    leases, lease_log, _, _ = book(validation_shards=[])
    lost = leases.grant("dies", connection=1)
    leases.release_connection(1, "connection dropped")
    retry = leases.grant("lives", connection=2)
    assert retry["shards"] == lost["shards"]  # back at the front of its epoch's queue
    assert not leases.complete(lost["lease"], 1, {})["accepted"]
    assert leases.complete(retry["lease"], 2, {})["accepted"]
    events = [(r["event"], r.get("worker")) for r in lease_log]
    assert ("released", "dies") in events
    assert ("refused", None) in events


def test_a_silent_worker_loses_its_lease_after_the_timeout_but_frames_renew_it() -> None:
    leases, lease_log, _, clock = book(validation_shards=[])
    kept = leases.grant("busy", connection=1)
    silent = leases.grant("silent", connection=2)
    for _ in range(3):
        clock.now += 6.0
        leases.renew(1)
        leases.expire()
    assert [r["lease"] for r in lease_log if r["event"] == "expired"] == [silent["lease"]]
    assert leases.complete(kept["lease"], 1, {})["accepted"]
    assert not leases.complete(silent["lease"], 2, {})["accepted"]


def test_workers_run_at_most_one_epoch_ahead() -> None:
    leases, *_ = book(epochs=3, validation_shards=[])
    straggler = leases.grant("slow", connection=1)
    others = []
    while (task := leases.grant("fast", connection=2))["kind"] == "train":
        others.append(task)
        leases.complete(task["lease"], 2, {})
    assert task["kind"] == "wait"  # epoch 2 waits until epoch 0 is complete
    assert {t["epoch"] for t in others} == {0, 1}
    leases.complete(straggler["lease"], 1, {})
    assert leases.grant("slow", connection=1)["epoch"] in (1, 2)


def test_early_stopping_after_patience_epochs_without_improvement() -> None:
    leases, _, history, _ = book(epochs=10, patience=2)
    losses = iter([0.5, 0.4, 0.45, 0.41, 0.3])
    while (task := leases.grant("w", 1))["kind"] != "done":
        result = {"loss": next(losses)} if task["kind"] == "validate" else {"loss": 1.0}
        leases.complete(task["lease"], 1, result)
    assert leases.state.best_epoch == 1
    assert leases.state.stopped.startswith("early stop")
    assert [r["epoch"] for r in history if r["type"] == "epoch"] == [0, 1, 2, 3]


def test_state_round_trip_resumes_mid_epoch_without_repeating_completed_shards() -> None:
    leases, *_ = book(validation_shards=[])
    done = []
    for _ in range(2):
        task = leases.grant("w", 1)
        leases.complete(task["lease"], 1, {})
        done.append(task["shards"][0])
    leases.grant("w", 1)  # in flight when the run stops: must come back
    state = LeaseState.from_dict(leases.snapshot_state())
    resumed = LeaseBook(
        LeasePlan(train_shards=list(SHARDS), validation_shards=[], epochs=2), state=state
    )
    first_epoch = []
    while (task := resumed.grant("w", 7))["kind"] == "train" and task["epoch"] == 0:
        first_epoch.append(task["shards"][0])
        resumed.complete(task["lease"], 7, {})
    assert sorted(first_epoch) == sorted(set(SHARDS) - set(done))


def test_resuming_a_run_interrupted_after_its_last_validation_finishes_it() -> None:
    """Ctrl-C right after the last validation: the resumed book is done, not stuck or crashing."""
    leases, *_ = book()
    while (task := leases.grant("w", 1))["kind"] != "done":
        result = {"loss": 0.5} if task["kind"] == "train" else {"loss": 0.4, "auc": 0.9}
        leases.complete(task["lease"], 1, result)
    state = LeaseState.from_dict(leases.snapshot_state())
    state.stopped = ""  # what the driver does with an interrupted run before resuming it
    resumed = LeaseBook(
        LeasePlan(train_shards=list(SHARDS), validation_shards=["validation-00000.h5"], epochs=2),
        state=state,
    )
    assert resumed.state.stopped == "trained 2 epochs"
    assert resumed.grant("w", 2)["kind"] == "done"


def test_bad_plans_are_refused() -> None:
    with pytest.raises(ValueError, match="no training shards"):
        LeasePlan(train_shards=[], validation_shards=[], epochs=1)
    with pytest.raises(ValueError, match="at least 1 epoch"):
        LeasePlan(train_shards=SHARDS, validation_shards=[], epochs=0)


def test_leases_and_epoch_snapshots_over_the_wire() -> None:
    """Two workers over real connections; validation pulls the center as the epoch ended."""
    weights = small_model()
    store = CenterStore([w.copy() for w in weights], AlgorithmConfig(optimizer="add"))
    snapshots = EpochSnapshots(store)
    lease_log: list[dict[str, Any]] = []
    leases = LeaseBook(
        LeasePlan(train_shards=list(SHARDS), validation_shards=["v.h5"], epochs=1),
        lease_log=lease_log.append,
        on_epoch_end=snapshots.take,
        on_validated=snapshots.validated,
    )
    secret = auth.new_secret()
    server = ParameterServer(store, secret, ServerConfig(), leases=leases, snapshots=snapshots)
    server.start()
    try:
        with (
            connected(server, secret, weights, name="a") as a,
            connected(server, secret, weights, name="b") as b,
        ):
            kinds = []
            for client in [a, b] * 3:
                task = client.lease(wait=0.0)
                kinds.append(task["kind"])
                if task["kind"] == "train":
                    version, _ = client.pull()
                    client.push([np.ones_like(w) for w in weights], version)
                    assert client.complete(task["lease"], {"loss": 1.0})["accepted"]
                elif task["kind"] == "validate":
                    snapshot_version, center = client.pull(epoch=task["epoch"])
                    assert snapshot_version == task["version"] == 4
                    # b pushes after the epoch ended: the snapshot does not move
                    b.push([np.ones_like(w) for w in weights], b.pull()[0])
                    assert client.pull(epoch=0)[0] == 4
                    np.testing.assert_array_equal(center[1], weights[1] + 4)
                    client.complete(task["lease"], {"loss": 0.3, "auc": 0.8})
                    break
            assert kinds.count("train") == 4
            assert client.lease(wait=0.0)["kind"] == "done"
            assert server.status()["leases"]["stopped"] == "trained 1 epochs"
            shown = format_status(server.status())
            assert "leases     epoch 1/1, shards 4/4, 0 out, last validation AUC 0.8000" in shown
    finally:
        server.stop()
    assert snapshots.best is not None
    assert snapshots.best[1] == 4


def test_a_server_without_leases_says_so() -> None:
    with (
        running_server() as (server, secret),
        connected(server, secret) as client,
        pytest.raises(RemoteError, match="no shard leases"),
    ):
        client.lease()


def test_an_epoch_finished_early_is_validated_after_the_one_before_it() -> None:
    leases, _, history, _ = book(epochs=3)
    straggler = leases.grant("slow", connection=1)  # an epoch-0 shard stays out
    while (task := leases.grant("fast", connection=2))["kind"] == "train":
        leases.complete(task["lease"], 2, {"loss": 1.0})
    assert task["kind"] == "wait"  # epoch 1 is trained, but epoch 0 is not: nothing to validate
    leases.complete(straggler["lease"], 1, {"loss": 1.0})
    validated = []
    while (task := leases.grant("w", 3))["kind"] != "done":
        if task["kind"] == "validate":
            validated.append(task["epoch"])
        leases.complete(task["lease"], 3, {"loss": 0.5})
    assert validated == [0, 1, 2]
    assert [r["epoch"] for r in history if r["type"] == "epoch"] == [0, 1, 2]


def test_updates_count_under_the_lease_being_trained_and_a_lost_lease_keeps_its_count() -> None:
    leases, lease_log, _, clock = book()
    first = leases.grant("w", connection=1)
    ahead = leases.grant("w", connection=1)  # leased ahead while the first one trains
    other = leases.grant("v", connection=2)
    for _ in range(3):
        leases.count_update(1)
    leases.count_update(2)
    leases.complete(first["lease"], 1, {"loss": 0.5})
    leases.count_update(1)  # now on the shard leased ahead
    leases.count_update(1)
    leases.release_connection(1, "connection closed")
    clock.now = 100.0
    leases.expire()  # worker v fell silent: its lease expires with the update it pushed
    ended = {r["lease"]: r for r in lease_log if r["event"] != "granted"}
    assert ended[first["lease"]]["event"] == "completed"
    assert ended[first["lease"]]["updates"] == 3
    assert (ended[ahead["lease"]]["event"], ended[ahead["lease"]]["updates"]) == ("released", 2)
    assert (ended[other["lease"]]["event"], ended[other["lease"]]["updates"]) == ("expired", 1)
    # the shards of the lost leases go back to be trained again, from the front of the queue
    assert leases.grant("u", connection=3)["shards"] == other["shards"]
    assert leases.grant("u", connection=3)["shards"] == ahead["shards"]


def test_a_shard_leased_later_but_trained_first_gets_its_own_updates() -> None:
    # At an epoch's end a worker leases ahead again and trains that shard before the one it had
    # leased earlier: its updates belong to the shard it completes next, not to its oldest lease.
    leases, lease_log, _, _ = book(validation_shards=[])
    earlier = leases.grant("w", connection=1)
    later = leases.grant("w", connection=1)
    for _ in range(4):
        leases.count_update(1)
    leases.complete(later["lease"], 1, {})
    leases.count_update(1)
    leases.complete(earlier["lease"], 1, {})
    updates = {r["lease"]: r["updates"] for r in lease_log if r["event"] == "completed"}
    assert updates == {later["lease"]: 4, earlier["lease"]: 1}
