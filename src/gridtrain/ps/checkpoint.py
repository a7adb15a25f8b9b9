"""Checkpoints of the parameter server: one uncompressed ``.npz`` file, written atomically.

Layer: ps, disk edge. Reads and writes checkpoint files; it never decides when to write one (the
server does) and never holds a lock (the caller hands it a consistent ``CenterSnapshot``).

Format (readable with ``numpy.load(path, allow_pickle=False)``):

* ``center_0000`` ... : the center tensors, in model order;
* ``state_<name>_0000`` ... : optimizer state (``velocity``, ``first_moment``, ``second_moment``);
* ``meta``: a uint8 array holding UTF-8 JSON with ``format``, ``version`` (center version),
  ``optimizer_step``, ``counters``, ``algorithm`` settings and ``tensors`` (count).

The file is written to a temporary name in the same directory, fsynced, renamed over the final
name with ``os.replace`` and the directory fsynced, so the final name always holds a complete
checkpoint; zip CRCs catch a file damaged later.
"""

from __future__ import annotations

import json
import logging
import re
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from gridtrain.errors import CheckpointError
from gridtrain.files import atomic_file
from gridtrain.ps.algorithms import Array
from gridtrain.ps.center import CenterSnapshot

log = logging.getLogger(__name__)

FORMAT = "gridtrain-ps-checkpoint-1"
_STATE_KEY = re.compile(r"state_([a-z_]+)_(\d{4,})")


def write_checkpoint(path: Path, snapshot: CenterSnapshot) -> None:
    """Write ``snapshot`` to ``path`` atomically (temporary file, fsync, rename, fsync dir)."""
    arrays: dict[str, Array] = {}
    for index, array in enumerate(snapshot.center):
        arrays[f"center_{index:04d}"] = array
    for name, tensors in snapshot.optimizer_state.items():
        for index, array in enumerate(tensors):
            arrays[f"state_{name}_{index:04d}"] = array
    meta = {
        "format": FORMAT,
        "version": snapshot.version,
        "optimizer_step": snapshot.optimizer_step,
        "counters": snapshot.counters,
        "algorithm": snapshot.algorithm,
        "tensors": len(snapshot.center),
    }
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]
    log.info("checkpoint of center version %d written to %s", snapshot.version, path)


def read_checkpoint(path: Path) -> CenterSnapshot:
    """Load a checkpoint; raise ``CheckpointError`` naming the file if it is missing or damaged."""
    if not path.exists():
        raise CheckpointError(
            f"checkpoint {path} does not exist; start without --resume (and with --init) to "
            "begin a new training"
        )
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            meta: dict[str, Any] = json.loads(bytes(data["meta"]).decode())
            if meta.get("format") != FORMAT:
                raise CheckpointError(
                    f"{path} is not a gridtrain parameter-server checkpoint "
                    f"(format {meta.get('format')!r}, expected {FORMAT!r})"
                )
            count = int(meta["tensors"])
            center = [data[f"center_{index:04d}"] for index in range(count)]
            state: dict[str, dict[int, Array]] = {}
            for key in data.files:
                match = _STATE_KEY.fullmatch(key)
                if match:
                    state.setdefault(match[1], {})[int(match[2])] = data[key]
    except CheckpointError:
        raise
    except (OSError, KeyError, ValueError, zipfile.BadZipFile, json.JSONDecodeError) as err:
        raise CheckpointError(
            f"checkpoint {path} is damaged or incomplete ({err}); resume from an older copy or "
            "start again with --init"
        ) from None
    optimizer_state = {
        name: [tensors[index] for index in range(len(tensors))] for name, tensors in state.items()
    }
    return CenterSnapshot(
        center=center,
        version=int(meta["version"]),
        optimizer_state=optimizer_state,
        optimizer_step=int(meta["optimizer_step"]),
        counters={str(k): int(v) for k, v in meta["counters"].items()},
        algorithm=dict(meta["algorithm"]),
    )


def write_initial_weights(path: Path, weights: list[Array]) -> None:
    """``np.savez(path, *weights)`` atomically: what ``read_initial_weights`` reads (the run's
    initial.npz and best.npz)."""
    with atomic_file(path) as handle:
        np.savez(handle, *weights)


def read_initial_weights(path: Path) -> list[Array]:
    """The initial center from ``np.savez(path, *model.get_weights())`` (keys ``arr_N``)."""
    try:
        with open(path, "rb") as handle, np.load(handle, allow_pickle=False) as data:
            keys = list(data.files)
            if all(re.fullmatch(r"arr_\d+", key) for key in keys):
                keys.sort(key=lambda key: int(key[4:]))
            weights = [np.ascontiguousarray(data[key]) for key in keys]
    except FileNotFoundError:
        raise CheckpointError(
            f"initial weights {path} do not exist; write them with "
            "np.savez(path, *model.get_weights())"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise CheckpointError(
            f"initial weights {path} are not a readable .npz file ({err}); write them with "
            "np.savez(path, *model.get_weights())"
        ) from None
    if not weights:
        raise CheckpointError(f"initial weights {path} hold no arrays")
    return weights
