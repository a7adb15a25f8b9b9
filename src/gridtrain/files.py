"""Files written whole or not at all: a new temporary name in the target's folder, then rename.

Layer: foundation, no gridtrain imports. The only place in gridtrain that puts a file under its
final name: everything else writes through ``atomic_file`` (a handle), ``atomic_path`` (a name,
for libraries that open files themselves: Keras, uproot), ``write_text`` or ``write_bytes``.
Two commit protocols keep their own renames, because what they commit is not one local file:
a conversion's shards (``.NAME.part`` files renamed together once all are written and the
manifest is ready) and a staged copy (renamed on its storage, possibly an XRootD server, after
its checksum matched). The temporary name is made by ``mkstemp`` (never a fixed name: two
writers cannot collide, and a folder another user can write to could hold a planted symlink).
The data and then the folder are fsynced, so after a crash the final name holds the old file or
the new one, whole.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def _fsync_folder(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a fresh temporary file beside ``path``, open for writing; it becomes ``path`` when
    the block ends without an error. Written through the descriptor ``mkstemp`` opened (mode
    0600 until it is complete), never reopened by name. On any error (or Ctrl-C) it is removed
    and ``path`` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), mode)
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


@contextlib.contextmanager
def atomic_path(path: Path, mode: int = 0o644) -> Iterator[Path]:
    """Like ``atomic_file`` for writers that take a file name: yields a temporary path beside
    ``path`` with the same suffix (Keras checks ``.keras``), renamed to ``path`` at the end."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fchmod(fd, mode)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_bytes(path: Path, data: bytes, mode: int = 0o644) -> None:
    """``path.write_bytes(data)``, whole or not at all."""
    with atomic_file(path, mode) as handle:
        handle.write(data)


def write_text(path: Path, text: str, mode: int = 0o644) -> None:
    """``path.write_text(text)`` in UTF-8, whole or not at all."""
    write_bytes(path, text.encode(), mode)
