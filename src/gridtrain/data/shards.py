"""HDF5 training shards: the on-disk layout, writing one shard, reading batches back.

Storage layer below the conversion and the worker: takes and returns numpy arrays, never decides
what goes in a shard. One shard holds, for N events:

  ``features``        N x F      float32   flat features, columns named in the ``columns`` attribute
  ``<group>``         N x L x C  float32   a padded jagged group, channels in ``columns``
  ``<group>_count``   N          int32     entries per event before padding (after clipping)
  ``label``           N          int32
  ``weight``          N          float32
  ``event_id``        N x K      uint64    (run, lumi, event) or what ``dataset.event_id`` names

Chunks hold ``chunk_events`` rows (a training batch) but never more than 1 MiB, so one batch read
touches one chunk per dataset. Times are not tracked, so a rerun writes byte-identical files.
The default codec is Blosc-LZ4 with byte shuffle: measured on the toy shards it stores 0.55 of
the raw bytes, writes at about 0.5 GB/s and reads 1024-event batches at about 3 GB/s, where gzip
and lzf read at 0.4-0.6 GB/s. Readers need the Blosc filter: ``import hdf5plugin`` in Python
(this module does it), or ``HDF5_PLUGIN_PATH=$(python -c 'import hdf5plugin;
print(hdf5plugin.PLUGINS_PATH)')`` for C and ROOT readers.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import hdf5plugin
import numpy as np

from gridtrain.errors import ShardError

CHUNK_LIMIT_BYTES = 1 << 20
CODECS = ("blosc-lz4", "none", "lzf", "gzip")
FORMAT_VERSION = 1


def codec_options(codec: str) -> dict[str, Any]:
    """h5py ``create_dataset`` keyword arguments for a codec name."""
    if codec == "blosc-lz4":
        return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))
    if codec == "lzf":
        return {"compression": "lzf", "shuffle": True}
    if codec == "gzip":
        return {"compression": "gzip", "compression_opts": 1, "shuffle": True}
    if codec == "none":
        return {}
    raise ValueError(f"unknown codec {codec!r}; choose one of {CODECS}")


def chunk_rows(row_shape: tuple[int, ...], itemsize: int, chunk_events: int) -> int:
    row_bytes = int(np.prod(row_shape, dtype=np.int64)) * itemsize
    return max(1, min(chunk_events, CHUNK_LIMIT_BYTES // max(row_bytes, 1)))


def write_shard(
    path: str | Path,
    arrays: Mapping[str, np.ndarray],
    codec: str,
    chunk_events: int,
    columns: Mapping[str, list[str]],
    fsync: bool = True,
) -> None:
    """Write one shard file at ``path`` (the caller gives a temporary name and renames it)."""
    options = codec_options(codec)
    with h5py.File(path, "w") as f:
        f.attrs["gridtrain_shard_format"] = FORMAT_VERSION
        for name, array in arrays.items():
            n = array.shape[0]
            rows = min(chunk_rows(array.shape[1:], array.itemsize, chunk_events), max(n, 1))
            ds = f.create_dataset(
                name,
                data=array,
                chunks=(rows, *array.shape[1:]),
                track_times=False,
                **options,
            )
            if name in columns:
                ds.attrs["columns"] = columns[name]
    if fsync:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ShardReader:
    """Reads a shard in batches, straight into preallocated arrays with ``read_direct``."""

    def __init__(self, path: str | Path, names: list[str] | None = None) -> None:
        self.path = str(path)
        try:
            self._file = h5py.File(self.path, "r")
        except (OSError, ValueError) as err:
            raise ShardError(
                f"{self.path}: cannot open shard ({err}); re-run conversion or staging"
            ) from None
        self.names = names if names is not None else list(self._file.keys())
        missing = [n for n in self.names if n not in self._file]
        if missing:
            self._file.close()
            raise ShardError(
                f"{self.path}: shard lacks datasets {missing}; is it a gridtrain shard?"
            )
        self._datasets = {n: self._file[n] for n in self.names}
        self.events = int(self._datasets[self.names[0]].shape[0])

    def __enter__(self) -> ShardReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._file.close()

    def read(self, start: int = 0, stop: int | None = None) -> dict[str, np.ndarray]:
        stop = self.events if stop is None else min(stop, self.events)
        out = {}
        for name, ds in self._datasets.items():
            array = np.empty((stop - start, *ds.shape[1:]), dtype=ds.dtype)
            if stop > start:
                ds.read_direct(array, np.s_[start:stop])
            out[name] = array
        return out

    def batches(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, self.events, batch_size):
            yield self.read(start, start + batch_size)
