"""Reading a TTree: branch types checked against what a shard can hold, entry ranges read.

ROOT reading layer, one of the two ``InputReader`` implementations (``gridtrain.data.branches``);
``gridtrain.data.rootio`` opens the file and hands the tree here. Hands numpy arrays to the
conversion; knows nothing of shards, HDF5 or the split. Errors from uproot and the decompressors
become ``ConversionError`` naming the file and the branch.
"""

from __future__ import annotations

import difflib
from functools import partial
from typing import Any

import numpy as np

from gridtrain.data.branches import (
    FlatBranch,
    FlatRead,
    ImageBranch,
    Jagged,
    corrupt,
    jagged_arrays,
    listing,
    read_errors,
)
from gridtrain.errors import ConversionError


class TTreeReader:
    """One TTree of one input file, opened for the whole conversion (``InputReader``)."""

    kind = "TTree"

    def __init__(self, path: str, tree_name: str, file: Any, tree: Any) -> None:
        self.path = path
        self.tree_name = tree_name
        self._file = file
        self._tree = tree
        self.entries = int(tree.num_entries)

    def close(self) -> None:
        self._file.close()

    def _branch(self, name: str, role: str) -> Any:
        if name not in self._tree:
            names = self._tree.keys()
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {close}? " if close else ""
            raise ConversionError(
                f"{self.path}: tree {self.tree_name!r} has no branch {name!r} ({role}); {hint}"
                f"every input file needs it: drop this file or the name from the config. "
                f"Branches: {listing(names)}"
            )
        return self._tree[name]

    def _numeric_dtype(self, name: str, role: str, advice: str) -> np.dtype:
        import uproot

        interp = self._branch(name, role).interpretation
        if isinstance(interp, uproot.interpretation.jagged.AsJagged):
            raise ConversionError(
                f"{self.path}: branch {name!r} ({role}) is jagged ({interp}); "
                "list it under dataset.jagged with a length to pad or clip to"
            )
        dtype = getattr(interp, "to_dtype", None)
        if not isinstance(interp, uproot.AsDtype) or dtype is None or dtype.base.kind not in "biuf":
            raise ConversionError(
                f"{self.path}: branch {name!r} ({role}) has type {interp}, which cannot become "
                f"{advice}; choose numeric branches"
            )
        return np.dtype(dtype)

    def check_flat(self, name: str, role: str) -> FlatBranch:
        dtype = self._numeric_dtype(name, role, "a fixed-size float array")
        return FlatBranch(name, int(np.prod(dtype.shape)) if dtype.shape else 1)

    def check_image(self, name: str, image: str) -> ImageBranch:
        dtype = self._numeric_dtype(name, f"image {image!r}", "an image tensor")
        if not dtype.shape:
            raise ConversionError(
                f"{self.path}: branch {name!r} of image {image!r} is one number per event; "
                "an image is a fixed-size array (image[32][32]): list it under dataset.features"
            )
        return ImageBranch(name, tuple(int(n) for n in dtype.shape))

    def check_jagged(self, name: str, group: str) -> None:
        import uproot

        interp = self._branch(name, f"jagged group {group!r}").interpretation
        if isinstance(interp, uproot.AsDtype) and interp.to_dtype.kind in "biuf":
            raise ConversionError(
                f"{self.path}: branch {name!r} in jagged group {group!r} is flat ({interp}); "
                "list it under dataset.features instead"
            )
        content = getattr(interp, "content", None)
        if not (
            isinstance(interp, uproot.interpretation.jagged.AsJagged)
            and isinstance(content, uproot.AsDtype)
            and content.to_dtype.kind in "biuf"
            and not content.to_dtype.shape
        ):
            raise ConversionError(
                f"{self.path}: branch {name!r} in jagged group {group!r} has type {interp}, "
                "which cannot become a padded float array (only lists of numbers can: not "
                "strings, objects or lists of lists)"
            )

    def boundaries(self, names: list[str]) -> list[int]:
        common: set[int] = set()
        for i, name in enumerate(names):
            offsets = {int(x) for x in self._tree[name].entry_offsets}
            common = offsets if i == 0 else common & offsets
        common |= {0, self.entries}
        return sorted(x for x in common if 0 <= x <= self.entries)

    def _array(self, name: str, start: int, stop: int, library: str) -> Any:
        try:
            return self._tree[name].array(entry_start=start, entry_stop=stop, library=library)
        except read_errors() as err:
            raise ConversionError(corrupt(self.path, "branch", [name], start, stop, err)) from None

    def read_flat(self, name: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array(name, start, stop, "np")).reshape(stop - start, -1)

    def flat_reads(self, names: list[str], start: int, stop: int) -> list[FlatRead]:
        # One read per branch: each decompresses its own baskets, in parallel on the pool.
        return [partial(self._read_one, name, start, stop) for name in names]

    def _read_one(self, name: str, start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: self.read_flat(name, start, stop)}

    def read_image(self, name: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array(name, start, stop, "np"))

    def read_jagged(self, names: tuple[str, ...], group: str, start: int, stop: int) -> Jagged:
        arrays = [self._array(name, start, stop, "ak") for name in names]
        return jagged_arrays(self.path, names, group, arrays)
