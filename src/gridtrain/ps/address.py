"""Where a parameter server can be reached: the address file beside its secret.

Layer: ps, files. ``write_address_file`` is what a started server (``gridtrain ps serve``, the
training driver) leaves for its workers and for ``gridtrain status``; it is not secret, but it
is written mode 0600 like the secret beside it, and whole (``gridtrain.files``).
"""

from __future__ import annotations

import socket
from pathlib import Path

from gridtrain.files import write_text


def write_address_file(path: Path, host: str, port: int) -> None:
    """Write HOST:PORT; a wildcard bind writes this host's fully qualified name."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, f"{host}:{port}\n", mode=0o600)
