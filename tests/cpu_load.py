"""Run a command with the CPU loaded, as on a shared login node or a CI machine with a leftover job.

    python tests/cpu_load.py [--hogs 2] [--limit 3600] -- COMMAND [ARG...]

Starts ``--hogs`` busy-loop processes (each ends itself after ``--limit`` seconds, so a killed
run leaves nothing spinning for long), runs COMMAND, stops the hogs and exits with COMMAND's
status. ``make test-loaded`` runs the test suite this way: a test that passes only on a quiet
machine waits for time instead of for the event it needs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import subprocess
import sys
import time


def spin(limit: float) -> None:
    os.nice(0)  # same priority as the suite: the point is to compete with it
    end = time.monotonic() + limit
    while time.monotonic() < end:
        for _ in range(100_000):
            pass


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hogs", type=int, default=2, help="busy processes (default 2)")
    parser.add_argument("--limit", type=float, default=3600.0, help="seconds each hog may run")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    context = multiprocessing.get_context("spawn")
    hogs = [context.Process(target=spin, args=(args.limit,), daemon=True) for _ in range(args.hogs)]
    for hog in hogs:
        hog.start()
    print(f"cpu_load: {args.hogs} busy processes running beside: {' '.join(command)}", flush=True)
    try:
        return subprocess.call(command)
    finally:
        for hog in hogs:
            hog.terminate()
        for hog in hogs:
            hog.join(5)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
