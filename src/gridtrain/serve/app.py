"""The application factory: ``create_app(settings)`` assembles routers, auth and limits.

Layer: serve. Every route depends on ``require_token``; errors of the layers below become JSON
(422 naming the config key, 404 for an unknown run, 409 for a run that exists or is running);
a request without a valid token gets 401, and a browser asking for a page gets the login page
with it (which holds no data: it only turns the token in the link's fragment into a cookie).
The lifespan ends the event streams when the service is told to stop; the server then waits at
most SHUTDOWN_GRACE_S for the other responses (a model being downloaded).
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.templating import Jinja2Templates

from gridtrain import __version__
from gridtrain.errors import ConfigError, GridtrainError
from gridtrain.serve.launch import InvalidConfig, RunExists, StartFailed
from gridtrain.serve.routers import configs, events, pages, runs, session
from gridtrain.serve.security import BodyLimit, require_token
from gridtrain.serve.settings import ServeSettings
from gridtrain.serve.store import RunStore, UnknownRun

SHUTDOWN_GRACE_S = 3  # uvicorn's timeout_graceful_shutdown: responses still open then are cut
EXIT_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def _on_exit_signals(callback: Callable[[], None]) -> Iterator[None]:
    """Call ``callback`` on SIGTERM and SIGINT, then the handler installed before (uvicorn's).

    The server's own handler only stops accepting and waits for open responses, which an event
    stream never ends by itself. ``callback`` runs inside a signal handler: it must only set flags
    or schedule work thread-safely.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach the main thread only; the lifespan's exit still stops the streams
        return
    previous: dict[int, Any] = {sig: signal.getsignal(sig) for sig in EXIT_SIGNALS}

    def handler(sig: int, frame: FrameType | None) -> None:
        callback()
        chained = previous[sig]
        if callable(chained):
            chained(sig, frame)
        elif chained == signal.SIG_DFL:
            signal.signal(sig, signal.SIG_DFL)
            signal.raise_signal(sig)

    for sig in EXIT_SIGNALS:
        signal.signal(sig, handler)
    try:
        yield
    finally:
        for number, chained in previous.items():
            if signal.getsignal(number) is handler:
                signal.signal(number, chained)


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    feed: events.Feed = app.state.feed
    loop = asyncio.get_running_loop()

    def stopping() -> None:
        feed.stopping = True  # seen by every stream within POLL_S, even if the loop is busy
        loop.call_soon_threadsafe(feed.stop)

    with _on_exit_signals(stopping):
        yield
    feed.stop()


def _problems(status: int, problems: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse({"detail": problems}, status_code=status)


def create_app(settings: ServeSettings) -> Any:
    """The ASGI application for ``settings`` (FastAPI wrapped in the body-size limit)."""
    app = FastAPI(
        title="gridtrain",
        version=__version__,
        description="Submit, follow and collect gridtrain trainings under one folder.",
        dependencies=[Depends(require_token)],
        docs_url=None,  # Swagger UI and ReDoc load their code from a CDN
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.store = RunStore(settings.root)
    app.state.feed = events.Feed(
        app.state.store, settings.max_streams, settings.max_streams_per_client
    )
    folder = Path(str(resources.files("gridtrain.serve").joinpath("templates")))
    app.state.templates = Jinja2Templates(directory=folder)
    for router in (runs.router, events.router, configs.router, session.router, pages.router):
        app.include_router(router)

    @app.get("/api/openapi.json", include_in_schema=False)
    def openapi() -> dict[str, Any]:
        return app.openapi()

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException) -> Response:
        wants_page = not request.url.path.startswith("/api/") and request.method == "GET"
        if err.status_code == 401 and wants_page:
            page = (folder / "login.html").read_text()
            return HTMLResponse(page, status_code=401, headers=err.headers)
        return JSONResponse({"detail": err.detail}, err.status_code, headers=err.headers)

    @app.exception_handler(InvalidConfig)
    async def invalid_config(request: Request, err: InvalidConfig) -> Response:
        return _problems(422, [p.model_dump() for p in err.problems])

    @app.exception_handler(UnknownRun)
    async def unknown_run(request: Request, err: UnknownRun) -> Response:
        return JSONResponse({"detail": str(err)}, 404)

    @app.exception_handler(RunExists)
    async def run_exists(request: Request, err: RunExists) -> Response:
        return _problems(409, [{"key": "name", "message": str(err)}])

    @app.exception_handler(StartFailed)
    async def start_failed(request: Request, err: StartFailed) -> Response:
        status = 409 if "is being trained" in str(err) else 422
        return _problems(status, [{"key": None, "message": str(err)}])

    @app.exception_handler(ConfigError)
    async def config_error(request: Request, err: ConfigError) -> Response:
        key = "name" if str(err).startswith("run name") else None
        return _problems(422, [{"key": key, "message": str(err)}])

    @app.exception_handler(GridtrainError)
    async def gridtrain_error(request: Request, err: GridtrainError) -> Response:
        return _problems(409, [{"key": None, "message": str(err)}])

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, err: RequestValidationError) -> Response:
        problems = [
            {"key": ".".join(str(p) for p in e["loc"][1:]) or None, "message": e["msg"]}
            for e in err.errors()
        ]
        return _problems(422, problems)

    return BodyLimit(app, settings.max_body)
