"""Command-line edge: thin subcommands over library functions.

Only this module turns exceptions into exit codes and one-line messages. Each command group lives
beside its library (``gridtrain.data.cli``, ``gridtrain.ps.cli``) and exposes
``register(subparsers)``; this module only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from gridtrain import __version__
from gridtrain.errors import GridtrainError

log = logging.getLogger("gridtrain")

# Each module adds its subcommands with ``register(subparsers)``.
_COMMAND_MODULES = (
    "gridtrain.data.cli",
    "gridtrain.ps.cli",
    "gridtrain.report.cli",
    "gridtrain.train.cli",
    "gridtrain.stage.cli",
    "gridtrain.condor.cli",
    "gridtrain.condor.doctor",
    "gridtrain.condor.pack",
    "gridtrain.export.cli",
    "gridtrain.apply.cli",
    "gridtrain.serve.cli",
    "gridtrain.tune.cli",
)

EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gridtrain",
        description="Train Keras models on HTCondor GPU pools, from ROOT files to a report.",
    )
    parser.add_argument("--version", action="version", version=f"gridtrain {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else logging.DEBUG if args.verbose else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(name)s %(levelname)s: %(message)s")
    try:
        result: int | None = args.func(args)
    except KeyboardInterrupt:
        print("gridtrain: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (GridtrainError, OSError) as err:
        log.debug("command failed", exc_info=True)
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        print(f"gridtrain {args.command}: error: {message}", file=sys.stderr)
        return EXIT_USER_ERROR
    return result or 0
