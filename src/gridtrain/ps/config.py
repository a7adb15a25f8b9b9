"""How a parameter server runs: network, limits, checkpoints and metrics (``ServerConfig``).

Layer: ps, settings only: no sockets, no threads. The server and each connection's session read
it; the CLI and the training driver make it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

from gridtrain.errors import ConfigError


@dataclass(frozen=True)
class ServerConfig:
    """Network, resource and persistence settings of a parameter server."""

    host: str = "127.0.0.1"
    port_range: tuple[int, int] = (0, 0)
    read_timeout: float = 30.0
    idle_timeout: float = 3600.0
    handshake_timeout: float = 10.0
    min_rate: float = 1e6
    max_connections: int = 256
    receive_buffers: int = 4
    checkpoint_path: Path | None = None
    checkpoint_every: int = 0
    checkpoint_interval: float = 0.0
    metrics_log: Path | None = None
    metrics_interval: float = 10.0
    tls: ssl.SSLContext | None = None

    def __post_init__(self) -> None:
        low, high = self.port_range
        if not (0 <= low <= high <= 65535) or (low == 0 and high != 0):
            raise ConfigError(
                f"port range {low}-{high} is invalid; give one port (e.g. 9000), a range "
                "(e.g. 9000-9100) or 0 for any free port"
            )
        if self.max_connections < 1 or self.receive_buffers < 1:
            raise ConfigError(
                f"max_connections ({self.max_connections}) and receive_buffers "
                f"({self.receive_buffers}) must be >= 1"
            )
        if (self.checkpoint_every or self.checkpoint_interval) and self.checkpoint_path is None:
            raise ConfigError("checkpoint_every/checkpoint_interval need a checkpoint path")
