"""ROOT reading layer: open an input file, find its tree, and hand it to the right reader.

A dataset's files may hold TTrees or RNTuples (ROOT 6.34+, RNTuple 1.0), mixed freely: uproot
reads both, and each kind has its reader behind one interface (``InputReader`` in
``gridtrain.data.branches``; ``gridtrain.data.ttree``, ``gridtrain.data.rntuple``). Local paths
and root:// URLs go through uproot alike; URLs stay strings and never pass through ``os.path``.
Local files are read with ``pread`` (uproot's ``MultithreadedFileSource``): the same bytes as
its default fsspec source at about a tenth less CPU, without an event-loop thread. Not
memory-mapped: mapped pages count in a process's RSS, which would then grow with the file, and a
batch system would hold the job for it. Errors from uproot and the decompressors become
``ConversionError`` naming the file and the way out.
"""

from __future__ import annotations

from concurrent.futures import Executor
from pathlib import Path
from typing import Any

from gridtrain.data.branches import InputReader, read_errors, short
from gridtrain.data.rntuple import RNTupleReader
from gridtrain.data.ttree import TTreeReader
from gridtrain.errors import ConversionError
from gridtrain.paths import is_url

TTREE = "TTree"
RNTUPLE = "ROOT::RNTuple"
# RNTuples written before the 1.0 format (ROOT 6.22-6.32): uproot cannot read them.
EXPERIMENTAL_RNTUPLE = "ROOT::Experimental::RNTuple"


def open_input(path: str, tree_name: str, executor: Executor | None = None) -> InputReader:
    """Open ``tree_name`` (a TTree or an RNTuple) in the file at ``path`` for reading."""
    import uproot

    if not is_url(path) and not Path(path).is_file():
        raise ConversionError(f"{path}: no such file; check dataset.samples[].files")
    # uproot's own array cache would hold 100 MB per file of arrays we never read twice.
    options: dict[str, Any] = {"array_cache": None}
    if not is_url(path):
        options["handler"] = uproot.source.file.MultithreadedFileSource
    if executor is not None:
        options |= {"decompression_executor": executor, "interpretation_executor": executor}
    try:
        file = uproot.open(path, **options)
        classes = {k.split(";")[0]: c for k, c in file.classnames().items()}
    except read_errors() as err:
        raise ConversionError(
            f"{path}: cannot be opened as a ROOT file ({short(err)}); "
            "is it complete and really ROOT?"
        ) from None
    try:
        return _reader(path, tree_name, file, classes.get(tree_name.strip("/")), classes)
    except BaseException:
        file.close()
        raise


def _reader(
    path: str, tree_name: str, file: Any, classname: str | None, classes: dict[str, str]
) -> InputReader:
    trees = sorted(k for k, c in classes.items() if c in (TTREE, RNTUPLE, EXPERIMENTAL_RNTUPLE))
    if classname == EXPERIMENTAL_RNTUPLE:
        raise ConversionError(
            f"{path}: {tree_name!r} is an RNTuple from before RNTuple 1.0 "
            f"({EXPERIMENTAL_RNTUPLE}, ROOT 6.22-6.32), which uproot cannot read; write it "
            "again with ROOT 6.34 or later, or as a TTree"
        )
    try:
        obj = file[tree_name]
    except read_errors():
        raise ConversionError(
            f"{path}: no TTree or RNTuple {tree_name!r}; trees in this file: {trees or 'none'}"
        ) from None
    import uproot

    if isinstance(obj, uproot.TTree):
        return TTreeReader(path, tree_name, file, obj)
    if isinstance(obj, uproot.behaviors.RNTuple.RNTuple):
        return RNTupleReader(path, tree_name, file, obj)
    raise ConversionError(
        f"{path}: {tree_name!r} is a {classname or type(obj).__name__}, not a TTree or an "
        f"RNTuple; trees in this file: {trees or 'none'}"
    )
