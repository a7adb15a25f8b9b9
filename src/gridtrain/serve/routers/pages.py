"""The web page: the runs table and submit form, one run's view, and their static assets.

Pages are rendered from ``templates/`` and carry the session's CSRF token; assets are files of
``static/`` served by name (plain JavaScript and CSS, no build step, nothing fetched elsewhere;
and the example config the submit form offers).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import HTMLResponse

from gridtrain.serve.security import csrf_token

router = APIRouter(tags=["pages"], include_in_schema=False)

# example.yaml: the project's config/config.yaml, which the form offers to start from
STATIC_TYPES = {
    ".js": "text/javascript",
    ".css": "text/css",
    ".svg": "image/svg+xml",
    ".yaml": "application/yaml",
}


def _render(request: Request, template: str, **context: Any) -> HTMLResponse:
    settings = request.app.state.settings
    response: HTMLResponse = request.app.state.templates.TemplateResponse(
        request,
        template,
        {"csrf": csrf_token(settings.token), "root": str(settings.root), **context},
    )
    return response


@router.get("/", response_class=HTMLResponse)
def runs_page(request: Request) -> HTMLResponse:
    return _render(request, "runs.html")


@router.get("/runs/{name}", response_class=HTMLResponse)
def run_page(name: str, request: Request) -> HTMLResponse:
    request.app.state.store.files(name)  # 404 for an unknown run
    return _render(request, "run.html", name=name)


@router.get("/static/{asset}")
def static(asset: str) -> Response:
    suffix = asset[asset.rfind(".") :] if "." in asset else ""
    folder = resources.files("gridtrain.serve").joinpath("static")
    names = {entry.name for entry in folder.iterdir()}
    if asset not in names or suffix not in STATIC_TYPES:
        raise HTTPException(404, f"no asset {asset!r}")
    return Response(folder.joinpath(asset).read_bytes(), media_type=STATIC_TYPES[suffix])
