"""``/api/runs``: submit, list, cancel, resume and download trainings (``events`` streams them).

Handlers only translate HTTP to ``store`` (reading run directories) and ``launch`` (the CLI's
own detached driver); there is no training logic here.
"""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from typing import Any

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import FileResponse
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
from gridtrain.serve.store import RunStore, own_file, read_history

router = APIRouter(prefix="/api", tags=["runs"])


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
    if not own_file(files.metrics):
        raise HTTPException(404, f"run {name!r} has no metrics yet (phase: not finished)")
    data: dict[str, Any] = json.loads(files.metrics.read_text())
    return data


@router.get("/runs/{name}/model", response_class=FileResponse)
def model(name: str, request: Request) -> FileResponse:
    """model.keras (load it with keras.models.load_model or gridtrain.models.load_model)."""
    files = _store(request).files(name)
    if not own_file(files.model):
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
