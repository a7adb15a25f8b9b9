"""The yield table of a normalised sample set: what ``gridtrain convert`` and the report print.

Pure formatting of the manifest's ``weights.normalisation`` record (``gridtrain.data.manifest``):
one row per sample (data or simulation, its selected events, the sum of generator weights and
where it came from, the normalisation factor, the weighted yield after the selection), then data
and simulation in total. The yields are the sums of the stored event weights before class
balancing, so they are what an analysis's own event loop gives for the same selection.
"""

from __future__ import annotations

from typing import Any

_HEADER = ("sample", "kind", "events", "sum of gen. weights", "factor", "yield")


def yield_rows(normalisation: dict[str, Any]) -> list[tuple[str, ...]]:
    """The table's rows, header first, every cell a string."""
    rows: list[tuple[str, ...]] = [_HEADER]
    for name, record in normalisation.get("samples", {}).items():
        if record.get("data"):
            kind, sumw = "data", "-"
        else:
            kind = "simulation"
            sumw = "-" if record.get("sumw") is None else f"{record['sumw']:.6g}"
            if record.get("sumw_source"):
                sumw += f" ({record['sumw_source']})"
        rows.append(
            (
                name,
                kind,
                str(record.get("events", 0)),
                sumw,
                f"{record.get('factor', 1.0):.6g}",
                f"{record.get('yield', 0.0):.6g}",
            )
        )
    for kind in ("data", "simulation"):
        total = normalisation.get(kind) or {}
        if total.get("events"):
            rows.append((f"all {kind}", "", str(total["events"]), "", "", f"{total['yield']:.6g}"))
    return rows


def yield_lines(normalisation: dict[str, Any]) -> list[str]:
    """The table as aligned text lines, with the luminosity it is normalised to."""
    rows = yield_rows(normalisation)
    widths = [max(len(row[i]) for row in rows) for i in range(len(_HEADER))]
    lumi = normalisation.get("lumi")
    title = f"yields after the selection, normalised to {lumi:g} pb^-1" if lumi else "yields"
    lines = [f"{title}:"]
    for row in rows:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  " + "  ".join(cells).rstrip())
    return lines
