"""``/api/configs``: check a config against the schema before submitting it."""

from __future__ import annotations

from fastapi import APIRouter, Request

from gridtrain.serve.launch import check_config, parse_config
from gridtrain.serve.schemas import Problems, Validated, ValidateRequest

router = APIRouter(prefix="/api/configs", tags=["configs"])


@router.post("/validate", responses={422: {"model": Problems}})
def validate(body: ValidateRequest, request: Request) -> Validated:
    """The config with the schema's defaults filled in, or 422 naming each wrong key."""
    config = parse_config(body.config, body.yaml)
    return Validated(config=check_config(config, request.app.state.settings))
