"""Framing and authentication over real sockets (socket pairs), without a server."""

from __future__ import annotations

import socket
import stat
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from gridtrain.errors import (
    AuthenticationError,
    ConfigError,
    FrameTooLargeError,
    PeerClosedError,
    ProtocolError,
    ReadTimeoutError,
)
from gridtrain.ps import auth, protocol
from gridtrain.ps.protocol import MessageType, Signature, session_limits, tensor_views
from gridtrain.ps.transport import CHUNK, Channel


@contextmanager
def channel_pair(read_timeout: float = 2.0) -> Iterator[tuple[Channel, Channel]]:
    left, right = socket.socketpair()
    a, b = Channel(left, read_timeout=read_timeout), Channel(right, read_timeout=read_timeout)
    try:
        yield a, b
    finally:
        a.close()
        b.close()


def keyed(a: Channel, b: Channel) -> bytes:
    key = auth.session_key(b"s" * 32, b"c" * 32, b"n" * 32)
    a.start_session(auth.SessionKeys(key, auth.CLIENT_TO_SERVER))
    b.start_session(auth.SessionKeys(key, auth.SERVER_TO_CLIENT))
    return key


MODEL = [
    np.arange(3 * CHUNK // 4 + 5, dtype=np.float32),  # spans several MAC/send chunks
    np.float64(2.5) * np.ones((3, 2)),
    np.zeros(0, np.float32),  # empty tensors are legal
    np.array(7.0, np.float16),  # and so are scalars
]


def send_receive(a: Channel, b: Channel, model: list[np.ndarray]) -> list[np.ndarray]:
    """a sends ``model`` in a PUSH, b receives it; small enough to fit the socket buffers."""
    signature = Signature.of(model)
    out = signature.allocate()
    sender = threading.Thread(
        target=a.send,
        args=(MessageType.PUSH,),
        kwargs={
            "base_version": 4,
            "table": signature.encode(),
            "tensor_count": len(model),
            "meta": {"note": "x"},
            "tensors": tensor_views(model),
        },
    )
    sender.start()
    try:
        header = b.recv_header(session_limits(signature), idle_timeout=5.0)
        table, meta = b.recv_sections(header)
        assert protocol.decode_table(table, header.tensor_count) == signature
        assert meta == {"note": "x"}
        assert header.base_version == 4
        b.recv_tensors(header, tensor_views(out))
        b.finish(header)
    finally:
        sender.join(10)
    return out


@pytest.mark.parametrize("authenticated", [False, True])
def test_tensors_arrive_bit_exact(authenticated: bool) -> None:
    with channel_pair() as (a, b):
        if authenticated:
            keyed(a, b)
        out = send_receive(a, b, MODEL)
        for got, sent in zip(out, MODEL, strict=True):
            assert got.dtype == sent.dtype
            assert got.shape == sent.shape
            np.testing.assert_array_equal(got, sent)
        out = send_receive(a, b, MODEL)  # sequence numbers advance on both sides
        assert a.send_sequence == b.recv_sequence == 2
        assert b.bytes_received == a.bytes_sent


def _one_push_frame() -> tuple[Signature, bytes]:
    """A signed PUSH (header, table, data, tag) as the first frame of a session."""
    model = [np.arange(100, dtype=np.float32)]
    signature = Signature.of(model)
    key = auth.session_key(b"s" * 32, b"c" * 32, b"n" * 32)
    mac = auth.FrameMac(key, auth.CLIENT_TO_SERVER, 0)
    header = protocol.encode_header(
        MessageType.PUSH,
        flags=protocol.FLAG_AUTHENTICATED,
        base_version=3,
        table_length=len(signature.encode()),
        data_length=signature.nbytes,
        tensor_count=1,
    )
    frame = header + signature.encode() + model[0].tobytes()
    mac.update(frame)
    return signature, frame + mac.tag()


PUSH_SIGNATURE, PUSH_FRAME = _one_push_frame()
# Header bytes that no structural check looks at: only the tag can catch a change to them. The
# worker id, the base version, and the low two bytes of the tensor count (a flip in its upper
# bytes makes the count exceed MAX_TENSORS, which the header check refuses first).
_MAC_ONLY = {*range(12, 16), *range(24, 32), *range(40, 42)}


def receive_push(frame: bytes) -> list[np.ndarray]:
    """Receive ``frame`` as a server would: checked header, sections, tensors, tag."""
    with channel_pair() as (a, b):
        keyed(a, b)
        a.sock.sendall(frame)
        a.sock.shutdown(socket.SHUT_WR)  # a frame that announces more ends at once, no timeout
        header = b.recv_header(session_limits(PUSH_SIGNATURE), 5.0)
        b.recv_sections(header)
        out = PUSH_SIGNATURE.allocate()
        if header.data_length == PUSH_SIGNATURE.nbytes:
            b.recv_tensors(header, tensor_views(out))
        else:
            b.discard_tensors(header)
        b.finish(header)
        return out


def test_the_unflipped_frame_is_accepted() -> None:
    """The control for the property below: the same receiving code accepts the honest frame."""
    [tensor] = receive_push(PUSH_FRAME)
    np.testing.assert_array_equal(tensor, np.arange(100, dtype=np.float32))


def test_a_flipped_bit_anywhere_is_refused() -> None:
    """Header, table, data or tag: every one of the frame's bits, flipped, and the frame is
    refused, never used (all positions: a few thousand frames, about a second).

    Past the header, and in header fields nothing else checks, the tag is what refuses it;
    elsewhere in the header a structural check (magic, version, flags, lengths, sequence) may
    refuse it first.
    """
    for position in range(len(PUSH_FRAME)):
        for bit in range(8):
            forged = bytearray(PUSH_FRAME)
            forged[position] ^= 1 << bit
            expected = (
                AuthenticationError
                if position >= protocol.HEADER_SIZE or position in _MAC_ONLY
                else ProtocolError
            )
            with pytest.raises(expected) as refused:
                receive_push(bytes(forged))
            if expected is AuthenticationError:
                assert "forged, corrupted or replayed" in str(refused.value), (position, bit)


def test_replayed_frame_is_refused() -> None:
    with channel_pair() as (a, b):
        key = keyed(a, b)
        header = protocol.encode_header(MessageType.STATUS, flags=protocol.FLAG_AUTHENTICATED)
        mac = auth.FrameMac(key, auth.CLIENT_TO_SERVER, 0)
        mac.update(header)
        frame = header + mac.tag()
        a.sock.sendall(frame)
        assert b.recv_control(protocol.HANDSHAKE_LIMITS, 5.0)[0].msg_type is MessageType.STATUS
        a.sock.sendall(frame)  # the same bytes again
        with pytest.raises(ProtocolError, match="sequence number 0, expected 1"):
            b.recv_control(protocol.HANDSHAKE_LIMITS, 5.0)
    with channel_pair() as (a, b):  # a replay that lies about its sequence number
        keyed(a, b)
        forged = bytearray(frame)
        forged[16:24] = (1).to_bytes(8, "little")
        a.sock.sendall(frame + forged)
        b.recv_control(protocol.HANDSHAKE_LIMITS, 5.0)
        with pytest.raises(AuthenticationError):
            b.recv_control(protocol.HANDSHAKE_LIMITS, 5.0)


def test_frame_announcing_too_much_is_refused_from_the_header_alone() -> None:
    with channel_pair() as (a, b):
        a.sock.sendall(protocol.encode_header(MessageType.PUSH, data_length=100 * 2**30))
        with pytest.raises(FrameTooLargeError, match="limit here is 0"):
            b.recv_header(protocol.HANDSHAKE_LIMITS, 5.0)


def test_half_a_header_then_silence_times_out() -> None:
    with channel_pair(read_timeout=0.3) as (a, b):
        a.sock.sendall(protocol.encode_header(MessageType.PULL)[:20])
        with pytest.raises(ReadTimeoutError, match="silent in the middle of a frame"):
            b.recv_header(protocol.HANDSHAKE_LIMITS, 5.0)


def starved(channel: Channel) -> None:
    """Make every frame deadline of ``channel`` already past when it is computed.

    That is what a thread sees that waited for the CPU (a loaded server, hundreds of threads)
    between taking a frame's deadline and reading or writing its bytes.
    """
    channel._frame_deadline = lambda nbytes: time.monotonic() - 1.0  # type: ignore[method-assign]


@pytest.mark.parametrize("authenticated", [False, True])
def test_a_late_thread_still_moves_the_bytes_that_are_there(authenticated: bool) -> None:
    with channel_pair(read_timeout=0.3) as (a, b):
        if authenticated:
            keyed(a, b)
        starved(a)
        starved(b)
        payload = memoryview(np.arange(64, dtype=np.float32)).cast("B")
        a.send(MessageType.PUSH, meta={"n": 1}, table=b"t" * 24, tensor_count=1, tensors=[payload])
        header = b.recv_header(protocol.FrameLimits(1000, 1000, 1000), 5.0)
        table, meta = b.recv_sections(header)
        out = np.zeros(64, np.float32)
        b.recv_tensors(header, [memoryview(out).cast("B")])
        b.finish(header)
        assert (table, meta) == (b"t" * 24, {"n": 1})
        np.testing.assert_array_equal(out, np.arange(64, dtype=np.float32))


def test_a_late_thread_still_drops_a_peer_whose_bytes_are_missing() -> None:
    with channel_pair(read_timeout=5.0) as (a, b):
        starved(b)
        a.sock.sendall(protocol.encode_header(MessageType.PULL)[:20])
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError):
            b.recv_header(protocol.HANDSHAKE_LIMITS, 5.0)
        assert time.monotonic() - started < 1.0  # not another read_timeout of waiting
    with channel_pair(read_timeout=5.0) as (a, b):
        starved(a)
        b.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        a.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        big = memoryview(np.zeros(1 << 20, np.uint8))  # more than the buffers hold: b never reads
        started = time.monotonic()
        with pytest.raises(ReadTimeoutError, match=r"deadline|stopped reading"):
            a.send(MessageType.PUSH, tensor_count=1, table=b"t" * 24, tensors=[big])
        assert time.monotonic() - started < 1.0


def test_close_between_frames_is_eof_and_mid_frame_is_connection_error() -> None:
    with channel_pair() as (a, b):
        a.close()
        with pytest.raises(PeerClosedError):
            b.recv_header(protocol.HANDSHAKE_LIMITS, 5.0)
    with channel_pair() as (a, b):
        a.sock.sendall(protocol.encode_header(MessageType.PULL)[:10])
        a.close()
        with pytest.raises(ProtocolError, match="middle of a frame"):
            b.recv_header(protocol.HANDSHAKE_LIMITS, 5.0)


def test_control_frames_carry_no_tensor_data() -> None:
    with channel_pair() as (a, b):
        a.send(MessageType.STATUS, tensors=[memoryview(b"abcd")])
        with pytest.raises(ProtocolError, match="must not carry tensor data"):
            b.recv_control(protocol.FrameLimits(0, 100, 10), 5.0)


def test_client_proof_binds_secret_nonces_and_signature() -> None:
    secret, cn, sn = b"k" * 32, b"c" * 32, b"s" * 32
    proof = auth.client_proof(secret, cn, sn, b"table")
    auth.check_client_proof(secret, cn, sn, b"table", proof)
    for args in ((b"x" * 32, cn, sn, b"table"), (secret, sn, cn, b"table"), (secret, cn, sn, b"")):
        with pytest.raises(AuthenticationError, match="does not hold this parameter server"):
            auth.check_client_proof(*args, proof)
    assert auth.session_key(secret, cn, sn) != auth.session_key(secret, cn, b"t" * 32)


def test_frame_macs_differ_by_direction_and_sequence() -> None:
    key = b"k" * 32
    tags = set()
    for direction in (0, 1):
        for sequence in (0, 1):
            mac = auth.FrameMac(key, direction, sequence)
            mac.update(b"same frame")
            tags.add(mac.tag())
    assert len(tags) == 4


def test_secret_file_is_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ps.secret"
    secret = auth.new_secret()
    auth.write_secret_file(path, secret)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.read_secret_file(path) == secret
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        auth.read_secret_file(path)
    path.chmod(0o600)
    path.write_text("abcd\n")
    with pytest.raises(ConfigError, match="at least 16 are needed"):
        auth.read_secret_file(path)
    with pytest.raises(FileNotFoundError, match="gridtrain ps serve --secret-file"):
        auth.read_secret_file(tmp_path / "missing")
