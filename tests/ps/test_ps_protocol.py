"""The wire format: headers, tensor tables, limits; property-based tests of the parsers."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gridtrain.errors import FrameTooLargeError, ProtocolError, ProtocolVersionError
from gridtrain.ps import protocol
from gridtrain.ps.protocol import (
    HEADER_SIZE,
    MessageType,
    Signature,
    TensorSpec,
    check_limits,
    decode_header,
    decode_table,
    encode_header,
    session_limits,
)

dtypes = st.sampled_from(
    [np.dtype(d) for d in ("<f2", "<f4", "<f8", "i1", "<i4", "<i8", "u1", "<u2", "?")]
)
shapes = st.lists(st.integers(0, 2**40), max_size=protocol.MAX_NDIM).map(tuple)
specs = st.builds(TensorSpec, dtypes, shapes)


def test_header_round_trip_keeps_every_field() -> None:
    data = encode_header(
        MessageType.PUSH_PULL,
        flags=protocol.FLAG_AUTHENTICATED,
        worker_id=7,
        sequence=2**40,
        base_version=-3,
        table_length=20,
        meta_length=5,
        data_length=1000,
        tensor_count=2,
    )
    assert len(data) == HEADER_SIZE == 52
    header = decode_header(data)
    assert header.msg_type is MessageType.PUSH_PULL
    assert (header.worker_id, header.sequence, header.base_version) == (7, 2**40, -3)
    assert (header.table_length, header.meta_length, header.data_length) == (20, 5, 1000)
    assert header.payload_length == 1025
    assert header.tensor_count == 2
    assert header.authenticated


def test_header_layout_is_little_endian_with_magic_first() -> None:
    data = encode_header(MessageType.PULL, worker_id=1)
    assert data[:4] == b"GTPS"
    assert struct.unpack_from("<HH", data, 4) == (protocol.PROTOCOL_VERSION, MessageType.PULL)


@pytest.mark.parametrize(
    ("patch", "error", "words"),
    [
        ((0, b"HTTP"), ProtocolError, "magic"),
        ((4, struct.pack("<H", 9)), ProtocolVersionError, "version 9"),
        ((6, struct.pack("<H", 999)), ProtocolError, "unknown message type 999"),
        ((8, struct.pack("<H", 0x80)), ProtocolError, "flags"),
    ],
)
def test_bad_header_fields_are_named(patch: tuple[int, bytes], error: type, words: str) -> None:
    data = bytearray(encode_header(MessageType.PULL))
    offset, value = patch
    data[offset : offset + len(value)] = value
    with pytest.raises(error, match=words):
        decode_header(data)


def test_header_whose_sections_exceed_the_payload_is_refused() -> None:
    data = bytearray(encode_header(MessageType.PUSH, table_length=10, data_length=0))
    struct.pack_into("<Q", data, 28, 5)  # payload length smaller than the table
    with pytest.raises(ProtocolError, match="payload"):
        decode_header(data)


def test_limits_follow_from_the_signature() -> None:
    signature = Signature.of([np.zeros((3, 4), np.float32), np.zeros(2, np.float64)])
    limits = session_limits(signature)
    assert limits.max_data == 3 * 4 * 4 + 2 * 8
    ok = decode_header(
        encode_header(MessageType.PUSH, data_length=64, table_length=len(signature.encode()))
    )
    check_limits(ok, limits)
    huge = decode_header(encode_header(MessageType.PUSH, data_length=100 * 10**9))
    with pytest.raises(FrameTooLargeError, match="100000000000 bytes of tensor data"):
        check_limits(huge, limits)
    with pytest.raises(FrameTooLargeError, match="tensor data"):
        check_limits(huge, protocol.HANDSHAKE_LIMITS)


def test_signature_difference_names_the_first_differing_tensor() -> None:
    mine = Signature.of([np.zeros((3, 4), np.float32), np.zeros(2, np.float32)])
    assert mine.first_difference(mine) is None
    theirs = Signature.of([np.zeros((3, 4), np.float32), np.zeros(3, np.float32)])
    message = mine.first_difference(theirs)
    assert message == (
        "tensor 1 is float32 (3,) in the client's model but float32 (2,) on the parameter server"
    )
    shorter = Signature.of([np.zeros((3, 4), np.float32)])
    assert "has 1 weight tensors but the parameter server's has 2" in str(
        mine.first_difference(shorter)
    )


def test_unsupported_dtype_and_layout_are_refused_with_the_way_out() -> None:
    with pytest.raises(ValueError, match="tensor 0 has dtype complex64"):
        Signature.of([np.zeros(2, np.complex64)])
    with pytest.raises(ValueError, match="not C-contiguous"):
        protocol.tensor_views([np.zeros((4, 4), np.float32).T])


def test_table_errors_name_the_entry() -> None:
    good = Signature.of([np.zeros((2, 3), np.float32)]).encode()
    with pytest.raises(ProtocolError, match="unknown dtype code 99"):
        decode_table(bytes([99]) + good[1:], 1)
    with pytest.raises(ProtocolError, match="9 dimensions"):
        decode_table(bytes([2, 9]) + bytes(72), 1)
    with pytest.raises(ProtocolError, match="trailing"):
        decode_table(good + b"x", 1)
    with pytest.raises(ProtocolError, match="ends inside"):
        decode_table(good[:-1], 1)


def test_meta_must_be_a_json_object() -> None:
    assert protocol.decode_meta(protocol.encode_meta({"a": 1})) == {"a": 1}
    assert protocol.decode_meta(b"") == {}
    with pytest.raises(ProtocolError, match="JSON object"):
        protocol.decode_meta(b"[1]")
    with pytest.raises(ProtocolError, match="not valid UTF-8 JSON"):
        protocol.decode_meta(b"\xff{")


# Mostly plausible headers: the right magic and version, the rest arbitrary.
header_bytes = st.one_of(
    st.binary(min_size=HEADER_SIZE, max_size=HEADER_SIZE),
    st.binary(min_size=HEADER_SIZE - 6, max_size=HEADER_SIZE - 6).map(
        lambda tail: protocol.MAGIC + struct.pack("<H", protocol.PROTOCOL_VERSION) + tail
    ),
    st.tuples(st.integers(1, 13), st.integers(0, 3), st.binary(min_size=40, max_size=40)).map(
        lambda t: (
            protocol.MAGIC + struct.pack("<HHHH", protocol.PROTOCOL_VERSION, t[0], t[1], 0) + t[2]
        )
    ),
)


@given(header_bytes)
def test_any_header_bytes_parse_or_raise_protocol_error(data: bytes) -> None:
    try:
        header = decode_header(data)
    except ProtocolError:
        return
    assert header.table_length + header.meta_length <= header.payload_length
    assert header.data_length >= 0
    assert (
        encode_header(
            header.msg_type,
            flags=header.flags,
            worker_id=header.worker_id,
            sequence=header.sequence,
            base_version=header.base_version,
            table_length=header.table_length,
            meta_length=header.meta_length,
            data_length=header.data_length,
            tensor_count=header.tensor_count,
        )
        == data
    )


@given(
    st.sampled_from(list(MessageType)),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**64 - 1),
    st.integers(-(2**63), 2**63 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**63),
)
def test_valid_headers_round_trip(
    kind: MessageType, worker: int, seq: int, base: int, table: int, meta: int, data: int
) -> None:
    header = decode_header(
        encode_header(
            kind,
            worker_id=worker,
            sequence=seq,
            base_version=base,
            table_length=table,
            meta_length=meta,
            data_length=data,
        )
    )
    assert (header.msg_type, header.worker_id, header.sequence) == (kind, worker, seq)
    assert (header.base_version, header.table_length, header.meta_length) == (base, table, meta)
    assert header.data_length == data


@given(st.binary(max_size=200), st.integers(0, 12))
def test_any_table_bytes_parse_canonically_or_raise_protocol_error(data: bytes, count: int) -> None:
    try:
        signature = decode_table(data, count)
    except ProtocolError:
        return
    assert len(signature) == count
    assert signature.encode() == data


@given(st.lists(specs, max_size=20))
def test_tables_round_trip(entries: list[TensorSpec]) -> None:
    signature = Signature(tuple(entries))
    assert decode_table(signature.encode(), len(entries)) == signature


@given(st.integers(0, 2**20), st.integers(0, 2**20), st.integers(0, 2**34), st.integers(0, 2**17))
def test_limits_either_refuse_or_bound_every_section(
    table: int, meta: int, data: int, count: int
) -> None:
    limits = protocol.FrameLimits(max_table=4096, max_meta=65536, max_data=10**6)
    header = decode_header(
        encode_header(
            MessageType.PUSH,
            table_length=table,
            meta_length=meta,
            data_length=data,
            tensor_count=count,
        )
    )
    try:
        check_limits(header, limits)
    except FrameTooLargeError:
        assert table > 4096 or meta > 65536 or data > 10**6 or count > protocol.MAX_TENSORS
    else:
        assert table <= 4096
        assert meta <= 65536
        assert data <= 10**6
