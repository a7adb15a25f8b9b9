"""Where a file lives: a local path or an XRootD URL, parsed and joined as strings.

Pure string logic, no I/O. URLs never pass through ``os.path``: ``os.path.normpath`` turns
``root://host//store/x`` into ``root:/host/store/x``, which names another file (the bug a peer's
HTCondor file-transfer plugin shipped). Local paths and ``file://`` URLs both become local
locations, so everything above this module treats them alike.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gridtrain.errors import StageError

REMOTE_SCHEMES = ("root", "roots", "xroot", "xroots")


@dataclass(frozen=True)
class Location:
    """A file or folder: ``server`` is ``host[:port]`` for XRootD, empty for local files.

    ``path`` is always absolute and never ends with ``/`` (except the root itself); ``query`` is
    an XRootD opaque string (``?a=b``) kept as it came, or empty.
    """

    scheme: str
    server: str
    path: str
    query: str = ""

    @property
    def is_remote(self) -> bool:
        return bool(self.server)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        head = self.path.rsplit("/", 1)[0] or "/"
        return Location(self.scheme, self.server, head)

    def join(self, relative: str) -> Location:
        """The location of ``relative`` (slash-separated, no ``..``) inside this folder."""
        parts = [p for p in relative.split("/") if p not in ("", ".")]
        if ".." in parts:
            raise StageError(f"{relative!r}: '..' is not allowed in a path below {self}")
        base = self.path.rstrip("/")
        return Location(self.scheme, self.server, "/".join([base, *parts]) or "/")

    def with_name(self, name: str) -> Location:
        return self.parent.join(name)

    @property
    def server_url(self) -> str:
        """``root://host:port`` for XRootD ``FileSystem``; empty for local files."""
        return f"{self.scheme}://{self.server}" if self.server else ""

    @property
    def url(self) -> str:
        """What XRootD or ``open()`` takes: ``root://host//abs/path``, or ``/abs/path``."""
        if not self.server:
            return self.path
        return f"{self.scheme}://{self.server}/{self.path}{self.query}"

    def __str__(self) -> str:
        return self.url


def parse_location(text: str) -> Location:
    """Parse a local path, ``file://`` URL or ``root://`` URL; raise ``StageError`` otherwise."""
    if not text:
        raise StageError("empty location; give a local path or a root://host//path URL")
    scheme, sep, rest = text.partition("://")
    if not sep:
        # A plain local path: the one case where os.path is right.
        return Location("file", "", _clean(os.path.abspath(text)))
    scheme = scheme.lower()
    if scheme == "file":
        # file:///abs/path or file://localhost/abs/path
        host, slash, path = rest.partition("/")
        if host not in ("", "localhost") or not slash:
            raise StageError(f"{text}: a file:// URL must name a local absolute path (file:///…)")
        return Location("file", "", _clean("/" + path))
    if scheme not in REMOTE_SCHEMES:
        raise StageError(
            f"{text}: unsupported scheme {scheme!r}; use root://host[:port]//path or a local path"
        )
    server, slash, path = rest.partition("/")
    if not server or not slash:
        raise StageError(f"{text}: expected root://host[:port]//absolute/path")
    path, qmark, query = path.partition("?")
    return Location(scheme, server, _clean("/" + path), qmark + query)


def _clean(path: str) -> str:
    """Collapse repeated slashes and drop a trailing one; ``.`` and ``..`` are resolved."""
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)
