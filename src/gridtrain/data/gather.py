"""The last step of a grid-parallel conversion: the groups' manifests become the dataset's one.

Reads the manifest of every group (``groups/gNNNN/manifest.json`` below the dataset folder, see
``gridtrain.data.groups``), checks that each was converted from this dataset config and that all
share one layout, and writes ``manifest.json`` in the dataset folder. It names every shard by its
path relative to that folder (``groups/g0003/train-00000.h5``) with the size and adler32 its group
recorded, lists the sources of all groups, and merges the training statistics with the same
pairwise update the conversion uses (the regression targets' too, which give the task record its
means and standard deviations), the weight counts, and computes the class factors anew. No
shard is read or moved, so this is cheap (a Snakemake local rule). The manifest is written
atomically (temporary name, fsync, rename) and last.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from gridtrain.config import DatasetConfig
from gridtrain.data.arrays import RunningStats
from gridtrain.data.convert import check_classes, remove_stale_shards, warn_negative_weights
from gridtrain.data.groups import group_count, group_dir
from gridtrain.data.manifest import (
    MANIFEST_NAME,
    SPLITS,
    Manifest,
    ShardEntry,
    class_factors,
    load_manifest,
    merge_weights,
    write_manifest,
)
from gridtrain.errors import ConfigError, ConversionError, ShardError
from gridtrain.paths import below

log = logging.getLogger(__name__)

# What every group must agree on: how its shards are laid out and split.
_SAME_LAYOUT = (
    "codec", "chunk_events", "features", "jagged", "images", "event_id", "weight", "split",
)  # fmt: skip


def gather(dataset: DatasetConfig, outdir: str | Path | None = None) -> Manifest:
    """Write the manifest of ``outdir`` (default ``dataset.outdir``) from its groups'; return it."""
    if dataset.files_per_job is None:
        raise ConfigError(
            "dataset.files_per_job is null: one job converts every file and writes the manifest "
            "itself; set files_per_job to convert in groups"
        )
    out = Path(outdir if outdir is not None else dataset.outdir)
    count = group_count(dataset)
    groups = [
        (group_dir(out, k) / MANIFEST_NAME, _load(dataset, out, k, count)) for k in range(count)
    ]
    manifest = merge(groups, out)
    if not any(manifest.shards.values()):
        raise ConversionError(
            f"dataset.selection {dataset.selection!r} keeps no event in any of the {count} groups "
            f"of {out}; loosen it"
        )
    classes = manifest.weights.get("classes", {})
    check_classes(dataset, [classes.get(c, {}).get("events", 0) for c in dataset.task.classes])
    # As in a conversion: the old manifest first, so none ever names shards that are gone.
    (out / MANIFEST_NAME).unlink(missing_ok=True)
    remove_stale_shards(out, set())  # a one-job conversion's, converted into this folder before
    write_manifest(manifest, out)
    warn_negative_weights(manifest)
    log.info(
        "gathered %d training and %d validation events of %d groups in %s",
        manifest.events("train"), manifest.events("validation"), count, out / MANIFEST_NAME,
    )  # fmt: skip
    return manifest


def _load(dataset: DatasetConfig, out: Path, index: int, count: int) -> Manifest:
    path = group_dir(out, index) / MANIFEST_NAME
    redo = f"convert it (again): gridtrain convert -c CONFIG --group {index}, or snakemake {path}"
    if not path.is_file():
        raise ShardError(f"{path}: group {index} of {count} has no manifest; {redo}")
    manifest = load_manifest(path)
    if manifest.config_hash != dataset.content_hash():
        raise ShardError(
            f"{path}: group {index} was converted from another dataset config than this one "
            f"(files_per_job {dataset.files_per_job}); {redo}"
        )
    return manifest


def merge(groups: Sequence[tuple[Path, Manifest]], outdir: str | Path) -> Manifest:
    """One manifest for the groups' shards, their paths made relative to ``outdir``.

    ``groups`` pairs each group's manifest with its file (for messages); every group must share
    the layout of the first, or ``ShardError`` names both files.
    """
    (first_path, first), *_ = groups
    for path, manifest in groups:
        for key in _SAME_LAYOUT:
            if getattr(manifest, key) != getattr(first, key):
                raise ShardError(
                    f"{path}: field {key!r} differs from {first_path}'s; convert every group "
                    "with one config, from input files of one layout"
                )
        if _without_statistics(manifest.task) != _without_statistics(first.task):
            raise ShardError(
                f"{path}: field 'task' differs from {first_path}'s; convert every group with "
                "one config"
            )
    shards: dict[str, list[ShardEntry]] = {split: [] for split in SPLITS}
    for path, manifest in groups:
        folder = os.path.relpath(path.parent, outdir).replace(os.sep, "/")
        for split, entries in manifest.shards.items():
            shards.setdefault(split, []).extend(
                replace(e, path=below(folder, e.path)) for e in entries
            )
    stats = _merge_stats([m.stats for _, m in groups])
    task = first.learning_task()
    if task.targets and stats.get("target", {}).get("count"):
        task = task.with_statistics(stats["target"]["mean"], stats["target"]["std"])
    weights = merge_weights([m.weights for _, m in groups]) if first.weights else {}
    factors = first.class_factors
    if weights:
        factors = class_factors(weights, task.classes, task.balance)
    return replace(
        first,
        stats=stats,
        sources=[source for _, m in groups for source in m.sources],
        shards=shards,
        task=task.to_dict() if first.task else {},
        weights=weights,
        class_factors=factors,
    )


def _without_statistics(task: dict[str, Any]) -> dict[str, Any]:
    targets = [{"name": t["name"], "expression": t["expression"]} for t in task.get("targets", [])]
    return {**task, "targets": targets}


def _merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for name in parts[0]:
        total = RunningStats.from_dict(parts[0][name])
        for part in parts[1:]:
            total.merge(RunningStats.from_dict(part[name]))
        merged[name] = total.as_dict()
    return merged
