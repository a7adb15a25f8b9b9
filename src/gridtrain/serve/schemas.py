"""The request and response bodies of the REST API: one typed model each.

Layer: serve. The OpenAPI schema (``/api/openapi.json``) is generated from these, and the Python
client (``gridtrain.serve.client``) reads the same fields.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class SubmitRequest(BaseModel):
    """A training to start: its run name and its config, as a mapping or as YAML text."""

    name: str = Field(description="the run's folder under --root: [A-Za-z0-9][A-Za-z0-9_-]{0,63}")
    config: dict[str, Any] | None = Field(None, description="the config as a JSON object")
    yaml: str | None = Field(None, description="the config as YAML text (instead of config)")


class ValidateRequest(BaseModel):
    """A config to check against the schema without starting anything."""

    config: dict[str, Any] | None = None
    yaml: str | None = None


class ConfigProblem(BaseModel):
    """One thing wrong with a config: the key (dotted path; null for the whole config)."""

    key: str | None
    message: str


class Problems(BaseModel):
    """The body of a 422: every problem found."""

    detail: list[ConfigProblem]


class Validated(BaseModel):
    """A config that passed: with the schema's defaults filled in."""

    config: dict[str, Any]


class Progress(BaseModel):
    """How far a run is, from its history.jsonl."""

    epoch: int = Field(description="epochs fully trained")
    epochs: int
    shards_done: int = Field(description="training shards completed, all epochs together")
    shards_total: int = Field(description="training shards in all epochs together")
    fraction: float
    train_loss: float | None = None
    val_loss: float | None = None
    val_auc: float | None = None


class RunSummary(BaseModel):
    """One run as the runs table shows it."""

    name: str
    phase: str = Field(description="training, finished, stopped, lost or prepared")
    executor: str
    workers: int
    progress: Progress
    auc: float | None = Field(None, description="the final validation AUC (metrics.json)")
    created: float = Field(description="when the run was prepared (Unix time)")
    files: list[str] = Field(description="downloads present: model, export, plots")


class RunList(BaseModel):
    runs: list[RunSummary]


class Message(BaseModel):
    """What a cancel or resume did, in words."""

    name: str
    message: str


class PlotList(BaseModel):
    plots: list[str]


class ExportList(BaseModel):
    files: list[str] = Field(description="paths relative to RUN_DIR/export")
