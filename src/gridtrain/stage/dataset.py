"""Push and pull a converted dataset: every shard verified against the manifest, manifest last.

The dataset layer of staging: it reads a manifest, turns its shard entries into transfers (a
shard keeps its path below the dataset folder, subfolders included) and commits the manifest
after the last shard, so a manifest at the destination always names complete, verified shards.
A destination manifest that describes other data is removed before the first shard is replaced,
so no reader trusts a half-updated dataset. Local folders, ``file://`` and ``root://``
destinations take the same path.
"""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from gridtrain.checksum import adler32_bytes, format_adler32
from gridtrain.data.manifest import MANIFEST_NAME, Manifest, ShardEntry, load_manifest
from gridtrain.errors import ShardError, StageError
from gridtrain.paths import is_url
from gridtrain.stage import xrd
from gridtrain.stage.location import Location, parse_location
from gridtrain.stage.storage import Storage
from gridtrain.stage.transfer import (
    Progress,
    Transfer,
    TransferOptions,
    TransferResult,
    transfer_all,
    transfer_one,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StageSummary:
    """What a push or pull did."""

    destination: str
    copied: int
    kept: int
    bytes_copied: int
    seconds: float

    def line(self, verb: str) -> str:
        rate = self.bytes_copied / max(self.seconds, 1e-9) / 1e6
        return (
            f"{verb} {self.copied} shards ({self.bytes_copied / 1e6:,.1f} MB, {rate:,.0f} MB/s), "
            f"kept {self.kept} already complete, manifest last: {self.destination}"
        )


def shard_location(base: Location, path: str) -> Location:
    """Where a manifest entry's shard lives: a URL or absolute path as is, else below ``base``."""
    if is_url(path) or os.path.isabs(path):
        return parse_location(path)
    return base.join(path)


def shard_name(path: str, base: Location | None = None) -> str:
    """Where a shard goes in a pushed or pulled copy of the dataset, relative to its folder.

    A shard inside the dataset folder keeps its path below it (``groups/g0003/train-00000.h5``,
    a grouped conversion's), so shards of different groups with one file name stay apart: a
    relative manifest path, or a URL or absolute path below ``base``. Any other gives its name.
    """
    if not is_url(path) and not os.path.isabs(path):
        return "/".join(p for p in path.split("/") if p not in ("", "."))  # '..': join refuses it
    if base is not None:
        location, folder = parse_location(path), base.path.rstrip("/") + "/"
        if location.server == base.server and location.path.startswith(folder):
            return location.path[len(folder) :]
    return path.rstrip("/").rsplit("/", 1)[-1].partition("?")[0]


def push(
    dataset_dir: str | os.PathLike[str],
    url: str,
    options: TransferOptions,
    *,
    url_paths: bool = False,
    progress: Progress | None = None,
) -> StageSummary:
    """Copy a converted dataset to ``url`` (a folder), shards first, verified, manifest last.

    With ``url_paths`` the pushed manifest names every shard by its full URL, so a copy of that
    manifest anywhere still points grid jobs at the storage.
    """
    start = time.perf_counter()
    folder = Path(dataset_dir)
    manifest = load_manifest(folder)
    source_base = parse_location(str(folder.absolute()))
    base = parse_location(url)
    storage = Storage(options.timeout)
    probe(base, options.timeout)
    transfers: list[Transfer] = []
    entries: dict[str, list[ShardEntry]] = {}
    for split, shards in manifest.shards.items():
        entries[split] = []
        for entry in shards:
            name = shard_name(entry.path, source_base)
            source, target = shard_location(source_base, entry.path), base.join(name)
            transfers.append(Transfer(source, target, entry.bytes, entry.adler32))
            entries[split].append(replace(entry, path=target.url if url_paths else name))
    _check_unique(transfers)
    content = replace(manifest, shards=entries).to_json().encode()
    manifest_target = base.join(MANIFEST_NAME)
    storage.makedirs(base)
    _retract_other_manifest(storage, manifest_target, content)
    results = transfer_all(transfers, options, progress)
    _put_manifest(content, manifest_target, options, storage)
    return _summary(base, results, start)


def pull(
    url: str,
    dest_dir: str | os.PathLike[str],
    options: TransferOptions,
    *,
    manifest_only: bool = False,
    progress: Progress | None = None,
) -> StageSummary:
    """Copy the dataset at ``url`` (its folder or its manifest) into ``dest_dir``, manifest last.

    Shards the manifest names by URL are fetched from there; the local manifest names every
    shard by its file name in ``dest_dir``. With ``manifest_only`` no shard is copied and the
    local manifest names every shard by its full URL: training then stages the shards from
    storage into each worker's scratch.
    """
    start = time.perf_counter()
    location = parse_location(url)
    manifest_source = location if location.name == MANIFEST_NAME else location.join(MANIFEST_NAME)
    base = manifest_source.parent
    dest = Path(dest_dir).absolute()
    dest.mkdir(parents=True, exist_ok=True)
    storage = Storage(options.timeout)
    probe(base, options.timeout)
    if storage.size(manifest_source) is None:
        raise StageError(
            f"{manifest_source}: no manifest there; check the URL, or push a dataset there "
            "first (gridtrain stage push DATASET_DIR URL)"
        )
    content = storage.read_small(manifest_source)
    manifest = _parse_manifest(content, manifest_source)
    dest_base = parse_location(str(dest))
    transfers: list[Transfer] = []
    entries: dict[str, list[ShardEntry]] = {}
    rewritten = False
    for split, shards in manifest.shards.items():
        entries[split] = []
        for entry in shards:
            name = shard_name(entry.path, base)
            source = shard_location(base, entry.path)
            if manifest_only:
                entries[split].append(replace(entry, path=source.url))
            else:
                transfers.append(Transfer(source, dest_base.join(name), entry.bytes, entry.adler32))
                entries[split].append(replace(entry, path=name))
            rewritten |= entries[split][-1].path != entry.path
    _check_unique(transfers)
    if rewritten:
        content = replace(manifest, shards=entries).to_json().encode()
    # Same rule as at the source: no manifest names shards that are being replaced.
    _retract_other_manifest(storage, dest_base.join(MANIFEST_NAME), content)
    results = transfer_all(transfers, options, progress)
    _put_manifest(content, dest_base.join(MANIFEST_NAME), options, storage)
    return _summary(dest_base, results, start)


def probe(base: Location, timeout: float) -> None:
    """Fail in seconds, with the URL, when the server of ``base`` does not answer."""
    if base.is_remote:
        xrd.ping(base, timeout)


def _parse_manifest(content: bytes, source: Location) -> Manifest:
    # load_manifest holds every check of the format; it reads files, so give it one.
    with tempfile.TemporaryDirectory(prefix="gridtrain-manifest-") as tmp:
        path = Path(tmp) / MANIFEST_NAME
        path.write_bytes(content)
        try:
            return load_manifest(path)
        except ShardError as err:
            reason = str(err).split(": ", 1)[-1]
            raise StageError(f"{source}: {reason}") from None


def _retract_other_manifest(storage: Storage, target: Location, content: bytes) -> None:
    if storage.size(target) is None:
        return
    if storage.read_small(target) != content:
        log.info("%s describes other data; removing it until the new shards are in", target)
        storage.remove(target)


def _put_manifest(
    content: bytes, target: Location, options: TransferOptions, storage: Storage
) -> None:
    """Write the manifest through the same verified transfer as the shards."""
    with tempfile.NamedTemporaryFile(prefix="gridtrain-manifest-", suffix=".json") as tmp:
        tmp.write(content)
        tmp.flush()
        source = parse_location(tmp.name)
        checksum = format_adler32(adler32_bytes(content))
        transfer_one(Transfer(source, target, len(content), checksum), options, storage)


def _check_unique(transfers: list[Transfer]) -> None:
    seen: dict[Location, Location] = {}
    for t in transfers:
        if t.target in seen:
            raise StageError(
                f"{t.source} and {seen[t.target]} would both be copied to {t.target}; "
                "shard file names in a manifest must be unique"
            )
        seen[t.target] = t.source


def _summary(destination: Location, results: list[TransferResult], start: float) -> StageSummary:
    copied = [r for r in results if r.copied]
    return StageSummary(
        destination=destination.join(MANIFEST_NAME).url,
        copied=len(copied),
        kept=len(results) - len(copied),
        bytes_copied=sum(r.transfer.size for r in copied),
        seconds=time.perf_counter() - start,
    )
