"""``gridtrain ps serve`` as a real process: files, status, SIGTERM, SIGKILL and resume."""

from __future__ import annotations

import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from ps_helpers import like, small_model

from gridtrain import cli
from gridtrain.ps import auth
from gridtrain.ps.checkpoint import read_checkpoint
from gridtrain.ps.cli import format_status, parse_port_range
from gridtrain.ps.client import PSClient
from tests.waiting import wait_until

STARTUP = 30.0


@contextmanager
def serving(tmp_path: Path, *options: str) -> Iterator[tuple[subprocess.Popen[str], str, bytes]]:
    """``gridtrain ps serve`` in a subprocess; yields (process, HOST:PORT, secret); kills it."""
    address_file = tmp_path / "ps.address"
    address_file.unlink(missing_ok=True)
    command = [
        sys.executable,
        "-m",
        "gridtrain",
        "ps",
        "serve",
        "--secret-file",
        str(tmp_path / "ps.secret"),
        "--address-file",
        str(address_file),
        "--read-timeout",
        "5",
        *options,
    ]
    process = subprocess.Popen(
        command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + STARTUP
        while not address_file.exists():
            if process.poll() is not None or time.monotonic() > deadline:
                _, err = process.communicate(timeout=10)
                raise AssertionError(f"server did not start: {err}")
            time.sleep(0.05)
        address = address_file.read_text().strip()
        yield process, address, auth.read_secret_file(tmp_path / "ps.secret")
    finally:
        if process.poll() is None:
            process.kill()
        process.communicate(timeout=30)


def write_init(tmp_path: Path) -> Path:
    path = tmp_path / "init.npz"
    np.savez(path, *small_model())
    return path


def test_serve_writes_private_files_reports_status_and_checkpoints_on_sigterm(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    init = write_init(tmp_path)
    checkpoint = tmp_path / "ps.npz"
    options = ("--init", str(init), "--optimizer", "add", "--checkpoint", str(checkpoint))
    with serving(tmp_path, *options) as (process, address, secret):
        for name in ("ps.secret", "ps.address"):
            assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
        assert address.startswith("127.0.0.1:")
        with PSClient(address, secret, small_model(), name="job-42") as client:
            client.push(like(small_model(), 1.0), 0)
            client.push(like(small_model(), 1.0), 0)
            code = cli.main(["ps", "status", address, "--secret-file", str(tmp_path / "ps.secret")])
            assert code == 0
            report = capsys.readouterr().out
            assert "center version 2" in report
            assert "2 accepted, 0 refused" in report
            assert "0:1  1:1" in report
            assert "job-42" in report
            assert "connected" in report
            assert (
                cli.main(
                    [
                        "ps",
                        "status",
                        address,
                        "--secret-file",
                        str(tmp_path / "ps.secret"),
                        "--json",
                    ]
                )
                == 0
            )
            assert '"version": 2' in capsys.readouterr().out
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "stopped at version 2" in out
    snapshot = read_checkpoint(checkpoint)
    assert snapshot.version == 2
    np.testing.assert_allclose(snapshot.center[0], small_model()[0] + 2.0)


def test_sigkilled_server_resumes_from_its_last_checkpoint(tmp_path: Path) -> None:
    init = write_init(tmp_path)
    checkpoint = tmp_path / "ps.npz"
    every = 5
    common = ("--optimizer", "add", "--checkpoint", str(checkpoint))
    with serving(tmp_path, "--init", str(init), *common, "--checkpoint-every", str(every)) as (
        process,
        address,
        secret,
    ):
        with PSClient(address, secret, small_model()) as client:
            for version in range(12):
                client.push(like(small_model(), 1.0), version)
        wait_until(  # the server's last interval checkpoint: the kill must come after it
            lambda: checkpoint.exists() and read_checkpoint(checkpoint).version >= 10,
            60,
            "the server to checkpoint version 10",
        )
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
    saved = read_checkpoint(checkpoint)
    assert 10 <= saved.version <= 12
    assert 12 - saved.version < every  # lost at most one checkpoint interval
    with serving(tmp_path, "--resume", *common) as (process, address, secret):
        with PSClient(address, secret, small_model()) as client:
            version, center = client.pull()
            assert version == saved.version
            np.testing.assert_allclose(center[0], small_model()[0] + saved.version, rtol=1e-6)
            client.push(like(small_model(), 1.0), version)  # and it goes on
            assert client.pull()[0] == saved.version + 1
        process.send_signal(signal.SIGINT)
        process.communicate(timeout=30)
        assert process.returncode == 0
    assert read_checkpoint(checkpoint).version == saved.version + 1


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["ps", "serve"], "give the initial weights with --init weights.npz"),
        (["ps", "serve", "--resume"], "--resume needs --checkpoint PATH"),
        (["ps", "serve", "--resume", "--checkpoint", "nope.npz"], "does not exist; start without"),
        (["ps", "serve", "--init", "w.npz", "--port", "90x"], "--port '90x' is not a port"),
        (["ps", "serve", "--init", "w.npz", "--learning-rate", "-1"], "learning_rate = -1.0"),
        (["ps", "serve", "--init", "w.npz", "--max-startups", "40:30:20"], "START:RATE:FULL"),
        (["ps", "serve", "--init", "w.npz", "--per-source-max-startups", "0"], "must be >= 1"),
        (["ps", "status", "127.0.0.1:9", "--secret-file", "missing"], "does not exist"),
    ],
)
def test_bad_input_gets_a_one_line_error(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    arguments: list[str],
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "w.npz", *small_model())
    assert cli.main(arguments) == cli.EXIT_USER_ERROR
    err = capsys.readouterr().err
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_status_of_a_server_that_is_not_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = tmp_path / "s"
    auth.write_secret_file(secret, auth.new_secret())
    import socket

    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = cli.main(["ps", "status", f"127.0.0.1:{port}", "--secret-file", str(secret)])
    assert code == cli.EXIT_USER_ERROR
    assert "Connection refused" in capsys.readouterr().err


def test_port_range_parsing_and_status_formatting() -> None:
    assert parse_port_range("9000") == (9000, 9000)
    assert parse_port_range("9000-9100") == (9000, 9100)
    text = format_status(
        {
            "address": "h:1",
            "version": 3,
            "checkpointed_version": 2,
            "uptime_s": 5.0,
            "algorithm": {"algorithm": "easgd", "optimizer": "add"},
            "pushes": 3,
            "refused": 1,
            "updates_per_s": 0.6,
            "recent_updates_per_s": 0.5,
            "bytes_in": 2_500_000,
            "bytes_out": 1000,
            "bytes_per_s": 500_200.0,
            "staleness_histogram": {"0": 2, "1": 1},
            "workers_connected": 1,
            "workers": [
                {
                    "worker_id": 1,
                    "name": "job-1",
                    "connected": True,
                    "seconds_since_seen": 0.25,
                    "lag": 1,
                    "pushes": 3,
                    "refused": 1,
                }
            ],
        }
    )
    assert "center version 3  (checkpointed 2)" in text
    assert "in 2.5 MB, out 1.0 kB" in text
    assert "algorithm  easgd" in text
    assert "job-1" in text
