"""Overlapped exchanges and compiled windows: the merge arithmetic, windows of batches, and
training the toy with overlap on and off."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gridtrain.ps.client import Reply
from gridtrain.ps.exchange import Exchange
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.train.overlap import OverlappedExchange, merge
from gridtrain.train.steps import windows
from tests.conftest import toy_section


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


def test_adaptive_trains_past_a_busy_link_and_pushes_every_step_since_at_the_next_point():
    """overlap: adaptive. The reply of the push at step 2 is held back: the exchange point at
    step 4 is passed without waiting, the reply merged when it comes in (step 5), and the push
    at step 6 carries the four steps since the last one; nothing lost, nothing twice."""
    server = FakeServer("downpour", [np.zeros(2)])
    server.gate = threading.Semaphore(0)
    safety = threading.Timer(30, server.gate.release, (10,))  # a waiting worker hangs no test
    safety.start()
    exchange = Exchange(server, 1)  # type: ignore[arg-type]
    overlap = OverlappedExchange(exchange, 2, adaptive=True)
    local = exchange.start()
    try:
        for _ in range(2):
            local = [local[0] + 1]
            assert overlap.after_step(lambda: local) is None  # noqa: B023 - called at once
        began = time.perf_counter()
        for _ in range(2):  # the reply is held: step 4 is an exchange point, passed
            local = [local[0] + 1]
            assert overlap.after_step(lambda: local) is None  # noqa: B023
        assert time.perf_counter() - began < 10  # it did not wait for the reply
        assert overlap.deferred == 1
        assert len(server.pushed) == 0  # the first push is still held at the server's gate
        server.gate.release(1)
        wait_until_done = time.monotonic() + 10
        while overlap._pending is not None and not overlap._pending.done():
            assert time.monotonic() < wait_until_done, "the released reply never came"
            time.sleep(0.01)
        local = [local[0] + 1]
        merged = overlap.after_step(lambda: local)  # step 5: the reply merged, no push
        assert merged is not None
        np.testing.assert_array_equal(merged[0], [5.0, 5.0])  # center 2 + the 3 steps since
        local = [merged[0] + 1]
        server.gate.release(10)
        overlap.after_step(lambda: local)  # step 6: pushes steps 3 to 6
        final = overlap.flush(lambda: local)
        assert final is not None
        assert [float(p[0][0]) for p in server.pushed] == [2.0, 4.0]
        np.testing.assert_array_equal(server.center[0], [6.0, 6.0])
        np.testing.assert_array_equal(final[0], [6.0, 6.0])
    finally:
        safety.cancel()
        server.gate.release(10)
        overlap.close()


@pytest.mark.parametrize("steps", [12, 14])
def test_adaptive_on_a_link_that_keeps_up_is_the_overlapped_exchange(steps):
    server = FakeServer("downpour", [np.zeros(3)])
    exchange = Exchange(server, 1)  # type: ignore[arg-type]
    overlap = OverlappedExchange(exchange, 4, adaptive=True)
    local = exchange.start()
    try:
        for _ in range(steps):
            local = [w + 1.0 for w in local]
            # each step waits long enough for the reply of a push: no point is ever passed
            time.sleep(0.001)
            if overlap._pending is not None:
                overlap._pending.result(timeout=10)
            local = overlap.after_step(lambda: local) or local  # noqa: B023
        local = overlap.flush(lambda: local) or local
    finally:
        overlap.close()
    assert overlap.deferred == 0
    assert [float(p[0][0]) for p in server.pushed] == [4.0, 4.0, 4.0, *([2.0] if steps % 4 else [])]
    np.testing.assert_array_equal(server.center[0], np.full(3, steps))


@pytest.mark.parametrize("algorithm", ["adag", "gem", "sync"])
def test_adaptive_overlap_is_refused_for_rules_that_scale_by_the_window(algorithm):
    from gridtrain.config import validate_config
    from gridtrain.errors import ConfigError
    from gridtrain.train.settings import TrainConfig

    def settings(overlap: object, algorithm: str) -> TrainConfig:
        config = {
            "dataset": toy_section(Path("toy"), Path("dataset")),
            "train": {"overlap": overlap, "algorithm": {"algorithm": algorithm}},
        }
        return TrainConfig.from_dict(validate_config(config)["train"])

    assert settings("adaptive", "easgd").overlap == "adaptive"
    assert settings("adaptive", "downpour").overlap == "adaptive"
    with pytest.raises(ConfigError, match=f"train.overlap: adaptive .* {algorithm} takes one"):
        settings("adaptive", algorithm)
    with pytest.raises(ConfigError, match=r"train\.overlap: 'sometimes' is not one of"):
        settings("sometimes", "downpour")


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
