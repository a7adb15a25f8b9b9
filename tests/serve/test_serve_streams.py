"""gridtrain serve's event streams: they end when the service stops, they are bounded in number
and cheap, and a reconnected stream goes on from the last event it sent.

A real ``gridtrain serve`` on 127.0.0.1 over a root with one run directory that no driver trains
(its history.jsonl is written by the test), read with ``http.client``: no training runs here.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import queue
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fake_runs import append_history, shard, write_run
from serve_helpers import SERVE, Service

Event = tuple[str | None, str, Any]  # (its id, None without one; its name; its data)


class EventStream:
    """A server-sent event stream read with ``http.client`` in a thread of its own."""

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
        self.socket = self.connection.sock
        self.response = self.connection.getresponse()
        self.status = self.response.status
        self.timeout = timeout
        self._events: queue.Queue[Event | BaseException] = queue.Queue()
        self._reader: threading.Thread | None = None

    def _read(self) -> None:
        assert self.socket is not None
        self.socket.settimeout(None)  # waiting is next()'s business
        ident, event, data = None, "message", list[str]()
        try:
            while raw := self.response.readline():
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        self._events.put((ident, event, json.loads("\n".join(data))))
                    ident, event, data = None, "message", []
                    continue
                field, _, value = line.partition(":")
                value = value.removeprefix(" ")
                if field == "event":
                    event = value
                elif field == "data":
                    data.append(value)
                elif field == "id":
                    ident = value
            self._events.put(EOFError("the service ended the stream"))
        except Exception as err:  # cut by the service, or closed here (http.client then fails)
            self._events.put(err)

    def next(self, timeout: float | None = None) -> Event:
        """The next event; EOFError once the service ended the stream, TimeoutError if none
        comes within ``timeout``."""
        if self._reader is None:
            self._reader = threading.Thread(target=self._read, daemon=True)
            self._reader.start()
        try:
            got = self._events.get(timeout=self.timeout if timeout is None else timeout)
        except queue.Empty:
            raise TimeoutError(f"no event within {timeout} s") from None
        if isinstance(got, BaseException):
            self._events.put(got)  # it stays ended
            raise got
        return got

    def nothing_within(self, seconds: float) -> bool:
        """Whether no event comes within ``seconds`` (a keep-alive comment is not one)."""
        try:
            self.next(seconds)
        except TimeoutError:
            return True
        return False

    def rest(self) -> list[Event]:
        """Every event until the service ends the stream (a cut connection raises instead)."""
        events = []
        while True:
            try:
                events.append(self.next())
            except EOFError:
                return events

    def close(self) -> None:
        if self.socket is not None:
            with contextlib.suppress(OSError):
                self.socket.shutdown(socket.SHUT_RDWR)
        self.connection.close()
        self.response.close()
        if self._reader is not None:
            self._reader.join(timeout=10)


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    root = tmp_path / "runs"
    append_history(write_run(root, "live"), shard(0), shard(1))
    service = Service(root).start()
    try:
        yield service
    finally:
        service.stop()


def test_following_a_run_that_ended_already_reports_its_last_summary_once(
    service: Service,
) -> None:
    """``Client.wait`` on a short run that finished before it was followed: the progress
    callback still sees it, once, finished at 100 % (a notebook prints its progress there)."""
    from gridtrain.serve.client import Client

    run = service.root / "live"
    (run / "metrics.json").write_text('{"auc": 0.9, "epochs": 3}')
    seen: list[dict[str, Any]] = []
    client = Client(service.url, token_file=service.root / ".serve-token")
    last = client.wait("live", progress=seen.append, timeout=60)
    assert last["phase"] == "finished"
    assert [(s["phase"], s["progress"]["fraction"]) for s in seen] == [("finished", 1.0)]


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


def test_a_resumed_stream_sends_no_event_twice(service: Service) -> None:
    run = service.root / "live"
    first = EventStream(service, "/api/runs/live/events")
    try:
        history, progress = first.next(), first.next()
    finally:
        first.close()
    assert (history[1], progress[1]) == ("history", "progress")
    assert history[2] == [shard(0), shard(1)]
    assert history[0]
    assert progress[0]

    again = EventStream(service, "/api/runs/live/events", {"Last-Event-ID": str(progress[0])})
    try:  # nothing new: nothing is sent
        assert again.nothing_within(2.5)
    finally:
        again.close()

    append_history(run, shard(2), shard(3))
    resumed = EventStream(service, "/api/runs/live/events", {"Last-Event-ID": str(progress[0])})
    try:
        _, event, records = resumed.next()
        assert (event, records) == ("history", [shard(2), shard(3)])  # only the new records
        _, event, summary = resumed.next()
        assert (event, summary["progress"]["shards_done"]) == ("progress", 4)
        assert resumed.nothing_within(1.5)
    finally:
        resumed.close()

    runs = EventStream(service, "/api/events")
    try:
        ident, event, _ = runs.next()
        assert event == "runs"
        assert ident
    finally:
        runs.close()
    resumed = EventStream(service, "/api/events", {"Last-Event-ID": ident})
    try:  # the list did not change: not sent again; once it changes, it is
        assert resumed.nothing_within(2.5)
        append_history(run, shard(4))
        _, event, listed = resumed.next()
        assert event == "runs"
        assert listed["runs"][0]["progress"]["shards_done"] == 5
    finally:
        resumed.close()


def test_the_stream_limits_are_the_operators_to_set(tmp_path: Path) -> None:
    """--max-streams-per-client 1 --max-streams 2: a second stream from one client, and a third
    in all, are refused with 429; 0 is refused at start in one line."""
    root = tmp_path / "runs"
    append_history(write_run(root, "live"), shard(0))
    service = Service(root, "--max-streams", "2", "--max-streams-per-client", "1").start()
    streams: list[EventStream] = []
    try:
        for source, expected in (("127.0.0.1", 200), ("127.0.0.1", 429), ("127.0.0.2", 200)):
            streams.append(EventStream(service, "/api/events", source=source))
            assert streams[-1].status == expected, source
        streams.append(EventStream(service, "/api/events", source="127.0.0.3"))
        assert streams[-1].status == 429  # two in all
    finally:
        for stream in streams:
            stream.close()
        service.stop()
    refused = subprocess.run(
        [*SERVE, "--root", str(root), "--port", "0", "--max-streams", "0"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode == 2
    assert "--max-streams 0: give at least 1" in refused.stderr
