"""The XRootD client edge: every call into ``XRootD.client`` goes through this module.

It sets the client's timeouts before the first connection, runs one ``CopyProcess`` job per call,
and turns an ``XRootDStatus`` into ``StageError`` naming the URL, what was attempted, the
client's message and the way out. It decides nothing about retries, temporary names or
checksums against a manifest: that is the transfer layer's job.

Why explicit timeouts: the client's defaults (``ConnectionWindow`` 120 s, ``ConnectionRetry`` 5,
``RequestTimeout`` 1800 s, ``StreamErrorWindow`` 1800 s) wait minutes for a dead server and then
refuse to retry a recovered one for half an hour. The settings are per process; variables the
user exported (``XRD_CONNECTIONWINDOW``...) win over ours, as the client intends.
"""

from __future__ import annotations

import logging
import math
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from gridtrain.checksum import format_adler32
from gridtrain.errors import StageError
from gridtrain.stage.location import Location

log = logging.getLogger(__name__)

# XRootD status codes (XrdClStatus.hh) and server errno values (XProtocol.hh) we act on.
_ERR_OPERATION_EXPIRED = 206
_ERR_SOCKET_TIMEOUT = 103
_ERR_CONNECTION = 108
_KXR_NOT_FOUND = 3011
_TIMEOUT_CODES = (_ERR_OPERATION_EXPIRED, _ERR_SOCKET_TIMEOUT)
_READ_BLOCK = 8 << 20

ByteProgress = Callable[[int, int], None]

_env_lock = threading.Lock()
_env_applied: dict[str, int] = {}


def _load_client() -> Any:
    """Import ``XRootD.client`` now, or return the ``StageError`` that says why it cannot be.

    Loaded when this module is imported, not on first use: the client's shared libraries crash
    the process (SIGSEGV) when they load after TensorFlow's, so whatever imports
    ``gridtrain.stage`` before TensorFlow (the worker does) is safe, and a process that loaded
    TensorFlow first gets this error instead of a crash.
    """
    if "tensorflow" in sys.modules and "XRootD.client" not in sys.modules:
        return StageError(
            "the XRootD client cannot be loaded after TensorFlow in one process (their bundled "
            "libraries clash and the process crashes); import gridtrain.stage before tensorflow"
        )
    try:
        from XRootD import client as xrd_client
    except ImportError as err:
        return StageError(f"the XRootD Python client is not installed ({err}); pip install xrootd")
    return xrd_client


_CLIENT = _load_client()


def client() -> Any:
    """``XRootD.client``; raises ``StageError`` with the way out when it could not be loaded."""
    if isinstance(_CLIENT, StageError):
        raise StageError(str(_CLIENT))
    return _CLIENT


def configure(timeout: float) -> None:
    """Bound connection set-up and every request by ``timeout`` seconds (whole seconds, >= 1).

    One connection attempt (``ConnectionRetry`` 1) of at most ``timeout``; a request unanswered
    for ``timeout`` fails; a failed connection may be retried at once (``StreamErrorWindow`` 0),
    so our own retry loop, not the client's error cache, decides when to try again.
    """
    seconds = max(1, math.ceil(timeout))
    wanted = {
        "ConnectionWindow": seconds,
        "ConnectionRetry": 1,
        "RequestTimeout": seconds,
        "StreamTimeout": seconds,
        "StreamErrorWindow": 0,
        "TimeoutResolution": 1,
    }
    with _env_lock:
        if all(_env_applied.get(k) == v for k, v in wanted.items()):
            return
        env_put = client().EnvPutInt
        for key, value in wanted.items():
            if not env_put(key, value):
                log.debug("XRootD %s comes from the environment (XRD_*); not overriding", key)
            _env_applied[key] = value


def _seconds(timeout: float) -> int:
    return max(1, math.ceil(timeout))


def status_error(status: Any, location: Location | str, doing: str, timeout: float) -> StageError:
    """A ``StageError`` for a failed XRootD status, with the URL and the way out."""
    message = str(status.message).strip().splitlines()[0] if status.message else "failed"
    if status.code in _TIMEOUT_CODES:
        hint = f"no answer within {timeout:g} s; is the server up? try 'gridtrain stage check'"
    elif status.code == _ERR_CONNECTION:
        hint = "cannot connect; is the server up and the port right? try 'gridtrain stage check'"
    elif status.errno == _KXR_NOT_FOUND:
        hint = "no such file or folder on the server"
    else:
        hint = "see the server's log"
    return StageError(f"{location}: {doing} failed: {message} ({hint})")


def is_not_found(status: Any) -> bool:
    return bool(status.errno == _KXR_NOT_FOUND)


def filesystem(location: Location, timeout: float) -> Any:
    configure(timeout)
    return client().FileSystem(location.server_url)


def ping(location: Location, timeout: float) -> float:
    """Round-trip time of one ``kXR_ping`` in seconds; raises when the server does not answer."""
    fs = filesystem(location, timeout)
    start = time.perf_counter()
    status, _ = fs.ping(timeout=_seconds(timeout))
    took = time.perf_counter() - start
    if not status.ok:
        raise status_error(status, location.server_url, "ping", timeout)
    return took


def stat_size(location: Location, timeout: float) -> int | None:
    """Size in bytes, or ``None`` when there is no such file."""
    status, info = filesystem(location, timeout).stat(location.path, timeout=_seconds(timeout))
    if not status.ok:
        if is_not_found(status):
            return None
        raise status_error(status, location, "stat", timeout)
    return int(info.size)


def stat_kind(location: Location, timeout: float) -> tuple[str, int] | None:
    """``("folder", 0)``, ``("file", size)``, or ``None`` when nothing is there."""
    status, info = filesystem(location, timeout).stat(location.path, timeout=_seconds(timeout))
    if not status.ok:
        if is_not_found(status):
            return None
        raise status_error(status, location, "stat", timeout)
    is_dir = bool(info.flags & client().flags.StatInfoFlags.IS_DIR)
    return ("folder", 0) if is_dir else ("file", int(info.size))


def _config(location: Location, key: str, timeout: float) -> str:
    fs = filesystem(location, timeout)
    status, answer = fs.query(client().flags.QueryCode.CONFIG, key, timeout=_seconds(timeout))
    if not status.ok:
        raise status_error(status, location.server_url, f"config query {key!r}", timeout)
    return bytes(answer or b"").decode(errors="replace").strip("\x00\n ")


def server_version(location: Location, timeout: float) -> str | None:
    """The server's version string (``v5.5.3``), or ``None`` when it does not say."""
    version = _config(location, "version", timeout)
    return None if version in ("", "version") else version


def checksums_enabled(location: Location, timeout: float) -> bool:
    """Whether the server computes adler32 (``xrootd.chksum adler32`` in its config)."""
    # The answer is "0:adler32,1:md5" when configured, or the key itself when not.
    text = _config(location, "chksum", timeout)
    return any(item.split(":")[-1] == "adler32" for item in text.split(","))


def server_adler32(location: Location, timeout: float) -> str:
    """adler32 as the server computes it (``kXR_query`` checksum)."""
    fs = filesystem(location, timeout)
    code = client().flags.QueryCode.CHECKSUM
    status, answer = fs.query(code, location.path, timeout=_seconds(timeout))
    if not status.ok:
        raise status_error(status, location, "checksum query", timeout)
    kind, _, value = bytes(answer).decode(errors="replace").strip("\x00\n ").partition(" ")
    if kind != "adler32" or len(value) != 8:
        raise StageError(f"{location}: the server answered a checksum query with {answer!r}")
    return value.lower()


def _read_blocks(location: Location, timeout: float, limit: int | None = None) -> Iterator[bytes]:
    """The content of a remote file in blocks of up to 8 MiB (at most ``limit`` bytes)."""
    configure(timeout)
    f = client().File()
    status, _ = f.open(location.url, timeout=_seconds(timeout))
    if not status.ok:
        raise status_error(status, location, "open for reading", timeout)
    offset = 0
    try:
        while limit is None or offset < limit:
            status, data = f.read(offset, _READ_BLOCK, timeout=_seconds(timeout))
            if not status.ok:
                raise status_error(status, location, "read", timeout)
            if not data:
                break
            yield data
            offset += len(data)
    finally:
        f.close(timeout=_seconds(timeout))


def read_back_adler32(location: Location, timeout: float) -> str:
    """adler32 of a remote file read back (for servers without ``xrootd.chksum``)."""
    value = 1
    for block in _read_blocks(location, timeout):
        value = zlib.adler32(block, value)
    return format_adler32(value)


def read_small(location: Location, timeout: float, limit: int) -> bytes:
    """The content of a small remote file such as a manifest."""
    return b"".join(_read_blocks(location, timeout, limit))[:limit]


def remove(location: Location, timeout: float) -> None:
    """Remove a remote file; a file that is not there is not an error."""
    status, _ = filesystem(location, timeout).rm(location.path, timeout=_seconds(timeout))
    if not status.ok and not is_not_found(status):
        raise status_error(status, location, "remove", timeout)


def move(source: Location, target: Location, timeout: float) -> None:
    """Rename on the server (replaces ``target``), the remote half of write-then-rename."""
    fs = filesystem(source, timeout)
    status, _ = fs.mv(source.path, target.path, timeout=_seconds(timeout))
    if not status.ok:
        raise status_error(status, target, f"rename from {source.name}", timeout)


def makedirs(location: Location, timeout: float) -> None:
    fs = filesystem(location, timeout)
    flags = client().flags.MkDirFlags.MAKEPATH
    status, _ = fs.mkdir(location.path, flags, timeout=_seconds(timeout))
    if not status.ok:
        exists, _ = fs.stat(location.path, timeout=_seconds(timeout))
        if not exists.ok:
            raise status_error(status, location, "mkdir", timeout)


@dataclass(frozen=True)
class Space:
    total: int
    free: int


def space(location: Location, timeout: float) -> Space | None:
    """Total and free bytes where ``location`` lives, if the server reports them."""
    fs = filesystem(location, timeout)
    code = client().flags.QueryCode.SPACE
    status, answer = fs.query(code, location.path or "/", timeout=_seconds(timeout))
    if not status.ok or not answer:
        return None
    # "oss.cgroup=public&oss.space=270553174016&oss.free=77501616128&..."
    text = bytes(answer).decode(errors="replace").strip("\x00\n ")
    fields = dict(item.partition("=")[::2] for item in text.split("&"))
    try:
        return Space(total=int(fields["oss.space"]), free=int(fields["oss.free"]))
    except (KeyError, ValueError):
        return None


class _Handler:
    """Copy progress from the client's threads, and the way to cancel a running copy."""

    def __init__(self, progress: ByteProgress | None, cancel: threading.Event | None) -> None:
        self.progress = progress
        self.cancel = cancel
        self.error: BaseException | None = None

    def begin(self, job_id: int, total: int, source: Any, target: Any) -> None:
        pass

    def end(self, job_id: int, results: Any) -> None:
        pass

    def update(self, job_id: int, processed: int, total: int) -> None:
        if self.progress is not None and self.error is None:
            try:
                self.progress(processed, total)
            except BaseException as err:  # raised again in the caller's thread
                self.error = err

    def should_cancel(self, job_id: int) -> bool:
        return self.error is not None or (self.cancel is not None and self.cancel.is_set())


@dataclass(frozen=True)
class CopySettings:
    """Per-job settings of a ``CopyProcess`` job (one file)."""

    timeout: float = 10.0
    parallel_chunks: int = 8
    chunk_size: int = 8 << 20


def copy(
    source: Location,
    target: Location,
    settings: CopySettings,
    progress: ByteProgress | None = None,
    cancel: threading.Event | None = None,
) -> None:
    """Copy one file with a ``CopyProcess`` job, overwriting ``target``; raise ``StageError``.

    Either side may be local or remote. The copy runs in the client's threads, outside the GIL.
    """
    configure(settings.timeout)
    process = client().CopyProcess()
    process.add_job(
        source.url,
        target.url,
        force=True,
        mkdir=True,
        chunksize=settings.chunk_size,
        parallelchunks=settings.parallel_chunks,
        inittimeout=_seconds(settings.timeout),
    )
    status = process.prepare()
    if not status.ok:
        raise status_error(status, target, f"copy from {source}", settings.timeout)
    handler = _Handler(progress, cancel)
    status, results = process.run(handler)
    if handler.error is not None:
        raise handler.error
    job_status = results[0]["status"] if results and "status" in results[0] else status
    if not job_status.ok:
        if cancel is not None and cancel.is_set():
            raise StageError(f"{target}: copy from {source} cancelled")
        raise status_error(job_status, target, f"copy from {source}", settings.timeout)
