"""TensorBoard event files, written without TensorFlow or TensorBoard installed.

Layer: foundation (pure Python and files). Every training writes its per-epoch curves, its
exchange and staleness figures and its hyper-parameters here, so that ``tensorboard --logdir
results/`` puts runs and tune trials side by side. A run's JAX or PyTorch backend, or a
head node without TensorFlow, must still write them, so the format is written by hand: it is
small and stable.

An event file is a TFRecord stream: each record is its length (uint64, little-endian), the
masked CRC-32C of those 8 bytes, the bytes of one ``Event`` protocol buffer and their masked
CRC-32C. The first event carries the file version (``brain.Event:2``); each later one a
``Summary`` of scalar values (``simple_value``) or, for the hyper-parameters, the hparams
plugin's ``SessionStartInfo`` (TensorBoard's HPARAMS tab reads it and takes the run's scalar
tags as its metrics). The messages and field numbers are TensorFlow's
``core/util/event.proto`` and ``core/framework/summary.proto`` and TensorBoard's
``plugins/hparams/plugin_data.proto``; the tests read the files back with TensorBoard's own
``EventAccumulator``.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Mapping
from pathlib import Path
from typing import IO


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord frames use it."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked(data: bytes) -> bytes:
    crc = crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def _varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # a negative int64 is ten bytes, as protobuf writes it
    out = bytearray()
    while True:
        bits = value & 0x7F
        value >>= 7
        if value:
            out.append(bits | 0x80)
        else:
            out.append(bits)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field (string, bytes or message)."""
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _double(number: int, value: float) -> bytes:
    return _varint(number << 3 | 1) + struct.pack("<d", value)


def _float(number: int, value: float) -> bytes:
    return _varint(number << 3 | 5) + struct.pack("<f", value)


def _int(number: int, value: int) -> bytes:
    return _varint(number << 3) + _varint(value)


def _event(wall_time: float, step: int, what: bytes) -> bytes:
    return _double(1, wall_time) + _int(2, step) + what


def _hparam_value(value: object) -> bytes:
    """A ``google.protobuf.Value``: a number, a string or a bool."""
    if isinstance(value, bool):
        return _int(4, int(value))
    if isinstance(value, int | float):
        return _double(2, float(value))
    return _field(3, str(value).encode())


class EventWriter:
    """One event file in ``folder`` (made if missing): scalars per step and the hyper-parameters.

    Each call appends whole records and flushes, so a reader (TensorBoard following a running
    training) never sees half a record, and a killed process loses at most what it had not
    written yet.
    """

    def __init__(self, folder: str | Path, suffix: str = "") -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        now = time.time()
        name = f"events.out.tfevents.{int(now)}.{socket.gethostname()}{suffix}"
        self.path = self.folder / name
        self._file: IO[bytes] = open(self.path, "ab")  # noqa: SIM115 - closed by close()
        self._write(_event(now, 0, _field(3, b"brain.Event:2")))

    def _write(self, event: bytes) -> None:
        header = struct.pack("<Q", len(event))
        self._file.write(header + _masked(header) + event + _masked(event))
        self._file.flush()

    def scalars(
        self, step: int, values: Mapping[str, float], wall_time: float | None = None
    ) -> None:
        """One event at ``step`` holding every tag's value (a tag per curve, ``loss/train``)."""
        summary = b"".join(
            _field(1, _field(1, tag.encode()) + _float(2, float(value)))
            for tag, value in values.items()
        )
        when = time.time() if wall_time is None else wall_time
        self._write(_event(when, step, _field(5, summary)))

    def hparams(self, values: Mapping[str, object], group: str = "") -> None:
        """The run's hyper-parameters (numbers, strings, bools) for TensorBoard's HPARAMS tab."""
        start = b"".join(
            _field(1, _field(1, name.encode()) + _field(2, _hparam_value(value)))
            for name, value in values.items()
        )
        start += _field(4, group.encode()) + _double(5, time.time())
        content = _int(1, 0) + _field(3, start)  # HParamsPluginData{version 0, session_start}
        metadata = _field(1, _field(1, b"hparams") + _field(2, content))  # plugin_data
        null_tensor = _int(1, 1) + _field(2, b"") + _float(5, 0.0)  # DT_FLOAT scalar 0
        value = _field(1, b"_hparams_/session_start_info") + _field(9, metadata)
        value += _field(8, null_tensor)
        self._write(_event(time.time(), 0, _field(5, _field(1, value))))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> EventWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
