"""Overlapped exchanges and compiled windows: the merge arithmetic, windows of batches, and
training the toy with overlap on and off."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
import pytest

from gridtrain.ps.client import Reply
from gridtrain.ps.exchange import Exchange
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.train.overlap import OverlappedExchange, merge
from gridtrain.train.steps import windows


class FakeServer:
    """A parameter server in numpy behind the client calls ``Exchange`` makes (one worker).

    Downpour/ADAG add the pushed delta and reply with the center; EASGD replies with the elastic
    difference. ``gate`` holds each reply back until the test lets it go; ``delay`` seconds pass
    before each reply, as over a network.
    """

    def __init__(self, algorithm: str, center: list[np.ndarray]) -> None:
        self.algorithm = AlgorithmConfig(algorithm=algorithm, optimizer="add", alpha=0.5)
        self.center = [c.copy() for c in center]
        self.version = 0
        self.pushed: list[list[np.ndarray]] = []
        self.gate = threading.Semaphore(1000)
        self.delay = 0.0

    def pull(self) -> tuple[int, list[np.ndarray]]:
        return self.version, [c.copy() for c in self.center]

    def push_pull(self, update: list[np.ndarray], base_version: int) -> Reply:
        self.gate.acquire()
        time.sleep(self.delay)
        self.pushed.append([u.copy() for u in update])
        self.version += 1
        if self.algorithm.algorithm == "easgd":
            elastic = [0.5 * (u - c) for u, c in zip(update, self.center, strict=True)]
            self.center = [c + e for c, e in zip(self.center, elastic, strict=True)]
            return Reply(self.version, elastic, True)
        self.center = [c + u for c, u in zip(self.center, update, strict=True)]
        return Reply(self.version, [c.copy() for c in self.center], False)


def test_merge_keeps_the_steps_taken_since_the_push():
    target = [np.array([10.0, 20.0]), np.array([[1.0]])]
    pushed = [np.array([1.0, 2.0]), np.array([[0.0]])]
    local = [np.array([1.5, 1.0]), np.array([[3.0]])]
    merged = merge(target, pushed, local)
    np.testing.assert_array_equal(merged[0], [10.5, 19.0])
    np.testing.assert_array_equal(merged[1], [[4.0]])
    # no step since the push: the reply itself
    np.testing.assert_array_equal(merge(target, pushed, pushed)[0], target[0])
    assert (
        merge([np.ones(2, np.float32)], [np.ones(2, np.float32)], [np.ones(2, np.float32)])[0].dtype
        == np.float32
    )


def train_overlapped(server: FakeServer, steps: int, every: int) -> tuple[list[np.ndarray], Any]:
    """A worker whose every local step adds 1 to each weight, exchanging through ``server``."""
    exchange = Exchange(server, 1)  # type: ignore[arg-type]
    overlap = OverlappedExchange(exchange, every)
    local = exchange.start()
    try:
        for _ in range(steps):
            local = [w + 1.0 for w in local]
            new = overlap.after_step(lambda: local)  # noqa: B023 - called at once
            if new is not None:
                local = new
        new = overlap.flush(lambda: local)
        if new is not None:
            local = new
    finally:
        overlap.close()
    return local, overlap


@pytest.mark.parametrize("steps", [12, 14])
def test_downpour_overlapped_loses_and_doubles_no_step(steps):
    """One worker, Downpour: after the flush the center is exactly the local weights, and each
    push carried the steps since the one before it."""
    server = FakeServer("downpour", [np.zeros(3), np.zeros((2, 2))])
    server.delay = 0.002  # longer than a window of these steps: most of each exchange is waited
    started = time.perf_counter()
    local, overlap = train_overlapped(server, steps, every=4)
    wall = time.perf_counter() - started
    for c, w in zip(server.center, local, strict=True):
        np.testing.assert_array_equal(c, np.full_like(c, steps))
        np.testing.assert_array_equal(w, c)
    assert [float(p[0][0]) for p in server.pushed] == [4.0, 4.0, 4.0, *([2.0] if steps % 4 else [])]
    assert overlap.updates == len(server.pushed)
    assert overlap.version == len(server.pushed)
    # Each push travels while the next window trains, and the flush (and, at 14 steps, the short
    # last push) stands still for its exchange: both are spent, and they split the wall time, never
    # counting one moment twice.
    assert overlap.overlapped_seconds > 0
    assert overlap.wait_seconds > 0
    assert overlap.wait_seconds + overlap.overlapped_seconds <= wall


def test_a_late_reply_is_merged_at_the_next_exchange_with_the_steps_since():
    server = FakeServer("downpour", [np.zeros(2)])
    server.gate = threading.Semaphore(0)  # the replies wait for the test
    exchange = Exchange(server, 1)  # type: ignore[arg-type]
    overlap = OverlappedExchange(exchange, 2)
    local = exchange.start()
    try:
        local = [local[0] + 1]
        assert overlap.after_step(lambda: local) is None
        local = [local[0] + 1]
        assert overlap.after_step(lambda: local) is None  # pushed 2, reply held back
        local = [local[0] + 1]
        assert overlap.after_step(lambda: local) is None  # training goes on meanwhile
        server.gate.release(2)
        local = [local[0] + 1]
        merged = overlap.after_step(lambda: local)  # waits, merges, pushes the next window
        assert merged is not None
        np.testing.assert_array_equal(merged[0], [4.0, 4.0])  # center 2 + the 2 steps since
        assert overlap.flush(lambda: merged) is not None
        np.testing.assert_array_equal(server.center[0], [4.0, 4.0])
    finally:
        server.gate.release(10)
        overlap.close()


def test_the_exchange_time_is_split_into_waiting_and_overlapped():
    server = FakeServer("downpour", [np.zeros(2)])
    server.gate = threading.Semaphore(0)
    exchange = Exchange(server, 1)  # type: ignore[arg-type]
    overlap = OverlappedExchange(exchange, 1)
    local = exchange.start()
    try:
        assert overlap.after_step(lambda: local) is None  # pushed; the reply is held back
        time.sleep(0.2)  # training meanwhile
        server.gate.release()
        time.sleep(0.05)
        local = overlap.after_step(lambda: local) or local  # merged at once, pushed again
        assert 0.15 <= overlap.overlapped_seconds < 0.5
        assert overlap.wait_seconds < 0.1
        threading.Timer(0.2, server.gate.release).start()
        overlap.flush(lambda: local)  # the end of a shard waits for the reply
        assert overlap.wait_seconds >= 0.15
    finally:
        server.gate.release(10)
        overlap.close()


def test_easgd_overlapped_moves_by_the_elastic_difference_and_keeps_the_steps():
    server = FakeServer("easgd", [np.zeros(2)])
    local, _ = train_overlapped(server, steps=3, every=2)
    # push at step 2: w=2, c=0 -> elastic 1, c=1; step 3 taken meanwhile: local = 3 - 1 = 2;
    # the flush pushes w=2 against c=1 -> elastic 0.5, c=1.5, local 1.5
    np.testing.assert_array_equal(server.center[0], [1.5, 1.5])
    np.testing.assert_array_equal(local[0], [1.5, 1.5])


def test_windows_stop_at_each_exchange_and_keep_the_short_batch_alone():
    events, batch = 10, 3
    inputs = {"features": np.arange(events * 2, dtype=np.float32).reshape(events, 2)}
    labels = np.arange(events, dtype=np.float32)
    weights = np.ones(events, np.float32)
    room = iter([2, 4, 4])  # two steps left to the next exchange, then windows of four
    got = list(windows(inputs, labels, weights, batch, room))
    assert [steps for steps, *_ in got] == [2, 1, 1]
    assert got[0][2].shape == (2, 3)
    assert got[0][1]["features"].shape == (2, 3, 2)
    np.testing.assert_array_equal(got[1][2], [[6.0, 7.0, 8.0]])
    np.testing.assert_array_equal(got[2][2], [[9.0]])  # the short last batch, alone
    assert np.shares_memory(got[0][2], labels)  # views, not copies


def test_compiled_windows_train_bit_for_bit_like_train_on_batch():
    from gridtrain.models import InputSpec, arrange_inputs, build_model
    from gridtrain.train.steps import WindowSteps

    rng = np.random.default_rng(0)
    events, batch = 150, 16  # 9 full batches and a short one
    inputs = {"features": rng.normal(size=(events, 3)).astype(np.float32)}
    labels = (rng.random(events) < 0.5).astype(np.float32)
    weights = rng.random(events).astype(np.float32)
    spec = InputSpec(("a", "b", "c"), {})

    def model():
        return build_model("mlp", {"hidden": [8]}, spec, learning_rate=0.01, seed=1)

    per_batch, compiled = model(), model()
    expected = []
    for start in range(0, events, batch):
        stop = start + batch
        result = per_batch.train_on_batch(
            arrange_inputs(per_batch, {"features": inputs["features"][start:stop]}),
            labels[start:stop],
            sample_weight=weights[start:stop],
        )
        expected.append(float(result[0] if isinstance(result, list) else result))
    steps = WindowSteps(compiled)
    losses = []
    for _, x, y, w in windows(inputs, labels, weights, batch, iter(lambda: 4, None)):
        losses.extend(float(loss) for loss in steps.train(x, y, w))
    assert losses == expected
    for a, b in zip(per_batch.get_weights(), compiled.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
