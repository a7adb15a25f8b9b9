"""``/api/session``: turn the token into a session cookie for the web page, and back."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from gridtrain.serve.security import COOKIE

router = APIRouter(prefix="/api/session", tags=["session"])


@router.post("", status_code=204)
def login(request: Request, response: Response) -> None:
    """Set the session cookie (HttpOnly, SameSite=Strict; Secure under TLS) for the token in the
    header."""
    response.set_cookie(
        COOKIE,
        request.app.state.settings.token,
        httponly=True,
        samesite="strict",
        path="/",
        secure=request.url.scheme == "https",
    )


@router.delete("", status_code=204)
def logout(response: Response) -> None:
    """Forget the session cookie."""
    response.delete_cookie(COOKIE, path="/")
