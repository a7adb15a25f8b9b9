"""The parameter server: binds, accepts workers, checkpoints, and stops cleanly.

Layer: ps, network edge (server side). It owns sockets and threads; the center's consistency is
``center.py``'s job, each connection's handshake and messages ``session.py``'s, framing and MACs
``transport.py``'s. It never imports a training framework.

Concurrency: one thread per connection with blocking sockets and deadlines (cheap at the scale of
a grid pool, hundreds of workers; numpy, hashing and socket I/O release the GIL), one accept
thread, one housekeeping thread (periodic checkpoints and the metrics log). A connection stalls
only itself: its reads and writes have deadlines, it reads pushes into a buffer from a bounded
pool and holds no lock while doing I/O.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import Counter
from typing import Any

from gridtrain.errors import ConfigError, ProtocolError
from gridtrain.ps import auth
from gridtrain.ps.center import CenterStore, PushOutcome
from gridtrain.ps.checkpoint import write_checkpoint
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.leases import EpochSnapshots, LeaseBook
from gridtrain.ps.metrics import Metrics, MetricsLog
from gridtrain.ps.protocol import MessageType
from gridtrain.ps.session import BufferPool, Conversation, ServingContext
from gridtrain.ps.transport import Channel

log = logging.getLogger(__name__)

_ACCEPT_POLL = 0.2


def bind_first_free(host: str, port_range: tuple[int, int]) -> socket.socket:
    """A listening socket on the first free port of ``port_range`` (``(0, 0)``: any free port)."""
    low, high = port_range
    last_error: OSError | None = None
    for port in range(low, high + 1):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
        except OSError as err:
            sock.close()
            last_error = err
            continue
        return sock
    raise OSError(
        f"no free port on {host} in {low}-{high} ({last_error}); choose another --port-range"
    )


class ParameterServer:
    """Serves the center in ``store`` to workers that hold ``secret``.

    With ``leases`` it also hands out shard leases (``gridtrain train``); ``snapshots`` holds the
    centers of finished epochs for their validation tasks.
    """

    def __init__(
        self,
        store: CenterStore,
        secret: bytes,
        config: ServerConfig,
        *,
        leases: LeaseBook | None = None,
        snapshots: EpochSnapshots | None = None,
    ) -> None:
        if len(secret) < auth.MIN_SECRET_SIZE:
            raise ConfigError(f"secret must be at least {auth.MIN_SECRET_SIZE} bytes")
        self.store = store
        self.config = config
        self.metrics = Metrics()
        self._pool = BufferPool(store, config.receive_buffers)
        store.set_recycler(self._pool.repay)
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sessions: dict[int, Channel] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._next_connection = 0
        # connections dropped for breaking the protocol or its deadlines, by the error's class
        self._dropped: Counter[str] = Counter()
        self._service_threads: list[threading.Thread] = []
        self._checkpoint_due = threading.Event()
        self._checkpoint_lock = threading.Lock()
        self._checkpointed_version = store.version
        self._metrics_log = MetricsLog(config.metrics_log) if config.metrics_log else None
        self.leases = leases
        self._context = ServingContext(
            store=store,
            metrics=self.metrics,
            pool=self._pool,
            secret=secret,
            config=config,
            stopping=self._stopping,
            on_update=self._after_update,
            status=self.status,
            leases=leases,
            snapshots=snapshots,
            on_drop=self._record_drop,
        )

    # -- life cycle ----------------------------------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        if self._address is None:
            raise RuntimeError("the parameter server is not started; call start() first")
        return self._address

    def start(self) -> tuple[str, int]:
        """Bind and start serving in background threads; returns (host, port)."""
        self._listener = bind_first_free(self.config.host, self.config.port_range)
        self._listener.settimeout(_ACCEPT_POLL)
        host, port = self._listener.getsockname()[:2]
        self._address = (str(host), int(port))
        for target, name in ((self._accept_loop, "ps-accept"), (self._housekeeping, "ps-house")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._service_threads.append(thread)
        log.info("parameter server listening on %s:%d", *self.address)
        return self.address

    def stop(self, *, checkpoint: bool = True, timeout: float = 10.0) -> None:
        """Stop accepting, drop every connection, join threads, write a final checkpoint."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        self._checkpoint_due.set()  # wakes the housekeeping thread
        if self._listener is not None:
            try:
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes accept() on Linux
            except OSError:
                log.debug("listener shutdown", exc_info=True)
        self.store.close()
        self._pool.close()
        with self._lock:
            channels = list(self._sessions.values())
        for channel in channels:
            channel.close()
        deadline = time.monotonic() + timeout
        for thread in [*self._service_threads, *list(self._threads.values())]:
            thread.join(max(deadline - time.monotonic(), 0.01))
            if thread.is_alive():
                log.warning("thread %s did not stop within %g s", thread.name, timeout)
        if self._listener is not None:
            self._listener.close()
        if checkpoint and self.config.checkpoint_path is not None:
            self.checkpoint()
        if self._metrics_log is not None:
            self._write_metrics()
            self._metrics_log.close()

    def __enter__(self) -> ParameterServer:
        if self._listener is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until ``stop`` is called (True) or ``timeout`` passes (False)."""
        return self._stopping.wait(timeout)

    @property
    def connection_count(self) -> int:
        with self._lock:
            return len(self._sessions)

    @property
    def dropped(self) -> dict[str, int]:
        """Connections dropped so far, by the error that ended them (``{"ReadTimeoutError": 2}``).

        Counted before the connection is closed; busy refusals and clean goodbyes are not drops.
        """
        with self._lock:
            return dict(self._dropped)

    def _record_drop(self, error: BaseException) -> None:
        with self._lock:
            self._dropped[type(error).__name__] += 1

    def checkpoint(self) -> None:
        """Write a checkpoint now (no-op without a checkpoint path)."""
        path = self.config.checkpoint_path
        if path is None:
            return
        with self._checkpoint_lock:

            def write(snapshot: Any) -> None:
                write_checkpoint(path, snapshot)
                self._checkpointed_version = snapshot.version

            self.store.with_snapshot(write)

    # -- service threads -----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            try:
                sock, peer = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopping.is_set():
                    return
                log.exception("accept failed")
                time.sleep(_ACCEPT_POLL)
                continue
            address = f"{peer[0]}:{peer[1]}"
            with self._lock:
                busy = len(self._sessions) >= self.config.max_connections
                connection = self._next_connection
                self._next_connection += 1
                if not busy:
                    self._sessions[connection] = Channel(
                        sock, read_timeout=self.config.read_timeout, min_rate=self.config.min_rate
                    )
            if busy:
                log.warning("refusing %s: %d connections open", address, len(self._sessions))
                self._refuse_busy(sock)
                continue
            thread = threading.Thread(
                target=self._serve, args=(connection, address), name=f"ps-conn-{connection}"
            )
            thread.daemon = True
            with self._lock:
                self._threads[connection] = thread
            thread.start()

    def _refuse_busy(self, sock: socket.socket) -> None:
        channel = Channel(sock, read_timeout=1.0)
        try:
            channel.send(
                MessageType.ERROR,
                meta={"code": "busy", "message": "parameter server is at its connection limit"},
            )
        except OSError:
            log.debug("could not tell a refused client why", exc_info=True)
        finally:
            channel.close()

    def _housekeeping(self) -> None:
        config = self.config
        now = time.monotonic()
        next_checkpoint = now + config.checkpoint_interval if config.checkpoint_interval else None
        next_metrics = now + config.metrics_interval if self._metrics_log else None
        while not self._stopping.is_set():
            waits = [t - time.monotonic() for t in (next_checkpoint, next_metrics) if t is not None]
            self._checkpoint_due.wait(max(min([1.0, *waits]), 0.0))
            if self._stopping.is_set():
                return
            now = time.monotonic()
            if self.leases is not None:
                self.leases.expire()
            try:
                if self._checkpoint_due.is_set() or (
                    next_checkpoint is not None and now >= next_checkpoint
                ):
                    self._checkpoint_due.clear()
                    if self.store.version != self._checkpointed_version:
                        self.checkpoint()
                    if config.checkpoint_interval:
                        next_checkpoint = now + config.checkpoint_interval
                if next_metrics is not None and now >= next_metrics:
                    self._write_metrics()
                    next_metrics = now + config.metrics_interval
            except OSError:
                log.exception("housekeeping failed; will retry")

    def _write_metrics(self) -> None:
        if self._metrics_log is not None:
            self._metrics_log.write(self.status(mark=True))

    def _after_update(self, outcome: PushOutcome) -> None:
        every = self.config.checkpoint_every
        if every and outcome.version - self._checkpointed_version >= every:
            self._checkpoint_due.set()

    def status(self, *, mark: bool = False) -> dict[str, Any]:
        snapshot = self.metrics.snapshot(self.store.version, self.store.counter_values(), mark=mark)
        snapshot["algorithm"] = self.store.config.to_dict()
        snapshot["checkpointed_version"] = self._checkpointed_version
        snapshot["connections"] = self.connection_count
        snapshot["dropped"] = self.dropped
        snapshot["address"] = "{}:{}".format(*self._address) if self._address else ""
        if self.leases is not None:
            snapshot["leases"] = self.leases.progress()
        return snapshot

    # -- one connection ------------------------------------------------------------------------

    def _serve(self, connection: int, address: str) -> None:
        with self._lock:
            channel = self._sessions[connection]
        try:
            if self.config.tls is not None:
                channel.replace_socket(self._wrap_tls(channel.sock))
            Conversation(self._context, channel, address).run()
        except (ProtocolError, OSError) as err:  # TLS handshake failures
            if not self._stopping.is_set():
                log.warning("connection %s: %s", address, err)
                self._record_drop(err)
        finally:
            channel.close()
            with self._lock:
                self._sessions.pop(connection, None)
                self._threads.pop(connection, None)

    def _wrap_tls(self, sock: socket.socket) -> ssl.SSLSocket:
        assert self.config.tls is not None
        sock.settimeout(self.config.handshake_timeout)
        return self.config.tls.wrap_socket(sock, server_side=True)
