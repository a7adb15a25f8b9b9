"""``gridtrain apply RUN_DIR FILE... --out DIR``: a thin wrapper over ``gridtrain.apply.run``."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    apply = subparsers.add_parser(
        "apply",
        help="score ROOT files with a trained run: one friend tree of scores per input file",
        description="Score every entry of each input file's tree (TTree or RNTuple, local or "
        "root://) with the run's model, its inputs read exactly as conversion reads them, and "
        "write DIR/<input stem>_scores.root: one tree 'scores' with an entry per input entry, "
        "in order (a friend tree), holding the event id branches and score (binary), "
        "score_<class> (multi-class) or <target>_pred (regression, physical units). A finished "
        "output is verified and skipped, so a run can be resumed.",
    )
    apply.add_argument("run_dir", type=Path, metavar="RUN_DIR")
    apply.add_argument("files", nargs="*", metavar="FILE", help="ROOT files: paths or root:// URLs")
    apply.add_argument("-o", "--out", type=Path, required=True, help="folder for the scores files")
    apply.add_argument(
        "--files-from",
        type=Path,
        metavar="LIST",
        help="a text file with one input file per line (added to FILE...)",
    )
    apply.add_argument("--tree", help="the tree or RNTuple to score (default: the run's)")
    apply.add_argument(
        "--engine",
        choices=("keras", "onnx"),
        default="keras",
        help="the run's Keras model (default), or its ONNX export (no TensorFlow needed)",
    )
    apply.add_argument(
        "--export",
        "--export-dir",
        type=Path,
        metavar="DIR",
        help="with --engine onnx: the export to use (default: RUN_DIR/export; of a k-fold run, "
        "its export of every fold's model)",
    )
    apply.add_argument(
        "--selection",
        action="store_true",
        help="add a branch 'selected': 1 where the dataset's selection keeps the event, 0 where "
        "it rejects it (every event is scored either way)",
    )
    apply.add_argument(
        "--keep",
        action="extend",
        nargs="+",
        default=[],
        metavar="BRANCH",
        help="copy these per-event branches of the input into the scores tree (after the "
        "files, or once per branch: it takes every name that follows)",
    )
    apply.add_argument(
        "--format",
        choices=("ttree", "rntuple"),
        default="ttree",
        help="write the scores as a TTree (default) or an RNTuple",
    )
    apply.add_argument("--jobs", type=int, default=1, help="files scored at once, in processes")
    apply.add_argument("--threads", type=int, help="threads per job (default: cores / jobs)")
    apply.add_argument(
        "--overwrite",
        action="store_true",
        help="replace scores files made from another model or with other options",
    )
    apply.add_argument(
        "--executor",
        choices=("local", "condor"),
        default="local",
        help="local processes (default); condor is not available yet",
    )
    apply.add_argument("--profile", help="with --executor condor: the site profile")
    apply.set_defaults(func=_apply)


def _apply(args: argparse.Namespace) -> int:
    from gridtrain.apply.engines import find_models
    from gridtrain.apply.run import apply_files, default_threads
    from gridtrain.apply.scoring import ApplySettings
    from gridtrain.errors import ApplyError

    if args.executor == "condor":
        raise ApplyError(
            "--executor condor is not available yet: score with --jobs N here, or run the "
            "Snakemake rule apply with an HTCondor profile (profiles/htcondor)"
        )
    files = list(args.files)
    if args.files_from is not None:
        listed = args.files_from.read_text().splitlines()
        files += [line.strip() for line in listed if line.strip() and not line.startswith("#")]
    settings = ApplySettings(
        model=find_models(args.run_dir, args.engine, args.export),
        out=args.out,
        tree=args.tree,
        selection=args.selection,
        keep=tuple(args.keep),
        format=args.format,
        threads=args.threads or default_threads(args.jobs),
        overwrite=args.overwrite,
    )
    start = time.perf_counter()
    shown = [0.0]

    def progress(done: int, total: int, files_done: int) -> None:
        now = time.perf_counter()
        if sys.stderr.isatty() and (now - shown[0] > 0.5 or done == total):
            shown[0] = now
            rate = done / max(now - start, 1e-9)
            print(
                f"\rapply: {done}/{total} events, {files_done}/{len(files)} files "
                f"({rate:,.0f} events/s)",
                end="",
                file=sys.stderr,
            )

    summary = apply_files(settings, files, args.jobs, progress)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    print(f"gridtrain apply: {summary.line()} -> {args.out}")
    return 0
