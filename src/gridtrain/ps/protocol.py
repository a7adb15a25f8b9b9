"""Wire format of the parameter-server protocol: headers, tensor tables, message types, limits.

Layer: ps, bottom. This module turns values into bytes and bytes into values; it never touches a
socket, a clock or a key (``transport.py`` moves frames, ``auth.py`` authenticates them). Nothing
here pickles; tensors travel as raw little-endian bytes described by a tensor table.

A frame is::

    header | tensor table | meta | tensor data | tag

* header: ``_header_format``, fixed size, little-endian (fields below).
* tensor table: for each tensor a ``_tensor_entry_format`` (dtype code, ndim) followed by ``ndim``
  unsigned 64-bit dimensions.
* meta: a small UTF-8 JSON object for non-tensor fields (nonces, errors, metrics), never tensors.
* tensor data: the tensors' bytes in C order, back to back, no padding.
* tag: 16 bytes, present when ``FLAG_AUTHENTICATED`` is set (every frame after the handshake).

The largest acceptable frame follows from the state of the connection (``FrameLimits``): before
the handshake no tensor data at all; after it exactly the model's bytes. ``check_limits`` runs on
the header alone, before the receiver allocates or reads anything else.

New message types are added by a new ``MessageType`` value and a handler in the server's dispatch
table; the frame layout does not change. Shard leases came that way: LEASE asks for a task, TASK
answers it, COMPLETE reports one done (answered by ACK); all three are control frames (meta only).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import ml_dtypes
import numpy as np
import numpy.typing as npt

from gridtrain.errors import FrameTooLargeError, ProtocolError, ProtocolVersionError

MAGIC = b"GTPS"
# 2: HELLO negotiates the wire encoding of float32 tensors ("wire": "float32" or "bf16"); a
# version-1 peer is refused with an error that names both versions.
PROTOCOL_VERSION = 2
TAG_SIZE = 16

# magic, version, message type, flags, reserved, worker id, sequence, base version,
# payload length (table + meta + data), tensor count, table length, meta length
_header_format = struct.Struct("<4sHHHHIQqQIII")
HEADER_SIZE = _header_format.size
_tensor_entry_format = struct.Struct("<BB")
_dimension_format = struct.Struct("<Q")

FLAG_AUTHENTICATED = 0x1
FLAG_DELTA = 0x2  # the tensors of a reply are a difference to apply, not the center itself
_KNOWN_FLAGS = FLAG_AUTHENTICATED | FLAG_DELTA

MAX_NDIM = 8
MAX_TENSORS = 1 << 16
HANDSHAKE_MAX_TABLE = 2 << 20
MAX_META = 1 << 20


class MessageType(IntEnum):
    """Every frame's type. Requests go client to server; the rest are replies."""

    HELLO = 1
    CHALLENGE = 2
    AUTH = 3
    WELCOME = 4
    PULL = 5
    CENTER = 6
    PUSH = 7
    PUSH_PULL = 8
    ACK = 9
    STATUS = 10
    STATUS_REPLY = 11
    GOODBYE = 12
    ERROR = 13
    LEASE = 14
    TASK = 15
    COMPLETE = 16


# Little-endian dtypes the protocol can carry, by wire code.
_DTYPES: dict[int, np.dtype[Any]] = {
    1: np.dtype("<f2"),
    2: np.dtype("<f4"),
    3: np.dtype("<f8"),
    4: np.dtype("i1"),
    5: np.dtype("<i2"),
    6: np.dtype("<i4"),
    7: np.dtype("<i8"),
    8: np.dtype("u1"),
    9: np.dtype("<u2"),
    10: np.dtype("<u4"),
    11: np.dtype("<u8"),
    12: np.dtype("?"),
}
_DTYPE_CODES = {dtype: code for code, dtype in _DTYPES.items()}


@dataclass(frozen=True, slots=True)
class Header:
    """A decoded frame header."""

    msg_type: MessageType
    flags: int
    worker_id: int
    sequence: int
    base_version: int
    payload_length: int
    tensor_count: int
    table_length: int
    meta_length: int

    @property
    def data_length(self) -> int:
        """Bytes of tensor data that follow the table and the meta section."""
        return self.payload_length - self.table_length - self.meta_length

    @property
    def authenticated(self) -> bool:
        return bool(self.flags & FLAG_AUTHENTICATED)


@dataclass(frozen=True, slots=True)
class TensorSpec:
    """Shape and dtype of one weight tensor."""

    dtype: np.dtype[Any]
    shape: tuple[int, ...]

    @property
    def nbytes(self) -> int:
        count = 1
        for dim in self.shape:
            count *= dim
        return count * self.dtype.itemsize

    def describe(self) -> str:
        return f"{self.dtype.name} {self.shape}"


@dataclass(frozen=True, slots=True)
class Signature:
    """The model signature: the ordered shapes and dtypes of all weight tensors."""

    specs: tuple[TensorSpec, ...]

    @classmethod
    def of(cls, arrays: Sequence[npt.NDArray[Any]]) -> Signature:
        """The signature of a list of arrays (a Keras ``get_weights()`` list, for instance)."""
        specs = []
        for index, array in enumerate(arrays):
            dtype = np.dtype(array.dtype).newbyteorder("<")
            if dtype not in _DTYPE_CODES:
                raise ValueError(
                    f"tensor {index} has dtype {array.dtype}, which the parameter server cannot "
                    f"carry; use one of {sorted(d.name for d in _DTYPE_CODES)}"
                )
            specs.append(TensorSpec(dtype, tuple(int(d) for d in array.shape)))
        return cls(tuple(specs))

    @property
    def nbytes(self) -> int:
        return sum(spec.nbytes for spec in self.specs)

    def __len__(self) -> int:
        return len(self.specs)

    def encode(self) -> bytes:
        """The tensor table for this signature."""
        return encode_table(self.specs)

    def allocate(self) -> list[npt.NDArray[Any]]:
        """Fresh zeroed arrays with this signature (receive buffers, optimizer state)."""
        return [np.zeros(spec.shape, dtype=spec.dtype) for spec in self.specs]

    def first_difference(self, other: Signature) -> str | None:
        """None when equal, else a sentence naming the first tensor that differs."""
        for index, (mine, theirs) in enumerate(zip(self.specs, other.specs, strict=False)):
            if mine != theirs:
                return (
                    f"tensor {index} is {theirs.describe()} in the client's model but "
                    f"{mine.describe()} on the parameter server"
                )
        if len(self.specs) != len(other.specs):
            return (
                f"the client's model has {len(other.specs)} weight tensors but the parameter "
                f"server's has {len(self.specs)}"
            )
        return None


@dataclass(frozen=True, slots=True)
class FrameLimits:
    """What a receiver accepts in its current state; checked on the header alone."""

    max_table: int
    max_meta: int
    max_data: int


HANDSHAKE_LIMITS = FrameLimits(max_table=HANDSHAKE_MAX_TABLE, max_meta=64 << 10, max_data=0)

# How float32 tensors travel in PUSH, PUSH_PULL and CENTER frames, agreed in the handshake: as
# they are, or as bfloat16 (their upper 16 bits, rounded to nearest even), half the bytes; or,
# for pushes only, top-k: the k = ceil(fraction * n) largest entries of each float32 tensor as k
# uint32 indices then k float32 values, centers travelling as float32 (a tensor too small to
# gain, 2k >= n, travels whole). The tensor table still describes the model (float32); tensors of
# other dtypes travel as they are. The parameter server decodes to float32 and accumulates in
# float32. "topk-bf16" pushes top-k and sends centers as bf16: on a duplex link the float32 center
# coming back, not the sparse push, would otherwise set the pace. An old server answers a new
# encoding with its one-line "unknown wire encoding" error.
WIRE_FLOAT32 = "float32"
WIRE_BF16 = "bf16"
WIRE_TOPK = "topk"
WIRE_TOPK_BF16 = "topk-bf16"
WIRE_ENCODINGS = (WIRE_FLOAT32, WIRE_BF16, WIRE_TOPK, WIRE_TOPK_BF16)
_BF16_CENTERS = (WIRE_BF16, WIRE_TOPK_BF16)  # the dense helpers below encode these as bf16
MAX_TOPK_FRACTION = 0.5
_FLOAT32 = np.dtype("<f4")
_BF16 = np.dtype(ml_dtypes.bfloat16)


def pushes_topk(wire: str) -> bool:
    """Whether pushes under ``wire`` carry top-k entries (dense otherwise)."""
    return wire in (WIRE_TOPK, WIRE_TOPK_BF16)


def centers_bf16(wire: str) -> bool:
    """Whether centers (and every dense frame) under ``wire`` travel as bf16."""
    return wire in _BF16_CENTERS


def topk_counts(signature: Signature, fraction: float) -> list[int | None]:
    """Entries sent per tensor under top-k (None: the tensor travels whole)."""
    counts: list[int | None] = []
    for spec in signature.specs:
        size = spec.nbytes // spec.dtype.itemsize
        count = max(1, math.ceil(fraction * size))
        counts.append(count if spec.dtype == _FLOAT32 and 2 * count < size else None)
    return counts


def check_topk_fraction(fraction: object) -> float:
    if not isinstance(fraction, (int, float)) or not 0 < fraction <= MAX_TOPK_FRACTION:
        raise ProtocolError(
            f"top-k fraction {fraction!r} is out of range; give 0 < fraction <= {MAX_TOPK_FRACTION}"
        )
    return float(fraction)


def push_limits(signature: Signature, wire: str, fraction: float = 0.0) -> FrameLimits:
    """What the server accepts from a worker: one update, as encoded (top-k: sparse)."""
    if not pushes_topk(wire):
        return session_limits(signature, wire)
    counts = topk_counts(signature, fraction)
    data = sum(
        spec.nbytes if count is None else 8 * count
        for spec, count in zip(signature.specs, counts, strict=True)
    )
    return FrameLimits(max_table=len(signature.encode()), max_meta=MAX_META, max_data=data)


def topk_views(
    arrays: Sequence[npt.NDArray[Any]], counts: Sequence[int | None]
) -> list[memoryview]:
    """Receive views for a top-k push: the first 8k bytes of each sparse tensor's own buffer."""
    return [
        view if count is None else view[: 8 * count]
        for view, count in zip(tensor_views(arrays), counts, strict=True)
    ]


def topk_expand(arrays: Sequence[npt.NDArray[Any]], counts: Sequence[int | None]) -> None:
    """Scatter top-k entries received by ``topk_views`` into their dense float32 arrays."""
    for array, count in zip(arrays, counts, strict=True):
        if count is None:
            continue
        flat = array.reshape(-1)
        raw = flat.view(np.uint8)
        indices = raw[: 4 * count].view(np.uint32).copy()
        values = raw[4 * count : 8 * count].view(_FLOAT32).copy()
        if indices.size and int(indices.max()) >= flat.size:
            raise ProtocolError(
                f"top-k index {int(indices.max())} is outside a tensor of {flat.size} entries"
            )
        flat[:] = 0
        flat[indices] = values


def topk_select(flat: npt.NDArray[Any], count: int) -> tuple[Any, Any]:
    """Indices (uint32) and values of the ``count`` entries of largest magnitude."""
    indices = np.argpartition(np.abs(flat), flat.size - count)[flat.size - count :]
    return indices.astype(np.uint32), flat[indices]


def wire_nbytes(spec: TensorSpec, wire: str) -> int:
    """Bytes of one tensor on the wire under encoding ``wire``."""
    if wire in _BF16_CENTERS and spec.dtype == _FLOAT32:
        return spec.nbytes // 2
    return spec.nbytes


def check_wire(wire: object) -> str:
    if wire not in WIRE_ENCODINGS:
        raise ProtocolError(
            f"unknown wire encoding {wire!r}; this side speaks {', '.join(WIRE_ENCODINGS)}"
        )
    return str(wire)


def wire_views(arrays: Sequence[npt.NDArray[Any]], wire: str) -> list[memoryview]:
    """Receive views: for bf16, the first half of each float32 tensor's own buffer, which
    ``bf16_expand`` then widens in place (no second buffer)."""
    views = tensor_views(arrays)
    if wire not in _BF16_CENTERS:
        return views
    return [
        view[: view.nbytes // 2] if array.dtype == _FLOAT32 else view
        for array, view in zip(arrays, views, strict=True)
    ]


def bf16_expand(arrays: Sequence[npt.NDArray[Any]]) -> None:
    """Widen bf16 values received by ``wire_views`` into the float32 arrays, in place."""
    for array in arrays:
        if array.dtype == _FLOAT32:
            flat = array.reshape(-1)
            halves = flat.view(_BF16)[: flat.size].copy()  # they overlap the result
            np.copyto(flat, halves)


def bf16_encode(array: npt.NDArray[Any], out: npt.NDArray[np.uint16] | None = None) -> Any:
    """float32 to bfloat16 bits (round to nearest, ties to even; NaN stays NaN), into ``out``.

    One pass of ml_dtypes' C cast (a dependency of Keras): it rounds as the arithmetic of
    earlier versions did, at about a quarter of its memory traffic, which is what the parameter
    server's capacity in bf16 was bound by.
    """
    flat = np.ascontiguousarray(array, dtype=_FLOAT32).reshape(-1)
    if out is None:
        out = np.empty(flat.size, np.uint16)
    np.copyto(out.view(_BF16), flat, casting="same_kind")
    return out


def wire_tensors(
    arrays: Sequence[npt.NDArray[Any]], wire: str, out: list[Any] | None = None
) -> list[memoryview]:
    """Send views of ``arrays`` under ``wire``; bf16 encodes float32 tensors (into ``out``'s
    buffers when given, else fresh ones)."""
    if wire not in _BF16_CENTERS:
        return tensor_views(arrays)
    views = []
    for index, array in enumerate(arrays):
        if array.dtype == _FLOAT32:
            buffer = bf16_encode(array, out[index] if out is not None else None)
            views.append(buffer.data.cast("B"))
        else:
            views.append(tensor_views([array])[0])
    return views


def wire_buffers(signature: Signature, wire: str) -> list[Any]:
    """Reusable send buffers for ``wire_tensors`` (None where a tensor travels as it is)."""
    return [
        np.empty(spec.nbytes // 4, np.uint16)
        if wire in _BF16_CENTERS and spec.dtype == _FLOAT32
        else None
        for spec in signature.specs
    ]


def session_limits(signature: Signature, wire: str = WIRE_FLOAT32) -> FrameLimits:
    """Limits after the handshake: at most one copy of the model, as encoded, in any frame."""
    return FrameLimits(
        max_table=len(signature.encode()),
        max_meta=MAX_META,
        max_data=sum(wire_nbytes(spec, wire) for spec in signature.specs),
    )


def encode_header(
    msg_type: MessageType,
    *,
    flags: int = 0,
    worker_id: int = 0,
    sequence: int = 0,
    base_version: int = 0,
    table_length: int = 0,
    meta_length: int = 0,
    data_length: int = 0,
    tensor_count: int = 0,
) -> bytes:
    return _header_format.pack(
        MAGIC,
        PROTOCOL_VERSION,
        int(msg_type),
        flags,
        0,
        worker_id,
        sequence,
        base_version,
        table_length + meta_length + data_length,
        tensor_count,
        table_length,
        meta_length,
    )


def decode_header(data: bytes | bytearray | memoryview) -> Header:
    """Parse a header; raise ``ProtocolError`` for anything that is not a valid one."""
    if len(data) != HEADER_SIZE:
        raise ProtocolError(f"a frame header is {HEADER_SIZE} bytes, got {len(data)}")
    (
        magic,
        version,
        msg_type,
        flags,
        reserved,
        worker_id,
        sequence,
        base_version,
        payload_length,
        tensor_count,
        table_length,
        meta_length,
    ) = _header_format.unpack(data)
    if magic != MAGIC:
        raise ProtocolError(
            f"not a gridtrain parameter-server frame (magic {bytes(magic)!r}, expected {MAGIC!r}); "
            "is something else listening on this port?"
        )
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionError(
            f"peer speaks protocol version {version}, this side speaks {PROTOCOL_VERSION}; "
            "run the same gridtrain version on the parameter server and the workers"
        )
    try:
        kind = MessageType(msg_type)
    except ValueError:
        raise ProtocolError(f"unknown message type {msg_type}") from None
    if flags & ~_KNOWN_FLAGS or reserved:
        raise ProtocolError(f"unknown header flags {flags:#x} or reserved field {reserved}")
    if table_length + meta_length > payload_length:
        raise ProtocolError(
            f"header announces table {table_length} + meta {meta_length} bytes in a payload of "
            f"{payload_length}"
        )
    return Header(
        kind,
        flags,
        worker_id,
        sequence,
        base_version,
        payload_length,
        tensor_count,
        table_length,
        meta_length,
    )


def check_limits(header: Header, limits: FrameLimits) -> None:
    """Refuse a frame whose announced sizes exceed ``limits``, before anything is allocated."""
    if header.table_length > limits.max_table:
        raise FrameTooLargeError(
            f"{header.msg_type.name} frame announces a {header.table_length}-byte tensor table, "
            f"the limit here is {limits.max_table}"
        )
    if header.meta_length > limits.max_meta:
        raise FrameTooLargeError(
            f"{header.msg_type.name} frame announces {header.meta_length} bytes of meta, "
            f"the limit here is {limits.max_meta}"
        )
    if header.data_length > limits.max_data:
        raise FrameTooLargeError(
            f"{header.msg_type.name} frame announces {header.data_length} bytes of tensor data, "
            f"the limit here is {limits.max_data} (the model's size)"
        )
    if header.tensor_count > MAX_TENSORS:
        raise FrameTooLargeError(
            f"frame announces {header.tensor_count} tensors, the limit is {MAX_TENSORS}"
        )


def encode_table(specs: Sequence[TensorSpec]) -> bytes:
    parts = []
    for spec in specs:
        parts.append(_tensor_entry_format.pack(_DTYPE_CODES[spec.dtype], len(spec.shape)))
        parts.extend(_dimension_format.pack(dim) for dim in spec.shape)
    return b"".join(parts)


def decode_table(data: bytes | bytearray | memoryview, tensor_count: int) -> Signature:
    """Parse a tensor table of ``tensor_count`` entries that must fill ``data`` exactly."""
    view = memoryview(data)
    offset = 0
    specs = []
    for index in range(tensor_count):
        if offset + _tensor_entry_format.size > len(view):
            raise ProtocolError(f"tensor table ends inside entry {index}")
        code, ndim = _tensor_entry_format.unpack_from(view, offset)
        offset += _tensor_entry_format.size
        dtype = _DTYPES.get(code)
        if dtype is None:
            raise ProtocolError(f"tensor {index} has unknown dtype code {code}")
        if ndim > MAX_NDIM:
            raise ProtocolError(f"tensor {index} has {ndim} dimensions, the limit is {MAX_NDIM}")
        end = offset + ndim * _dimension_format.size
        if end > len(view):
            raise ProtocolError(f"tensor table ends inside the shape of tensor {index}")
        shape = struct.unpack_from(f"<{ndim}Q", view, offset)
        offset = end
        specs.append(TensorSpec(dtype, tuple(shape)))
    if offset != len(view):
        raise ProtocolError(
            f"tensor table has {len(view) - offset} trailing bytes after {tensor_count} entries"
        )
    return Signature(tuple(specs))


def encode_meta(meta: dict[str, Any] | None) -> bytes:
    if not meta:
        return b""
    return json.dumps(meta, separators=(",", ":"), allow_nan=False).encode()


def decode_meta(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Parse a meta section: empty, or a JSON object."""
    if not data:
        return {}
    try:
        value = json.loads(bytes(data).decode())
    except (UnicodeDecodeError, ValueError) as err:
        raise ProtocolError(f"frame meta section is not valid UTF-8 JSON: {err}") from None
    if not isinstance(value, dict):
        raise ProtocolError(f"frame meta section must be a JSON object, got {type(value).__name__}")
    return value


def tensor_views(arrays: Sequence[npt.NDArray[Any]]) -> list[memoryview]:
    """Flat byte views of C-contiguous little-endian arrays, for scatter-gather send and receive."""
    views = []
    for index, array in enumerate(arrays):
        if not array.flags.c_contiguous:
            raise ValueError(f"tensor {index} is not C-contiguous; pass np.ascontiguousarray(it)")
        if array.dtype.byteorder == ">":
            raise ValueError(
                f"tensor {index} is big-endian; pass it as {array.dtype.newbyteorder('<')}"
            )
        views.append(array.reshape(-1).view(np.uint8).data)
    return views
