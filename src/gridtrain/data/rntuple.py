"""Reading an RNTuple (ROOT 6.34+, RNTuple 1.0): field types checked, entry ranges read.

ROOT reading layer, the other ``InputReader`` (``gridtrain.data.branches``) beside the TTree's;
``gridtrain.data.rootio`` opens the file and hands the RNTuple here. A field is checked by the
Awkward form uproot gives it, so the same rules hold as for TTree branches:

* a feature, event id, weight, label or selection field is one number per event, or a
  fixed-size array of numbers (``std::array<float,4>``);
* a jagged-group field is one list of numbers per event (``std::vector<float>``,
  ``ROOT::RVec<float>``, a projected NanoAOD collection member); its lists must match the
  group's other fields event by event;
* an image field is a fixed-size numeric array of any number of axes
  (``std::array<std::array<float,32>,32>``).

Strings, records, variants and lists of lists are refused with the field's C++ type and the way
out. Subfields are named with dots (``_collection0.Muon_pt``). Each field is read by its own
``RField.array`` call: ``RNTuple.arrays`` would first list every field of the RNTuple, which
uproot 5.7 does in time quadratic in their number (5 s for PHYSLITE's 1077 fields, per file),
while a field's own call looks at its subtree only. Reads are cluster-aligned: uproot
reads whole clusters, and the one cluster it reads past the end of a range is kept for the next
range (``_NextCluster``), so nothing is decompressed twice.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
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

_NUMERIC = "biuf"


@dataclass(frozen=True)
class _Shape:
    """A field's values as axes over a primitive: ``"var"`` for a list, an int for a fixed size."""

    axes: tuple[int | str, ...]
    dtype: np.dtype | None  # None: not a number (string, record, variant, ...)
    what: str  # how to name a non-numeric leaf in a message

    @property
    def lists(self) -> int:
        return sum(1 for a in self.axes if a == "var")


def _shape_of(form: Any, path: list[str]) -> _Shape:
    """Walk an Awkward form down to its primitive, stepping into the record ``path`` names."""
    import awkward as ak

    axes: list[int | str] = []
    path = list(path)
    while True:
        if form.parameters.get("__array__") in ("string", "bytestring"):
            return _Shape(tuple(axes), None, "a string")
        if isinstance(form, ak.forms.ListOffsetForm | ak.forms.ListForm):
            axes.append("var")
            form = form.content
        elif isinstance(form, ak.forms.RegularForm):
            axes.append(int(form.size))
            form = form.content
        elif isinstance(form, ak.forms.RecordForm):
            if path and path[0] in form.fields:
                form = form.content(path.pop(0))
                continue
            return _Shape(tuple(axes), None, f"a record of {form.fields}")
        elif isinstance(form, ak.forms.NumpyForm):
            axes.extend(int(n) for n in form.inner_shape)
            dtype = np.dtype(ak.types.numpytype.primitive_to_dtype(form.primitive))
            return _Shape(tuple(axes), dtype if dtype.kind in _NUMERIC else None, str(dtype))
        else:
            return _Shape(tuple(axes), None, type(form).__name__.removesuffix("Form").lower())


class _NextCluster(MutableMapping[str, Any]):
    """uproot's array cache for one RNTuple, holding only the last cluster read of each column.

    uproot 5.7 reads a range [start, stop) that ends on a cluster boundary together with the
    cluster that starts at ``stop``; the next range starts with that cluster, and finds it here.
    Keys are uproot's ``"<ntuple>:<cluster>:<column>"``; memory is one cluster per column read.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last: dict[str, tuple[str, Any]] = {}  # column -> (key, decompressed array)

    @staticmethod
    def _column(key: str) -> str:
        return key.rsplit(":", 1)[1]

    def __getitem__(self, key: str) -> Any:
        with self._lock:
            kept = self._last.get(self._column(key))
        if kept is None or kept[0] != key:
            raise KeyError(key)
        return kept[1]

    def __setitem__(self, key: str, value: Any) -> None:
        with self._lock:
            self._last[self._column(key)] = (key, value)

    def __delitem__(self, key: str) -> None:
        self[key]  # raises KeyError unless it is the one kept
        with self._lock:
            del self._last[self._column(key)]

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter([key for key, _ in self._last.values()])

    def __len__(self) -> int:
        return len(self._last)


class RNTupleReader:
    """One RNTuple of one input file, opened for the whole conversion (``InputReader``)."""

    kind = "RNTuple"

    def __init__(self, path: str, tree_name: str, file: Any, ntuple: Any) -> None:
        self.path = path
        self.tree_name = tree_name
        self._file = file
        self._ntuple = ntuple
        self.entries = int(ntuple.num_entries)
        try:  # metadata uproot builds lazily, built here once before reader threads share it
            ntuple.all_fields  # noqa: B018
            self._cluster_starts = [int(c.num_first_entry) for c in ntuple.cluster_summaries]
            ntuple.page_link_list  # noqa: B018
        except read_errors() as err:
            raise ConversionError(
                corrupt(path, "RNTuple", [tree_name], 0, self.entries, err)
            ) from None
        self._fields: dict[str, Any] = {}
        self._cache = _NextCluster()

    def close(self) -> None:
        self._file.close()

    def _field(self, name: str, role: str) -> Any:
        field = self._fields.get(name)
        if field is not None:
            return field
        try:
            field = self._ntuple[name]
        except KeyError:
            names = [f.name for f in self._ntuple.fields]  # keys() would list every subfield
            close = difflib.get_close_matches(name, names, n=3)
            hint = f"did you mean {close}? " if close else ""
            raise ConversionError(
                f"{self.path}: RNTuple {self.tree_name!r} has no field {name!r} ({role}); "
                f"{hint}every input file needs it: drop this file or the name from the config. "
                f"Fields: {listing(names)}"
            ) from None
        self._fields[name] = field
        return field

    def _shape(self, name: str, role: str) -> _Shape:
        field = self._field(name, role)
        form, path = field.to_akform()
        return _shape_of(form.contents[0], list(path or [])[1:])

    def _refuse(self, name: str, role: str, shape: _Shape, advice: str) -> ConversionError:
        field = self._field(name, role)
        leaf = "" if shape.dtype is not None else f" (its values are {shape.what})"
        return ConversionError(
            f"{self.path}: field {name!r} ({role}) of RNTuple {self.tree_name!r} has type "
            f"{field.typename}{leaf}, which cannot become {advice}"
        )

    def check_flat(self, name: str, role: str) -> FlatBranch:
        shape = self._shape(name, role)
        if shape.dtype is not None and shape.lists:
            raise ConversionError(
                f"{self.path}: field {name!r} ({role}) is a list per event "
                f"({self._field(name, role).typename}); list it under dataset.jagged with a "
                "length to pad or clip to"
            )
        if shape.dtype is None:
            raise self._refuse(name, role, shape, "a fixed-size float array; choose numeric fields")
        width = int(np.prod([int(a) for a in shape.axes])) if shape.axes else 1
        return FlatBranch(name, width)

    def check_image(self, name: str, image: str) -> ImageBranch:
        role = f"image {image!r}"
        shape = self._shape(name, role)
        if shape.dtype is None or shape.lists:
            raise self._refuse(
                name, role, shape, "an image tensor (a fixed-size numeric array, "
                "std::array<std::array<float,W>,H>)"
            )  # fmt: skip
        if not shape.axes:
            raise ConversionError(
                f"{self.path}: field {name!r} of image {image!r} is one number per event; "
                "an image is a fixed-size array: list it under dataset.features"
            )
        return ImageBranch(name, tuple(int(a) for a in shape.axes))

    def check_jagged(self, name: str, group: str) -> None:
        role = f"jagged group {group!r}"
        shape = self._shape(name, role)
        if shape.dtype is not None and not shape.lists:
            raise ConversionError(
                f"{self.path}: field {name!r} in jagged group {group!r} is not a list "
                f"({self._field(name, role).typename}); list it under dataset.features instead"
            )
        if shape.dtype is None or shape.axes != ("var",):
            raise self._refuse(
                name, role, shape, "a padded float array (only one list of numbers per event "
                "can: not strings, records, or lists nested beyond one level)"
            )  # fmt: skip

    def boundaries(self, names: list[str]) -> list[int]:
        # Every field of an RNTuple shares its clusters.
        return sorted({0, self.entries} | {s for s in self._cluster_starts if s <= self.entries})

    def _array(self, name: str, start: int, stop: int, library: str) -> Any:
        try:
            return self._fields[name].array(
                entry_start=start, entry_stop=stop, library=library, array_cache=self._cache
            )
        except read_errors() as err:
            raise ConversionError(corrupt(self.path, "field", [name], start, stop, err)) from None

    def read_flat(self, name: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array(name, start, stop, "np")).reshape(stop - start, -1)

    def flat_reads(self, names: list[str], start: int, stop: int) -> list[FlatRead]:
        # One task for all: uproot's RNTuple reader is serial and holds the GIL for most of its
        # work, so splitting the flat fields over threads only adds contention.
        return [partial(self._read_flats, names, start, stop)] if names else []

    def _read_flats(self, names: list[str], start: int, stop: int) -> dict[str, np.ndarray]:
        return {name: self.read_flat(name, start, stop) for name in names}

    def read_image(self, name: str, start: int, stop: int) -> np.ndarray:
        return np.asarray(self._array(name, start, stop, "np"))

    def read_jagged(self, names: tuple[str, ...], group: str, start: int, stop: int) -> Jagged:
        arrays = [self._array(name, start, stop, "ak") for name in names]
        return jagged_arrays(self.path, names, group, arrays)
