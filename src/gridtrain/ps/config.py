"""How a parameter server runs: network, limits, checkpoints and metrics (``ServerConfig``).

Layer: ps, settings only: no sockets, no threads. The server and each connection's session read
it; the CLI and the training driver make it.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path

from gridtrain.errors import ConfigError
from gridtrain.ps.admission import StartupBudget


@dataclass(frozen=True)
class ServerConfig:
    """Network, resource and persistence settings of a parameter server.

    ``max_connections`` bounds authenticated connections (workers and monitors) only. Peers that
    have not yet proved the secret have their own budget, ``max_startups`` (in total, with random
    early drop) and ``per_source_max_startups`` (per source address), and must finish the whole
    handshake within ``handshake_timeout`` seconds; see ``gridtrain.ps.admission``.
    """

    host: str = "127.0.0.1"
    port_range: tuple[int, int] = (0, 0)
    read_timeout: float = 30.0
    idle_timeout: float = 3600.0
    handshake_timeout: float = 5.0
    min_rate: float = 1e6
    max_connections: int = 256
    max_startups: StartupBudget = field(default_factory=StartupBudget)
    per_source_max_startups: int = 8
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
        if self.per_source_max_startups < 1:
            raise ConfigError(
                f"per_source_max_startups ({self.per_source_max_startups}) must be >= 1; it "
                "bounds the handshakes one address may have open at once"
            )
        if not self.handshake_timeout > 0:
            raise ConfigError(
                f"handshake_timeout ({self.handshake_timeout}) must be > 0 seconds; it bounds "
                "the whole handshake of a new connection (e.g. 5)"
            )
        if (self.checkpoint_every or self.checkpoint_interval) and self.checkpoint_path is None:
            raise ConfigError("checkpoint_every/checkpoint_interval need a checkpoint path")
