"""The shaping relay of the WAN tests (tests/wan_relay.py): latency, bandwidth cap, byte order."""

from __future__ import annotations

import os
import socket
import socketserver
import statistics
import threading
import time
from collections.abc import Iterator

import pytest

from tests.waiting import wait_until
from tests.wan_relay import ShapingRelay, TokenBucket


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(data)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[:2]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _connect(relay: ShapingRelay) -> socket.socket:
    host, port = relay.address.rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def _receive(sock: socket.socket, size: int) -> bytes:
    parts, got = [], 0
    while got < size:
        part = sock.recv(min(1 << 20, size - got))
        assert part, "relay closed the connection early"
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def test_token_bucket_paces_bytes_at_the_rate() -> None:
    bucket = TokenBucket(rate=1000.0, burst=100.0)
    assert bucket.delay(100, now=10.0) == 0.0  # the burst goes at once
    assert bucket.delay(500, now=10.0) == pytest.approx(0.5)  # then 1000 bytes/s
    assert bucket.delay(1000, now=10.5) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        TokenBucket(rate=0.0, burst=1.0)


def test_round_trip_is_twice_the_one_way_latency(echo_server: tuple[str, int]) -> None:
    with ShapingRelay(echo_server, latency=0.04) as relay, _connect(relay) as sock:
        rtts = []
        for _ in range(5):
            started = time.perf_counter()
            sock.sendall(b"ping")
            assert _receive(sock, 4) == b"ping"
            rtts.append(time.perf_counter() - started)
    assert 0.075 <= statistics.median(rtts) <= 0.25, rtts  # loose above: a loaded machine
    assert relay.connections == 1


def test_bandwidth_cap_and_byte_order_with_jitter(echo_server: tuple[str, int]) -> None:
    payload = os.urandom(2_000_000)
    cap = 40e6  # bits/s each way: 2 MB take 0.4 s to cross
    with ShapingRelay(echo_server, latency=0.005, jitter=0.005, bandwidth=cap) as relay:
        with _connect(relay) as sock:
            started = time.perf_counter()
            sender = threading.Thread(target=sock.sendall, args=(payload,))
            sender.start()
            echoed = _receive(sock, len(payload))
            elapsed = time.perf_counter() - started
            sender.join(10)
        # the relay counts a chunk after forwarding it: the echo can arrive before the count
        wait_until(
            lambda: relay.bytes_up == relay.bytes_down == len(payload),
            10,
            f"the relay to count {len(payload)} bytes each way",
        )
    assert echoed == payload  # every byte, in order, through two jittered shapers
    throughput = len(payload) * 8 / elapsed
    assert 0.3 * cap <= throughput <= 1.15 * cap, f"{throughput / 1e6:.1f} Mb/s through {cap}"


def test_server_link_is_shared_by_all_connections(echo_server: tuple[str, int]) -> None:
    """Two connections through a 40 Mb/s server link get 40 Mb/s between them, not each."""
    payload = os.urandom(1_000_000)
    link = 40e6  # 2 x 1 MB each way take 0.4 s through one shared link
    with ShapingRelay(echo_server, server_link=link) as relay:
        socks = [_connect(relay), _connect(relay)]
        echoed: list[bytes] = [b"", b""]

        def exchange(index: int) -> None:
            sender = threading.Thread(target=socks[index].sendall, args=(payload,))
            sender.start()
            echoed[index] = _receive(socks[index], len(payload))
            sender.join(10)

        started = time.perf_counter()
        threads = [threading.Thread(target=exchange, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        elapsed = time.perf_counter() - started
        for sock in socks:
            sock.close()
    assert echoed == [payload, payload]
    throughput = 2 * len(payload) * 8 / elapsed  # both connections together, one direction
    assert 0.3 * link <= throughput <= 1.15 * link, f"{throughput / 1e6:.1f} Mb/s through {link}"
