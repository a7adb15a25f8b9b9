"""Client of the parameter server, for workers (and ``gridtrain ps status``).

Layer: ps, network edge (client side). Speaks the protocol over ``transport.Channel``; knows no
training framework: the worker hands it lists of numpy arrays (a Keras ``get_weights()`` list).

    with PSClient("head.example.org:9000", secret, weights) as ps:
        version, center = ps.pull()
        ...
        version, center, _ = ps.push_pull(gradients, base_version=version)

Errors the server reports become exceptions: ``StaleUpdateError`` (pull and retry; the
connection stays usable), ``AuthenticationError``, ``SignatureMismatchError``,
``ProtocolVersionError``, ``ServerBusyError`` (all fatal for the connection).
"""

from __future__ import annotations

import logging
import random
import socket
import ssl
import time
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

from gridtrain.errors import (
    AuthenticationError,
    ConfigError,
    PeerClosedError,
    ProtocolError,
    ProtocolVersionError,
    RemoteError,
    ServerBusyError,
    SignatureMismatchError,
    StaleUpdateError,
)
from gridtrain.ps import auth
from gridtrain.ps.algorithms import Array
from gridtrain.ps.protocol import (
    FLAG_DELTA,
    HANDSHAKE_LIMITS,
    MAX_META,
    MAX_TOPK_FRACTION,
    WIRE_ENCODINGS,
    WIRE_FLOAT32,
    FrameLimits,
    Header,
    MessageType,
    Signature,
    bf16_expand,
    centers_bf16,
    pushes_topk,
    session_limits,
    topk_counts,
    topk_select,
    wire_buffers,
    wire_tensors,
    wire_views,
)
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.ps.transport import Channel

log = logging.getLogger(__name__)

_STALE_CODES = ("stale", "future", "duplicate")
_FATAL_ERRORS: dict[str, type[ProtocolError]] = {
    "auth": AuthenticationError,
    "signature": SignatureMismatchError,
    "version": ProtocolVersionError,
    "busy": ServerBusyError,
}


class Reply(NamedTuple):
    """The answer to a push-and-pull: the new center (or, for EASGD, the elastic difference)."""

    version: int
    tensors: list[Array]
    is_delta: bool


class PushResult(NamedTuple):
    version: int
    staleness: int


def parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    """``"host:port"``, ``"[v6]:port"`` or ``(host, port)`` to ``(host, port)``."""
    if isinstance(address, tuple):
        return address
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(
            f"parameter-server address {address!r} is not HOST:PORT; use the contents of the "
            "address file written by `gridtrain ps serve`"
        )
    return host.strip("[]"), int(port)


class PSClient:
    """One connection to a parameter server.

    ``signature``: the model's weights (or their ``Signature``); ``None`` connects as a monitor
    that may only ask for status. ``timeout`` bounds the wait for any reply (synchronous mode
    waits for a whole round); ``read_timeout`` bounds a stall inside a frame. ``busy_retry``: for
    how many seconds ``connect`` retries, with jittered backoff, while the server answers "busy"
    or drops the connection during the handshake (as it does at random when strangers crowd its
    pre-authentication slots); 0 raises ``ServerBusyError`` at once. ``wire="bf16"`` sends and
    receives float32 tensors as bfloat16, half the bytes (the server still accumulates in
    float32; ``push`` rounds each update to bf16, an error of at most 2**-8 of each value).
    ``wire="topk"`` pushes only the ``topk`` fraction of largest-magnitude entries of each float32
    tensor (indices and values) and keeps the rest as a residual that is added to the next update
    (error feedback), so no part of an update is lost, only delayed; centers arrive as float32.
    ``wire="topk-bf16"`` pushes the same way and receives centers as bf16, for links where the
    center coming back would set the pace. Top-k is for algorithms whose workers push updates
    (not EASGD, which pushes the variable).
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        secret: bytes,
        signature: Signature | Sequence[Array] | None = None,
        *,
        name: str = "",
        timeout: float = 120.0,
        read_timeout: float = 30.0,
        tls: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        busy_retry: float = 30.0,
        wire: str = WIRE_FLOAT32,
        topk: float = 0.01,
    ) -> None:
        self.address = parse_address(address)
        self._secret = secret
        if signature is not None and not isinstance(signature, Signature):
            signature = Signature.of(signature)
        self.signature = signature
        self.name = name
        self.timeout = timeout
        self.read_timeout = read_timeout
        self._tls = tls
        self._server_hostname = server_hostname or self.address[0]
        self.busy_retry = busy_retry
        if wire not in WIRE_ENCODINGS:
            raise ConfigError(
                f"wire encoding {wire!r} is unknown; use one of {', '.join(WIRE_ENCODINGS)}"
            )
        self.wire = wire
        if pushes_topk(wire) and not 0 < topk <= MAX_TOPK_FRACTION:
            raise ConfigError(f"topk fraction {topk} must be > 0 and <= {MAX_TOPK_FRACTION}")
        self.topk = topk
        self._channel: Channel | None = None
        self._limits = (
            session_limits(signature, self.wire)
            if signature is not None
            else FrameLimits(0, MAX_META, 0)
        )
        self._send_buffers = (
            wire_buffers(signature, self.wire)
            if signature is not None and not pushes_topk(wire)
            else []
        )
        self._topk_counts = (
            topk_counts(signature, topk) if signature is not None and pushes_topk(wire) else []
        )
        self._residual: list[Array | None] = []  # top-k: what earlier pushes did not send
        self._in_flight: list[tuple[int, Array, Array]] = []  # top-k: sent in the last push
        self._table = signature.encode() if signature is not None else b""
        self.worker_id = 0
        self.version = 0
        self.algorithm: AlgorithmConfig | None = None

    # -- connection ----------------------------------------------------------------------------

    def connect(self) -> PSClient:
        """Open the connection and run the handshake; returns ``self``.

        Retries for ``busy_retry`` seconds while the server is busy or drops the handshake (see
        the class docstring).
        """
        give_up = time.monotonic() + self.busy_retry
        delay = 0.05
        while True:
            try:
                return self._connect_once()
            except (ServerBusyError, ConnectionResetError, BrokenPipeError, PeerClosedError) as err:
                # a drop during the handshake arrives as a reset, or as an orderly close where
                # a relay, NAT or tunnel stands between (the connection never got further)
                wait = random.uniform(delay / 2, delay)
                if time.monotonic() + wait > give_up:
                    raise
                log.info("parameter server busy (%s); retrying in %.2f s", err, wait)
                time.sleep(wait)
                delay = min(delay * 2, 2.0)

    def _connect_once(self) -> PSClient:
        sock = socket.create_connection(self.address, timeout=self.timeout)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            if self._tls is not None:
                sock = self._tls.wrap_socket(sock, server_hostname=self._server_hostname)
            channel = Channel(sock, read_timeout=self.read_timeout)
            self._channel = channel
            self._handshake(channel)
        except BaseException:
            self._drop()
            raise
        return self

    def _handshake(self, channel: Channel) -> None:
        client_nonce = auth.new_nonce()
        role = "worker" if self.signature is not None else "monitor"
        channel.send(
            MessageType.HELLO,
            meta={
                "nonce": client_nonce.hex(),
                "role": role,
                "name": self.name,
                "wire": self.wire,
                **({"topk": self.topk} if pushes_topk(self.wire) else {}),
            },
        )
        header, _, meta = channel.recv_control(HANDSHAKE_LIMITS, self.timeout)
        if header.msg_type is MessageType.ERROR:
            self._raise_remote(meta)
        if header.msg_type is not MessageType.CHALLENGE:
            raise ProtocolError(f"expected CHALLENGE from the server, got {header.msg_type.name}")
        try:
            server_nonce = bytes.fromhex(str(meta.get("nonce")))
        except ValueError:
            raise ProtocolError("server's CHALLENGE carries no valid nonce") from None
        if len(server_nonce) != auth.NONCE_SIZE:
            raise ProtocolError("server's CHALLENGE nonce has the wrong size")
        proof = auth.client_proof(self._secret, client_nonce, server_nonce, self._table)
        channel.send(
            MessageType.AUTH,
            table=self._table,
            tensor_count=len(self.signature) if self.signature is not None else 0,
            meta={"proof": proof.hex()},
        )
        key = auth.session_key(self._secret, client_nonce, server_nonce)
        channel.start_session(auth.SessionKeys(key, auth.CLIENT_TO_SERVER))
        channel.accept_plain_error = True
        header, _, meta = channel.recv_control(
            FrameLimits(0, MAX_META, 0), self.timeout
        )  # a forged WELCOME fails its tag: the server proved it knows the secret
        channel.accept_plain_error = False
        if header.msg_type is MessageType.ERROR:
            self._raise_remote(meta)
        if header.msg_type is not MessageType.WELCOME:
            raise ProtocolError(f"expected WELCOME from the server, got {header.msg_type.name}")
        if self.signature is not None and meta.get("wire") != self.wire:
            raise ProtocolError(
                f"parameter server answered wire encoding {meta.get('wire')!r} to {self.wire!r}"
            )
        self.worker_id = header.worker_id
        self.version = header.base_version
        self.algorithm = AlgorithmConfig.from_dict(meta["algorithm"])
        if self.signature is None:  # a monitor (gridtrain status, the service's polls)
            log.debug("connected to %s:%d as a monitor", *self.address)
            return
        log.info(
            "connected to %s:%d as worker %d at center version %d",
            *self.address,
            self.worker_id,
            self.version,
        )

    def close(self) -> None:
        """Say goodbye (best effort) and close."""
        channel = self._channel
        if channel is None:
            return
        try:
            channel.send(MessageType.GOODBYE, worker_id=self.worker_id)
            channel.recv_control(self._limits, min(self.timeout, 5.0))
        except (OSError, EOFError):
            log.debug("goodbye not acknowledged", exc_info=True)
        finally:
            self._drop()

    def _drop(self) -> None:
        if self._channel is not None:
            self._channel.close()
            self._channel = None

    def __enter__(self) -> PSClient:
        if self._channel is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def channel(self) -> Channel:
        if self._channel is None:
            raise ProtocolError("not connected; call connect() or use `with PSClient(...)`")
        return self._channel

    # -- requests ------------------------------------------------------------------------------

    def pull(
        self, out: list[Array] | None = None, *, epoch: int | None = None
    ) -> tuple[int, list[Array]]:
        """The center and its version; received into ``out`` when given (no allocation).

        With ``epoch``: the center as it was when that epoch's training ended (validation tasks).
        """
        meta = {"epoch": epoch} if epoch is not None else None
        live_version = self.version
        self.channel.send(MessageType.PULL, worker_id=self.worker_id, meta=meta)
        reply = self._recv_tensors(out)
        if epoch is not None:  # a snapshot is no base for pushes
            self.version = live_version
        return reply.version, reply.tensors

    def lease(self, wait: float = 2.0) -> dict[str, Any]:
        """The next task: ``{"kind": "train"|"validate"|"wait"|"done", ...}`` (see ps.leases).

        The server holds the request up to ``wait`` seconds while no task is available.
        """
        self.channel.send(MessageType.LEASE, worker_id=self.worker_id, meta={"wait": wait})
        header, meta = self._recv_control_reply()
        if header.msg_type is not MessageType.TASK:
            raise ProtocolError(f"expected TASK, got {header.msg_type.name}")
        return meta

    def complete(self, lease: int, result: dict[str, Any]) -> dict[str, Any]:
        """Report a task done; ``{"accepted": False, ...}`` when the lease had expired."""
        self.channel.send(
            MessageType.COMPLETE, worker_id=self.worker_id, meta={"lease": lease, "result": result}
        )
        header, meta = self._recv_control_reply()
        if header.msg_type is not MessageType.ACK:
            raise ProtocolError(f"expected ACK, got {header.msg_type.name}")
        return meta

    def push(self, update: Sequence[Array], base_version: int) -> PushResult:
        """Send an update computed at ``base_version``; raises ``StaleUpdateError`` if refused."""
        self._send_tensors(MessageType.PUSH, update, base_version)
        try:
            header, meta = self._recv_control_reply()
        except StaleUpdateError:
            self._keep_unapplied()
            raise
        if header.msg_type is not MessageType.ACK:
            raise ProtocolError(f"expected ACK, got {header.msg_type.name}")
        self.version = header.base_version
        return PushResult(header.base_version, int(meta.get("staleness", 0)))

    def push_pull(
        self, update: Sequence[Array], base_version: int, out: list[Array] | None = None
    ) -> Reply:
        """Push and receive the new center in one round trip (EASGD: the elastic difference)."""
        self._send_tensors(MessageType.PUSH_PULL, update, base_version)
        try:
            return self._recv_tensors(out)
        except StaleUpdateError:
            self._keep_unapplied()
            raise

    def status(self) -> dict[str, Any]:
        """The server's metrics (see ``gridtrain ps status``)."""
        self.channel.send(MessageType.STATUS, worker_id=self.worker_id)
        header, meta = self._recv_control_reply()
        if header.msg_type is not MessageType.STATUS_REPLY:
            raise ProtocolError(f"expected STATUS_REPLY, got {header.msg_type.name}")
        return meta

    # -- framing helpers -----------------------------------------------------------------------

    def _send_tensors(self, kind: MessageType, update: Sequence[Array], base_version: int) -> None:
        signature = self._worker_signature()
        if len(update) != len(signature):
            raise ValueError(
                f"update has {len(update)} tensors, the model has {len(signature)}; push one "
                "array per weight tensor, in get_weights() order"
            )
        for index, (array, spec) in enumerate(zip(update, signature.specs, strict=True)):
            if array.dtype != spec.dtype or tuple(array.shape) != spec.shape:
                raise ValueError(
                    f"update tensor {index} is {array.dtype} {array.shape}, the model's is "
                    f"{spec.describe()}"
                )
        self.channel.send(
            kind,
            worker_id=self.worker_id,
            base_version=base_version,
            table=self._table,
            tensor_count=len(signature),
            tensors=(
                self._topk_tensors(update)
                if pushes_topk(self.wire)
                else wire_tensors(update, self.wire, self._send_buffers)
            ),
        )

    def _topk_tensors(self, update: Sequence[Array]) -> list[memoryview]:
        """Top-k of update + residual per tensor; what is not sent becomes the new residual."""
        if not self._residual:
            self._residual = [
                None if count is None else np.zeros(array.size, np.float32)
                for array, count in zip(update, self._topk_counts, strict=True)
            ]
        self._in_flight = []
        views = []
        for index, (array, count) in enumerate(zip(update, self._topk_counts, strict=True)):
            residual = self._residual[index]
            if count is None or residual is None:
                views.append(wire_tensors([array], WIRE_FLOAT32)[0])
                continue
            residual += array.reshape(-1)
            indices, values = topk_select(residual, count)
            residual[indices] = 0
            self._in_flight.append((index, indices, values))
            payload = np.concatenate([indices.view(np.uint8), values.view(np.uint8)])
            views.append(payload.data)
        return views

    @property
    def residual(self) -> list[Array | None]:
        """Top-k: per tensor, the part of the updates so far that no push has carried yet."""
        return self._residual

    def _keep_unapplied(self) -> None:
        """A refused top-k push: what it sent goes back into the residual."""
        for index, indices, values in self._in_flight:
            residual = self._residual[index]
            if residual is not None:
                residual[indices] += values
        self._in_flight = []

    def _worker_signature(self) -> Signature:
        if self.signature is None:
            raise ProtocolError("a monitor connection (no signature) can only ask for status")
        return self.signature

    def _recv_tensors(self, out: list[Array] | None) -> Reply:
        signature = self._worker_signature()
        channel = self.channel
        header = channel.recv_header(self._limits, self.timeout)
        if header.msg_type is not MessageType.CENTER:
            self._finish_control(header)
            raise ProtocolError(f"expected CENTER, got {header.msg_type.name}")
        table, _ = channel.recv_sections(header)
        if table != self._table:
            raise ProtocolError("server sent tensors that do not match the model signature")
        if out is None:
            out = [np.empty(spec.shape, dtype=spec.dtype) for spec in signature.specs]
        elif Signature.of(out) != signature:
            raise ValueError("`out` arrays must have the model's shapes and dtypes")
        channel.recv_tensors(header, wire_views(out, self.wire))
        channel.finish(header)
        if centers_bf16(self.wire):
            bf16_expand(out)
        is_delta = bool(header.flags & FLAG_DELTA)
        self.version = header.base_version
        return Reply(header.base_version, out, is_delta)

    def _recv_control_reply(self) -> tuple[Header, dict[str, Any]]:
        header = self.channel.recv_header(self._limits, self.timeout)
        meta = self._finish_control(header)
        return header, meta

    def _finish_control(self, header: Header) -> dict[str, Any]:
        if header.data_length:
            raise ProtocolError(f"unexpected tensor data in a {header.msg_type.name} reply")
        _, meta = self.channel.recv_sections(header)
        self.channel.finish(header)
        if header.msg_type is MessageType.ERROR:
            self._raise_remote(meta)
        return meta

    def _raise_remote(self, meta: dict[str, Any]) -> None:
        code = str(meta.get("code", ""))
        message = str(meta.get("message", "unspecified error"))
        if code in _STALE_CODES:
            version = int(meta.get("version", 0))
            self.version = version
            raise StaleUpdateError(
                f"parameter server refused the push: {message}",
                version=version,
                staleness=int(meta.get("staleness", 0)),
            )
        error = _FATAL_ERRORS.get(code, RemoteError)
        self._drop()
        raise error(f"parameter server refused: {message}")
