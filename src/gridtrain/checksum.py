"""adler32 of files, in the form XRootD reports it (8 lowercase hex digits).

No policy here: the data layer records checksums in the manifest and the staging layer compares
them with what the storage reports.
"""

from __future__ import annotations

import zlib
from pathlib import Path

_BLOCK = 8 << 20


def adler32_bytes(data: bytes | memoryview, value: int = 1) -> int:
    return zlib.adler32(data, value)


def format_adler32(value: int) -> str:
    return f"{value & 0xFFFFFFFF:08x}"


def adler32_file(path: str | Path) -> str:
    """adler32 of a local file, read in 8 MiB blocks (zlib releases the GIL while summing)."""
    value = 1
    with open(path, "rb", buffering=0) as f:
        buffer = bytearray(_BLOCK)
        view = memoryview(buffer)
        while n := f.readinto(buffer):
            value = zlib.adler32(view[:n], value)
    return format_adler32(value)
