"""What one ``gridtrain serve`` process is configured with, its access token and run names.

Layer: serve, foundation of the service. Pure values and the token file; no web framework here.
"""

from __future__ import annotations

import os
import re
import secrets
import stat
from dataclasses import dataclass, field
from pathlib import Path

from gridtrain.errors import ConfigError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
TOKEN_FILE = ".serve-token"
MAX_BODY = 1 << 20  # 1 MiB: far more than any config; larger bodies are refused with 413
MAX_STREAMS = 64  # open event streams in all; a page holds one or two
MAX_STREAMS_PER_CLIENT = 8  # ... and from one client: a few tabs and a notebook
# A run's name is one path component under --root: letters, digits, "_" and "-" (no dot, so no
# "..", no hidden file, no extension games), at most 64 characters.
RUN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def check_run_name(name: str) -> str:
    """``name`` if it is a valid run name; ``ConfigError`` otherwise."""
    if not RUN_NAME.fullmatch(name):
        raise ConfigError(
            f"run name {name[:80]!r}: use 1-64 letters, digits, '_' or '-', starting with a letter "
            "or digit (for example 'mlp-2024-06')"
        )
    return name


@dataclass(frozen=True)
class ServeSettings:
    """One service: the folder of its runs, who may use it, and what a config may name."""

    root: Path
    token: str
    allow_models: Path | None = None
    max_body: int = MAX_BODY
    # Besides root, the folders whose files a config may read (--allow-data), and the storage
    # URL prefixes it may name (--allow-stage); see gridtrain.serve.confine.
    allow_data: tuple[Path, ...] = ()
    allow_stage: tuple[str, ...] = ()
    # The working directory of the drivers it starts: relative paths in a config (the dataset's
    # outdir) mean what they mean to `gridtrain train` run from here.
    workdir: Path = field(default_factory=Path.cwd)
    # Open event streams (each a page or a notebook following runs), in all and from one client
    # (address and credential): each holds a connection; more are refused with 429.
    max_streams: int = MAX_STREAMS
    max_streams_per_client: int = MAX_STREAMS_PER_CLIENT

    def __post_init__(self) -> None:
        if len(self.token) < 16:
            raise ConfigError("the access token must have at least 16 characters")


def read_or_create_token(path: Path, *, new: bool = False) -> str:
    """The token in ``path`` (mode 0600), creating a random one when absent or when ``new``.

    A token file readable by others is refused: anyone who reads it can train as you.
    """
    if not new and path.exists():
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(
                f"{path} is readable by others (mode {mode:o}); run chmod 600 {path}, or "
                "start with --new-token"
            )
        token = path.read_text().strip()
        if len(token) >= 16:
            return token
    token = secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(token + "\n")
    return token
