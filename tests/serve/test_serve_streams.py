"""gridtrain serve's event streams: they end when the service stops, they are bounded in number
and cheap, and a reconnected stream goes on from the last event it sent.

A real ``gridtrain serve`` on 127.0.0.1 over a root with one run directory that no driver trains
(its history.jsonl is written by the test), read with ``http.client``: no training runs here.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from serve_helpers import Service


def write_run(root: Path, name: str, shards: int = 4, epochs: int = 3) -> Path:
    """A run directory as ``gridtrain train`` prepares it, as far as the service reads it."""
    run = root / name
    run.mkdir(parents=True)
    spec = {
        "settings": {"epochs": epochs, "executor": "local", "workers": 1},
        "manifest": {"shards": {"train": [f"train-{i}.npz" for i in range(shards)]}},
    }
    (run / "worker.json").write_text(json.dumps(spec))
    (run / "history.jsonl").write_text("")
    return run


def append_history(run: Path, *records: dict[str, Any]) -> None:
    with open(run / "history.jsonl", "a") as handle:
        for record in records:
            handle.write(json.dumps(record) + "\n")


def shard(step: int) -> dict[str, Any]:
    return {"type": "shard", "epoch": 0, "shard": step, "loss": 1.0 / (step + 1)}


class EventStream:
    """A server-sent event stream read with ``http.client``; ``next()`` gives (id, event, data)."""

    def __init__(
        self,
        service: Service,
        path: str,
        headers: dict[str, str] | None = None,
        source: str | None = None,
        timeout: float = 10.0,
    ) -> None:
        parts = urlsplit(service.url)
        self.connection = http.client.HTTPConnection(
            parts.hostname,
            parts.port,
            timeout=timeout,
            source_address=(source, 0) if source else None,
        )
        self.connection.request(
            "GET", path, headers={"Authorization": f"Bearer {service.token}", **(headers or {})}
        )
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.last_id: str | None = None

    def next(self) -> tuple[str | None, str, Any]:
        event, data = "message", list[str]()
        while True:
            raw = self.response.readline()
            if not raw:
                raise EOFError("the stream ended")
            line = raw.decode().rstrip("\r\n")
            if not line:
                if data:
                    return self.last_id, event, json.loads("\n".join(data))
                event = "message"
                continue
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                event = value
            elif field == "data":
                data.append(value)
            elif field == "id":
                self.last_id = value

    def rest(self) -> list[tuple[str | None, str, Any]]:
        """Every event until the service ends the stream (a cut connection raises instead)."""
        events = []
        while True:
            try:
                events.append(self.next())
            except EOFError:
                return events

    def close(self) -> None:
        self.connection.close()


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    root = tmp_path / "runs"
    append_history(write_run(root, "live"), shard(0), shard(1))
    service = Service(root).start()
    try:
        yield service
    finally:
        service.stop()


def test_sigterm_with_open_streams_stops_the_service_within_5_s(service: Service) -> None:
    streams = [EventStream(service, "/api/events"), EventStream(service, "/api/runs/live/events")]
    try:
        assert streams[0].next()[1] == "runs"
        assert [streams[1].next()[1] for _ in range(2)] == ["history", "progress"]
        assert service.process is not None
        started = time.monotonic()
        service.process.send_signal(signal.SIGTERM)
        try:
            service.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pytest.fail("gridtrain serve still runs 5 s after SIGTERM with two open streams")
        assert time.monotonic() - started < 5
        for stream in streams:  # each stream was ended by the service, not cut
            stream.rest()
    finally:
        for stream in streams:
            stream.close()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS for process {pid}")


def timed_get(service: Service, path: str) -> tuple[float, int]:
    parts = urlsplit(service.url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    started = time.monotonic()
    try:
        connection.request("GET", path, headers={"Authorization": f"Bearer {service.token}"})
        response = connection.getresponse()
        response.read()
        return time.monotonic() - started, response.status
    finally:
        connection.close()


@pytest.fixture
def busy_service(tmp_path: Path) -> Iterator[Service]:
    """Eight runs with 2000 shards of history each: a root after some weeks of work."""
    root = tmp_path / "runs"
    for number in range(8):
        run = write_run(root, "live" if number == 0 else f"run-{number}", shards=1000)
        append_history(run, *(shard(step) for step in range(2000)))
    service = Service(root).start()
    try:
        yield service
    finally:
        service.stop()


@pytest.mark.slow
def test_200_streams_are_bounded_and_cheap_and_a_list_still_answers_within_1_s(
    busy_service: Service,
) -> None:
    service = busy_service
    assert service.process is not None
    idle, _ = timed_get(service, "/api/runs")  # warm: the first request imports and caches
    before = rss_mb(service.process.pid)
    opened: list[EventStream] = []
    refused: list[tuple[str, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        for i in range(200):  # 25 loopback addresses (127.0.0.2-26) of 8 streams each ...
            assert time.monotonic() < deadline, f"opening {i} streams took over 60 s"
            source = f"127.0.0.{2 + i // 8}" if i >= 10 else "127.0.0.2"  # ... the first 10
            path = "/api/runs/live/events" if i % 2 else "/api/events"
            stream = EventStream(service, path, source=source)
            if stream.status == 200:
                opened.append(stream)
            else:
                refused.append((source, stream.response.read()))
                assert stream.status == 429, (stream.status, refused[-1])
                stream.close()
        time.sleep(3)  # the open streams poll a few times
        took, status = timed_get(service, "/api/runs")
        grown = rss_mb(service.process.pid) - before
        assert status == 200
        assert took < 1.0, f"GET /api/runs: {took:.2f} s beside {len(opened)} streams ({idle:.2f})"
        assert grown < 40, f"the service grew by {grown:.0f} MB for {len(opened)} streams"
        assert len(opened) == 64  # the service's limit in all ...
        assert [source for source, _ in refused[:2]] == ["127.0.0.2"] * 2  # ... and per client
        for _, body in refused:
            detail = json.loads(body)["detail"]
            assert "too many event streams" in detail
            assert "\n" not in detail
        assert opened[0].next()[1] == "runs"  # the admitted streams are served
        assert opened[1].next()[1] == "history"
    finally:
        for stream in opened:
            stream.close()
    deadline = time.monotonic() + 10  # closed streams give their places back
    while True:
        again = EventStream(service, "/api/events", source="127.0.0.2")
        again.close()
        if again.status == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert again.status == 200
