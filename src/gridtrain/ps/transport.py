"""Frame transport: moves protocol frames over a connected socket, authenticating every byte.

Layer: ps, above ``protocol`` and ``auth``. It frames and authenticates bytes; it never interprets
a message (that is ``client.py``'s and ``server.py``'s job) and never allocates tensor memory:
callers hand it preallocated buffers and it fills them with ``recv_into``. Sends are
scatter-gather (``sendmsg`` over memoryviews; plain ``sendall`` per buffer under TLS, where
``sendmsg`` is unavailable), in chunks whose MAC is computed just before they are sent and just
after they arrive, while they are still in cache.

Timeouts: waiting for the first byte of a frame may take ``idle_timeout`` (a worker computing
between two pushes); once a frame has begun, it must complete within ``read_timeout`` plus its
size at ``min_rate`` bytes per second, so a peer that sends half a header and goes silent is
dropped. A peer that closes between frames raises ``PeerClosedError`` (an ``EOFError``); one that
closes mid-frame raises ``ProtocolError`` (a ``ConnectionError``).
"""

from __future__ import annotations

import logging
import socket
import ssl
import struct
import time
from collections.abc import Sequence
from typing import Any

from gridtrain.errors import PeerClosedError, ProtocolError, ReadTimeoutError
from gridtrain.ps.auth import FrameMac, SessionKeys
from gridtrain.ps.protocol import (
    FLAG_AUTHENTICATED,
    HEADER_SIZE,
    TAG_SIZE,
    FrameLimits,
    Header,
    MessageType,
    check_limits,
    decode_header,
    decode_meta,
    encode_header,
    encode_meta,
)

log = logging.getLogger(__name__)

# Send, receive and MAC granularity: large enough to amortise system calls, small enough (the L2
# cache of the EPYC cores here) that a chunk is still in cache when it is MACed right after
# arriving or right before leaving. Measured best of 256 KiB to 4 MiB (benchmarks/ps.py).
CHUNK = 512 << 10
_DISCARD = 1 << 20
_timeval = struct.Struct("@ll")


def _deadline_for(nbytes: int, read_timeout: float, min_rate: float) -> float:
    return time.monotonic() + read_timeout + nbytes / min_rate


class Channel:
    """One connection's framing state: sequence numbers, session keys, timeouts and counters."""

    def __init__(
        self,
        sock: socket.socket,
        *,
        read_timeout: float = 30.0,
        min_rate: float = 1e6,
    ) -> None:
        self.read_timeout = read_timeout
        self.min_rate = min_rate
        self.replace_socket(sock)
        self.keys: SessionKeys | None = None
        self.send_sequence = 0
        self.recv_sequence = 0
        self.bytes_sent = 0
        self.bytes_received = 0
        self._recv_mac: FrameMac | None = None
        self._deadline = 0.0
        self._header_buffer = bytearray(HEADER_SIZE)
        self._tag_buffer = bytearray(TAG_SIZE)
        self._discard: bytearray | None = None
        self.accept_plain_error = False
        self.closed = False
        # an absolute time.monotonic() that no frame may run past (the server's total handshake
        # deadline), whatever its own read_timeout and size allow
        self.deadline_cap: float | None = None

    def replace_socket(self, sock: socket.socket) -> None:
        """Use ``sock`` (at first, or the same connection once wrapped in TLS)."""
        self.sock = sock
        # Plain sockets stay blocking with kernel timeouts (SO_RCVTIMEO/SO_SNDTIMEO), so one
        # recv(MSG_WAITALL) or sendmsg moves a whole chunk in one system call; TLS sockets
        # support neither flags nor sendmsg and use Python's timeouts.
        self._kernel = not isinstance(sock, ssl.SSLSocket) and hasattr(sock, "sendmsg")
        self._use_sendmsg = self._kernel
        self._wait_all = socket.MSG_WAITALL if self._kernel else 0
        if self._kernel:
            sock.settimeout(None)

    def _arm(self, option: int, seconds: float | None) -> None:
        """Bound the next blocking receive (SO_RCVTIMEO) or send (SO_SNDTIMEO)."""
        if seconds is not None:
            seconds = max(seconds, 0.001)  # 0 would mean "forever" to the kernel
        if not self._kernel:
            self.sock.settimeout(seconds)
            return
        if seconds is None:
            value = _timeval.pack(0, 0)  # wait forever
        else:
            value = _timeval.pack(int(seconds), int(seconds % 1 * 1e6))
        self.sock.setsockopt(socket.SOL_SOCKET, option, value)

    def _frame_deadline(self, nbytes: int) -> float:
        deadline = _deadline_for(nbytes, self.read_timeout, self.min_rate)
        return deadline if self.deadline_cap is None else min(deadline, self.deadline_cap)

    def start_session(self, keys: SessionKeys) -> None:
        """From now on every frame in both directions carries a tag under ``keys``."""
        self.keys = keys
        self.send_sequence = 0
        self.recv_sequence = 0

    # -- sending -------------------------------------------------------------------------------

    def send(
        self,
        msg_type: MessageType,
        *,
        flags: int = 0,
        worker_id: int = 0,
        base_version: int = 0,
        table: bytes = b"",
        tensor_count: int = 0,
        meta: dict[str, Any] | None = None,
        tensors: Sequence[memoryview] = (),
    ) -> None:
        """Send one frame; ``tensors`` are flat byte views sent without copying."""
        meta_bytes = encode_meta(meta)
        data_length = sum(view.nbytes for view in tensors)
        mac = None
        if self.keys is not None:
            flags |= FLAG_AUTHENTICATED
            mac = self.keys.sending_mac(self.send_sequence)
        header = encode_header(
            msg_type,
            flags=flags,
            worker_id=worker_id,
            sequence=self.send_sequence,
            base_version=base_version,
            table_length=len(table),
            meta_length=len(meta_bytes),
            data_length=data_length,
            tensor_count=tensor_count,
        )
        total = len(header) + len(table) + len(meta_bytes) + data_length
        deadline = self._frame_deadline(total)
        batch: list[memoryview] = []
        batch_bytes = 0
        for part in (memoryview(header), memoryview(table), memoryview(meta_bytes), *tensors):
            for start in range(0, part.nbytes, CHUNK):
                chunk = part[start : start + CHUNK]
                if mac is not None:
                    mac.update(chunk)
                batch.append(chunk)
                batch_bytes += chunk.nbytes
                if batch_bytes >= CHUNK:
                    self._send_all(batch, deadline)
                    batch, batch_bytes = [], 0
        if mac is not None:
            batch.append(memoryview(mac.tag()))
        if batch:
            self._send_all(batch, deadline)
        self.send_sequence += 1
        self.bytes_sent += total + (TAG_SIZE if mac is not None else 0)

    def _send_all(self, buffers: list[memoryview], deadline: float) -> None:
        try:
            if not self._use_sendmsg:
                for buffer in buffers:
                    self._arm(socket.SO_SNDTIMEO, self._remaining(deadline))
                    self.sock.sendall(buffer)  # raises TimeoutError if it cannot finish in time
                return
            pending = [buffer.cast("B") for buffer in buffers if buffer.nbytes]
            while pending:
                left = self._remaining(deadline)
                self._arm(socket.SO_SNDTIMEO, left)
                sent = self.sock.sendmsg(pending)
                if left <= 0 and sent < sum(buffer.nbytes for buffer in pending):
                    raise self._overdue()
                while pending and sent >= pending[0].nbytes:
                    sent -= pending[0].nbytes
                    pending.pop(0)
                if sent:
                    pending[0] = pending[0][sent:]
        except (TimeoutError, BlockingIOError):
            raise ReadTimeoutError(
                f"peer stopped reading for more than {self.read_timeout:g} s; dropping it"
            ) from None

    # -- receiving -----------------------------------------------------------------------------

    @staticmethod
    def _remaining(deadline: float) -> float:
        """Seconds left before ``deadline``; 0 or less once it has passed.

        A passed deadline is not yet the peer's fault: this thread may have waited its turn for
        the CPU while the peer's bytes were already there (a loaded server, hundreds of threads).
        So an overdue call still gets one short try (``_arm`` floors it at 1 ms) and the peer is
        dropped only if that try cannot move everything asked for: bytes that have arrived are
        read, a peer that is really late (or drips) is not waited for.
        """
        return deadline - time.monotonic()

    def _overdue(self) -> ReadTimeoutError:
        return ReadTimeoutError(
            f"peer did not complete a frame within its deadline ({self.read_timeout:g} s "
            f"plus {self.min_rate:g} B/s); dropping it"
        )

    def _recv_exact(self, view: memoryview, mac: FrameMac | None) -> None:
        got = 0
        size = view.nbytes
        try:
            while got < size:
                left = self._remaining(self._deadline)
                self._arm(socket.SO_RCVTIMEO, left)
                want = min(size - got, CHUNK)
                count = self.sock.recv_into(view[got : got + want], want, self._wait_all)
                if count == 0:
                    raise ProtocolError("peer closed the connection in the middle of a frame")
                if left <= 0 and count < want:
                    raise self._overdue()
                if mac is not None:
                    mac.update(view[got : got + count])
                got += count
        except (TimeoutError, BlockingIOError):
            raise ReadTimeoutError(
                f"peer went silent in the middle of a frame for {self.read_timeout:g} s; "
                "dropping it"
            ) from None
        self.bytes_received += size

    def recv_header(self, limits: FrameLimits, idle_timeout: float | None = None) -> Header:
        """Wait for the next frame and return its checked header, before reading anything else.

        Raises ``PeerClosedError`` if the peer closes cleanly before the frame's first byte.
        """
        view = memoryview(self._header_buffer)
        try:
            self._arm(socket.SO_RCVTIMEO, idle_timeout)
            first = self.sock.recv_into(view, HEADER_SIZE)
        except (TimeoutError, BlockingIOError):
            raise ReadTimeoutError(
                f"peer sent nothing for {idle_timeout:g} s; dropping it"
            ) from None
        if first == 0:
            raise PeerClosedError("peer closed the connection")
        self._deadline = self._frame_deadline(HEADER_SIZE)
        self._recv_exact(view[first:], None)
        self.bytes_received += first
        header = decode_header(self._header_buffer)
        check_limits(header, limits)
        mac = None
        if self.keys is not None and not header.authenticated:
            # Only the refusal of a wrong secret comes unauthenticated (the server has no key).
            if not (
                self.accept_plain_error
                and header.msg_type is MessageType.ERROR
                and self.recv_sequence == 0
            ):
                raise ProtocolError("unauthenticated frame inside an authenticated session")
        elif self.keys is not None:
            if header.sequence != self.recv_sequence:
                raise ProtocolError(
                    f"frame sequence number {header.sequence}, expected {self.recv_sequence} "
                    "(replayed or dropped frame)"
                )
            mac = self.keys.receiving_mac(self.recv_sequence)
            mac.update(view)
        elif header.authenticated:
            raise ProtocolError("authenticated frame before the handshake finished")
        self._recv_mac = mac
        self._deadline = self._frame_deadline(header.payload_length)
        return header

    def recv_sections(self, header: Header) -> tuple[bytes, dict[str, Any]]:
        """Read the tensor table (raw bytes) and the meta section (decoded) of ``header``'s frame.

        The meta is decoded before the tag is checked; callers act on it only after ``finish``.
        """
        buffer = bytearray(header.table_length + header.meta_length)
        self._recv_exact(memoryview(buffer), self._recv_mac)
        table = bytes(buffer[: header.table_length])
        return table, decode_meta(buffer[header.table_length :])

    def recv_tensors(self, header: Header, views: Sequence[memoryview]) -> None:
        """Fill ``views`` (sized by the caller from the checked table) with the tensor data."""
        if sum(view.nbytes for view in views) != header.data_length:
            raise ProtocolError(
                f"frame carries {header.data_length} bytes of tensor data, its table describes "
                f"{sum(view.nbytes for view in views)}"
            )
        for view in views:
            self._recv_exact(view, self._recv_mac)

    def discard_tensors(self, header: Header) -> None:
        """Read and authenticate the tensor data of a frame whose content will not be used."""
        if self._discard is None:
            self._discard = bytearray(_DISCARD)
        left = header.data_length
        view = memoryview(self._discard)
        while left:
            step = min(left, _DISCARD)
            self._recv_exact(view[:step], self._recv_mac)
            left -= step

    def finish(self, header: Header) -> None:
        """Read and check the frame's tag; the frame's content may be used only after this."""
        del header
        if self._recv_mac is not None:
            self._recv_exact(memoryview(self._tag_buffer), None)
            self._recv_mac.verify(self._tag_buffer)
            self._recv_mac = None
        self.recv_sequence += 1

    def recv_control(
        self, limits: FrameLimits, idle_timeout: float | None = None
    ) -> tuple[Header, bytes, dict[str, Any]]:
        """Receive a frame that carries no tensor data (handshake, status, goodbye, errors)."""
        header = self.recv_header(limits, idle_timeout)
        if header.data_length:
            raise ProtocolError(
                f"{header.msg_type.name} frame must not carry tensor data, "
                f"it announces {header.data_length} bytes"
            )
        table, meta = self.recv_sections(header)
        self.finish(header)
        return header, table, meta

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            log.debug("shutdown of an already broken socket", exc_info=True)
        self.sock.close()
