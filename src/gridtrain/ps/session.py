"""One worker's conversation with the parameter server: handshake, then a dispatch loop.

Layer: ps, network edge (server side), one connection. Runs in the connection's thread; owns no
socket life cycle (``server.py`` accepts, wraps TLS, closes and joins) and no shared state
(``center.py`` holds the center, ``metrics.py`` the counters).

Message dispatch is a table, ``Conversation.handlers``; a new message type is a new
``MessageType`` and one more entry. Shard leases are three: LEASE (a task, long-polled), COMPLETE
(a task done), and PULL with ``{"epoch": e}`` (the center as it was when epoch e ended).
"""

from __future__ import annotations

import itertools
import logging
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gridtrain.errors import (
    AuthenticationError,
    HandshakeDeadlineError,
    PeerClosedError,
    ProtocolError,
    ProtocolVersionError,
    ReadTimeoutError,
    ServerBusyError,
    SignatureMismatchError,
)
from gridtrain.ps import auth
from gridtrain.ps.algorithms import Array
from gridtrain.ps.center import CenterStore, Generation, PushOutcome
from gridtrain.ps.leases import EpochSnapshots, LeaseBook
from gridtrain.ps.metrics import Metrics
from gridtrain.ps.protocol import (
    FLAG_DELTA,
    HANDSHAKE_LIMITS,
    WIRE_BF16,
    WIRE_FLOAT32,
    FrameLimits,
    Header,
    MessageType,
    bf16_expand,
    centers_bf16,
    check_topk_fraction,
    check_wire,
    decode_table,
    push_limits,
    pushes_topk,
    session_limits,
    tensor_views,
    topk_counts,
    topk_expand,
    topk_views,
    wire_tensors,
    wire_views,
)
from gridtrain.ps.transport import Channel

if TYPE_CHECKING:
    from gridtrain.ps.config import ServerConfig

log = logging.getLogger(__name__)

ROLE_WORKER = "worker"
ROLE_MONITOR = "monitor"
LEASE_POLL = 2.0  # seconds a LEASE request waits server-side for a task before answering "wait"

_connection_ids = itertools.count(1)


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
                    f"no receive buffer became free within {timeout:g} s (the parameter server "
                    "is overloaded or stuck); raise --receive-buffers"
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
    wire: str = WIRE_FLOAT32  # how float32 tensors travel (protocol.WIRE_ENCODINGS)
    topk: list[int | None] = field(default_factory=list)  # entries per tensor in a top-k push


@dataclass(frozen=True)
class _Hello:
    """A HELLO frame: the client's nonce, role and name; its meta keeps the wire request."""

    nonce: bytes
    role: str
    name: str
    meta: dict[str, Any]


@dataclass(frozen=True)
class _Wire:
    """The wire encoding a client asked for, accepted: how its float32 tensors travel."""

    encoding: str
    topk_fraction: float


@dataclass(frozen=True)
class _Auth:
    """An AUTH frame: the client's proof, and its model's signature table."""

    proof: bytes
    table: bytes
    tensor_count: int


class WireCache:
    """The current center encoded as bf16, once per version, for every bf16 connection."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._version = -1
        self._views: list[memoryview] = []

    def views(self, generation: Generation) -> list[memoryview]:
        with self._lock:
            if generation.version != self._version:
                # a generation is immutable while it is held, so its encoding is too
                self._views = wire_tensors(generation.arrays, WIRE_BF16)
                self._version = generation.version
            return self._views


@dataclass(frozen=True)
class ServingContext:
    """What every conversation shares with the server."""

    store: CenterStore
    metrics: Metrics
    pool: BufferPool
    secret: bytes
    config: ServerConfig
    stopping: threading.Event
    on_update: Callable[[PushOutcome], None]
    status: Callable[[], dict[str, Any]]
    leases: LeaseBook | None = None
    snapshots: EpochSnapshots | None = None
    # Called with the error that made the server drop a connection (a protocol violation, a
    # timeout, a failed authentication), before the connection is closed.
    on_drop: Callable[[ProtocolError | OSError | ValueError], None] | None = None
    wire_cache: WireCache = field(default_factory=WireCache)


class Conversation:
    """Handshake and message loop of one connection; ``run`` returns when it ends.

    ``on_authenticated`` is asked once the peer has proved the secret (and its model matches):
    True moves the connection from the server's pre-authentication budget to its authenticated
    one; False means that budget (``max_connections``) is full, and the peer is told "busy" in an
    authenticated ERROR frame (so a stranger cannot forge it) and dropped. ``handshake_deadline``
    (``time.monotonic()``) is when the handshake must be done; by default ``handshake_timeout``
    from now (the server passes the time it accepted the connection plus that).
    """

    def __init__(
        self,
        context: ServingContext,
        channel: Channel,
        address: str,
        on_authenticated: Callable[[], bool] | None = None,
        handshake_deadline: float | None = None,
    ) -> None:
        self.store = context.store
        self.metrics = context.metrics
        self.config = context.config
        self._context = context
        self._pool = context.pool
        self._secret = context.secret
        self._signature = context.store.signature
        self._limits = session_limits(context.store.signature)
        self._table = context.store.signature.encode()
        self.session = Session(channel, address)
        self.connection = next(_connection_ids)
        self._leases = context.leases
        self._on_authenticated = on_authenticated
        self._handshake_deadline = handshake_deadline
        self.handlers: dict[MessageType, Callable[[Session, Header], bool]] = {
            MessageType.PULL: self._on_pull,
            MessageType.PUSH: self._on_push,
            MessageType.PUSH_PULL: self._on_push_pull,
            MessageType.STATUS: self._on_status,
            MessageType.GOODBYE: self._on_goodbye,
            MessageType.LEASE: self._on_lease,
            MessageType.COMPLETE: self._on_complete,
        }

    def run(self) -> None:
        session, channel = self.session, self.session.channel
        stopping = self._context.stopping
        reason = "closed"
        try:
            channel.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel.sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            self._handshake(session)
            while not stopping.is_set():
                header = channel.recv_header(session.limits, self.config.idle_timeout)
                handler = self.handlers.get(header.msg_type)
                if handler is None:
                    raise ProtocolError(f"unexpected {header.msg_type.name} frame from a client")
                if self._leases is not None:
                    self._leases.renew(self.connection)
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
            if not stopping.is_set():
                log.warning("connection %s (%s): %s", session.address, session.name or "?", err)
                if self._context.on_drop is not None:
                    self._context.on_drop(err)
        finally:
            channel.close()
            if self._leases is not None:
                self._leases.release_connection(self.connection, f"connection {reason}")
            if session.worker_id:
                self.metrics.leave(session.worker_id, reason)
            log.log(
                logging.INFO if session.role == ROLE_WORKER else logging.DEBUG,  # not every poll
                "connection %s (%s) ended: %s",
                session.address,
                session.name or "?",
                reason,
            )

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
        """HELLO to WELCOME within ``handshake_timeout`` in total, however the peer paces its bytes.

        While it runs, no frame may outlast the handshake's deadline (``Channel.deadline_cap``),
        so a peer that drips a byte now and then is dropped at the total deadline, not per read
        (OpenSSH's ``LoginGraceTime``).
        """
        channel = session.channel
        deadline = self._handshake_deadline or time.monotonic() + self.config.handshake_timeout
        channel.deadline_cap = deadline
        try:
            self._exchange_handshake(session, deadline)
        except (ProtocolError, OSError) as err:
            if time.monotonic() < deadline or isinstance(err, ServerBusyError):
                raise
            raise HandshakeDeadlineError(
                f"peer did not finish the handshake within {self.config.handshake_timeout:g} s "
                f"({err}); dropping it"
            ) from err
        finally:
            channel.deadline_cap = None

    def _exchange_handshake(self, session: Session, deadline: float) -> None:
        """The server's column of the handshake table (``gridtrain.ps.auth``), a step per row."""

        def remaining() -> float:
            return max(deadline - time.monotonic(), 0.001)

        hello = self._receive_hello(session, remaining())
        server_nonce = self._send_challenge(session)
        answer = self._receive_auth(session, remaining())
        self._verify_proof(session, hello, server_nonce, answer)
        self._start_session(session, hello, server_nonce)
        wire = self._negotiate_wire(session, hello.meta)  # after the proof: a stranger learns
        if hello.role == ROLE_WORKER:  # nothing of the algorithm or the model
            self._check_signature(session, answer)
            self._agree_wire(session, wire)
        else:
            session.limits = FrameLimits(0, self._limits.max_meta, 0)
        self._admit(session)
        self._send_welcome(session)

    def _receive_hello(self, session: Session, timeout: float) -> _Hello:
        """HELLO: the client's nonce, role and name (checked for form; proven by AUTH)."""
        try:
            header, _, meta = session.channel.recv_control(HANDSHAKE_LIMITS, timeout)
        except ProtocolVersionError as err:
            self._send_error(session, "version", str(err))
            raise
        if header.msg_type is not MessageType.HELLO:
            raise ProtocolError(f"expected HELLO, got {header.msg_type.name}")
        nonce = _hex_field(meta, "nonce", auth.NONCE_SIZE)
        role = meta.get("role", ROLE_WORKER)
        name = meta.get("name", "")
        if role not in (ROLE_WORKER, ROLE_MONITOR) or not isinstance(name, str) or len(name) > 256:
            raise ProtocolError(f"HELLO with invalid role {role!r} or name")
        return _Hello(nonce, role, name, meta)

    def _negotiate_wire(self, session: Session, meta: dict[str, Any]) -> _Wire:
        """HELLO's wire encoding (and top-k fraction), refused with ERROR "wire" if unusable."""
        try:
            encoding = check_wire(meta.get("wire", WIRE_FLOAT32))
            topk = pushes_topk(encoding)
            fraction = check_topk_fraction(meta.get("topk")) if topk else 0.0
            if topk and self.store.config.algorithm == "easgd":
                raise ProtocolError(
                    "top-k needs an algorithm whose workers push updates; EASGD workers push "
                    "their variable, so use wire float32 or bf16 with EASGD"
                )
        except ProtocolError as err:
            self._send_error(session, "wire", str(err))
            raise
        return _Wire(encoding, fraction)

    @staticmethod
    def _send_challenge(session: Session) -> bytes:
        """CHALLENGE: the server's fresh nonce, returned."""
        server_nonce = auth.new_nonce()
        session.channel.send(MessageType.CHALLENGE, meta={"nonce": server_nonce.hex()})
        return server_nonce

    @staticmethod
    def _receive_auth(session: Session, timeout: float) -> _Auth:
        """AUTH: the client's proof and its model's signature table."""
        header, table, meta = session.channel.recv_control(HANDSHAKE_LIMITS, timeout)
        if header.msg_type is not MessageType.AUTH:
            raise ProtocolError(f"expected AUTH, got {header.msg_type.name}")
        return _Auth(_hex_field(meta, "proof", 32), table, header.tensor_count)

    def _verify_proof(
        self, session: Session, hello: _Hello, server_nonce: bytes, answer: _Auth
    ) -> None:
        """The proof must be HMAC(secret, "client"|cn|sn|table): else ERROR "auth", close."""
        try:
            auth.check_client_proof(
                self._secret, hello.nonce, server_nonce, answer.table, answer.proof
            )
        except AuthenticationError:
            self._send_error(session, "auth", "authentication failed")
            raise

    def _start_session(self, session: Session, hello: _Hello, server_nonce: bytes) -> None:
        """Session key K from both nonces: every frame from here on carries a tag under K."""
        key = auth.session_key(self._secret, hello.nonce, server_nonce)
        session.channel.start_session(auth.SessionKeys(key, auth.SERVER_TO_CLIENT))
        session.role, session.name = hello.role, hello.name

    def _check_signature(self, session: Session, answer: _Auth) -> None:
        """A worker's model must be the center's: else ERROR "signature" naming the tensor."""
        difference = self._signature.first_difference(
            decode_table(answer.table, answer.tensor_count)
        )
        if difference is not None:
            message = f"model signature mismatch: {difference}"
            self._send_error(session, "signature", message)
            raise SignatureMismatchError(message)

    def _agree_wire(self, session: Session, wire: _Wire) -> None:
        """A worker's frames from here on: its encoding, and the limits that follow from it."""
        session.limits = push_limits(self._signature, wire.encoding, wire.topk_fraction)
        session.wire = wire.encoding
        if pushes_topk(wire.encoding):
            session.topk = topk_counts(self._signature, wire.topk_fraction)

    def _admit(self, session: Session) -> None:
        """Into the authenticated budget (``max_connections``): else ERROR "busy", close."""
        if self._on_authenticated is not None and not self._on_authenticated():
            message = (
                f"parameter server is at its connection limit ({self.config.max_connections} "
                "authenticated connections); retry later"
            )
            self._send_error(session, "busy", message)
            raise ServerBusyError(message)

    def _send_welcome(self, session: Session) -> None:
        """WELCOME: the worker's id, the center's version, the algorithm and the wire."""
        if session.role == ROLE_WORKER:
            session.worker_id = self.metrics.join(session.name, session.address)
        version = self.store.version
        session.channel.send(
            MessageType.WELCOME,
            worker_id=session.worker_id,
            base_version=version,
            meta={
                "worker_id": session.worker_id,
                "version": version,
                "algorithm": self.store.config.to_dict(),
                "wire": session.wire,
            },
        )
        log.log(
            logging.INFO if session.role == ROLE_WORKER else logging.DEBUG,
            "%s %s joined from %s as %d",
            session.role,
            session.name or "?",
            session.address,
            session.worker_id,
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
                tensors=(
                    self._context.wire_cache.views(generation)
                    if centers_bf16(session.wire)
                    else generation.views
                ),
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
        meta = self._read_control(session, header)
        if "epoch" not in meta:
            self._send_center(session)
            return True
        snapshot = self._context.snapshots.get(meta["epoch"]) if self._context.snapshots else None
        if snapshot is None:
            self._send_error(session, "snapshot", f"no snapshot of epoch {meta['epoch']!r} here")
            return True
        version, arrays = snapshot
        session.channel.send(
            MessageType.CENTER,
            worker_id=session.worker_id,
            base_version=version,
            table=self._table,
            tensor_count=len(arrays),
            tensors=wire_tensors(arrays, session.wire),
        )
        return True

    def _lease_book(self, session: Session, header: Header) -> LeaseBook | None:
        self._require_worker(session, header)
        if self._leases is None:
            self._read_control(session, header)
            self._send_error(
                session,
                "no-leases",
                "this parameter server hands out no shard leases; workers that lease shards "
                "need the one `gridtrain train` starts",
            )
        return self._leases

    def _on_lease(self, session: Session, header: Header) -> bool:
        leases = self._lease_book(session, header)
        if leases is None:
            return True
        meta = self._read_control(session, header)
        wait = min(float(meta.get("wait", LEASE_POLL)), LEASE_POLL)
        task = leases.grant(session.name or f"worker-{session.worker_id}", self.connection, wait)
        session.channel.send(MessageType.TASK, worker_id=session.worker_id, meta=task)
        return True

    def _on_complete(self, session: Session, header: Header) -> bool:
        leases = self._lease_book(session, header)
        if leases is None:
            return True
        meta = self._read_control(session, header)
        lease = meta.get("lease")
        result = meta.get("result", {})
        if not isinstance(lease, int) or not isinstance(result, dict):
            raise ProtocolError("COMPLETE needs an integer 'lease' and a 'result' object")
        answer = leases.complete(lease, self.connection, result)
        session.channel.send(MessageType.ACK, worker_id=session.worker_id, meta=answer)
        return True

    def _on_push(self, session: Session, header: Header) -> bool:
        return self._push(session, header, reply_center=False)

    def _on_push_pull(self, session: Session, header: Header) -> bool:
        return self._push(session, header, reply_center=True)

    def _push(self, session: Session, header: Header, *, reply_center: bool) -> bool:
        self._require_worker(session, header)
        channel = session.channel
        table, _ = channel.recv_sections(header)
        if table != self._table or header.data_length != session.limits.max_data:
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
        # Waiting here is the server's own backpressure, not the peer's fault: every holder
        # gives its buffer back within its frame's deadline, so a queue of pushers drains. Only
        # a server stuck as long as it lets a connection idle gives up on the push.
        buffers = self._pool.acquire(self.config.idle_timeout)
        held = True
        try:
            arrays, views = buffers
            if pushes_topk(session.wire):
                channel.recv_tensors(header, topk_views(arrays, session.topk))
                channel.finish(header)
                topk_expand(arrays, session.topk)
            else:
                channel.recv_tensors(header, wire_views(arrays, session.wire))
                channel.finish(header)
                if session.wire == WIRE_BF16:
                    bf16_expand(arrays)  # the center accumulates in float32
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
            self._context.on_update(outcome)
            if self._leases is not None:
                self._leases.count_update(self.connection)
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
                    tensors=wire_tensors(arrays, session.wire),
                )
            else:
                if held:
                    self._pool.release(buffers)
                    held = False
                if self.store.config.algorithm == "sync":
                    waited = self.store.wait_for_version(
                        header.base_version, self.store.config.sync_timeout
                    )
                    if waited is None:  # stopping mid-round: no reply, the connection closes
                        return False
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

    def _on_status(self, session: Session, header: Header) -> bool:
        self._read_control(session, header)
        session.channel.send(MessageType.STATUS_REPLY, meta=self._context.status())
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
