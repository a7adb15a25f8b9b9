"""``gridtrain export RUN_DIR``: a thin wrapper over ``gridtrain.export.run``."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from gridtrain.export import FORMATS


def register(subparsers: Any) -> None:
    export = subparsers.add_parser(
        "export",
        help="export a trained model (ONNX, SavedModel, frozen graph), verified against Keras",
        description="Write the run's model as ONNX, a TensorFlow SavedModel and a frozen graph "
        "(model.pb) that take raw values from the ROOT file (the dataset's standardisation "
        "folded in), with export.json describing every input; each format scores the validation "
        "events and must agree with the Keras model before anything is written.",
    )
    export.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    export.add_argument(
        "--format",
        dest="formats",
        default=",".join(FORMATS),
        help=f"comma-separated formats (default: {','.join(FORMATS)})",
    )
    export.add_argument("-o", "--out", type=Path, help="folder to write (default: RUN_DIR/export)")
    export.add_argument(
        "--tolerance",
        type=float,
        default=None,
        help="largest |exported - Keras| / max(|Keras|, 1) accepted (default: 1e-5)",
    )
    export.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from gridtrain.export.run import DEFAULT_TOLERANCE, export_run

    kinds = tuple(kind.strip() for kind in args.formats.split(",") if kind.strip())
    tolerance = DEFAULT_TOLERANCE if args.tolerance is None else args.tolerance
    result = export_run(args.run_dir, kinds, args.out, tolerance)
    print(f"gridtrain export: {result.weights} -> {result.folder}")
    for check in result.checks:
        print(f"  {check.line()}")
    return 0
