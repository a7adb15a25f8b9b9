"""Grid-parallel conversion: which input files each conversion job reads, and where it writes.

Planning only, pure: this module opens no file. ``dataset.files_per_job`` null means one job over
all files (``gridtrain.data.convert`` writes into ``dataset.outdir``). A number F means
``n = ceil(most files of one sample / F)`` jobs, each a *file group* converted into its own
folder ``groups/gNNNN/`` below ``dataset.outdir``; ``gridtrain.data.gather`` then writes the one
manifest naming the shards of all groups.

How files are grouped: every group takes a proportional slice of *every* sample, so its shards
are class-mixed like a one-job conversion's, whatever the order of samples and files.

* A sample with at least n files gives group k its files k, k + n, k + 2n, ... (``files[k::n]``),
  whole: at most F files of the sample per job.
* A sample with m < n files shares each file among about n / m groups: group k reads file
  ``j = k * m // n``, and of that file the i-th of c equal entry ranges, where the c groups
  sharing file j are numbered i = 0 .. c - 1. So no group lacks the small sample.

Seeds: each step of a conversion is permuted with a generator seeded by ``(dataset.seed, step)``
for one job and ``(dataset.seed, k, step)`` for group k, so groups shuffle independently and
reproducibly. The validation split stays a hash of the event id salted with ``dataset.seed``
alone: a grouped conversion puts exactly the same events in each split as a one-job conversion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from gridtrain.config import DatasetConfig
from gridtrain.errors import ConfigError

GROUPS_DIR = "groups"


@dataclass(frozen=True)
class FileSlice:
    """One input file, or the ``part``-th of ``parts`` equal entry ranges of it."""

    path: str
    part: int = 0
    parts: int = 1

    def entry_range(self, entries: int) -> tuple[int, int]:
        return entries * self.part // self.parts, entries * (self.part + 1) // self.parts


@dataclass(frozen=True)
class FileGroup:
    """What conversion job ``index`` of ``count`` reads: per sample (config order), its slices."""

    index: int
    count: int
    samples: tuple[tuple[FileSlice, ...], ...]
    shuffle_seed: tuple[int, ...]

    @property
    def name(self) -> str:
        return group_name(self.index)

    @property
    def paths(self) -> list[str]:
        """The input files of this job, each once, in sample order."""
        return list(dict.fromkeys(s.path for slices in self.samples for s in slices))


def group_name(index: int) -> str:
    return f"g{index:04d}"


def group_dir(outdir: str | Path, index: int) -> Path:
    """The folder of group ``index``'s shards and manifest, below the dataset's folder."""
    return Path(outdir) / GROUPS_DIR / group_name(index)


def group_count(dataset: DatasetConfig) -> int:
    """How many conversion jobs ``dataset`` asks for: 1 when ``files_per_job`` is null."""
    if dataset.files_per_job is None:
        return 1
    return math.ceil(max(len(s.files) for s in dataset.samples) / dataset.files_per_job)


def plan_group(dataset: DatasetConfig, index: int) -> FileGroup:
    """The files (or file slices) of every sample that conversion job ``index`` reads."""
    count = group_count(dataset)
    if dataset.files_per_job is None:
        raise ConfigError("dataset.files_per_job is null: one job converts every file")
    if not 0 <= index < count:
        raise ConfigError(
            f"group {index}: dataset.files_per_job {dataset.files_per_job} makes groups 0 to "
            f"{count - 1}; pick one of those"
        )
    return FileGroup(
        index,
        count,
        tuple(_slices(s.files, index, count) for s in dataset.samples),
        (dataset.seed, index),
    )


def _slices(files: tuple[str, ...], k: int, n: int) -> tuple[FileSlice, ...]:
    m = len(files)
    if m >= n:
        return tuple(FileSlice(path) for path in files[k::n])
    j = k * m // n
    first, stop = -(-j * n // m), -(-(j + 1) * n // m)  # the groups that share file j
    return (FileSlice(files[j], k - first, stop - first),)
