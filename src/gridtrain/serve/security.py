"""Who may use the service, and what a submitted config may name.

Layer: serve. One FastAPI dependency (``require_token``) guards every route: the token comes in an
``Authorization: Bearer`` header or in the session cookie that the login page sets, never in a
query string (which ends up in logs and browser history), and is compared in constant time.
A state-changing request authenticated by the cookie must also carry the CSRF token in the
``X-CSRF-Token`` header and must not come from another site (``Sec-Fetch-Site``, ``Origin``);
a request with the Bearer header cannot be forged by another page (browsers only send that
header when a script of this origin sets it). ``BodyLimit`` refuses large bodies before reading
them. ``check_model`` keeps a config from naming code outside ``--allow-models``.
"""

from __future__ import annotations

import hashlib
import hmac
from pathlib import Path
from typing import Any

from fastapi import HTTPException, Request, status

from gridtrain.errors import ConfigError
from gridtrain.serve.settings import ServeSettings

COOKIE = "gridtrain_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def csrf_token(token: str) -> str:
    """The CSRF token of a session: derived from the access token, useless without the page."""
    return hmac.new(token.encode(), b"gridtrain-serve-csrf", hashlib.sha256).hexdigest()


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def require_token(request: Request) -> None:
    """The dependency on every route: a valid token, and for cookie sessions a CSRF check."""
    settings: ServeSettings = request.app.state.settings
    header = request.headers.get("authorization", "")
    if header:
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not _same(given.strip(), settings.token):
            raise _unauthorized("invalid token in the Authorization header")
        return
    cookie = request.cookies.get(COOKIE, "")
    if not cookie:
        raise _unauthorized(
            "no token: send 'Authorization: Bearer TOKEN' or open the login link that "
            "gridtrain serve printed (a token in the query string is not accepted)"
        )
    if not _same(cookie, settings.token):
        raise _unauthorized("invalid session cookie; open the login link again")
    if request.method not in SAFE_METHODS:
        _check_same_site(request, settings.token)


def _check_same_site(request: Request, token: str) -> None:
    site = request.headers.get("sec-fetch-site")
    if site not in (None, "same-origin", "none"):
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"cross-site request ({site}) refused")
    origin = request.headers.get("origin")
    host = request.headers.get("host", "")
    if origin and origin.split("://", 1)[-1] != host:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"request from origin {origin} refused")
    if not _same(request.headers.get(CSRF_HEADER, ""), csrf_token(token)):
        raise HTTPException(status.HTTP_403_FORBIDDEN, "missing or wrong CSRF token")


class BodyLimit:
    """ASGI middleware: a body over ``limit`` bytes gets 413, announced or not, before it is read.

    A declared ``Content-Length`` over the limit is refused before the first byte; a chunked body
    is counted as it arrives and refused at the first byte past the limit.
    """

    def __init__(self, app: Any, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.limit):
            await _too_large(send, self.limit)
            return
        seen = 0
        started = refused = False

        async def counted_receive() -> Any:
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:  # answer now; the application sees the client leave
                    if not started:
                        refused = True
                        await _too_large(send, self.limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Any) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        await self.app(scope, counted_receive, tracking_send)


async def _too_large(send: Any, limit: int) -> None:
    body = f'{{"detail":"request body over {limit} bytes refused"}}'.encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def check_model(config: dict[str, Any], allow_models: Path | None) -> None:
    """Refuse a user model (``train.model.name`` with a ':') outside ``allow_models``.

    A file ("net.py:build", relative to the allowed folder) must resolve inside that folder and
    is rewritten to its absolute path; a module name ("pkg.mod:build") is refused, since finding
    it would already import (run) its packages.
    """
    model = (config.get("train") or {}).get("model") or {}
    name = str(model.get("name", ""))
    if ":" not in name:
        return  # a built-in model: no user code
    target, _, function = name.rpartition(":")
    if allow_models is None:
        from gridtrain.models.zoo import MODELS

        raise ConfigError(
            f"train.model.name: {name!r} names user code, which this service does not run; "
            f"use a built-in model ({', '.join(MODELS)}), or restart gridtrain serve with "
            "--allow-models DIR and put the file there"
        )
    if not (target.endswith(".py") or "/" in target):
        raise ConfigError(
            f"train.model.name: {name!r}: a module name is not accepted by gridtrain serve; "
            f"name a file inside {allow_models} ('file.py:{function}')"
        )
    folder = allow_models.resolve()
    path = (folder / target).resolve()
    if not path.is_relative_to(folder):
        raise ConfigError(
            f"train.model.name: {name!r} is outside the allowed folder {folder} (--allow-models)"
        )
    model["name"] = f"{path}:{function}"
