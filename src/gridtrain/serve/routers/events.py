"""``/api/runs/{name}/events`` and ``/api/events``: server-sent events that follow the runs.

Handlers only read run directories through ``store``; there is no training logic here.

Every stream of a service reads one shared ``Feed``: a single poller reads each followed run (and
the runs list, when a page follows it) once per POLL_S and wakes the streams, which only compare
what they sent with what it read. So a hundred open tabs cost one read per second, not a hundred.
Streams are admitted up to ``max_streams`` in all and ``max_streams_per_client`` from one client
(its address and credential); more get 429.

Every event carries an ``id``: for a run, how many history records the stream has sent and a
digest of the progress it sent last ("12-3fa0c1d2e4b5"); for the runs list, a digest of the list.
A browser that reconnects sends the last one back (``Last-Event-ID``) and gets only what is new:
the history records after it, the progress and the list if they changed.

A stream never ends by itself while its run trains, and the server waits for open responses
before it exits, so every stream also ends when ``Feed.stop`` is called (the app's lifespan calls
it on SIGTERM and SIGINT): within POLL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gridtrain.serve.schemas import RunList
from gridtrain.serve.security import COOKIE
from gridtrain.serve.store import RunStore, UnknownRun

router = APIRouter(prefix="/api", tags=["runs"])
log = logging.getLogger(__name__)

POLL_S = 1.0
HEARTBEAT_S = 15.0
ENDED = frozenset({"finished", "stopped", "lost"})
RUNS = ""  # the topic of /api/events (no run is called "")


@dataclass
class RunFeed:
    """One followed run as the poller last read it."""

    summary: str = ""  # its RunSummary as JSON
    version: str = ""  # a digest of summary
    phase: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)  # history.jsonl's records
    offset: int = 0  # bytes of history.jsonl read so far
    gone: bool = False  # the run directory was removed


def read_tail(path: Path, offset: int) -> tuple[list[dict[str, Any]], int, bool]:
    """The records of history.jsonl after byte ``offset``, the new offset, and whether the file
    was replaced (shorter than ``offset``: read from its start). A line being written waits."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0, offset > 0
    replaced = size < offset
    start = 0 if replaced else offset
    if size == start:
        return [], start, replaced
    with open(path, "rb") as handle:
        handle.seek(start)
        data = handle.read(size - start)
    complete = data[: data.rfind(b"\n") + 1]
    records = [json.loads(line) for line in complete.splitlines() if line.strip()]
    return records, start + len(complete), replaced


class Feed:
    """The event streams of one service: who may open one, and what they all read.

    Runs in the event loop's thread, but for the poller's reads (in the thread pool) and
    ``stopping`` (also set from a signal handler).
    """

    def __init__(self, store: RunStore, max_streams: int, max_per_client: int) -> None:
        self.store = store
        self.max_streams = max_streams
        self.max_per_client = max_per_client
        self.stopping = False
        self.runs = ""  # the RunList as JSON, while /api/events is followed
        self.runs_version = ""  # a digest of runs
        self.feeds: dict[str, RunFeed] = {}
        self._clients: Counter[str] = Counter()
        self._followers: Counter[str] = Counter()
        self._tick = asyncio.Event()  # set (and replaced) after each poll, and on stop
        self._wake = asyncio.Event()  # a topic nobody followed: poll now
        self._poller: asyncio.Task[None] | None = None

    # -- admission --------------------------------------------------------------------------

    def admit(self, client: str) -> None:
        """Count a new stream of ``client``; 429 (or 503 when stopping) if there is no room."""
        if self.stopping:
            raise HTTPException(503, "the service is stopping")
        if self._clients[client] >= self.max_per_client:
            raise HTTPException(
                429,
                f"too many event streams: {self.max_per_client} open from this client; "
                "close other tabs of this page",
                headers={"Retry-After": "10"},
            )
        if self._clients.total() >= self.max_streams:
            raise HTTPException(
                429,
                f"too many event streams: {self.max_streams} open on this service; try again later",
                headers={"Retry-After": "10"},
            )
        self._clients[client] += 1

    def release(self, client: str) -> None:
        self._clients[client] -= 1
        if self._clients[client] <= 0:
            del self._clients[client]

    # -- following ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def follow(self, topic: str) -> Iterator[None]:
        """Have the poller read ``topic`` (a run's name, or RUNS) while the block runs."""
        self._followers[topic] += 1
        try:
            yield
        finally:
            self._followers[topic] -= 1
            if self._followers[topic] <= 0:
                del self._followers[topic]
                self.feeds.pop(topic, None)
                if topic == RUNS:
                    self.runs = ""

    def known(self, topic: str) -> bool:
        return bool(self.runs) if topic == RUNS else topic in self.feeds

    async def tick(self, topic: str, first: bool) -> bool:
        """Wait for the next poll, at most POLL_S (the first time: none when ``topic`` is
        known); False once the service stops."""
        if self.stopping:
            return False
        self._start_poller()
        if first and self.known(topic):
            return True
        if first:
            self._wake.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(POLL_S):
                await self._tick.wait()
        return not self.stopping

    def stop(self) -> None:
        """End every stream (called in the event loop's thread); new ones are refused."""
        self.stopping = True
        self._tick.set()
        self._wake.set()

    def _start_poller(self) -> None:
        if self._poller is None:
            self._poller = asyncio.create_task(self._poll())

    async def _poll(self) -> None:
        """Read the followed topics every POLL_S (at once for a new one) while any is followed."""
        try:
            while self._followers and not self.stopping:
                self._wake.clear()
                topics = list(self._followers)
                offsets = {name: feed.offset for name, feed in self.feeds.items()}
                try:
                    self._apply(*await run_in_threadpool(self._read, topics, offsets), offsets)
                except Exception:  # a run's files mid-write: the next poll reads them again
                    log.exception("reading the followed runs failed")
                tick, self._tick = self._tick, asyncio.Event()
                tick.set()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(POLL_S):
                        await self._wake.wait()
        finally:
            self._poller = None

    def _read(
        self, topics: list[str], offsets: dict[str, int]
    ) -> tuple[str | None, dict[str, tuple[str, str, list[dict[str, Any]], int, bool] | None]]:
        """In the thread pool: the runs list (if followed), and each followed run's summary,
        phase, new history records, history offset, whether history.jsonl was replaced (None:
        the run is gone)."""
        runs = None
        if RUNS in topics:
            runs = RunList(runs=self.store.summaries()).model_dump_json()
        found: dict[str, tuple[str, str, list[dict[str, Any]], int, bool] | None] = {}
        for name in topics:
            if name == RUNS:
                continue
            try:
                summary = self.store.summary(name)
                files = self.store.files(name)
            except (UnknownRun, FileNotFoundError):
                found[name] = None
                continue
            records, offset, replaced = read_tail(files.history, offsets.get(name, 0))
            found[name] = (summary.model_dump_json(), summary.phase, records, offset, replaced)
        return runs, found

    def _apply(
        self,
        runs: str | None,
        found: dict[str, tuple[str, str, list[dict[str, Any]], int, bool] | None],
        offsets: dict[str, int],
    ) -> None:
        if runs is not None and RUNS in self._followers and runs != self.runs:
            self.runs, self.runs_version = runs, _digest(runs)
        for name, read in found.items():
            current = self.feeds.get(name)
            if name not in self._followers or offsets.get(name) != (current and current.offset):
                continue  # every stream of it left during the read, and maybe new ones came
            feed = self.feeds.setdefault(name, RunFeed())
            if read is None:
                feed.gone = True
                continue
            summary, feed.phase, records, feed.offset, replaced = read
            if summary != feed.summary:
                feed.summary, feed.version = summary, _digest(summary)
            if replaced:
                feed.history = []
            feed.history.extend(records)


def _digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=6).hexdigest()


def _sse(event: str, data: str, ident: str) -> str:
    """One event; ``data`` is JSON (one line)."""
    return f"id: {ident}\nevent: {event}\ndata: {data}\n\n"


def _json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))


def _last_event_id(request: Request) -> str:
    """What the client received last (browsers send it when they reconnect); "" without."""
    value = request.headers.get("last-event-id", "")
    return value if len(value) <= 64 and value.isascii() else ""


def _run_cursor(last_event_id: str) -> tuple[int, str]:
    """A run stream's id: the history records sent, and the version of the progress sent."""
    count, _, version = last_event_id.partition("-")
    return (int(count), version) if count.isdigit() else (0, "")


def _client(request: Request) -> str:
    """Who opens a stream: the address and (a digest of) the credential it came with."""
    host = request.client.host if request.client else "unknown"
    credential = request.headers.get("authorization") or request.cookies.get(COOKIE, "")
    return f"{host} {hashlib.sha256(credential.encode()).hexdigest()[:16]}"


class _AdmittedStream(StreamingResponse):
    """A stream that gives its place back when its response ends, however it ends."""

    def __init__(self, body: AsyncIterator[str], release: Callable[[], None]) -> None:
        super().__init__(body, media_type="text/event-stream", headers=_NO_BUFFER)
        self._release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._release()


Step = Callable[[], tuple[list[str], bool]]


def _event_stream(request: Request, topic: str, step: Step) -> StreamingResponse:
    """Server-sent events of ``topic``: after each poll ``step`` returns the events to send and
    whether the stream is over; a keep-alive comment goes out after HEARTBEAT_S without events."""
    feed: Feed = request.app.state.feed
    client = _client(request)
    feed.admit(client)

    async def stream() -> AsyncIterator[str]:
        quiet = time.monotonic()
        with feed.follow(topic):
            first = True
            while await feed.tick(topic, first) and not await request.is_disconnected():
                first = False
                events, ended = step()
                for event in events:
                    yield event
                if ended:
                    return
                now = time.monotonic()
                if events:
                    quiet = now
                elif now - quiet >= HEARTBEAT_S:
                    yield ": keep-alive\n\n"
                    quiet = now

    return _AdmittedStream(stream(), lambda: feed.release(client))


@router.get("/runs/{name}/events", response_class=StreamingResponse)
async def run_events(name: str, request: Request) -> StreamingResponse:
    """Server-sent events: ``progress`` (a RunSummary) on every change, ``history`` (new records
    of history.jsonl), and ``end`` once the run is finished, stopped or lost."""
    feed: Feed = request.app.state.feed
    feed.store.files(name)  # 404 for an unknown run
    sent, version = _run_cursor(_last_event_id(request))

    def step() -> tuple[list[str], bool]:
        nonlocal sent, version
        run = feed.feeds.get(name)
        if run is None:
            return [], False
        if run.gone:
            return [], True
        events = []
        if len(run.history) > sent:
            records = run.history[sent:]
            sent = len(run.history)
            events.append(_sse("history", _json(records), f"{sent}-{version}"))
        if run.version != version:
            version = run.version
            events.append(_sse("progress", run.summary, f"{sent}-{version}"))
        ended = run.phase in ENDED
        if ended:  # every stream of an ended run closes with it, a resumed one too
            end = _json({"name": name, "phase": run.phase})
            events.append(_sse("end", end, f"{sent}-{version}"))
        return events, ended

    return _event_stream(request, name, step)


@router.get("/events", response_class=StreamingResponse)
async def runs_events(request: Request) -> StreamingResponse:
    """Server-sent events: ``runs`` (a RunList) whenever any run changes."""
    feed: Feed = request.app.state.feed
    version = _last_event_id(request)

    def step() -> tuple[list[str], bool]:
        nonlocal version
        if not feed.runs or feed.runs_version == version:
            return [], False
        version = feed.runs_version
        return [_sse("runs", feed.runs, version)], False

    return _event_stream(request, RUNS, step)


_NO_BUFFER = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
