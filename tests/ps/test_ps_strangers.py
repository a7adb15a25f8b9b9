"""Strangers cannot block the parameter server: a pre-authentication budget, a per-source cap and
one total handshake deadline keep stallers away from the slots of workers that hold the secret.

Strangers connect from 127.0.0.2 and 127.0.0.3 (all of 127/8 is loopback on Linux), the workers
from 127.0.0.1, as on a grid where the stranger is another host.
"""

from __future__ import annotations

import random
import socket
import time
from collections import Counter

import pytest
from ps_helpers import connected, like, running_server, small_model

from gridtrain.errors import ConfigError, ServerBusyError
from gridtrain.ps import admission, protocol
from gridtrain.ps.admission import Admission, StartupBudget
from gridtrain.ps.client import PSClient
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.protocol import MessageType
from gridtrain.ps.server import ParameterServer
from tests.waiting import wait_until
from tests.wan_relay import ShapingRelay

STRANGER = "127.0.0.2"
OTHER_STRANGER = "127.0.0.3"


# -- the budget, pure ---------------------------------------------------------------------------


def test_startup_budget_parses_openssh_notation() -> None:
    assert StartupBudget.parse("10:30:60") == StartupBudget(10, 0.3, 60)
    assert StartupBudget.parse("8") == StartupBudget(8, 1.0, 8)
    assert str(StartupBudget(16, 0.3, 32)) == "16:30:32"
    for bad in ("10:30", "a:b:c", "20:30:10", "10:130:20", "0"):
        with pytest.raises(ConfigError, match="START:RATE:FULL") as caught:
            StartupBudget.parse(bad)
        assert "\n" not in str(caught.value)


def test_drop_probability_rises_linearly_from_rate_at_start_to_one_at_full() -> None:
    budget = StartupBudget(10, 0.3, 20)
    assert [budget.drop_probability(n) for n in (0, 9)] == [0.0, 0.0]
    assert budget.drop_probability(10) == pytest.approx(0.3)
    assert budget.drop_probability(15) == pytest.approx(0.65)
    assert [budget.drop_probability(n) for n in (20, 25)] == [1.0, 1.0]


def test_early_drop_refuses_at_the_budgets_rate_with_a_seeded_rng() -> None:
    gate = Admission(StartupBudget(10, 0.3, 20), per_source=100, rng=random.Random(5))
    for index in range(100):  # fill 15 slots, some tries early-dropped on the way
        if gate.pending < 15:
            gate.admit(f"10.0.0.{index}")
    assert gate.pending == 15
    outcomes: Counter[str | None] = Counter()
    for _ in range(4000):
        reason = gate.admit("192.0.2.1")
        outcomes[reason] += 1
        if reason is None:
            gate.release("192.0.2.1")  # keep 15 pending
    assert outcomes[admission.EARLY_DROP] / 4000 == pytest.approx(0.65, abs=0.03)
    assert set(outcomes) == {None, admission.EARLY_DROP}
    assert set(gate.refused) == {admission.EARLY_DROP}


def test_early_drop_is_reproducible_with_a_seed_and_never_drops_below_start() -> None:
    def decisions(seed: int) -> list[str | None]:
        gate = Admission(StartupBudget(2, 0.5, 6), per_source=100, rng=random.Random(seed))
        return [gate.admit(f"10.0.0.{index}") for index in range(40)]

    first = decisions(11)
    assert first == decisions(11)
    assert first[:2] == [None, None]  # below start: always admitted
    assert first.count(None) == 6  # admitted until full, never beyond
    assert first[-1] == admission.FULL
    assert admission.EARLY_DROP in first


def test_per_source_cap_and_full_budget_and_release() -> None:
    gate = Admission(StartupBudget(4, 1.0, 4), per_source=2, rng=random.Random(0))
    assert [gate.admit("a"), gate.admit("a"), gate.admit("a")] == [None, None, admission.PER_SOURCE]
    assert [gate.admit("b"), gate.admit("b")] == [None, None]
    assert gate.admit("c") == admission.FULL  # 4 pending: the budget is full
    assert gate.pending == 4
    gate.release("a")  # a connection authenticated or ended
    assert gate.pending_from("a") == 1
    assert gate.admit("c") is None
    assert gate.refused == {admission.PER_SOURCE: 1, admission.FULL: 1}
    assert gate.top_sources() == {"a": 1, "c": 1}


def test_server_config_rejects_bad_budgets_in_one_line() -> None:
    for options in ({"per_source_max_startups": 0}, {"handshake_timeout": 0.0}):
        with pytest.raises(ConfigError) as caught:
            ServerConfig(**options)
        assert "\n" not in str(caught.value)
    with pytest.raises(ConfigError, match="max_startups 5:30:4"):
        ServerConfig(max_startups=StartupBudget(5, 0.3, 4))


# -- a real server ------------------------------------------------------------------------------


def from_address(ps: ParameterServer, source: str) -> socket.socket:
    return socket.create_connection(ps.address, timeout=5.0, source_address=(source, 0))


def refused_at_once(ps: ParameterServer, source: str) -> None:
    """Connect and expect the server to abort the connection before any handshake."""
    try:
        sock = from_address(ps, source)
    except ConnectionResetError:
        return  # aborted before connect() returned
    with sock:
        assert closed_within(sock, 2.0) < 1.0


def hello_then_stall(ps: ParameterServer, source: str) -> socket.socket:
    """A stranger that sends a valid HELLO, reads the CHALLENGE and never answers it."""
    sock = from_address(ps, source)
    meta = protocol.encode_meta({"nonce": "00" * 32, "role": "worker", "name": "stranger"})
    sock.sendall(protocol.encode_header(MessageType.HELLO, meta_length=len(meta)) + meta)
    header = protocol.decode_header(read_exactly(sock, protocol.HEADER_SIZE))
    assert header.msg_type is MessageType.CHALLENGE
    read_exactly(sock, header.payload_length)
    return sock


def read_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "server closed the connection"
        data += chunk
    return data


def closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closes ``sock``; fails if it stays open ``seconds``."""
    started = time.monotonic()
    sock.settimeout(seconds)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"connection still open after {seconds} s")
    return time.monotonic() - started


def test_stallers_hold_no_slot_of_authenticated_workers() -> None:
    """max_connections=2 and 12 stallers: before, the stallers took both slots; now both
    workers connect and push and pull, and a flood from one address is capped at its share."""
    options = {
        "max_connections": 2,
        "max_startups": StartupBudget(16, 1.0, 16),
        "per_source_max_startups": 6,
        "handshake_timeout": 10.0,
    }
    with running_server(**options) as (ps, secret):
        held: list[socket.socket] = []
        try:
            held += [from_address(ps, STRANGER) for _ in range(6)]
            held += [hello_then_stall(ps, OTHER_STRANGER) for _ in range(6)]
            for _ in range(20):
                refused_at_once(ps, STRANGER)  # over the per-source cap
            wait_until(lambda: ps.preauth_count == 12, 30, "12 stallers admitted")
            wait_until(
                lambda: ps.dropped.get(admission.PER_SOURCE) == 20, 30, "20 refused per source"
            )
            with connected(ps, secret) as first, connected(ps, secret) as second:
                assert ps.authenticated_count == 2
                assert ps.preauth_count == 12
                first.push(like(small_model(), 1.0), 0)
                version, center = second.pull()
                assert version == 1
                assert center[1][0] == 1.0
                with pytest.raises(ServerBusyError, match="2 authenticated connections"):
                    PSClient(ps.address, secret, small_model(), busy_retry=0).connect()
            assert ps.refused_sources() == {STRANGER: 20}
            # the refused client's handshake is pending until the server has closed it
            wait_until(
                lambda: ps.status()["handshakes"]["pending"] == 12,
                30,
                "the refused client's handshake to end (12 stallers left pending)",
            )
            assert ps.status()["handshakes"]["max_startups"] == "16:100:16"
        finally:
            for sock in held:
                sock.close()


def test_a_full_budget_refuses_strangers_cheaply_and_a_worker_retries_in() -> None:
    with running_server(max_startups=StartupBudget(2, 1.0, 2), handshake_timeout=1.0) as (
        ps,
        secret,
    ):
        held = [hello_then_stall(ps, STRANGER), hello_then_stall(ps, OTHER_STRANGER)]
        try:
            refused_at_once(ps, STRANGER)
            # told why when the frame arrives before the abort, else a reset
            with pytest.raises((ServerBusyError, ConnectionResetError)):
                PSClient(ps.address, secret, small_model(), busy_retry=0).connect()
            started = time.monotonic()
            with connected(ps, secret) as client:  # retries until a staller's deadline frees a slot
                assert 0.3 < time.monotonic() - started < 3.0
                client.push(like(small_model(), 1.0), 0)
            assert ps.dropped[admission.FULL] >= 2
            assert ps.dropped["HandshakeDeadlineError"] == 2
        finally:
            for sock in held:
                sock.close()


def test_a_worker_behind_a_proxy_retries_when_a_drop_arrives_as_a_clean_close() -> None:
    """A relay, NAT or tunnel turns the server's abort into an orderly close: the worker must
    still read it as "dropped at the handshake, retry", not as a failure."""
    with running_server(max_startups=StartupBudget(2, 1.0, 2), handshake_timeout=1.0) as (
        ps,
        secret,
    ):
        held = [hello_then_stall(ps, STRANGER), hello_then_stall(ps, OTHER_STRANGER)]
        try:
            with ShapingRelay(ps.address) as relay:
                client = PSClient(relay.address, secret, small_model(), busy_retry=10.0)
                started = time.monotonic()
                with client:  # dropped (a clean close) until a staller's deadline frees a slot
                    assert 0.3 < time.monotonic() - started < 5.0
                    client.push(like(small_model(), 1.0), 0)
            assert ps.dropped[admission.FULL] >= 1
        finally:
            for sock in held:
                sock.close()


def test_hello_then_stall_is_dropped_at_the_handshake_deadline() -> None:
    with running_server(handshake_timeout=1.0, read_timeout=5.0) as (ps, secret):
        started = time.monotonic()
        with hello_then_stall(ps, STRANGER) as sock:
            with connected(ps, secret) as client:
                client.push(like(small_model(), 1.0), 0)
            closed_within(sock, 4.0)
        waited = time.monotonic() - started
        assert 0.9 < waited < 2.0
        assert ps.dropped == {"HandshakeDeadlineError": 1}
        wait_until(lambda: ps.preauth_count == 0, 30, "the slot given back")


def test_a_slow_drip_is_dropped_at_the_total_deadline_not_per_read() -> None:
    """A byte every 0.5 s never trips a 5 s read timeout; the 1.5 s handshake deadline holds."""
    with running_server(handshake_timeout=1.5, read_timeout=5.0) as (ps, _):
        frame = protocol.encode_header(MessageType.HELLO, meta_length=100)
        sock = from_address(ps, STRANGER)
        started = time.monotonic()
        sock.settimeout(0.5)
        try:
            for byte in frame:
                sock.send(bytes([byte]))
                try:
                    if sock.recv(1) == b"":
                        break  # the server closed it
                except TimeoutError:
                    continue  # 0.5 s passed: the next byte
        except (BrokenPipeError, ConnectionResetError):
            pass
        closed = time.monotonic() - started
        sock.close()
        assert 1.4 < closed < 2.6
        wait_until(lambda: ps.dropped == {"HandshakeDeadlineError": 1}, 30, "the drop counted")
