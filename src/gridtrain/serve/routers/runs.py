"""``/api/runs``: submit, list, follow, cancel, resume and download trainings.

Handlers only translate HTTP to ``store`` (reading run directories) and ``launch`` (the CLI's
own detached driver); there is no training logic here.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import zipfile
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, StreamingResponse
from starlette.background import BackgroundTask

from gridtrain.serve import launch
from gridtrain.serve.schemas import (
    ExportList,
    Message,
    PlotList,
    Problems,
    RunList,
    RunSummary,
    SubmitRequest,
)
from gridtrain.serve.store import RunStore, read_history

router = APIRouter(prefix="/api", tags=["runs"])

POLL_S = 1.0
HEARTBEAT_S = 15.0
ENDED = frozenset({"finished", "stopped", "lost"})


def _store(request: Request) -> RunStore:
    store: RunStore = request.app.state.store
    return store


@router.get("/runs")
def list_runs(request: Request) -> RunList:
    """Every run under --root, newest first."""
    return RunList(runs=_store(request).summaries())


@router.post("/runs", status_code=201, responses={409: {}, 422: {"model": Problems}})
def submit(body: SubmitRequest, request: Request) -> RunSummary:
    """Validate the config and start it as ``gridtrain train --detach`` in ROOT/NAME."""
    config = launch.parse_config(body.config, body.yaml)
    launch.submit(body.name, config, request.app.state.settings)
    return _store(request).summary(body.name)


@router.get("/runs/{name}")
def summary(name: str, request: Request) -> RunSummary:
    return _store(request).summary(name)


@router.get("/runs/{name}/status")
def status(name: str, request: Request) -> dict[str, Any]:
    """Exactly what ``gridtrain status --json RUN_DIR`` prints (driver, PS, worker jobs)."""
    from gridtrain.train.status import run_status

    return run_status(_store(request).files(name).path)


@router.post("/runs/{name}/cancel")
def cancel(name: str, request: Request) -> Message:
    """``gridtrain cancel``: the driver checkpoints and stops; queued jobs are removed."""
    return Message(name=name, message=launch.cancel(_store(request).files(name)))


@router.post("/runs/{name}/resume", responses={409: {}})
def resume(name: str, request: Request) -> Message:
    """``gridtrain train --resume RUN_DIR --detach``."""
    files = _store(request).files(name)
    return Message(name=name, message=launch.resume(files, request.app.state.settings))


@router.get("/runs/{name}/history")
def history(name: str, request: Request) -> list[dict[str, Any]]:
    """history.jsonl: one record per trained shard and per epoch (the training curves)."""
    return read_history(_store(request).files(name))


@router.get("/runs/{name}/metrics")
def metrics(name: str, request: Request) -> dict[str, Any]:
    """metrics.json of a finished run."""
    files = _store(request).files(name)
    if not files.metrics.is_file():
        raise HTTPException(404, f"run {name!r} has no metrics yet (phase: not finished)")
    data: dict[str, Any] = json.loads(files.metrics.read_text())
    return data


@router.get("/runs/{name}/model", response_class=FileResponse)
def model(name: str, request: Request) -> FileResponse:
    """model.keras (load it with keras.models.load_model or gridtrain.models.load_model)."""
    files = _store(request).files(name)
    if not files.model.is_file():
        raise HTTPException(404, f"run {name!r} has no model.keras yet")
    return FileResponse(files.model, filename=f"{name}.keras")


@router.get("/runs/{name}/plots")
def plots(name: str, request: Request) -> PlotList:
    return PlotList(plots=RunStore.plots(_store(request).files(name)))


@router.get("/runs/{name}/plots/{plot}", response_class=FileResponse)
def plot(name: str, plot: str, request: Request) -> FileResponse:
    """One PNG of RUN_DIR/plots (names from the list above only)."""
    files = _store(request).files(name)
    if plot not in RunStore.plots(files):
        raise HTTPException(404, f"run {name!r} has no plot {plot!r}")
    return FileResponse(files.plots / plot, media_type="image/png")


@router.get("/runs/{name}/export")
def export_files(name: str, request: Request) -> ExportList:
    """The files of RUN_DIR/export (written by ``gridtrain export``)."""
    return ExportList(files=list(RunStore.export_files(_store(request).files(name))))


@router.get("/runs/{name}/export.zip", response_class=FileResponse)
def export_zip(name: str, request: Request) -> FileResponse:
    """RUN_DIR/export as one zip file."""
    found = RunStore.export_files(_store(request).files(name))
    if not found:
        raise HTTPException(404, f"run {name!r} has no export; run gridtrain export on it")
    fd, path = tempfile.mkstemp(suffix=".zip")
    with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as z:
        for relative, source in found.items():
            z.write(source, f"export/{relative}")
    return FileResponse(
        path, filename=f"{name}-export.zip", background=BackgroundTask(os.unlink, path)
    )


@router.get("/runs/{name}/export/{path:path}", response_class=FileResponse)
def export_file(name: str, path: str, request: Request) -> FileResponse:
    """One file of RUN_DIR/export, by a path the list above gives."""
    found = RunStore.export_files(_store(request).files(name))
    if path not in found:
        raise HTTPException(404, f"run {name!r} has no export file {path!r}")
    return FileResponse(found[path], filename=path.rsplit("/", 1)[-1])


def _sse(event: str, data: Any) -> str:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


Step = Callable[[], Awaitable[tuple[list[str], bool]]]


def _event_stream(request: Request, step: Step) -> StreamingResponse:
    """Server-sent events: ``step`` polled every POLL_S returns the events to send and whether the
    stream is over; a keep-alive comment goes out after HEARTBEAT_S without events."""

    async def stream() -> AsyncIterator[str]:
        quiet = 0.0
        while not await request.is_disconnected():
            events, ended = await step()
            for event in events:
                yield event
            if ended:
                return
            quiet = 0.0 if events else quiet + POLL_S
            if quiet >= HEARTBEAT_S:
                yield ": keep-alive\n\n"
                quiet = 0.0
            await asyncio.sleep(POLL_S)

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
