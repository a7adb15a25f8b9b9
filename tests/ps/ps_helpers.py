"""Helpers for the parameter-server tests: real servers on 127.0.0.1, stopped in ``finally``."""

from __future__ import annotations

import threading
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from gridtrain.ps import auth
from gridtrain.ps.center import CenterStore
from gridtrain.ps.client import PSClient
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.ps.server import ParameterServer


def small_model(seed: int = 0) -> list[np.ndarray]:
    """A little dense network's weights: kernel, bias, kernel, bias."""
    rng = np.random.default_rng(seed)
    return [
        rng.normal(size=(6, 4)).astype(np.float32),
        np.zeros(4, np.float32),
        rng.normal(size=(4, 1)).astype(np.float32),
        np.zeros(1, np.float32),
    ]


def like(weights: list[np.ndarray], value: float) -> list[np.ndarray]:
    return [np.full_like(w, value) for w in weights]


@contextmanager
def running_server(
    weights: list[np.ndarray] | None = None,
    algorithm: AlgorithmConfig | None = None,
    **server_options: Any,
) -> Iterator[tuple[ParameterServer, bytes]]:
    """A started server on 127.0.0.1:0 and its secret; always stopped on exit."""
    weights = small_model() if weights is None else weights
    store = CenterStore([w.copy() for w in weights], algorithm or AlgorithmConfig(optimizer="add"))
    secret = auth.new_secret()
    options: dict[str, Any] = {"read_timeout": 2.0, "handshake_timeout": 2.0}
    options.update(server_options)
    server = ParameterServer(store, secret, ServerConfig(**options))
    server.start()
    try:
        yield server, secret
    finally:
        server.stop(timeout=10.0)


@contextmanager
def connected(
    server: ParameterServer, secret: bytes, weights: list[np.ndarray] | None = None, **kw: Any
) -> Iterator[PSClient]:
    client = PSClient(server.address, secret, small_model() if weights is None else weights, **kw)
    client.connect()
    try:
        yield client
    finally:
        client.close()


def run_threads(targets: list[Callable[[], None]], timeout: float = 60.0) -> list[BaseException]:
    """Run callables in threads, join them all (bounded), return the errors they raised."""
    errors: list[BaseException] = []
    lock = threading.Lock()

    def wrap(target: Callable[[], None]) -> None:
        try:
            target()
        except BaseException as err:
            where = "".join(traceback.format_tb(err.__traceback__)[-4:])
            err.add_note(f"in thread {threading.current_thread().name}:\n{where}")
            with lock:
                errors.append(err)

    threads = [threading.Thread(target=wrap, args=(t,), daemon=True) for t in targets]
    try:
        for thread in threads:
            thread.start()
    finally:
        for thread in threads:
            if thread.ident is not None:
                thread.join(timeout)
    alive = [thread.name for thread in threads if thread.is_alive()]
    if alive:
        errors.append(TimeoutError(f"threads still running after {timeout} s: {alive}"))
    return errors


def described(errors: list[BaseException]) -> str:
    """The first errors of ``run_threads`` with where each was raised, for an assertion message."""
    return "\n".join(f"{err!r}\n" + "\n".join(getattr(err, "__notes__", ())) for err in errors[:3])
