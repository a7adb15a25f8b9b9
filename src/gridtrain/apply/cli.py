"""``gridtrain apply RUN_DIR FILE... --out DIR``: a thin wrapper over ``gridtrain.apply.run``."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
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
    apply.add_argument(
        "--threads",
        type=int,
        help="threads per job (default: cores / jobs; with --executor condor, the profile's "
        "request_cpus)",
    )
    apply.add_argument(
        "--overwrite",
        action="store_true",
        help="replace scores files made from another model or with other options",
    )
    apply.add_argument(
        "--executor",
        choices=("local", "condor"),
        default="local",
        help="local processes (default), or condor: one HTCondor cluster over groups of files, "
        "waited for here, then every output verified",
    )
    apply.add_argument(
        "--profile", help="with --executor condor: the site profile (profiles/NAME/condor.yaml)"
    )
    apply.add_argument(
        "--files-per-job",
        type=int,
        metavar="N",
        help="with --executor condor: input files scored by each job (default 1)",
    )
    apply.set_defaults(func=_apply)


def _apply(args: argparse.Namespace) -> int:
    from gridtrain.apply.engines import find_models
    from gridtrain.apply.run import apply_files, default_threads
    from gridtrain.apply.scoring import ApplySettings

    stop_on_sigterm()
    condor = args.executor == "condor"
    _check_executor(args)
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
        # on the pool: the profile's request_cpus unless given
        threads=args.threads or (0 if condor else default_threads(args.jobs)),
        overwrite=args.overwrite,
    )
    if condor:
        return _on_condor(args, settings, files)
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


def _check_executor(args: argparse.Namespace) -> None:
    from gridtrain.errors import ApplyError

    if args.executor == "condor":
        if args.profile is None:
            raise ApplyError(
                "--executor condor needs --profile NAME: the site profile of the jobs "
                "(profiles/NAME/condor.yaml, or a built-in one: gridtrain doctor --help)"
            )
        if args.files_per_job is not None and args.files_per_job < 1:
            raise ApplyError(f"--files-per-job {args.files_per_job}: give 1 or more")
        if args.jobs != 1:
            raise ApplyError(
                f"--jobs {args.jobs} is for local processes; with --executor condor say how "
                "many files each job scores (--files-per-job N)"
            )
    elif args.profile is not None or args.files_per_job is not None:
        given = "--profile" if args.profile is not None else "--files-per-job"
        raise ApplyError(f"{given} is for --executor condor; add it, or leave {given} out")


def _on_condor(args: argparse.Namespace, settings: Any, files: list[str]) -> int:
    """One cluster over the files; a progress line until it ends (rewritten on a terminal,
    a line per change otherwise), then the summary."""
    from gridtrain.apply.grid import JobsProgress, apply_on_condor
    from gridtrain.condor.site import load_profile

    tty = sys.stderr.isatty()
    last = [""]

    def progress(state: JobsProgress) -> None:
        line = f"apply: {state.line()}"
        if line != last[0]:
            last[0] = line
            print(f"\r{line}\033[K" if tty else line, end="" if tty else "\n", file=sys.stderr)

    try:
        summary = apply_on_condor(
            settings,
            files,
            load_profile(args.profile),
            files_per_job=args.files_per_job or 1,
            export_dir=args.export,
            progress=progress,
        )
    finally:
        if tty and last[0]:
            print(file=sys.stderr)
    print(f"gridtrain apply: {summary.line()} -> {args.out}")
    return 0


def stop_on_sigterm() -> None:
    """SIGTERM (an HTCondor eviction, through the job wrapper, or kill) ends apply as Ctrl-C
    does: the scores file being written is removed, the finished ones stay."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminated)


def _terminated(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)
