"""Faults and abuse against a real server on 127.0.0.1: it keeps serving and the center stays right.

Each test ends by checking that a correct client is still served and that the center equals what
the accepted updates imply.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import textwrap
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from ps_helpers import connected, described, like, run_threads, running_server, small_model

from gridtrain.errors import (
    AuthenticationError,
    ServerBusyError,
    SignatureMismatchError,
    StaleUpdateError,
)
from gridtrain.ps import auth, protocol
from gridtrain.ps.client import PSClient
from gridtrain.ps.protocol import MessageType
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.ps.server import ParameterServer
from tests.waiting import wait_until

HERE = Path(__file__).parent


def raw_connect(ps: ParameterServer) -> socket.socket:
    return socket.create_connection(ps.address, timeout=5.0)


def closed_by_server(sock: socket.socket, within: float) -> bytes:
    """Read until the server closes the connection; fail if it does not within ``within``."""
    received = b""
    deadline = time.monotonic() + within
    try:
        while time.monotonic() < deadline:
            sock.settimeout(max(deadline - time.monotonic(), 0.01))
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                return received
            received += chunk
    except ConnectionResetError:
        return received
    finally:
        sock.close()
    raise AssertionError(f"server kept the connection open for {within} s")


def reply_frames(reply: bytes) -> list[tuple[protocol.Header, dict[str, Any]]]:
    """The frames a server sent before any handshake, decoded; fails on bytes that are not frames.

    Before the handshake nothing is authenticated, so a frame is header, table, meta and data.
    """
    frames = []
    while reply:
        header = protocol.decode_header(reply[: protocol.HEADER_SIZE])
        assert not header.authenticated, header
        end = protocol.HEADER_SIZE + header.payload_length
        assert len(reply) >= end, f"reply ends inside a {header.msg_type.name} frame"
        start = protocol.HEADER_SIZE + header.table_length
        frames.append((header, protocol.decode_meta(reply[start : start + header.meta_length])))
        reply = reply[end:]
    return frames


def assert_dropped(ps: ParameterServer, expected: dict[str, int], within: float = 3.0) -> None:
    """The server dropped connections for exactly these errors (``ParameterServer.dropped``).

    A drop is counted before the server closes the connection, but after an ERROR it sends, so a
    client that gave up on that ERROR may look before the count: wait for it, briefly.
    """
    deadline = time.monotonic() + within
    while ps.dropped != expected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ps.dropped == expected


def assert_still_serving(ps: ParameterServer, secret: bytes, version: int, offset: float) -> None:
    """A correct client is served, and the center is the initial one plus ``offset``."""
    with connected(ps, secret) as client:
        got_version, center = client.pull()
    assert got_version == version
    for got, initial in zip(center, small_model(), strict=True):
        np.testing.assert_allclose(got, initial + offset, rtol=1e-6)


_JUNK = random.Random(20261121)  # seeded: the same garbage, and the same verdict, every run


@pytest.mark.parametrize(
    ("garbage", "reply_types", "error"),
    [
        (_JUNK.randbytes(4096), [], "ProtocolError"),
        (
            b"GET / HTTP/1.1\r\nHost: head-node\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n",
            [],
            "ProtocolError",
        ),
        # a gridtrain magic and a random version: told which version the server speaks, no more
        (protocol.MAGIC + _JUNK.randbytes(200), [MessageType.ERROR], "ProtocolVersionError"),
        (b"\x00" * protocol.HEADER_SIZE, [], "ProtocolError"),
    ],
    ids=["random", "http", "magic-then-junk", "zeros"],
)
def test_garbage_bytes_are_dropped_without_a_challenge(
    server: tuple[ParameterServer, bytes],
    garbage: bytes,
    reply_types: list[MessageType],
    error: str,
) -> None:
    ps, secret = server
    sock = raw_connect(ps)
    sock.sendall(garbage)
    frames = reply_frames(closed_by_server(sock, within=3.0))
    assert [header.msg_type for header, _ in frames] == reply_types  # never a CHALLENGE
    for _, meta in frames:
        assert meta["code"] == "version"
    assert_dropped(ps, {error: 1})
    assert_still_serving(ps, secret, 0, 0.0)


def test_wrong_secret_is_refused_without_learning_anything(
    server: tuple[ParameterServer, bytes],
) -> None:
    ps, secret = server
    with connected(ps, secret) as good:
        good.push(like(small_model(), 1.0), 0)
        intruder = PSClient(ps.address, auth.new_secret(), small_model())
        with pytest.raises(AuthenticationError, match="authentication failed"):
            intruder.connect()
        # a monitor without the secret cannot read the status either
        with pytest.raises(AuthenticationError):
            PSClient(ps.address, auth.new_secret(), None).connect()
        assert good.pull()[0] == 1  # the existing worker never noticed
    assert_dropped(ps, {"AuthenticationError": 2})
    assert_still_serving(ps, secret, 1, 1.0)


def test_wrong_signature_is_refused_naming_the_tensor(
    server: tuple[ParameterServer, bytes],
) -> None:
    ps, secret = server
    wrong = small_model()
    wrong[2] = np.zeros((4, 2), np.float32)
    with pytest.raises(SignatureMismatchError, match=r"tensor 2 is float32 \(4, 2\) in the client"):
        PSClient(ps.address, secret, wrong).connect()
    wrong_dtype = [w.astype(np.float64) for w in small_model()]
    with pytest.raises(SignatureMismatchError, match="tensor 0 is float64"):
        PSClient(ps.address, secret, wrong_dtype).connect()
    assert_dropped(ps, {"SignatureMismatchError": 2})
    assert_still_serving(ps, secret, 0, 0.0)


def test_wrong_protocol_version_gets_an_error_naming_both(
    server: tuple[ParameterServer, bytes],
) -> None:
    ps, secret = server
    hello = bytearray(protocol.encode_header(MessageType.HELLO))
    hello[4:6] = (7).to_bytes(2, "little")
    sock = raw_connect(ps)
    sock.sendall(hello)
    [(header, meta)] = reply_frames(closed_by_server(sock, within=3.0))
    assert header.msg_type is MessageType.ERROR
    assert meta["code"] == "version"
    assert f"version 7, this side speaks {protocol.PROTOCOL_VERSION}" in meta["message"]
    assert_still_serving(ps, secret, 0, 0.0)


def test_a_header_announcing_100_gb_is_refused_before_allocation(
    server: tuple[ParameterServer, bytes],
) -> None:
    # The server runs in this process: tracemalloc sees its allocations (bytearrays and numpy
    # buffers alike, even ones the kernel would back lazily), and ps.dropped says why each
    # connection ended: a refusal on the header, not a failed allocation (MemoryError) or a
    # read that never finished.
    ps, secret = server
    tracemalloc.start()
    try:
        sock = raw_connect(ps)  # before the handshake
        sock.sendall(protocol.encode_header(MessageType.HELLO, data_length=100 * 10**9))
        assert closed_by_server(sock, within=3.0) == b""  # not even a CHALLENGE
        assert_dropped(ps, {"FrameTooLargeError": 1})
        push_refused_after_the_handshake(ps, secret)
        assert_dropped(ps, {"FrameTooLargeError": 2})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 * 2**20, f"{peak} bytes allocated while refusing"
    assert_still_serving(ps, secret, 0, 0.0)


def push_refused_after_the_handshake(ps: ParameterServer, secret: bytes) -> None:
    """An authenticated PUSH header that announces 100 GB of tensor data, and nothing else."""
    client = PSClient(ps.address, secret, small_model()).connect()
    try:
        table = client.signature.encode()  # type: ignore[union-attr]
        client.channel.sock.sendall(
            protocol.encode_header(
                MessageType.PUSH,
                flags=protocol.FLAG_AUTHENTICATED,
                sequence=client.channel.send_sequence,
                table_length=len(table),
                data_length=100 * 10**9,
                tensor_count=4,
            )
        )
        assert closed_by_server(client.channel.sock, within=3.0) == b""
    finally:
        client.close()


def test_half_a_header_then_silence_is_dropped_while_others_are_served() -> None:
    # Not held up: the push is served while the stalled peer is still held (not yet dropped at
    # its read timeout), whatever the machine's load; a clock bound on the push would race it.
    with running_server(read_timeout=10.0, handshake_timeout=40.0) as (ps, secret):
        stalled = raw_connect(ps)
        stalled.sendall(protocol.encode_header(MessageType.HELLO)[:17])
        started = time.monotonic()
        with connected(ps, secret) as client:
            client.push(like(small_model(), 1.0), 0)
        assert ps.dropped == {}, "the push waited for the stalled peer's timeout"
        closed_by_server(stalled, within=35.0)
        assert time.monotonic() - started < 35.0  # dropped at its read timeout, not the handshake's
        assert_dropped(ps, {"ReadTimeoutError": 1})
        assert_still_serving(ps, secret, 1, 1.0)


def test_silent_connection_is_dropped_after_the_handshake_timeout() -> None:
    with running_server(handshake_timeout=0.3) as (ps, secret):
        started = time.monotonic()
        sock = raw_connect(ps)
        assert closed_by_server(sock, within=3.0) == b""
        assert time.monotonic() - started >= 0.3
        assert_dropped(ps, {"HandshakeDeadlineError": 1})
        assert_still_serving(ps, secret, 0, 0.0)


def test_half_a_push_then_silence_does_not_stall_other_pushes() -> None:
    # 10 s: on a loaded 2-core machine a connection and five pushes took more than 3 s
    with running_server(read_timeout=10.0) as (ps, secret):
        staller = PSClient(ps.address, secret, small_model()).connect()
        try:
            signature = staller.signature
            assert signature is not None
            table = signature.encode()
            staller.channel.sock.sendall(
                protocol.encode_header(
                    MessageType.PUSH,
                    flags=protocol.FLAG_AUTHENTICATED,
                    sequence=0,
                    table_length=len(table),
                    data_length=signature.nbytes,
                    tensor_count=len(signature),
                )
                + table
                + b"\x01" * (signature.nbytes // 2)
            )
            with connected(ps, secret) as client:
                for version in range(5):
                    client.push(like(small_model(), 1.0), version)
            # served while the staller still held its half frame: not stalled behind it
            assert ps.dropped == {}, "the pushes waited for the staller's read timeout"
            closed_by_server(staller.channel.sock, within=30.0)
        finally:
            staller.close()
        assert_dropped(ps, {"ReadTimeoutError": 1})
        assert_still_serving(ps, secret, 5, 5.0)


_KILLED_MID_PUSH = textwrap.dedent(
    """
    import os, signal, sys
    sys.path.insert(0, sys.argv[1])
    from ps_helpers import small_model
    from gridtrain.ps import protocol
    from gridtrain.ps.client import PSClient

    client = PSClient(("127.0.0.1", int(sys.argv[2])), bytes.fromhex(sys.argv[3]), small_model())
    client.connect()
    signature = client.signature
    table = signature.encode()
    header = protocol.encode_header(
        protocol.MessageType.PUSH, flags=protocol.FLAG_AUTHENTICATED, sequence=0,
        table_length=len(table), data_length=signature.nbytes, tensor_count=len(signature),
    )
    client.channel.sock.sendall(header + table + b"\\x01" * (signature.nbytes // 2))
    print("half sent", flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
    """
)


def test_client_killed_mid_push_leaves_the_center_untouched() -> None:
    # one receive buffer: if the dead client's buffer leaked, the next push would block
    with running_server(receive_buffers=1, read_timeout=20.0) as (ps, secret):
        with connected(ps, secret) as client:
            client.push(like(small_model(), 1.0), 0)
            process = subprocess.run(
                [
                    sys.executable,
                    "-c",
                    _KILLED_MID_PUSH,
                    str(HERE),
                    str(ps.address[1]),
                    secret.hex(),
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            assert process.returncode == -9, process.stderr
            assert "half sent" in process.stdout
            started = time.monotonic()
            client.push(like(small_model(), 1.0), 1)
            assert time.monotonic() - started < 5.0
        assert_still_serving(ps, secret, 2, 2.0)
        assert ps.status()["pushes"] == 2
        # the server notices the killed peer on its own thread: wait for that, not for the clock
        wait_until(
            lambda: [w["connected"] for w in ps.status()["workers"]].count(True) <= 1,
            30,
            "the server to mark the killed client's connection closed",
        )


def test_forged_push_after_the_handshake_is_rejected(server: tuple[ParameterServer, bytes]) -> None:
    ps, secret = server
    client = PSClient(ps.address, secret, small_model()).connect()
    try:
        keys = client.channel.keys
        assert keys is not None
        assert client.signature is not None
        table = client.signature.encode()
        update = b"".join(w.tobytes() for w in like(small_model(), 1000.0))
        header = protocol.encode_header(
            MessageType.PUSH,
            flags=protocol.FLAG_AUTHENTICATED,
            sequence=0,
            table_length=len(table),
            data_length=len(update),
            tensor_count=4,
        )
        mac = keys.sending_mac(0)
        mac.update(header + table + update)
        forged = bytearray(update)
        forged[5] ^= 0x40  # a man in the middle changes one bit of the tensor data
        client.channel.sock.sendall(header + table + bytes(forged) + mac.tag())
        assert closed_by_server(client.channel.sock, within=3.0) == b""  # no ACK, no ERROR
    finally:
        client.close()
    assert_dropped(ps, {"AuthenticationError": 1})  # the tag did not match; nothing else did
    assert_still_serving(ps, secret, 0, 0.0)


def test_frames_before_the_handshake_are_refused(server: tuple[ParameterServer, bytes]) -> None:
    ps, secret = server
    sock = raw_connect(ps)
    sock.sendall(protocol.encode_header(MessageType.PULL))
    reply = closed_by_server(sock, within=3.0)
    assert reply == b""  # not a single byte of the model
    assert_dropped(ps, {"ProtocolError": 1})  # expected HELLO
    assert_still_serving(ps, secret, 0, 0.0)


def test_connection_limit_refuses_politely() -> None:
    with running_server(max_connections=2) as (ps, secret):
        first = PSClient(ps.address, secret, small_model()).connect()
        second = PSClient(ps.address, secret, small_model()).connect()
        try:
            with pytest.raises(ServerBusyError, match="connection limit"):
                PSClient(ps.address, secret, small_model(), busy_retry=0).connect()
        finally:
            first.close()
            second.close()
        deadline = time.monotonic() + 5
        while ps.connection_count and time.monotonic() < deadline:
            time.sleep(0.02)
        assert_still_serving(ps, secret, 0, 0.0)


@pytest.mark.slow
def test_64_workers_push_for_seconds_among_abusers() -> None:
    """Center == initial + sum of accepted updates, with 64 workers and hostile peers around."""
    weights = [np.zeros((16, 8)), np.zeros(8), np.zeros((8, 1)), np.zeros(1)]
    config = AlgorithmConfig(optimizer="add", max_staleness=16)
    duration = 3.0
    workers = 64
    accepted = [0] * workers
    with running_server(weights, config, read_timeout=1.0, max_connections=128) as (ps, secret):
        clients = [
            PSClient(ps.address, secret, weights, name=f"job-{i}", timeout=30.0)
            for i in range(workers)
        ]
        stop = threading.Event()
        connected_all = threading.Barrier(workers + 3, timeout=30)

        def work(index: int) -> None:
            client = clients[index]
            client.connect()
            try:
                connected_all.wait()
                update = [np.full_like(w, index + 1.0) for w in weights]
                version, _ = client.pull()
                while not stop.is_set():
                    try:
                        reply = client.push_pull(update, version)
                    except StaleUpdateError as refused:
                        version = refused.version
                        continue
                    accepted[index] += 1
                    version = reply.version
            finally:
                client.close()

        def garbage() -> None:
            connected_all.wait()
            while not stop.is_set():
                sock = raw_connect(ps)
                sock.sendall(os.urandom(512))
                closed_by_server(sock, within=5.0)

        def intruder() -> None:
            connected_all.wait()
            while not stop.is_set():
                with pytest.raises(AuthenticationError):
                    PSClient(ps.address, auth.new_secret(), weights).connect()

        def staller() -> None:
            connected_all.wait()
            while not stop.is_set():
                sock = raw_connect(ps)
                sock.sendall(protocol.encode_header(MessageType.HELLO)[:9])
                closed_by_server(sock, within=5.0)

        def timer() -> None:
            time.sleep(duration)
            stop.set()

        targets = [lambda i=i: work(i) for i in range(workers)]
        targets += [garbage, intruder, staller]
        timer_thread = threading.Thread(target=timer)
        timer_thread.start()
        try:
            errors = run_threads(targets, timeout=60)
        finally:
            stop.set()
            timer_thread.join(10)
        assert not errors, described(errors)
        deadline = time.monotonic() + 10
        while ps.connection_count and time.monotonic() < deadline:
            time.sleep(0.05)
        assert ps.connection_count == 0
        assert ps.status()["workers_connected"] == 0
        total = sum(accepted)
        assert total > workers  # everyone got through, repeatedly
        assert all(count > 0 for count in accepted)
        counters = ps.store.counter_values()
        assert counters["pushes_accepted"] == total
        expected = sum((index + 1.0) * count for index, count in enumerate(accepted))
        version, center = ps.store.copy_center()
        assert version == total
        for tensor in center:
            np.testing.assert_array_equal(tensor, expected)
