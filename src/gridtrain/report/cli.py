"""``gridtrain report RUN_DIR``: regenerate a run's plots and print a summary; a thin wrapper."""

from __future__ import annotations

import argparse
from typing import Any


def register(subparsers: Any) -> None:
    report = subparsers.add_parser(
        "report",
        help="draw a training run's plots and summarise it",
        description="Regenerate the PNG plots of a run directory (RUN_DIR/plots) from its "
        "metrics.json, history.jsonl, roc.npz and validation.npz, as its task (binary, "
        "multiclass, regression) asks, and print a summary.",
    )
    report.add_argument(
        "run_dir", metavar="RUN_DIR", help="the run directory 'gridtrain train' wrote"
    )
    report.set_defaults(func=_report)


def _report(args: argparse.Namespace) -> int:
    from gridtrain.report import load_run, summary_lines, write_report

    run = load_run(args.run_dir)
    for path in write_report(args.run_dir, run):
        print(f"wrote {path}")
    for line in summary_lines(run):
        print(line)
    return 0
