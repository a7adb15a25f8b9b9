"""Files written whole or not at all: a new temporary name in the target's folder, then rename.

Layer: utility, no gridtrain imports. The temporary name is made by ``mkstemp`` (never a fixed
name: a folder another user can write to could hold a symlink planted there).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


@contextlib.contextmanager
def atomic_file(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """Yield a fresh temporary file beside ``path``, open for writing; it becomes ``path`` when
    the block ends without an error. Written through the descriptor ``mkstemp`` opened, never
    reopened by name. On any error (or Ctrl-C) it is removed and ``path`` is left as it was.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            os.fchmod(handle.fileno(), mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
