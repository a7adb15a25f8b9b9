"""``/api/runs/{name}/events`` and ``/api/events``: server-sent events that follow the runs.

Handlers only read run directories through ``store``; there is no training logic here. A stream
never ends by itself while its run trains, and the server waits for open responses before it
exits, so every stream also ends when ``Streams.stop`` is called (the app's lifespan calls it on
SIGTERM and SIGINT): within POLL_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from gridtrain.serve.schemas import RunList
from gridtrain.serve.store import RunStore, read_history

router = APIRouter(prefix="/api", tags=["runs"])

POLL_S = 1.0
HEARTBEAT_S = 15.0
ENDED = frozenset({"finished", "stopped", "lost"})


class Streams:
    """The open event streams of one service, and whether it is stopping."""

    def __init__(self) -> None:
        self.stopping = False  # a plain flag: set from a signal handler, read every POLL_S
        self._stopped = asyncio.Event()

    def stop(self) -> None:
        """End every stream (in the event loop's thread); new ones end at once."""
        self.stopping = True
        self._stopped.set()

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less when the service stops."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopped.wait(), seconds)


def _store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


Step = Callable[[], Awaitable[tuple[list[str], bool]]]


def _event_stream(request: Request, step: Step) -> StreamingResponse:
    """Server-sent events: ``step`` polled every POLL_S returns the events to send and whether the
    stream is over; a keep-alive comment goes out after HEARTBEAT_S without events."""

    streams: Streams = request.app.state.streams

    async def stream() -> AsyncIterator[str]:
        quiet = 0.0
        while not streams.stopping and not await request.is_disconnected():
            events, ended = await step()
            for event in events:
                yield event
            if ended:
                return
            quiet = 0.0 if events else quiet + POLL_S
            if quiet >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                quiet = 0.0
            await streams.pause(POLL_S)

    return StreamingResponse(stream(), media_type="text/event-stream", headers=_NO_BUFFER)


@router.get("/runs/{name}/events", response_class=StreamingResponse)
async def run_events(name: str, request: Request) -> StreamingResponse:
    """Server-sent events: ``progress`` (a RunSummary) on every change, ``history`` (new records
    of history.jsonl), and ``end`` once the run is finished, stopped or lost."""
    store = _store(request)
    files = store.files(name)
    last, sent = "", 0

    async def step() -> tuple[list[str], bool]:
        nonlocal last, sent
        run = await run_in_threadpool(store.summary, name)
        records = await run_in_threadpool(read_history, files)
        events = []
        if len(records) > sent:
            events.append(_sse("history", records[sent:]))
            sent = len(records)
        current = run.model_dump_json()
        if current != last:
            events.append(f"event: progress\ndata: {current}\n\n")
            last = current
        ended = run.phase in ENDED
        if ended:
            events.append(_sse("end", {"name": name, "phase": run.phase}))
        return events, ended

    return _event_stream(request, step)


@router.get("/events", response_class=StreamingResponse)
async def runs_events(request: Request) -> StreamingResponse:
    """Server-sent events: ``runs`` (a RunList) whenever any run changes."""
    store = _store(request)
    last = ""

    async def step() -> tuple[list[str], bool]:
        nonlocal last
        current = RunList(runs=await run_in_threadpool(store.summaries)).model_dump_json()
        if current == last:
            return [], False
        last = current
        return [f"event: runs\ndata: {current}\n\n"], False

    return _event_stream(request, step)


_NO_BUFFER = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
