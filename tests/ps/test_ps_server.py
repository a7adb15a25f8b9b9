"""A real server on 127.0.0.1 with real clients: messages, algorithms, membership, persistence."""

from __future__ import annotations

import json
import ssl
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from ps_helpers import connected, described, like, run_threads, running_server, small_model

from gridtrain.errors import CheckpointError, ConfigError, StaleUpdateError
from gridtrain.ps.checkpoint import read_checkpoint, read_initial_weights, write_checkpoint
from gridtrain.ps.client import PSClient, parse_address
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.ps.server import ParameterServer, bind_first_free
from tests.certificates import self_signed
from tests.waiting import wait_until


def test_pull_push_and_push_pull(server: tuple[ParameterServer, bytes]) -> None:
    ps, secret = server
    weights = small_model()
    with connected(ps, secret, name="w1") as client:
        assert client.worker_id == 1
        assert client.algorithm == AlgorithmConfig(optimizer="add")
        version, center = client.pull()
        assert version == 0
        for got, want in zip(center, weights, strict=True):
            np.testing.assert_array_equal(got, want)
        result = client.push(like(weights, 1.0), base_version=0)
        assert (result.version, result.staleness) == (1, 0)
        out = [np.empty_like(w) for w in weights]
        reply = client.push_pull(like(weights, 0.5), base_version=0, out=out)
        assert (reply.version, reply.is_delta) == (2, False)
        assert reply.tensors is out
        for got, want in zip(out, weights, strict=True):
            np.testing.assert_allclose(got, want + 1.5)
        status = client.status()
    assert status["version"] == 2
    assert status["pushes"] == 2
    assert status["staleness_histogram"]["0"] == 1
    assert status["staleness_histogram"]["1"] == 1
    assert status["workers"][0]["name"] == "w1"


def test_stale_push_is_refused_and_the_connection_stays_usable() -> None:
    config = AlgorithmConfig(optimizer="add", max_staleness=0)
    with running_server(algorithm=config) as (ps, key), connected(ps, key) as client:
        client.push(like(small_model(), 1.0), 0)
        with pytest.raises(StaleUpdateError, match="1 versions stale") as refused:
            client.push(like(small_model(), 1.0), 0)
        assert (refused.value.version, refused.value.staleness) == (1, 1)
        with pytest.raises(StaleUpdateError):  # push-and-pull refused the same way
            client.push_pull(like(small_model(), 1.0), 0)
        version, _ = client.pull()
        assert client.push(like(small_model(), 1.0), version).version == 2
        assert client.status()["refused"] == 2


def test_easgd_replies_with_the_elastic_difference() -> None:
    weights = [np.full(3, 1.0, np.float32)]
    config = AlgorithmConfig(algorithm="easgd", alpha=0.25)
    with running_server(weights, config) as (ps, key), connected(ps, key, weights) as client:
        worker = [np.full(3, 5.0, np.float32)]
        reply = client.push_pull(worker, base_version=0)
        assert reply.is_delta
        np.testing.assert_allclose(reply.tensors[0], 1.0)  # 0.25 * (5 - 1)
        worker[0] -= reply.tensors[0]
        np.testing.assert_allclose(client.pull()[1][0], 2.0)
        np.testing.assert_allclose(worker[0], 4.0)


def test_downpour_with_server_side_momentum() -> None:
    weights = [np.zeros(2)]
    config = AlgorithmConfig(optimizer="sgd", learning_rate=0.1, momentum=0.5)
    with running_server(weights, config) as (ps, key), connected(ps, key, weights) as client:
        client.push([np.ones(2)], 0)  # v = -0.1, center = -0.1
        client.push([np.ones(2)], 1)  # v = -0.05 - 0.1 = -0.15, center = -0.25
        np.testing.assert_allclose(client.pull()[1][0], -0.25)


def test_synchronous_push_pull_waits_for_the_round_and_backups_are_refused() -> None:
    weights = [np.zeros(4)]
    config = AlgorithmConfig(
        algorithm="sync", optimizer="add", sync_workers=2, backup_workers=1, sync_timeout=10.0
    )
    with running_server(weights, config) as (ps, key):
        replies: dict[int, object] = {}
        clients = [PSClient(ps.address, key, weights, name=f"w{i}") for i in range(3)]
        try:
            for client in clients:
                client.connect()

            def work(index: int) -> None:
                try:
                    replies[index] = clients[index].push_pull([np.full(4, index + 1.0)], 0)
                except StaleUpdateError as err:
                    replies[index] = err

            # two arrive first; the third (the backup) arrives after the round closed
            errors = run_threads([lambda: work(0), lambda: work(1)], timeout=20)
            assert not errors, described(errors)
            work(2)
        finally:
            for client in clients:
                client.close()
        assert isinstance(replies[2], StaleUpdateError)
        for index in (0, 1):
            version, tensors, _ = replies[index]  # type: ignore[misc]
            assert version == 1
            np.testing.assert_allclose(tensors[0], 1.5)  # mean of 1 and 2


def test_workers_join_leave_vanish_and_come_back(server: tuple[ParameterServer, bytes]) -> None:
    ps, secret = server
    with connected(ps, secret, name="job-1") as first:
        first.push(like(small_model(), 1.0), 0)
    vanishing = PSClient(ps.address, secret, small_model(), name="job-2").connect()
    vanishing.push(like(small_model(), 1.0), 1)
    vanishing.channel.sock.close()  # evicted grid job: no goodbye
    deadline = time.monotonic() + 5
    while ps.connection_count and time.monotonic() < deadline:
        time.sleep(0.02)
    with connected(ps, secret, name="job-1") as back:  # resubmitted under the same name
        assert back.worker_id == 1
        version, center = back.pull()
        assert version == 2
        np.testing.assert_allclose(center[0], small_model()[0] + 2.0)
        workers = {w["name"]: w for w in back.status()["workers"]}
    assert workers["job-1"]["connected"]
    assert workers["job-1"]["connections"] == 2
    assert not workers["job-2"]["connected"]
    assert workers["job-2"]["left_reason"] == "disconnected"
    assert workers["job-2"]["lag"] == 1


def test_monitor_connection_can_only_ask_for_status(server: tuple[ParameterServer, bytes]) -> None:
    ps, secret = server
    with PSClient(ps.address, secret, None) as monitor:
        assert monitor.status()["workers_connected"] == 0
        with pytest.raises(ConnectionError, match="monitor connection"):
            monitor.pull()


def test_checkpoints_every_n_updates_and_on_stop(tmp_path: Path) -> None:
    path = tmp_path / "ckpt" / "ps.npz"
    config = AlgorithmConfig(optimizer="sgd", learning_rate=1.0, momentum=0.5)
    weights = [np.zeros(3)]
    options = {"checkpoint_path": path, "checkpoint_every": 3}
    with running_server(weights, config, **options) as (ps, key):
        with connected(ps, key, weights) as client:
            for version in range(4):
                client.push([np.ones(3)], version)
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert read_checkpoint(path).version >= 3
    final = read_checkpoint(path)  # written by stop()
    assert final.version == 4
    assert final.counters["pushes_accepted"] == 4
    assert final.optimizer_step == 4
    # velocity: -1, -1.5, -1.75, -1.875; center: their sum
    np.testing.assert_allclose(final.optimizer_state["velocity"][0], -1.875)
    np.testing.assert_allclose(final.center[0], -(1 + 1.5 + 1.75 + 1.875))
    assert final.algorithm["momentum"] == 0.5
    assert [p.name for p in path.parent.iterdir()] == ["ps.npz"]  # no temporary left


def test_checkpoint_interval_in_seconds(tmp_path: Path) -> None:
    path = tmp_path / "ps.npz"
    with (
        running_server(checkpoint_path=path, checkpoint_interval=0.2) as (ps, key),
        connected(ps, key) as client,
    ):
        client.push(like(small_model(), 1.0), 0)
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert read_checkpoint(path).version == 1


def test_damaged_checkpoint_is_named_and_never_half_written(tmp_path: Path) -> None:
    path = tmp_path / "ps.npz"
    with pytest.raises(CheckpointError, match="does not exist; start without --resume"):
        read_checkpoint(path)
    with running_server(checkpoint_path=path) as (ps, _):
        ps.checkpoint()
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match="damaged or incomplete"):
        read_checkpoint(path)

    class Boom(Exception):
        pass

    class Exploding(dict):  # type: ignore[type-arg]
        def items(self):  # type: ignore[no-untyped-def]
            raise Boom

    path.write_bytes(good)
    snapshot = read_checkpoint(path)
    snapshot.optimizer_state = Exploding()
    with pytest.raises(Boom):
        write_checkpoint(path, snapshot)
    assert path.read_bytes() == good
    assert [p.name for p in tmp_path.iterdir()] == ["ps.npz"]


def test_initial_weights_file(tmp_path: Path) -> None:
    weights = [np.ones((2, 2)), np.zeros(3)] + [np.full(1, float(i)) for i in range(10)]
    np.savez(tmp_path / "w.npz", *weights)
    loaded = read_initial_weights(tmp_path / "w.npz")
    assert [w.shape for w in loaded] == [w.shape for w in weights]
    assert loaded[11][0] == 9.0  # arr_10 after arr_9, not after arr_1
    with pytest.raises(CheckpointError, match=r"np.savez\(path, \*model.get_weights\(\)\)"):
        read_initial_weights(tmp_path / "missing.npz")


def test_metrics_log_is_json_lines(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    with (
        running_server(metrics_log=log, metrics_interval=0.1) as (ps, key),
        connected(ps, key) as client,
    ):
        client.push(like(small_model(), 1.0), 0)
        time.sleep(0.3)
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(records) >= 2
    assert records[-1]["version"] == 1
    assert records[-1]["pushes"] == 1
    assert records[-1]["bytes_in"] > small_model()[0].nbytes


def test_first_free_port_of_a_range() -> None:
    first = bind_first_free("127.0.0.1", (0, 0))
    port = first.getsockname()[1]
    try:
        second = bind_first_free("127.0.0.1", (port, port + 20))
        try:
            assert port < second.getsockname()[1] <= port + 20
        finally:
            second.close()
        with pytest.raises(OSError, match=f"no free port on 127.0.0.1 in {port}-{port}"):
            bind_first_free("127.0.0.1", (port, port))
    finally:
        first.close()
    with pytest.raises(ConfigError, match="port range 10-5 is invalid"):
        ServerConfig(port_range=(10, 5))


def test_address_parsing() -> None:
    assert parse_address("head.example.org:9000") == ("head.example.org", 9000)
    assert parse_address("[::1]:9000") == ("::1", 9000)
    with pytest.raises(ValueError, match="not HOST:PORT"):
        parse_address("head.example.org")


def test_tls_option(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    weights = [np.arange(300_000, dtype=np.float32)]  # several chunks through TLS records
    with running_server(weights, tls=server_tls) as (ps, secret):
        with connected(ps, secret, weights, tls=client_tls) as client:
            reply = client.push_pull([np.ones(300_000, np.float32)], 0)
            np.testing.assert_array_equal(reply.tensors[0], weights[0] + 1)
        plain = PSClient(ps.address, secret, weights, timeout=3.0, busy_retry=1.0)  # drops retried
        with pytest.raises(ConnectionError):
            plain.connect()  # a client without TLS cannot talk to a TLS server
        with connected(ps, secret, weights, tls=client_tls) as client:
            assert client.pull()[0] == 1


def test_stop_interrupts_blocked_connections() -> None:
    config = AlgorithmConfig(algorithm="sync", optimizer="add", sync_workers=2, sync_timeout=30)
    weights = [np.zeros(2)]
    with running_server(weights, config) as (ps, key):
        client = PSClient(ps.address, key, weights, timeout=30).connect()
        errors: list[BaseException] = []
        waiting = threading.Thread(
            target=lambda: _catch(errors, lambda: client.push_pull([np.ones(2)], 0))
        )
        waiting.start()
        try:
            # the push is in the round, its connection blocked waiting for the second worker
            wait_until(lambda: ps.store.counters["pushes_accepted"] == 1, 30, "the push to arrive")
            started = time.monotonic()
            ps.stop(timeout=5)
            assert time.monotonic() - started < 5
        finally:
            waiting.join(10)
            client.close()
        assert not waiting.is_alive()
        assert len(errors) == 1
        assert isinstance(errors[0], (ConnectionError, EOFError))


def _catch(errors: list[BaseException], action: object) -> None:
    try:
        action()  # type: ignore[operator]
    except BaseException as err:
        errors.append(err)


def test_status_polls_are_not_logged_as_worker_connections(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A monitor (gridtrain status, the service's polls every few seconds) leaves nothing at INFO;
    a worker's arrival and departure are still logged on both sides."""
    with running_server() as (ps, secret), caplog.at_level("INFO", logger="gridtrain.ps"):
        for _ in range(3):
            monitor = PSClient(ps.address, secret).connect()
            monitor.status()
            monitor.close()
        wait_until(lambda: ps.status()["connections"] == 0, 10, "the monitors to leave")
        assert [r.getMessage() for r in caplog.records if r.levelname == "INFO"] == []
        with connected(ps, secret):
            pass
        messages = " | ".join(r.getMessage() for r in caplog.records)
        assert "as worker" in messages
        assert "joined" in messages
