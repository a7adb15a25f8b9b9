"""Verified, resumable, parallel copies of files whose size and adler32 are known.

The transfer layer: given (source, target, size, adler32) it makes the target hold exactly those
bytes, or raises. Every copy, local or XRootD, takes the same steps:

  1. a target already there with the right size and adler32 is kept (an interrupted run resumes);
  2. the copy goes to ``.NAME.part`` beside the target, never under the final name;
  3. the copy's adler32 is compared with the manifest's: computed here for local targets, asked of
     the server for remote ones (read back when it has no ``xrootd.chksum``);
  4. a bad copy is removed and retried after a back-off (1, 2, 4... times ``backoff`` seconds);
     when the source itself has the wrong checksum, retrying cannot help and the error says so;
  5. a good copy is renamed to the final name (``os.replace``, or ``kXR_mv`` on the server).

Transfers run ``parallel`` at a time, each a ``CopyProcess`` job reading ``parallel_chunks``
chunks at once; verification of one file overlaps the copies of others. After the first file
that fails for good, no new copy starts, and the error names that file.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from gridtrain.config import StageConfig
from gridtrain.errors import ChecksumMismatchError, StageError
from gridtrain.stage import xrd
from gridtrain.stage.location import Location
from gridtrain.stage.storage import Storage

log = logging.getLogger(__name__)

PART_SUFFIX = ".part"
MAX_BACKOFF = 30.0


@dataclass(frozen=True)
class Transfer:
    """One file to copy, with the size and adler32 its copy must have."""

    source: Location
    target: Location
    size: int
    adler32: str


@dataclass(frozen=True)
class TransferOptions:
    """How to copy; the defaults are the ``stage`` section of the packaged config schema."""

    parallel: int = 4
    parallel_chunks: int = 8
    chunk_size: int = 8 << 20
    timeout: float = 10.0
    retries: int = 3
    backoff: float = 1.0

    @classmethod
    def from_config(cls, stage: StageConfig) -> TransferOptions:
        return cls(
            parallel=stage.parallel,
            parallel_chunks=stage.parallel_chunks,
            chunk_size=stage.chunk_mib << 20,
            timeout=float(stage.timeout),
            retries=stage.retries,
            backoff=float(stage.backoff),
        )

    def copy_settings(self) -> xrd.CopySettings:
        return xrd.CopySettings(self.timeout, self.parallel_chunks, self.chunk_size)


@dataclass(frozen=True)
class TransferResult:
    transfer: Transfer
    copied: bool  # False: the target was already complete and was kept
    attempts: int
    seconds: float


# progress(transfer, bytes of it done so far); called from the copying threads.
Progress = Callable[[Transfer, int], None]


def part_location(target: Location) -> Location:
    """The temporary name a copy is written under: ``.NAME.part`` in the target's folder."""
    return target.with_name(f".{target.name}{PART_SUFFIX}")


def is_complete(storage: Storage, location: Location, size: int, adler32: str) -> bool:
    """Whether ``location`` exists with this size and adler32."""
    have = storage.size(location)
    if have is None:
        return False
    if have != size:
        log.info("%s: %d bytes, expected %d; copying it again", location, have, size)
        return False
    actual = storage.adler32(location)
    if actual != adler32:
        log.info("%s: adler32 %s, expected %s; copying it again", location, actual, adler32)
        return False
    return True


def transfer_one(
    transfer: Transfer,
    options: TransferOptions,
    storage: Storage | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> TransferResult:
    """Make ``transfer.target`` a verified copy of ``transfer.source``; raise ``StageError``."""
    storage = storage or Storage(options.timeout)
    start = time.perf_counter()
    if is_complete(storage, transfer.target, transfer.size, transfer.adler32):
        log.debug("%s: already complete", transfer.target)
        if progress is not None:
            progress(transfer, transfer.size)
        return TransferResult(transfer, False, 0, time.perf_counter() - start)
    if not transfer.source.is_remote:
        _check_local_source(storage, transfer)
    part = part_location(transfer.target)
    report = None if progress is None else (lambda done, _total: progress(transfer, done))
    error: StageError | None = None
    for attempt in range(1, options.retries + 2):
        if attempt > 1:
            delay = min(options.backoff * 2 ** (attempt - 2), MAX_BACKOFF)
            log.warning(
                "%s (attempt %d of %d in %.1f s)", error, attempt, options.retries + 1, delay
            )
            if cancel is not None and cancel.wait(delay):
                raise StageError(f"{transfer.target}: cancelled") from error
            if cancel is None:
                time.sleep(delay)
        try:
            xrd.copy(transfer.source, part, options.copy_settings(), report, cancel)
            _verify(storage, transfer, part)
        except StageError as err:
            error = err
            _remove_quietly(storage, part)
            if cancel is not None and cancel.is_set():
                raise
            hopeless = _source_problem(storage, transfer, err)
            if hopeless is not None:
                raise hopeless from err
            continue
        storage.rename(part, transfer.target)
        if progress is not None:
            progress(transfer, transfer.size)
        return TransferResult(transfer, True, attempt, time.perf_counter() - start)
    assert error is not None
    raise error


def transfer_all(
    transfers: Sequence[Transfer],
    options: TransferOptions,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
) -> list[TransferResult]:
    """Run ``transfers`` ``options.parallel`` at a time; results in the order given.

    After the first failure no new transfer starts; the running ones finish (so a rerun has less
    to do) and the first error is raised, with how many others did not complete.
    """
    storage = Storage(options.timeout)
    stop = threading.Event()
    failures: list[StageError] = []

    def run(transfer: Transfer) -> TransferResult | None:
        if stop.is_set() or (cancel is not None and cancel.is_set()):
            return None
        try:
            return transfer_one(transfer, options, storage, progress, cancel)
        except StageError as err:
            failures.append(err)
            stop.set()
            return None

    with ThreadPoolExecutor(max(1, options.parallel), thread_name_prefix="stage") as pool:
        results = list(pool.map(run, transfers))
    if failures:
        others = sum(r is None for r in results) - 1
        if others:
            note = f"{others} more files were not copied; run again to resume"
            log.warning(note)
            failures[0].add_note(note)
        raise failures[0]
    if cancel is not None and cancel.is_set():
        raise StageError("transfers cancelled")
    return [r for r in results if r is not None]


def _verify(storage: Storage, transfer: Transfer, part: Location) -> None:
    size = storage.size(part)
    if size != transfer.size:
        raise StageError(
            f"{transfer.target}: the copy has {size} bytes, the manifest says {transfer.size}"
        )
    actual = storage.adler32(part)
    if actual != transfer.adler32:
        raise ChecksumMismatchError(transfer.target.url, transfer.adler32, actual)


def _check_local_source(storage: Storage, transfer: Transfer) -> None:
    """A local source of the wrong size cannot give a good copy: say so before copying."""
    size = storage.size(transfer.source)
    if size is None:
        raise StageError(f"{transfer.source}: no such file; check the dataset folder")
    if size != transfer.size:
        raise StageError(
            f"{transfer.source}: {size} bytes, the manifest says {transfer.size}; "
            "the dataset is damaged: convert it again ('gridtrain verify' shows what is wrong)"
        )


def _source_problem(storage: Storage, transfer: Transfer, err: StageError) -> StageError | None:
    """The reason no retry can help (the source is missing or itself corrupt), if there is one."""
    source = transfer.source
    try:
        if storage.size(source) is None:
            return StageError(f"{source}: no such file")
        if not isinstance(err, ChecksumMismatchError):
            return None
        if source.is_remote and not storage.server_checksums(source):
            return None  # reading the source back costs a full copy; let the retries decide
        source_sum = storage.adler32(source)
    except StageError:
        return None  # the source cannot be asked now (server gone?); the retries will tell
    if source_sum == transfer.adler32:
        return None
    where = "on the server: push it again" if source.is_remote else "locally: convert again"
    return ChecksumMismatchError(
        source.url, transfer.adler32, source_sum, f"the source itself is corrupt ({where})"
    )


def _remove_quietly(storage: Storage, location: Location) -> None:
    try:
        storage.remove(location)
    except StageError as err:
        log.debug("could not remove %s: %s", location, err)
