"""File operations on a location, local or XRootD, behind one small interface.

The layer between the transfer engine and the two kinds of storage: size, adler32, remove, rename,
read. Local paths (and ``file://`` URLs, already parsed into local locations) use ``os``; remote
ones use ``gridtrain.stage.xrd``. Nothing here retries or compares against a manifest.
"""

from __future__ import annotations

import contextlib
import os
import threading

from gridtrain.checksum import adler32_file
from gridtrain.errors import StageError
from gridtrain.stage import xrd
from gridtrain.stage.location import Location

_MAX_SMALL_FILE = 256 << 20


class Storage:
    """Operations on files wherever they live, each bounded by ``timeout`` seconds."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self._server_checksums: dict[str, bool] = {}
        self._lock = threading.Lock()

    def size(self, location: Location) -> int | None:
        """Size in bytes, or ``None`` when the file is not there."""
        if location.is_remote:
            return xrd.stat_size(location, self.timeout)
        try:
            return os.stat(location.path).st_size
        except FileNotFoundError:
            return None

    def server_checksums(self, location: Location) -> bool:
        """Whether the server of ``location`` computes adler32 (asked once per server)."""
        if not location.is_remote:
            return False
        with self._lock:
            known = self._server_checksums.get(location.server_url)
        if known is None:
            known = xrd.checksums_enabled(location, self.timeout)
            with self._lock:
                self._server_checksums[location.server_url] = known
        return known

    def adler32(self, location: Location) -> str:
        """adler32: computed here for local files, by the server if it can, else read back."""
        if not location.is_remote:
            try:
                return adler32_file(location.path)
            except FileNotFoundError:
                raise StageError(f"{location}: no such file") from None
        if self.server_checksums(location):
            return xrd.server_adler32(location, self.timeout)
        return xrd.read_back_adler32(location, self.timeout)

    def remove(self, location: Location) -> None:
        """Remove a file; one that is not there is fine."""
        if location.is_remote:
            xrd.remove(location, self.timeout)
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(location.path)

    def rename(self, source: Location, target: Location) -> None:
        """Atomically give ``source`` the name ``target`` (replacing it), on the same storage."""
        if source.server != target.server:
            raise StageError(f"{source} -> {target}: a rename cannot cross storage")
        if target.is_remote:
            xrd.move(source, target, self.timeout)
        else:
            os.replace(source.path, target.path)

    def makedirs(self, location: Location) -> None:
        if location.is_remote:
            xrd.makedirs(location, self.timeout)
        else:
            os.makedirs(location.path, exist_ok=True)

    def read_small(self, location: Location) -> bytes:
        """The whole content of a small file (a manifest); ``StageError`` when missing."""
        if not location.is_remote:
            try:
                with open(location.path, "rb") as f:
                    return f.read(_MAX_SMALL_FILE)
            except FileNotFoundError:
                raise StageError(f"{location}: no such file") from None
        return xrd.read_small(location, self.timeout, _MAX_SMALL_FILE)
