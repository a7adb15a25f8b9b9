"""Fewer bytes on the wire, negotiated in the handshake: bf16 (half the bytes) and top-k with error
feedback; the center is kept in float32 either way."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from ps_helpers import connected, running_server, small_model

from gridtrain.errors import ConfigError, ProtocolError, StaleUpdateError
from gridtrain.ps import protocol
from gridtrain.ps.client import PSClient
from gridtrain.ps.protocol import WIRE_BF16, WIRE_TOPK, WIRE_TOPK_BF16, MessageType, Signature
from gridtrain.ps.rules import AlgorithmConfig


def bf16_round_trip(values: np.ndarray) -> np.ndarray:
    back = np.zeros_like(values)
    views = protocol.wire_views([back], WIRE_BF16)
    views[0][:] = protocol.bf16_encode(values).tobytes()
    protocol.bf16_expand([back])
    return back


def test_bf16_rounds_to_nearest_even_and_keeps_specials() -> None:
    values = np.array(
        [1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 2**-8 + 2**-20, -2.5e-3, np.inf, -np.inf, 0.0],
        np.float32,
    )
    expected = [1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -2.5024414e-3, np.inf, -np.inf, 0.0]
    np.testing.assert_allclose(bf16_round_trip(values), expected, rtol=1e-7)
    assert np.isnan(bf16_round_trip(np.array([np.nan, -np.nan], np.float32))).all()
    rng = np.random.default_rng(0)
    many = rng.normal(scale=1e-3, size=10_000).astype(np.float32)
    relative = np.abs(bf16_round_trip(many) - many) / np.abs(many)
    assert relative.max() <= 2**-8  # 8 significant bits, rounded to nearest


def test_limits_follow_the_encoding_and_other_dtypes_travel_as_they_are() -> None:
    signature = Signature.of([np.zeros((4, 8), np.float32), np.zeros(3, np.int64)])
    assert protocol.session_limits(signature).max_data == 4 * 32 + 24
    assert protocol.session_limits(signature, WIRE_BF16).max_data == 2 * 32 + 24


def test_a_bf16_worker_pushes_half_the_bytes_and_the_center_accumulates_in_float32() -> None:
    weights = [np.ones((64, 64), np.float32), np.zeros(64, np.float32)]
    step = [np.full_like(w, 1e-3) for w in weights]
    with running_server(weights) as (ps, secret):
        with connected(ps, secret, weights, wire=WIRE_BF16) as narrow:
            sent = narrow.channel.bytes_sent
            version = 0
            for _ in range(100):
                version = narrow.push(step, version).version
            narrow_bytes = (narrow.channel.bytes_sent - sent) / 100
            _, center = narrow.pull()
        with connected(ps, secret, weights) as wide:
            sent = wide.channel.bytes_sent
            wide.push([np.zeros_like(w) for w in weights], version)
            wide_bytes = wide.channel.bytes_sent - sent
            _, exact = wide.pull()
    assert narrow_bytes < 0.52 * wide_bytes
    one_step = float(bf16_round_trip(np.float32([1e-3]))[0])
    # in bf16, 1 + 1e-3 is 1: each push would be lost; the center kept every one in float32
    np.testing.assert_allclose(exact[0], 1 + 100 * one_step, rtol=1e-5)
    np.testing.assert_allclose(exact[1], 100 * one_step, rtol=1e-5)
    np.testing.assert_allclose(center[0], bf16_round_trip(exact[0]))  # sent to it in bf16


def test_a_version_1_client_is_told_to_upgrade() -> None:
    """The HELLO of a gridtrain before the bump; its decoder raises on the version-2 answer."""
    with running_server() as (ps, _):
        hello = bytearray(protocol.encode_header(MessageType.HELLO))
        hello[4:6] = (1).to_bytes(2, "little")
        with socket.create_connection(ps.address, timeout=5) as sock:
            sock.sendall(hello)
            reply = sock.recv(4096)
        header = protocol.decode_header(reply[: protocol.HEADER_SIZE])
        assert header.msg_type is MessageType.ERROR
        meta = protocol.decode_meta(reply[protocol.HEADER_SIZE :])
        assert "version 1, this side speaks 2" in meta["message"]
        assert "run the same gridtrain version" in meta["message"]


def test_an_unknown_wire_encoding_is_refused() -> None:
    with pytest.raises(ConfigError, match="wire encoding 'fp8' is unknown"):
        PSClient(("127.0.0.1", 1), b"0" * 32, small_model(), wire="fp8")
    with running_server() as (ps, secret):
        client = PSClient(ps.address, secret, small_model())
        client.wire = "fp8"  # as a newer client might ask
        with pytest.raises(ConnectionError, match="unknown wire encoding 'fp8'"):
            client.connect()
        deadline = time.monotonic() + 5
        while not ps.dropped and time.monotonic() < deadline:
            time.sleep(0.01)  # counted as the server closes
        assert ps.dropped == {"ProtocolError": 1}


def test_topk_pushes_a_fraction_and_keeps_the_rest_for_later() -> None:
    """Error feedback: center + residual == initial + every update, pushed or refused."""
    rng = np.random.default_rng(3)
    weights = [np.zeros((100, 40), np.float32), np.zeros(2, np.float32)]  # 2 entries: sent whole
    updates = [[rng.normal(size=w.shape).astype(np.float32) for w in weights] for _ in range(6)]
    config = AlgorithmConfig(optimizer="add", max_staleness=0)
    with (
        running_server(weights, config) as (ps, secret),
        connected(ps, secret, weights, wire=WIRE_TOPK, topk=0.05) as sparse,
    ):
        sent = sparse.channel.bytes_sent
        version = sparse.push(updates[0], 0).version
        one_push = sparse.channel.bytes_sent - sent
        for update in updates[1:4]:
            version = sparse.push(update, version).version
        with pytest.raises(StaleUpdateError):
            sparse.push(updates[4], version - 1)  # refused: its entries stay owed
        sparse.push(updates[5], version)
        residual = sparse.residual
        _, center = sparse.pull()
    assert one_push < 0.12 * (4000 * 4)  # 200 indices and values of 4000 entries, and a table
    assert residual[1] is None
    applied = [updates[i] for i in (0, 1, 2, 3, 5)]
    owed = updates[4][0].reshape(-1)
    expected = sum(u[0] for u in applied).reshape(-1) + owed
    np.testing.assert_allclose(center[0].reshape(-1) + residual[0], expected, atol=1e-5)
    np.testing.assert_allclose(center[1], sum(u[1] for u in applied), atol=1e-6)
    assert np.count_nonzero(center[0]) <= 5 * 200


def test_topk_selects_the_entries_of_largest_magnitude_with_their_sign() -> None:
    """Not any k entries: the k largest |x|, negative ones included, each with its own value."""
    rng = np.random.default_rng(5)
    magnitudes = rng.permutation(np.arange(1, 1001)).astype(np.float32)  # all distinct
    flat = magnitudes * rng.choice(np.float32([-1, 1]), magnitudes.size)
    count = 40
    indices, values = protocol.topk_select(flat, count)
    assert indices.dtype == np.uint32
    assert sorted(indices.tolist()) == np.flatnonzero(magnitudes > 1000 - count).tolist()
    assert np.any(values < 0)
    assert np.any(values > 0)
    np.testing.assert_array_equal(values, flat[indices])
    assert np.abs(values).min() >= np.abs(np.delete(flat, indices)).max()


def test_a_topk_push_moves_the_center_by_exactly_the_largest_entries() -> None:
    """Through a server: one push from an empty residual adds the k largest |update| entries of
    each tensor and nothing else; the rest stays in the residual."""
    rng = np.random.default_rng(6)
    weights = [np.zeros((100, 40), np.float32), np.zeros(2, np.float32)]
    update = [rng.normal(size=w.shape).astype(np.float32) for w in weights]
    with (
        running_server(weights, AlgorithmConfig(optimizer="add")) as (ps, secret),
        connected(ps, secret, weights, wire=WIRE_TOPK, topk=0.05) as sparse,
    ):
        sparse.push(update, 0)
        residual = sparse.residual
        _, center = sparse.pull()
    flat = update[0].reshape(-1)
    largest = np.argsort(-np.abs(flat), kind="stable")[:200]  # ceil(0.05 * 4000)
    assert sorted(np.flatnonzero(center[0]).tolist()) == sorted(largest.tolist())
    np.testing.assert_array_equal(center[0].reshape(-1)[largest], flat[largest])
    assert np.count_nonzero(residual[0]) == flat.size - 200
    assert np.abs(residual[0]).max() <= np.abs(flat[largest]).min()
    np.testing.assert_array_equal(center[1], update[1])  # 2 entries: sent whole


def test_topk_bf16_pushes_sparse_and_pulls_the_center_in_half_the_bytes() -> None:
    """The narrowest links: the push as top-k, the center back as bf16 (float32 on the server)."""
    rng = np.random.default_rng(4)
    weights = [np.zeros((100, 40), np.float32), np.zeros(2, np.float32)]
    updates = [[rng.normal(size=w.shape).astype(np.float32) for w in weights] for _ in range(3)]
    config = AlgorithmConfig(optimizer="add")
    with running_server(weights, config) as (ps, secret):
        with connected(ps, secret, weights, wire=WIRE_TOPK_BF16, topk=0.05) as narrow:
            version = 0
            for update in updates:
                sent = narrow.channel.bytes_sent
                received = narrow.channel.bytes_received
                out = [np.empty_like(w) for w in weights]
                version = narrow.push_pull(update, version, out).version
                push_bytes = narrow.channel.bytes_sent - sent
                pull_bytes = narrow.channel.bytes_received - received
            residual = narrow.residual
            _, center = narrow.pull()
        with connected(ps, secret, weights) as wide:
            received = wide.channel.bytes_received
            _, exact = wide.pull()
            wide_pull = wide.channel.bytes_received - received
    assert push_bytes < 0.12 * (4000 * 4)  # 200 indices and values, as with topk
    assert pull_bytes < 0.55 * wide_pull  # the center in bf16, frame and table aside
    for narrow_tensor, exact_tensor in zip(center, exact, strict=True):
        np.testing.assert_array_equal(narrow_tensor, bf16_round_trip(exact_tensor))
    expected = sum(u[0] for u in updates).reshape(-1)  # error feedback: nothing lost
    np.testing.assert_allclose(exact[0].reshape(-1) + residual[0], expected, atol=1e-5)


def test_topk_is_refused_for_easgd_which_pushes_its_variable() -> None:
    easgd = AlgorithmConfig(algorithm="easgd", optimizer="add")
    for wire in (WIRE_TOPK, WIRE_TOPK_BF16):
        with (
            running_server(algorithm=easgd) as (ps, s),
            pytest.raises(ConnectionError, match="top-k needs an algorithm"),
        ):
            PSClient(ps.address, s, small_model(), wire=wire, busy_retry=0).connect()
    with pytest.raises(ConfigError, match=r"topk fraction 0\.9"):
        PSClient(("127.0.0.1", 1), b"0" * 32, small_model(), wire=WIRE_TOPK, topk=0.9)


def test_a_topk_index_outside_the_tensor_is_a_protocol_error() -> None:
    signature = Signature.of([np.zeros(10, np.float32)])
    [count] = protocol.topk_counts(signature, 0.2)
    assert count == 2
    buffer = [np.zeros(10, np.float32)]
    raw = protocol.topk_views(buffer, [count])[0]
    raw[:] = np.concatenate([np.uint32([3, 10]).view(np.uint8), np.float32([1, 2]).view(np.uint8)])
    with pytest.raises(ProtocolError, match="top-k index 10 is outside a tensor of 10 entries"):
        protocol.topk_expand(buffer, [count])
    raw[:] = np.concatenate([np.uint32([3, 7]).view(np.uint8), np.float32([1, 2]).view(np.uint8)])
    protocol.topk_expand(buffer, [count])
    assert buffer[0].tolist() == [0, 0, 0, 1, 0, 0, 0, 2, 0, 0]


@pytest.mark.parametrize("wire", [WIRE_TOPK, "fp8"])
def test_a_stranger_learns_nothing_of_the_algorithm_from_the_wire_negotiation(wire: str) -> None:
    """Wire is negotiated after the proof: a wrong secret asking top-k of an EASGD server (or an
    unknown wire) hears "authentication failed", as in every other case; the right secret hears
    the rule."""
    easgd = AlgorithmConfig(algorithm="easgd", optimizer="add")
    with running_server(algorithm=easgd) as (ps, secret):
        stranger = PSClient(ps.address, bytes(32), small_model())
        stranger.wire, stranger.topk = wire, 0.05  # as a client might ask, unchecked
        with pytest.raises(ConnectionError) as refused:
            stranger.connect()
        assert "authentication failed" in str(refused.value)
        assert "EASGD" not in str(refused.value)
        assert "wire" not in str(refused.value)
        worker = PSClient(ps.address, secret, small_model())
        worker.wire, worker.topk = wire, 0.05
        rule = "EASGD workers push their variable" if wire == WIRE_TOPK else "unknown wire"
        with pytest.raises(ConnectionError, match=rule):
            worker.connect()
