"""Helpers for the staging tests: small datasets of random shards, and byte flips."""

from __future__ import annotations

import os
from pathlib import Path

from gridtrain import __version__
from gridtrain.checksum import adler32_file
from gridtrain.data.manifest import Manifest, ShardEntry, write_manifest


def fake_dataset(
    folder: Path, sizes: list[int], seed: int = 0, paths: list[str] | None = None
) -> Manifest:
    """A dataset folder whose shards are random bytes, with a valid manifest naming them.

    Staging never opens a shard, so random bytes of shard size test it as well as HDF5 would,
    and let a test choose the sizes. ``paths``: each shard's path below ``folder`` (default
    ``train-NNNNN.h5``), e.g. the ``groups/gNNNN/`` folders of a grouped conversion.
    """
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, size in enumerate(sizes):
        name = paths[i] if paths else f"train-{i:05d}.h5"
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(size))
        entries.append(ShardEntry(name, events=size // 100, bytes=size, adler32=adler32_file(path)))
    manifest = Manifest(
        name=f"fake-{seed}",
        gridtrain_version=__version__,
        config_hash="0" * 64,
        codec="none",
        chunk_events=1024,
        features=["x"],
        jagged=[],
        event_id=[],
        weight=None,
        split={},
        stats={},
        sources=[],
        shards={"train": entries[:-1], "validation": entries[-1:]},
    )
    write_manifest(manifest, folder)
    return manifest


def flip_byte(path: Path, offset: int = 1000) -> None:
    """Corrupt one bit of a file, and move its mtime on.

    XRootD caches a file's checksum keyed by its modification time in whole seconds; a real
    rewrite changes that time, so the test does too, or the server would answer from its cache.
    """
    stat = path.stat()
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)
        f.seek(offset)
        f.write(bytes([byte[0] ^ 0x01]))
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))


def identity(path: Path) -> tuple[int, int]:
    """Inode and mtime: unchanged means the file was not copied again."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns
