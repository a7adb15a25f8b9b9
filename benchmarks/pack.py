"""``gridtrain pack-env`` against plain ``tar | gzip`` of the same files, in one run.

  pack-env   gridtrain.condor.pack.pack_env: the relocatable layout (interpreter, standard
             library, site-packages, gridtrain), gzip level ``--level``, written atomically;
  tar|gzip   the raw limit, what a user would type: GNU tar over the same folders, piped into
             ``gzip -<level>`` (one process each, so compression overlaps the reading).

Both pack this checkout's .venv and the Python it was made from, without the parts the
benchmark's ``--exclude`` names (the defaults: what a worker never imports). The sizes must
agree within a few per cent (same files, same compressor); the time is the point. Best of
``--rounds``. The last line is the ratio pack-env / tar|gzip (goal: at most 1.2).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from gridtrain.condor.pack import STDLIB_LEFT_OUT, pack_env

EXCLUDE = ["clang", "skhep_testdata", "tensorflow/include", "pulp", "*mypyc*", "mypy"]


def tar_gzip(output: Path, exclude: list[str], level: int) -> None:
    """The same folders with GNU tar and gzip: the limit a pipe of the two tools reaches."""
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    base = Path(sys.base_prefix)
    stdlib = base / "lib" / version
    site = Path(sysconfig.get_paths()["purelib"])
    args = ["tar", "-cf", "-"]
    args += [f"--exclude={stdlib.name}/{name}" for name in STDLIB_LEFT_OUT]
    args += [f"--exclude=site-packages/{pattern}" for pattern in exclude]
    args += ["-C", str(base / "bin"), version, "-C", str(base / "lib"), version]
    args += ["-C", str(site.parent), "site-packages"]
    with output.open("wb") as out:
        tar = subprocess.Popen(args, stdout=subprocess.PIPE)
        subprocess.run(["gzip", f"-{level}"], stdin=tar.stdout, stdout=out, check=True)
        assert tar.stdout is not None
        tar.stdout.close()
        if tar.wait() != 0:
            raise SystemExit(f"tar failed: {args}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--level", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    best: dict[str, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="gridtrain-bench-pack-") as tmp:
        for round_ in range(args.rounds):
            for name in ("pack-env", "tar|gzip") if round_ % 2 == 0 else ("tar|gzip", "pack-env"):
                output = Path(tmp) / f"{name.replace('|', '-')}.tar.gz"
                started = time.perf_counter()
                if name == "pack-env":
                    pack_env(output, exclude=EXCLUDE, level=args.level)
                else:
                    tar_gzip(output, EXCLUDE, args.level)
                seconds = time.perf_counter() - started
                size = output.stat().st_size
                output.unlink()
                if name not in best or seconds < best[name][0]:
                    best[name] = (seconds, size)
    for name, (seconds, size) in best.items():
        print(f"{name:<9} {seconds:6.1f} s  {size / 2**20:6.0f} MiB  (gzip -{args.level})")
    ratio = best["pack-env"][0] / best["tar|gzip"][0]
    print(f"ratio pack-env / tar|gzip: {ratio:.2f} (goal <= 1.2)")


if __name__ == "__main__":
    main()
