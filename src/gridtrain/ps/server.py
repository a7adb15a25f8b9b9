"""The parameter server: accepts workers, runs the handshake and dispatches their messages.

Layer: ps, network edge (server side). It owns sockets and threads; the center's consistency is
``center.py``'s job, the wire format ``protocol.py``'s, framing and MACs ``transport.py``'s. It
never imports a training framework.

Concurrency: one thread per connection with blocking sockets and deadlines (cheap at the scale of
a grid pool, hundreds of workers; numpy, hashing and socket I/O release the GIL), one accept
thread, one housekeeping thread (periodic checkpoints and the metrics log). A connection stalls
only itself: its reads and writes have deadlines, it reads pushes into a buffer from a bounded
pool and holds no lock while doing I/O.

Message dispatch is a table, ``ParameterServer._handlers``; a new message type (shard leases,
for instance) is a new ``MessageType`` and one more entry.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gridtrain.errors import ConfigError
from gridtrain.ps import auth
from gridtrain.ps.algorithms import Array
from gridtrain.ps.center import CenterStore, PushOutcome
from gridtrain.ps.checkpoint import write_checkpoint
from gridtrain.ps.errors import (
    AuthenticationError,
    PeerClosedError,
    ProtocolError,
    ProtocolVersionError,
    ReadTimeoutError,
    SignatureMismatchError,
)
from gridtrain.ps.metrics import Metrics, MetricsLog
from gridtrain.ps.protocol import (
    FLAG_DELTA,
    HANDSHAKE_LIMITS,
    FrameLimits,
    Header,
    MessageType,
    decode_table,
    session_limits,
    tensor_views,
)
from gridtrain.ps.transport import Channel

log = logging.getLogger(__name__)

ROLE_WORKER = "worker"
ROLE_MONITOR = "monitor"
_ACCEPT_POLL = 0.2


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


class BufferPool:
    """Receive buffers for pushes, at most ``limit`` model copies, allocated on first use."""

    def __init__(self, store: CenterStore, limit: int) -> None:
        self._signature = store.signature
        self._limit = limit
        self._free: list[tuple[list[Array], list[memoryview]]] = []
        self._allocated = 0
        self._closed = False
        self._cond = threading.Condition()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def acquire(self, timeout: float) -> tuple[list[Array], list[memoryview]]:
        with self._cond:
            if not self._cond.wait_for(
                lambda: self._free or self._allocated < self._limit or self._closed, timeout
            ):
                raise ReadTimeoutError(
                    f"no receive buffer became free within {timeout:g} s; raise "
                    "--receive-buffers or --read-timeout"
                )
            if self._closed:
                raise ProtocolError("parameter server is stopping")
            if self._free:
                return self._free.pop()
            self._allocated += 1
        arrays = self._signature.allocate()
        return arrays, tensor_views(arrays)

    def repay(self, arrays: list[Array]) -> None:
        """Take arrays that replace a buffer the center store consumed."""
        self.release((arrays, tensor_views(arrays)))

    def release(self, buffers: tuple[list[Array], list[memoryview]]) -> None:
        with self._cond:
            self._free.append(buffers)
            self._cond.notify()


@dataclass
class Session:
    """One authenticated connection."""

    channel: Channel
    address: str
    role: str = ROLE_WORKER
    name: str = ""
    worker_id: int = 0
    limits: FrameLimits = field(default=HANDSHAKE_LIMITS)


class ParameterServer:
    """Serves the center in ``store`` to workers that hold ``secret``."""

    def __init__(self, store: CenterStore, secret: bytes, config: ServerConfig) -> None:
        if len(secret) < auth.MIN_SECRET_SIZE:
            raise ConfigError(f"secret must be at least {auth.MIN_SECRET_SIZE} bytes")
        self.store = store
        self.config = config
        self.metrics = Metrics()
        self._secret = secret
        self._limits = session_limits(store.signature)
        self._table = store.signature.encode()
        self._pool = BufferPool(store, config.receive_buffers)
        store.set_recycler(self._pool.repay)
        self._listener: socket.socket | None = None
        self._address: tuple[str, int] | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._sessions: dict[int, Channel] = {}
        self._threads: dict[int, threading.Thread] = {}
        self._next_connection = 0
        self._service_threads: list[threading.Thread] = []
        self._checkpoint_due = threading.Event()
        self._checkpoint_lock = threading.Lock()
        self._checkpointed_version = store.version
        self._metrics_log = MetricsLog(config.metrics_log) if config.metrics_log else None
        self._handlers: dict[MessageType, Callable[[Session, Header], bool]] = {
            MessageType.PULL: self._on_pull,
            MessageType.PUSH: self._on_push,
            MessageType.PUSH_PULL: self._on_push_pull,
            MessageType.STATUS: self._on_status,
            MessageType.GOODBYE: self._on_goodbye,
        }

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

    def status(self, *, mark: bool = False) -> dict[str, Any]:
        snapshot = self.metrics.snapshot(self.store.version, self.store.counter_values(), mark=mark)
        snapshot["algorithm"] = self.store.config.to_dict()
        snapshot["checkpointed_version"] = self._checkpointed_version
        snapshot["connections"] = self.connection_count
        snapshot["address"] = "{}:{}".format(*self._address) if self._address else ""
        return snapshot

    # -- one connection ------------------------------------------------------------------------

    def _serve(self, connection: int, address: str) -> None:
        with self._lock:
            channel = self._sessions[connection]
        session = Session(channel, address)
        reason = "closed"
        try:
            if self.config.tls is not None:
                channel.replace_socket(self._wrap_tls(channel.sock))
            channel.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._handshake(session)
            while not self._stopping.is_set():
                header = channel.recv_header(session.limits, self.config.idle_timeout)
                handler = self._handlers.get(header.msg_type)
                if handler is None:
                    raise ProtocolError(f"unexpected {header.msg_type.name} frame from a client")
                received, sent = channel.bytes_received, channel.bytes_sent
                keep_going = handler(session, header)
                self.metrics.record_traffic(
                    session.worker_id,
                    channel.bytes_received - received,
                    channel.bytes_sent - sent,
                )
                if not keep_going:
                    reason = "goodbye"
                    break
        except PeerClosedError:
            reason = "disconnected"
        except (ProtocolError, OSError, ValueError) as err:
            reason = f"dropped: {err}"
            if not self._stopping.is_set():
                log.warning("connection %s (%s): %s", address, session.name or "?", err)
        finally:
            channel.close()
            if session.worker_id:
                self.metrics.leave(session.worker_id, reason)
            with self._lock:
                self._sessions.pop(connection, None)
                self._threads.pop(connection, None)
            log.info("connection %s (%s) ended: %s", address, session.name or "?", reason)

    def _wrap_tls(self, sock: socket.socket) -> ssl.SSLSocket:
        assert self.config.tls is not None
        sock.settimeout(self.config.handshake_timeout)
        return self.config.tls.wrap_socket(sock, server_side=True)

    def _send_error(
        self, session: Session, code: str, message: str, version: int = 0, staleness: int = 0
    ) -> None:
        try:
            session.channel.send(
                MessageType.ERROR,
                base_version=version,
                meta={"code": code, "message": message, "version": version, "staleness": staleness},
            )
        except OSError:
            log.debug("could not send error %r to %s", code, session.address, exc_info=True)

    def _handshake(self, session: Session) -> None:
        channel = session.channel
        deadline = time.monotonic() + self.config.handshake_timeout

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.001)

        try:
            header, _, hello = channel.recv_control(HANDSHAKE_LIMITS, remaining())
        except ProtocolVersionError as err:
            self._send_error(session, "version", str(err))
            raise
        if header.msg_type is not MessageType.HELLO:
            raise ProtocolError(f"expected HELLO, got {header.msg_type.name}")
        client_nonce = _hex_field(hello, "nonce", auth.NONCE_SIZE)
        role = hello.get("role", ROLE_WORKER)
        name = hello.get("name", "")
        if role not in (ROLE_WORKER, ROLE_MONITOR) or not isinstance(name, str) or len(name) > 256:
            raise ProtocolError(f"HELLO with invalid role {role!r} or name")
        server_nonce = auth.new_nonce()
        channel.send(MessageType.CHALLENGE, meta={"nonce": server_nonce.hex()})
        header, table, answer = channel.recv_control(HANDSHAKE_LIMITS, remaining())
        if header.msg_type is not MessageType.AUTH:
            raise ProtocolError(f"expected AUTH, got {header.msg_type.name}")
        proof = _hex_field(answer, "proof", 32)
        try:
            auth.check_client_proof(self._secret, client_nonce, server_nonce, table, proof)
        except AuthenticationError:
            self._send_error(session, "auth", "authentication failed")
            raise
        key = auth.session_key(self._secret, client_nonce, server_nonce)
        channel.start_session(auth.SessionKeys(key, auth.SERVER_TO_CLIENT))
        session.role, session.name = role, name
        if role == ROLE_WORKER:
            difference = self.store.signature.first_difference(
                decode_table(table, header.tensor_count)
            )
            if difference is not None:
                message = f"model signature mismatch: {difference}"
                self._send_error(session, "signature", message)
                raise SignatureMismatchError(message)
            session.limits = self._limits
        else:
            session.limits = FrameLimits(0, self._limits.max_meta, 0)
        session.worker_id = self.metrics.join(name, session.address) if role == ROLE_WORKER else 0
        version = self.store.version
        channel.send(
            MessageType.WELCOME,
            worker_id=session.worker_id,
            base_version=version,
            meta={
                "worker_id": session.worker_id,
                "version": version,
                "algorithm": self.store.config.to_dict(),
            },
        )
        log.info(
            "%s %s joined from %s as %d", role, name or "?", session.address, session.worker_id
        )

    # -- handlers: each returns False to end the connection ------------------------------------

    def _send_center(self, session: Session, flags: int = 0) -> None:
        generation = self.store.acquire()
        try:
            session.channel.send(
                MessageType.CENTER,
                flags=flags,
                worker_id=session.worker_id,
                base_version=generation.version,
                table=self._table,
                tensor_count=len(generation.views),
                tensors=generation.views,
            )
        finally:
            self.store.release(generation)
        self.metrics.record_pull(session.worker_id, generation.version)

    def _require_worker(self, session: Session, header: Header) -> None:
        if session.role != ROLE_WORKER:
            raise ProtocolError(f"a {session.role} connection may not send {header.msg_type.name}")

    @staticmethod
    def _read_control(session: Session, header: Header) -> dict[str, Any]:
        if header.data_length:
            raise ProtocolError(
                f"{header.msg_type.name} frame must not carry tensor data, "
                f"it announces {header.data_length} bytes"
            )
        _, meta = session.channel.recv_sections(header)
        session.channel.finish(header)
        return meta

    def _on_pull(self, session: Session, header: Header) -> bool:
        self._require_worker(session, header)
        self._read_control(session, header)
        self._send_center(session)
        return True

    def _on_push(self, session: Session, header: Header) -> bool:
        return self._push(session, header, reply_center=False)

    def _on_push_pull(self, session: Session, header: Header) -> bool:
        return self._push(session, header, reply_center=True)

    def _push(self, session: Session, header: Header, *, reply_center: bool) -> bool:
        self._require_worker(session, header)
        channel = session.channel
        table, _ = channel.recv_sections(header)
        if table != self._table or header.data_length != self._limits.max_data:
            raise ProtocolError(
                f"{header.msg_type.name} tensors do not match the model signature agreed in the "
                "handshake"
            )
        outcome = self.store.precheck(header.base_version)
        if outcome is not None:
            channel.discard_tensors(header)
            channel.finish(header)
            self._refuse(session, outcome)
            return True
        buffers = self._pool.acquire(self.config.read_timeout)
        held = True
        try:
            arrays, views = buffers
            channel.recv_tensors(header, views)
            channel.finish(header)
            outcome = self.store.apply_push(
                arrays, header.base_version, session.worker_id, consumable=True
            )
            if outcome.consumed:  # the buffer is the center now; the pool is repaid later
                held = False
            self.metrics.record_push(
                session.worker_id, outcome.staleness, outcome.accepted, header.base_version
            )
            if not outcome.accepted:
                self._refuse(session, outcome, recorded=True)
                return True
            self._after_update(outcome)
            if not reply_center:
                channel.send(
                    MessageType.ACK,
                    worker_id=session.worker_id,
                    base_version=outcome.version,
                    meta={"staleness": outcome.staleness},
                )
            elif self.store.config.reply_is_delta:
                channel.send(
                    MessageType.CENTER,
                    flags=FLAG_DELTA,
                    worker_id=session.worker_id,
                    base_version=outcome.version,
                    table=self._table,
                    tensor_count=len(views),
                    tensors=views,
                )
            else:
                if held:
                    self._pool.release(buffers)
                    held = False
                if self.store.config.algorithm == "sync":
                    self.store.wait_for_version(header.base_version, self.store.config.sync_timeout)
                self._send_center(session)
        finally:
            if held:
                self._pool.release(buffers)
        return True

    def _refuse(self, session: Session, outcome: PushOutcome, *, recorded: bool = False) -> None:
        if not recorded:
            self.metrics.record_push(session.worker_id, outcome.staleness, accepted=False)

        self._send_error(
            session, outcome.reason, outcome.message, outcome.version, outcome.staleness
        )

    def _after_update(self, outcome: PushOutcome) -> None:
        every = self.config.checkpoint_every
        if every and outcome.version - self._checkpointed_version >= every:
            self._checkpoint_due.set()

    def _on_status(self, session: Session, header: Header) -> bool:
        self._read_control(session, header)
        session.channel.send(MessageType.STATUS_REPLY, meta=self.status())
        return True

    def _on_goodbye(self, session: Session, header: Header) -> bool:
        self._read_control(session, header)
        session.channel.send(MessageType.ACK, base_version=self.store.version)
        return False


def _hex_field(meta: dict[str, Any], name: str, size: int) -> bytes:
    value = meta.get(name)
    try:
        if not isinstance(value, str):
            raise ValueError
        data = bytes.fromhex(value)
    except ValueError:
        raise ProtocolError(f"handshake field {name!r} is missing or not hex") from None
    if len(data) != size:
        raise ProtocolError(f"handshake field {name!r} must be {size} bytes, got {len(data)}")
    return data
