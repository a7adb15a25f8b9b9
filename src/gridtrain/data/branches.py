"""What the ROOT readers hand to the conversion: branch records, and the interface of a reader.

Records and protocol only; no file is opened here. A TTree (``gridtrain.data.ttree``) and an
RNTuple (``gridtrain.data.rntuple``) are read through the same ``InputReader`` interface, so the
conversion never asks which one a file holds; ``gridtrain.data.rootio`` opens a file and picks.
In an RNTuple a *field* plays the part of a TTree's *branch*; messages say which.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gridtrain.errors import ConversionError

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


def read_errors() -> tuple[type[BaseException], ...]:
    """The exceptions that mean "this file cannot be read" (uproot imported lazily)."""
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
class ImageBranch:
    """A per-event fixed-size numeric array kept as a tensor (``image[32][32]``)."""

    name: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class Jagged:
    """Counts and flattened contents of one jagged group for a block of events."""

    counts: np.ndarray
    contents: dict[str, np.ndarray]


FlatRead = Callable[[], dict[str, np.ndarray]]


class InputReader(Protocol):
    """One tree (TTree or RNTuple) of one input file, opened for the whole conversion."""

    path: str
    tree_name: str
    kind: str  # "TTree" or "RNTuple", for messages and the manifest
    entries: int

    def close(self) -> None: ...

    def check_flat(self, name: str, role: str) -> FlatBranch:
        """``name`` is a per-event number or fixed-size array of numbers; else ConversionError."""
        ...

    def check_jagged(self, name: str, group: str) -> None:
        """``name`` is a list of numbers per event (one level); else ConversionError."""
        ...

    def check_image(self, name: str, image: str) -> ImageBranch:
        """``name`` is a fixed-size numeric array (any number of axes); else ConversionError."""
        ...

    def boundaries(self, names: list[str]) -> list[int]:
        """Entries where every one of ``names`` starts a basket or cluster (always 0 and the
        end); ranges that end on these never decompress anything twice."""
        ...

    def read_flat(self, name: str, start: int, stop: int) -> np.ndarray:
        """Entries [start, stop) as an N x width array."""
        ...

    def flat_reads(self, names: list[str], start: int, stop: int) -> list[FlatRead]:
        """Reads that together give entries [start, stop) of ``names`` (name -> N x width),
        split as this format reads fastest: the conversion runs them on its thread pool."""
        ...

    def read_jagged(self, names: tuple[str, ...], group: str, start: int, stop: int) -> Jagged:
        """Entries [start, stop) of a jagged group; its branches must share one counter."""
        ...

    def read_image(self, name: str, start: int, stop: int) -> np.ndarray:
        """Entries [start, stop) as an N x shape array."""
        ...


def short(err: BaseException) -> str:
    """One line of an exception, for a message that names the file."""
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:160]}" if text else type(err).__name__


def listing(names: list[str], limit: int = 40) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def corrupt(
    path: str, what: str, names: list[str], start: int, stop: int, err: BaseException
) -> str:
    """The message for branches or fields (``what``) that cannot be read."""
    named = ", ".join(repr(n) for n in names[:3])
    if len(names) > 3:
        named += f" and {len(names) - 3} more"
    return (
        f"{path}: {what} {named} cannot be read at entries {start}-{stop} ({short(err)}); "
        "the file is truncated or corrupt, copy it again"
    )


def jagged_arrays(path: str, names: tuple[str, ...], group: str, arrays: list[object]) -> Jagged:
    """Counts and contents of awkward ``var * number`` arrays, straight from their buffers.

    The branches of a group must share one counter; the contents are the buffer slices the
    offsets span (no ``ak.flatten`` copy).
    """
    import awkward as ak

    counts: np.ndarray | None = None
    contents = {}
    for name, array in zip(names, arrays, strict=True):
        layout = ak.to_layout(array)
        if not isinstance(layout, ak.contents.ListOffsetArray):
            layout = layout.to_ListOffsetArray64(False)
        offsets = np.asarray(layout.offsets)
        these = np.diff(offsets)
        if counts is None:
            counts = these
        elif not np.array_equal(counts, these):
            raise ConversionError(
                f"{path}: branches of jagged group {group!r} differ in length per event "
                f"({names[0]!r} and {name!r}); a group must share one counter"
            )
        contents[name] = np.asarray(layout.content.data)[offsets[0] : offsets[-1]]
    assert counts is not None
    return Jagged(counts.astype(np.int64), contents)
