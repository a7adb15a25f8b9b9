"""The parameter server: binds, accepts workers, checkpoints, and stops cleanly.

Layer: ps, network edge (server side). It owns sockets and threads; the center's consistency is
``center.py``'s job, each connection's handshake and messages ``session.py``'s, framing and MACs
``transport.py``'s. It never imports a training framework.

Concurrency: one thread per connection with blocking sockets and deadlines (cheap at the scale of
a grid pool, hundreds of workers; numpy, hashing and socket I/O release the GIL), one accept
thread, one housekeeping thread (periodic checkpoints and the metrics log). A connection stalls
only itself: its reads and writes have deadlines, it reads pushes into a buffer from a bounded
pool and holds no lock while doing I/O.

Strangers: a connection gets a thread only once the accept loop has admitted it to the
pre-authentication budget (``admission.py``: ``max_startups`` in total with random early drop,
``per_source_max_startups`` per address); a refused one costs one non-blocking send of a "busy"
frame and an abortive close (RST, no TIME_WAIT), so a flood neither blocks the accept loop nor
grows threads or memory. Admitted, it must finish TLS and the handshake within
``handshake_timeout`` in total. On AUTH success it moves to the authenticated budget
(``max_connections``); when that is full the peer, now authenticated, is told "busy" and dropped.
Strangers thus never take a slot from a worker that has proved the secret.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import struct
import threading
import time
from collections import Counter
from functools import partial
from typing import Any

from gridtrain.errors import ConfigError, HandshakeDeadlineError, ProtocolError
from gridtrain.ps import auth
from gridtrain.ps.admission import Admission
from gridtrain.ps.center import CenterStore, PushOutcome
from gridtrain.ps.checkpoint import write_checkpoint
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.leases import EpochSnapshots, LeaseBook
from gridtrain.ps.metrics import Metrics, MetricsLog
from gridtrain.ps.protocol import MessageType, encode_header, encode_meta
from gridtrain.ps.session import BufferPool, Conversation, ServingContext
from gridtrain.ps.transport import Channel

log = logging.getLogger(__name__)

_ACCEPT_POLL = 0.2
_LISTEN_BACKLOG = 1024  # a flood of strangers must not crowd workers' SYNs out of the queue
_REFUSAL_LOG_INTERVAL = 10.0  # seconds between summaries of refused handshakes
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close with RST, no TIME_WAIT


def _plain_error_frame(code: str, message: str) -> bytes:
    """An unauthenticated ERROR frame, prepared once and sent without a Channel."""
    meta = encode_meta({"code": code, "message": message})
    return encode_header(MessageType.ERROR, meta_length=len(meta)) + meta


_PREAUTH_BUSY = _plain_error_frame(
    "busy",
    "parameter server has too many connections that have not authenticated yet; retry in a few "
    "seconds",
)


def bind_first_free(host: str, port_range: tuple[int, int]) -> socket.socket:
    """A listening socket on the first free port of ``port_range`` (``(0, 0)``: any free port)."""
    low, high = port_range
    last_error: OSError | None = None
    for port in range(low, high + 1):
        sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(_LISTEN_BACKLOG)
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
        # connections still in their handshake: their source address (for the admission slot)
        self._preauth: dict[int, str] = {}
        self._authenticated = 0
        self._admission = Admission(config.max_startups, config.per_source_max_startups)
        self._refusals_logged = 0
        # connections dropped for breaking the protocol or its deadlines, by the error's class,
        # and those refused before their handshake, by admission reason
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

        Also counted: connections refused before their handshake, by admission reason
        (``PreauthBudgetFull``, ``PreauthEarlyDrop``, ``PreauthPerSource``), handshakes that ran
        past ``handshake_timeout`` (``HandshakeDeadlineError``) and authenticated peers refused
        for ``max_connections`` (``ServerBusyError``). Counted before the connection is closed;
        clean goodbyes are not drops.
        """
        with self._lock:
            return dict(self._dropped)

    @property
    def preauth_count(self) -> int:
        """Connections admitted that have not authenticated yet."""
        with self._lock:
            return self._admission.pending

    @property
    def authenticated_count(self) -> int:
        with self._lock:
            return self._authenticated

    def refused_sources(self, count: int = 10) -> dict[str, int]:
        """The source addresses whose connections were refused before a handshake, most first."""
        with self._lock:
            return self._admission.top_sources(count)

    def _record_drop(self, error: BaseException | str) -> None:
        with self._lock:
            self._dropped[error if isinstance(error, str) else type(error).__name__] += 1

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
            source = str(peer[0])
            address = f"{peer[0]}:{peer[1]}"
            deadline = time.monotonic() + self.config.handshake_timeout
            with self._lock:
                refused = self._admission.admit(source)
                if refused is not None:
                    self._dropped[refused] += 1
                else:
                    connection = self._next_connection
                    self._next_connection += 1
                    self._preauth[connection] = source
                    self._sessions[connection] = Channel(
                        sock, read_timeout=self.config.read_timeout, min_rate=self.config.min_rate
                    )
            if refused is not None:
                log.debug("refusing %s before its handshake: %s", address, refused)
                _refuse_preauth(sock)
                continue
            thread = threading.Thread(
                target=self._serve,
                args=(connection, address, deadline),
                name=f"ps-conn-{connection}",
            )
            thread.daemon = True
            with self._lock:
                self._threads[connection] = thread
            thread.start()

    def _promote(self, connection: int) -> bool:
        """Move an authenticated connection from the pre-authentication budget to
        ``max_connections``; False if that is full (the peer is told "busy")."""
        with self._lock:
            if self._authenticated >= self.config.max_connections:
                log.warning(
                    "refusing an authenticated peer: %d authenticated connections open",
                    self._authenticated,
                )
                return False
            self._admission.release(self._preauth.pop(connection))
            self._authenticated += 1
            return True

    def _log_refusals(self) -> None:
        """One warning per interval for handshakes refused in a flood, not one per connection."""
        with self._lock:
            total = self._admission.refused.total()
            new = total - self._refusals_logged
            self._refusals_logged = total
            reasons = dict(self._admission.refused)
            sources = self._admission.top_sources(3)
            pending = self._admission.pending
        if new:
            log.warning(
                "refused %d connections before their handshake in the last %g s (%d pending; "
                "since start by reason %s, by source %s)",
                new,
                _REFUSAL_LOG_INTERVAL,
                pending,
                reasons,
                sources,
            )

    def _housekeeping(self) -> None:
        config = self.config
        now = time.monotonic()
        next_checkpoint = now + config.checkpoint_interval if config.checkpoint_interval else None
        next_metrics = now + config.metrics_interval if self._metrics_log else None
        next_refusal_log = now + _REFUSAL_LOG_INTERVAL
        while not self._stopping.is_set():
            waits = [t - time.monotonic() for t in (next_checkpoint, next_metrics) if t is not None]
            self._checkpoint_due.wait(max(min([1.0, *waits]), 0.0))
            if self._stopping.is_set():
                return
            now = time.monotonic()
            if self.leases is not None:
                self.leases.expire()
            if now >= next_refusal_log:
                self._log_refusals()
                next_refusal_log = now + _REFUSAL_LOG_INTERVAL
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
        with self._lock:
            snapshot["handshakes"] = {
                "authenticated": self._authenticated,
                "pending": self._admission.pending,
                "max_connections": self.config.max_connections,
                "max_startups": str(self.config.max_startups),
                "per_source_max_startups": self.config.per_source_max_startups,
                "refused_sources": self._admission.top_sources(10),
            }
        snapshot["dropped"] = self.dropped
        snapshot["address"] = "{}:{}".format(*self._address) if self._address else ""
        if self.leases is not None:
            snapshot["leases"] = self.leases.progress()
        return snapshot

    # -- one connection ------------------------------------------------------------------------

    def _serve(self, connection: int, address: str, deadline: float) -> None:
        with self._lock:
            channel = self._sessions[connection]
        try:
            if self.config.tls is not None:
                channel.replace_socket(self._wrap_tls(channel.sock, deadline))
            conversation = Conversation(
                self._context, channel, address, partial(self._promote, connection), deadline
            )
            conversation.run()
        except (ProtocolError, OSError) as err:  # TLS handshake failures
            if not self._stopping.is_set():
                log.warning("connection %s: %s", address, err)
                late = isinstance(err, TimeoutError) and time.monotonic() >= deadline
                self._record_drop(HandshakeDeadlineError.__name__ if late else err)
        finally:
            channel.close()
            with self._lock:
                self._sessions.pop(connection, None)
                self._threads.pop(connection, None)
                source = self._preauth.pop(connection, None)
                if source is not None:
                    self._admission.release(source)
                else:
                    self._authenticated -= 1

    def _wrap_tls(self, sock: socket.socket, deadline: float) -> ssl.SSLSocket:
        assert self.config.tls is not None
        # CPython bounds the whole TLS handshake (every wait in it) by one socket timeout
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        return self.config.tls.wrap_socket(sock, server_side=True)


def _refuse_preauth(sock: socket.socket) -> None:
    """Tell a refused peer "busy" if its socket takes it at once, then abort the connection."""
    with contextlib.suppress(OSError):  # a peer that does not read is not waited for
        sock.send(_PREAUTH_BUSY, socket.MSG_DONTWAIT)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
    sock.close()
