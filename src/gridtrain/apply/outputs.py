"""The scores file of one input: its name, its branches, how it is written and verified.

Layer: apply, files. ``DIR/<input stem>_scores.root`` holds one tree ``scores`` (a TTree, or an
RNTuple with ``--format rntuple``) with one entry per entry of the input tree, in its order, so it
is a friend of the input, and a ``TObjString`` ``gridtrain_apply``: the marker, JSON of what the
file was made from (the request: input, tree, entries, engine, model hash, options, branches)
and the adler32 of every branch's bytes. It is written under a temporary name and renamed
(``gridtrain.files.atomic_path``), so a file under the final name is complete. A later run with
the same request finds it, re-reads every branch, checks the entry count and the checksums and
skips it; an unreadable file or one whose content no longer matches its checksums is scored
again; a complete file made from another request (another model, other options) or by
something else is never overwritten unless asked (``--overwrite``).
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridtrain.errors import ApplyError
from gridtrain.files import atomic_path
from gridtrain.task import Task

log = logging.getLogger(__name__)

TREE = "scores"
MARKER = "gridtrain_apply"
MARKER_VERSION = 1
FORMATS = ("ttree", "rntuple")
SUFFIX = "_scores.root"
SELECTED = "selected"
FOLD = "fold"  # a k-fold run: the fold whose model scored the event (it never trained on it)
ENTRY = "entry"  # the event id of a dataset without event_id branches: the input's entry number

Block = dict[str, np.ndarray]


def score_branches(task: Task) -> list[str]:
    """The score branches, one per model output: ``score`` (binary), ``score_<class>``
    (multi-class, in the task's class order), ``<target>_pred`` (regression, physical units)."""
    if task.kind == "binary":
        return ["score"]
    if task.kind == "multiclass":
        return [f"score_{name}" for name in task.classes]
    return [f"{target.name}_pred" for target in task.targets]


def input_stem(path: str) -> str:
    """The input's file name without ``.root`` (a local path or a ``root://`` URL alike)."""
    name = path.rstrip("/").rsplit("/", 1)[-1]
    return name[: -len(".root")] if name.endswith(".root") else name


def output_name(path: str) -> str:
    return input_stem(path) + SUFFIX


@dataclass(frozen=True)
class Request:
    """What a scores file is made from; recorded in its marker and compared on a later run."""

    input: str  # the input's file name (not its folder: moving the inputs changes nothing)
    tree: str
    entries: int
    engine: str
    model_sha256: str
    selection: str | None  # the dataset's selection flagged in ``selected``, or None
    branches: tuple[str, ...]
    format: str

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record["branches"] = list(self.branches)
        return record


def checksum(array: np.ndarray, previous: int = 1) -> int:
    """adler32 of an array's bytes in C order, continued from ``previous``."""
    return zlib.adler32(np.ascontiguousarray(array).tobytes(), previous)


def write_scores(final: Path, request: Request, blocks: Iterable[Block]) -> int:
    """Write ``blocks`` (each a dict of the request's branches, in order) as the tree ``scores``
    of ``final`` with the marker; return the entries written. ``blocks`` gives at least one
    block (empty for an input without entries), whose dtypes and shapes make the branches."""
    import uproot

    sums = dict.fromkeys(request.branches, 1)
    entries = 0
    final.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(final) as tmp, uproot.recreate(tmp) as file:
        sink: Any = None
        for block in blocks:
            if sink is None:
                types = {name: _branch_type(block[name]) for name in request.branches}
                if request.format == "rntuple":
                    sink = file.mkrntuple(TREE, types)
                else:
                    sink = file.mktree(TREE, types, title="gridtrain apply scores")
            n = len(block[request.branches[0]])
            if n:
                sink.extend({name: block[name] for name in request.branches})
            for name in request.branches:
                sums[name] = checksum(block[name], sums[name])
            entries += n
        marker = {
            "format": MARKER,
            "version": MARKER_VERSION,
            "request": request.to_json(),
            "entries": entries,
            "adler32": sums,
        }
        file[MARKER] = json.dumps(marker, sort_keys=True)
    return entries


def _branch_type(array: np.ndarray) -> Any:
    if array.ndim == 1:
        return array.dtype
    return (array.dtype, array.shape[1:])


def finished(final: Path, request: Request) -> bool:
    """Whether ``final`` is a complete scores file of ``request`` (skip it): ``False`` when there
    is none or it is unreadable or its content fails its checksums (score it again);
    ``ApplyError`` when it is complete but made from another request, or not by apply."""
    if not final.exists():
        return False
    import uproot

    from gridtrain.data.branches import read_errors, short

    try:
        with uproot.open(final) as file:
            end = int(file.file.fEND)
            if final.stat().st_size != end:
                log.warning("%s: %d bytes, not the %d its header says; scoring again", final,
                            final.stat().st_size, end)  # fmt: skip
                return False
            classes = {k.split(";")[0]: c for k, c in file.classnames().items()}
            if classes.get(MARKER) != "TObjString":
                raise ApplyError(
                    f"{final}: exists and was not written by gridtrain apply (no {MARKER}); "
                    "move it away, or write elsewhere (--out)"
                )
            marker = json.loads(str(file[MARKER]))
            recorded = marker.get("request", {})
            wanted = request.to_json()
            if recorded != wanted:
                key = next(k for k in sorted(set(recorded) | set(wanted)) if
                           recorded.get(k) != wanted.get(k))  # fmt: skip
                raise ApplyError(
                    f"{final}: exists and differs from what this apply would write ({key}: "
                    f"{recorded.get(key)!r} there, {wanted.get(key)!r} now); remove it, write "
                    "elsewhere (--out), or replace it (--overwrite)"
                )
            tree = file[TREE]
            if int(tree.num_entries) != request.entries or marker["entries"] != request.entries:
                log.warning("%s: %d entries, not %d; scoring again", final,
                            int(tree.num_entries), request.entries)  # fmt: skip
                return False
            arrays = tree.arrays(list(request.branches), library="np")
    except ApplyError:
        raise
    except read_errors() as err:  # a JSONDecodeError is a ValueError
        log.warning("%s: unreadable (%s); scoring again", final, short(err))
        return False
    for name in request.branches:
        if checksum(np.asarray(arrays[name])) != marker["adler32"].get(name):
            log.warning("%s: branch %r fails its adler32; scoring again", final, name)
            return False
    return True


def check_names(paths: list[str]) -> None:
    """Two inputs with one file name would write one scores file: refuse them in one line."""
    seen: dict[str, str] = {}
    for path in paths:
        name = output_name(path)
        if name in seen and seen[name] != path:
            raise ApplyError(
                f"{seen[name]} and {path} would both write {name}; score them into separate "
                "folders (--out)"
            )
        seen[name] = path


def check_format(kind: str) -> None:
    import uproot

    if kind not in FORMATS:
        raise ApplyError(f"--format {kind}: choose one of {', '.join(FORMATS)}")
    if kind == "rntuple" and not hasattr(uproot.writing.writable.WritableDirectory, "mkrntuple"):
        raise ApplyError(
            f"--format rntuple: uproot {uproot.__version__} cannot write RNTuples (5.4 and "
            "later can); upgrade uproot or write TTrees (--format ttree)"
        )
