"""Worker stage-in: verified local copies of leased shards in a scratch folder with a budget.

The worker's side of staging; it knows shards only as (location, size, adler32) and never opens
one. ``get`` blocks until a verified copy is in scratch; ``prefetch`` starts the next one in a
background thread while the worker trains on the current one; ``release`` marks a copy as no
longer needed, and released copies are deleted, least recently used first, when a new one would
not fit in ``budget_bytes`` (or at ``close``). Every location, local path, ``file://`` or
``root://``, is copied by the same transfer code, so the embedded default needs no server.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from gridtrain.errors import StageError
from gridtrain.stage.location import Location, parse_location
from gridtrain.stage.storage import Storage
from gridtrain.stage.transfer import Transfer, TransferOptions, part_location, transfer_one

log = logging.getLogger(__name__)

_DEFAULTS = TransferOptions()


@dataclass
class _Copy:
    """One shard in scratch: reserved, being copied, ready, or released."""

    location: str
    path: Path
    size: int
    adler32: str
    future: Future[Path] = field(default_factory=Future)
    cancel: threading.Event = field(default_factory=threading.Event)
    claimed: bool = False  # a thread has taken on the copy (the prefetch thread or a get)
    released: bool = False
    last_used: float = field(default_factory=time.monotonic)

    @property
    def failed(self) -> bool:
        return self.future.done() and self.future.exception() is not None


class StageIn:
    """Local, verified copies of shards for one worker, within a scratch budget.

    ``StageIn(scratch_dir, budget_bytes=None, *, timeout=10.0, retries=3)``: ``timeout`` bounds
    connection set-up and each request to a server, ``retries`` the extra attempts per shard.
    Thread-safe; use it as a context manager or call ``close``.
    """

    def __init__(
        self,
        scratch_dir: str | os.PathLike[str],
        budget_bytes: int | None = None,
        *,
        timeout: float = _DEFAULTS.timeout,
        retries: int = _DEFAULTS.retries,
        backoff: float = _DEFAULTS.backoff,
        parallel_chunks: int = _DEFAULTS.parallel_chunks,
    ) -> None:
        if budget_bytes is not None and budget_bytes <= 0:
            raise ValueError(f"budget_bytes must be positive or None, not {budget_bytes}")
        self.scratch_dir = Path(scratch_dir).absolute()
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        self.budget_bytes = budget_bytes
        self._options = TransferOptions(
            parallel=1,
            parallel_chunks=parallel_chunks,
            timeout=timeout,
            retries=retries,
            backoff=backoff,
        )
        self._storage = Storage(timeout)
        self._copies: dict[str, _Copy] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="stagein")
        self._closed = False

    # -- public API ------------------------------------------------------------------------------

    def get(self, location: str, size: int, adler32: str) -> Path:
        """A verified local copy of the shard at ``location``; waits for a prefetch of it."""
        location = _key(location)
        with self._lock:
            self._check_open()
            copy = self._copies.get(location)
            if copy is not None:
                self._check_same(copy, size, adler32)
                copy.released = False
                copy.last_used = time.monotonic()
            else:
                copy = self._reserve(location, size, adler32, must_fit=True)
                assert copy is not None
        # A prefetch still waiting behind another one is taken over rather than waited for.
        self._run(copy)
        try:
            path = copy.future.result()
        except BaseException:
            with self._lock:
                if self._copies.get(location) is copy:
                    del self._copies[location]  # a later get() tries afresh
            raise
        return path

    def prefetch(self, location: str, size: int, adler32: str) -> None:
        """Start copying a shard in the background if it fits in the budget now.

        A prefetch that fails is reported by the ``get`` of the same shard.
        """
        location = _key(location)
        with self._lock:
            self._check_open()
            copy = self._copies.get(location)
            if copy is not None:
                copy.last_used = time.monotonic()
                return
            copy = self._reserve(location, size, adler32, must_fit=False)
            if copy is None:
                log.debug("%s: no room in the scratch budget to prefetch it now", location)
                return
            self._pool.submit(self._run, copy)

    def release(self, location: str) -> None:
        """The worker no longer needs this shard: it may be deleted to make room."""
        location = _key(location)
        with self._lock:
            copy = self._copies.get(location)
            if copy is not None:
                copy.released = True
                copy.last_used = time.monotonic()

    def close(self) -> None:
        """Stop background copies and delete every copy this object made."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            copies = list(self._copies.values())
            self._copies.clear()
        for copy in copies:
            copy.cancel.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for copy in copies:
            self._run(copy)  # resolves copies the pool never started, so no get() waits forever
            copy.future.exception()  # waits for a get() that is copying in its own thread
            _unlink(copy.path)
            _unlink(Path(part_location(Location("file", "", str(copy.path))).path))

    def staged(self) -> dict[str, Path]:
        """The shards in scratch now, by location (copies still running excluded)."""
        with self._lock:
            return {
                loc: c.path for loc, c in self._copies.items() if c.future.done() and not c.failed
            }

    def used_bytes(self) -> int:
        """Bytes of scratch reserved by copies that exist or are being made."""
        with self._lock:
            return self._used()

    def __enter__(self) -> StageIn:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- internals -------------------------------------------------------------------------------

    def _run(self, copy: _Copy) -> None:
        """Copy and verify one shard into scratch, unless another thread already does."""
        with self._lock:
            if copy.claimed:
                return
            copy.claimed = True
        cancelled = StageError(f"{copy.location}: stage-in cancelled")
        if copy.cancel.is_set():
            copy.future.set_exception(cancelled)
            return
        try:
            source = parse_location(copy.location)  # already checked by _key
            target = Location("file", "", str(copy.path))
            transfer = Transfer(source, target, copy.size, copy.adler32)
            transfer_one(transfer, self._options, self._storage, cancel=copy.cancel)
        except BaseException as err:
            copy.future.set_exception(err)
            return
        if copy.cancel.is_set():  # evicted or closed while copying: leave nothing behind
            _unlink(copy.path)
            copy.future.set_exception(cancelled)
            return
        copy.future.set_result(copy.path)

    def _reserve(self, location: str, size: int, adler32: str, *, must_fit: bool) -> _Copy | None:
        """Book room for a new copy, evicting released ones; called with the lock held."""
        if self.budget_bytes is not None:
            needed = self._used() + size - self.budget_bytes
            victims = []
            for copy in sorted(self._copies.values(), key=lambda c: c.last_used):
                if needed <= 0:
                    break
                if copy.released and not copy.failed:
                    victims.append(copy)
                    needed -= copy.size
            if needed > 0:
                if not must_fit:
                    return None
                in_use = [c for c in self._copies.values() if not c.released and not c.failed]
                raise StageError(
                    f"{location}: {size} bytes do not fit in the scratch budget of "
                    f"{self.budget_bytes} bytes beside {len(in_use)} shards in use "
                    f"({sum(c.size for c in in_use)} bytes); raise the budget or release shards"
                )
            for victim in victims:
                self._evict(victim)
        name = f"{hashlib.sha256(location.encode()).hexdigest()[:12]}-{_basename(location)}"
        copy = _Copy(location, self.scratch_dir / name, size, adler32)
        self._copies[location] = copy
        return copy

    def _evict(self, copy: _Copy) -> None:
        del self._copies[copy.location]
        if copy.future.done():
            _unlink(copy.path)
            log.debug("%s: evicted from scratch", copy.location)
            return
        copy.cancel.set()  # _run deletes the file once the copy stops

    def _used(self) -> int:
        return sum(c.size for c in self._copies.values() if not c.failed)

    def _check_open(self) -> None:
        if self._closed:
            raise StageError(f"stage-in into {self.scratch_dir} is closed")

    @staticmethod
    def _check_same(copy: _Copy, size: int, adler32: str) -> None:
        if (copy.size, copy.adler32) != (size, adler32):
            raise StageError(
                f"{copy.location}: asked for {size} bytes with adler32 {adler32}, but it is "
                f"being staged as {copy.size} bytes with adler32 {copy.adler32}; "
                "did the manifest change under a running worker?"
            )


def _key(location: str) -> str:
    """One spelling per file: ``/x``, ``file:///x`` and ``file://localhost/x`` are the same."""
    return parse_location(location).url


def _basename(location: str) -> str:
    return location.rstrip("/").rsplit("/", 1)[-1].partition("?")[0] or "shard"


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
