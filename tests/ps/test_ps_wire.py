"""bf16 on the wire: negotiated in the handshake, half the bytes, and a center kept in float32."""

from __future__ import annotations

import socket
import time

import numpy as np
import pytest
from ps_helpers import connected, running_server, small_model

from gridtrain.errors import ConfigError
from gridtrain.ps import protocol
from gridtrain.ps.client import PSClient
from gridtrain.ps.protocol import WIRE_BF16, MessageType, Signature


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
