"""What expressions read and compute per event: jagged branches as lists, the derived features.

Conversion layer, beside ``gridtrain.data.events`` (which reads the layout's columns): an
expression (``gridtrain.data.selection``) of the selection, a target, a weight or a derived
feature takes jagged branches as ``Lists``, an element (``Jet_pt[0]``) or a reduction
(``len(Jet_pt)``) at a time. ``read_lists`` reads those a layout's jagged groups do not already
hold; ``event_arrays`` puts them beside the per-event branches; ``add_derived`` computes the
derived feature columns into the flat columns, where the features table takes them.
``complete_columns`` does the three after ``gridtrain.data.events.read_columns``: conversion and
scoring call it alike, so an event's derived features are the same in both. The flat branches
to read for a layout's features are ``Layout.feature_branches()``.
"""

from __future__ import annotations

from collections.abc import Iterable
from concurrent.futures import Executor

import numpy as np

from gridtrain.data.branches import InputReader
from gridtrain.data.layout import Layout
from gridtrain.data.selection import Lists


def read_lists(
    reader: InputReader,
    names: Iterable[str],
    groups: dict[str, tuple[np.ndarray, list[np.ndarray]]],
    layout: Layout,
    start: int,
    stop: int,
    pool: Executor,
) -> dict[str, Lists]:
    """Entries [start, stop) of the jagged branches ``names`` as lists: from the layout's
    jagged ``groups`` as read (unpadded) where a group holds one, else read on ``pool``."""
    held = {
        branch: (group, k)
        for group, branches, _, _ in layout.groups
        for k, branch in enumerate(branches)
    }
    futures = {
        name: pool.submit(reader.read_jagged, (name,), name, start, stop)
        for name in sorted(set(names))
        if name not in held
    }
    lists = {}
    for name in sorted(set(names)):
        if name in held:
            group, k = held[name]
            counts, contents = groups[group]
            lists[name] = Lists(counts, contents[k])
        else:
            read = futures[name].result()
            lists[name] = Lists(read.counts, read.contents[name])
    return lists


def event_arrays(
    flat: dict[str, np.ndarray], lists: dict[str, Lists]
) -> dict[str, np.ndarray | Lists]:
    """What an expression evaluates on: every per-event branch (N x 1 columns as N) and the
    lists."""
    arrays: dict[str, np.ndarray | Lists] = {
        name: values[:, 0] for name, values in flat.items() if values.shape[1:] == (1,)
    }
    arrays.update(lists)
    return arrays


def add_derived(
    flat: dict[str, np.ndarray], arrays: dict[str, np.ndarray | Lists], layout: Layout, events: int
) -> None:
    """Put each derived feature's column (N x 1, float32, its fill where undefined) into
    ``flat`` under its name."""
    for derived in layout.derived:
        flat[derived.name] = derived.values(arrays, events)[:, None]


def complete_columns(
    reader: InputReader,
    layout: Layout,
    flat: dict[str, np.ndarray],
    groups: dict[str, tuple[np.ndarray, list[np.ndarray]]],
    start: int,
    stop: int,
    pool: Executor,
    lists: Iterable[str] = (),
) -> dict[str, np.ndarray | Lists]:
    """After ``read_columns`` of entries [start, stop): read the lists the layout's expressions
    (and ``lists``: e.g. a weight's) need, add the derived feature columns to ``flat``, and
    return what expressions evaluate on (``event_arrays``)."""
    wanted = set(layout.lists) | set(lists)
    arrays = event_arrays(flat, read_lists(reader, wanted, groups, layout, start, stop, pool))
    add_derived(flat, arrays, layout, stop - start)
    return arrays
