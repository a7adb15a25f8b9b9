"""ROOT reading layer: open inputs with clear errors, check branch types, read entry ranges.

Hands numpy arrays to the conversion; knows nothing of shards, HDF5 or the split. Local paths and
root:// URLs go through uproot alike; URLs stay strings and never pass through ``os.path``.
Errors from uproot and the decompressors are translated into ``ConversionError`` naming the file.
"""

from __future__ import annotations

import difflib
import zlib
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridtrain.errors import ConversionError
from gridtrain.paths import is_url

# Errors uproot and its decompressors raise on files that are not ROOT, truncated or corrupt.
_READ_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    ValueError,
    KeyError,
    IndexError,
    EOFError,
    AssertionError,
    zlib.error,
)


def _read_errors() -> tuple[type[BaseException], ...]:
    import uproot

    return (*_READ_ERRORS, uproot.deserialization.DeserializationError)


@dataclass(frozen=True)
class FlatBranch:
    """A per-event numeric branch; ``width`` > 1 for fixed-size arrays (``x[10]``)."""

    name: str
    width: int

    def columns(self) -> list[str]:
        if self.width == 1:
            return [self.name]
        return [f"{self.name}[{i}]" for i in range(self.width)]


@dataclass(frozen=True)
class Jagged:
    """Counts and flattened contents of one jagged group for a block of events."""

    counts: np.ndarray
    contents: dict[str, np.ndarray]


class TreeReader:
    """One TTree of one input file, opened for the whole conversion."""

    def __init__(self, path: str, tree_name: str, executor: Executor | None = None) -> None:
        import uproot

        self.path = path
        self.tree_name = tree_name
        if not is_url(path) and not Path(path).is_file():
            raise ConversionError(f"{path}: no such file; check dataset.samples[].files")
        # uproot's own array cache would hold 100 MB per file of arrays we never read twice.
        options: dict[str, Any] = {"array_cache": None}
        if executor is not None:
            options = {"decompression_executor": executor, "interpretation_executor": executor}
        try:
            self._file = uproot.open(path, **options)
        except _read_errors() as err:
            raise ConversionError(
                f"{path}: cannot be opened as a ROOT file ({_short(err)}); "
                "is it complete and really ROOT?"
            ) from None
        try:
            self._tree = self._file[tree_name]
        except _read_errors():
            trees = self.tree_names()
            self._file.close()
            raise ConversionError(
                f"{path}: no TTree {tree_name!r}; trees in this file: {trees or 'none'}"
            ) from None
        if not isinstance(self._tree, uproot.TTree):
            self._file.close()
            raise ConversionError(
                f"{path}: {tree_name!r} is a {type(self._tree).__name__}, not a TTree; "
                f"trees in this file: {self.tree_names()}"
            )
        self.entries = int(self._tree.num_entries)

    def tree_names(self) -> list[str]:
        return sorted({k.split(";")[0] for k, c in self._file.classnames().items() if c == "TTree"})

    def close(self) -> None:
        self._file.close()

    def _branch(self, name: str, role: str) -> Any:
        if name not in self._tree:
            names = self._tree.keys()
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {close}? " if close else ""
            raise ConversionError(
                f"{self.path}: tree {self.tree_name!r} has no branch {name!r} ({role}); {hint}"
                f"branches: {_listing(names)}"
            )
        return self._tree[name]

    def check_flat(self, name: str, role: str) -> FlatBranch:
        """Check that ``name`` is a per-event number (or fixed-size array of numbers)."""
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
                f"{self.path}: branch {name!r} ({role}) has type {interp}, which cannot become a "
                "fixed-size float array; choose numeric branches"
            )
        return FlatBranch(name, int(np.prod(dtype.shape)) if dtype.shape else 1)

    def check_jagged(self, name: str, group: str) -> None:
        """Check that ``name`` is a singly-jagged list of numbers."""
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
        """Entries where every branch in ``names`` starts a basket (always 0 and the end).

        Reading ranges that end on these never decompresses a basket twice.
        """
        common: set[int] = set()
        for i, name in enumerate(names):
            offsets = {int(x) for x in self._tree[name].entry_offsets}
            common = offsets if i == 0 else common & offsets
        common |= {0, self.entries}
        return sorted(x for x in common if 0 <= x <= self.entries)

    def read_flat(self, name: str, start: int, stop: int) -> np.ndarray:
        branch = self._tree[name]
        try:
            array = branch.array(entry_start=start, entry_stop=stop, library="np")
        except _read_errors() as err:
            raise self._corrupt(name, start, stop, err) from None
        return np.asarray(array).reshape(stop - start, -1)

    def read_jagged(self, names: tuple[str, ...], group: str, start: int, stop: int) -> Jagged:
        import awkward as ak

        counts: np.ndarray | None = None
        contents = {}
        for name in names:
            try:
                array = self._tree[name].array(entry_start=start, entry_stop=stop, library="ak")
            except _read_errors() as err:
                raise self._corrupt(name, start, stop, err) from None
            these = ak.to_numpy(ak.num(array, axis=1))
            if counts is None:
                counts = these
            elif not np.array_equal(counts, these):
                raise ConversionError(
                    f"{self.path}: branches of jagged group {group!r} differ in length per event "
                    f"({names[0]!r} and {name!r}); a group must share one counter"
                )
            contents[name] = ak.to_numpy(ak.flatten(array, axis=1))
        assert counts is not None
        return Jagged(counts.astype(np.int64), contents)

    def _corrupt(self, name: str, start: int, stop: int, err: BaseException) -> ConversionError:
        return ConversionError(
            f"{self.path}: branch {name!r} cannot be read at entries {start}-{stop} "
            f"({_short(err)}); the file is truncated or corrupt, copy it again"
        )


def _short(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def _listing(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
