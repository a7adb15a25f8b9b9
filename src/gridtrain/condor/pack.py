"""``gridtrain pack-env``: this virtual environment, with its interpreter, as one tarball for jobs.

Layer: batch-system edge, files only. The tarball is what a profile's ``environment: {kind:
packed, path: ...}`` transfers with every worker job; ``jobs/worker.sh`` unpacks it in the job's
scratch directory and runs ``.gridtrain-env/bin/python3 -m gridtrain worker``.

A virtual environment is not relocatable by itself (its ``python`` is a link to the interpreter
it was made from, its scripts name absolute paths), so the tarball holds a relocatable layout
instead: the base interpreter (``bin/python3.11``, ``lib/libpython*``, the standard library
without its tests and GUI modules) with the environment's ``site-packages`` in place of the
base's, and gridtrain copied in as real files even when installed in editable mode. CPython
finds its standard library next to its executable, so the folder works wherever it is unpacked;
the wrapper puts its ``lib/`` first on ``LD_LIBRARY_PATH`` for a ``libpython`` whose RUNPATH
names this host. The execute nodes need the same platform and a glibc at least as new as here.

The first member, ``gridtrain-env.json``, says what is inside (Python, gridtrain version and
source fingerprint, platform): ``gridtrain doctor`` and the executor read it without unpacking
the rest and warn about a tarball packed from other gridtrain sources.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import platform
import sys
import sysconfig
import tarfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import gridtrain
from gridtrain.condor.environment import PACKAGE, source_fingerprint
from gridtrain.errors import ConfigError
from gridtrain.files import atomic_file

log = logging.getLogger(__name__)

INFO_MEMBER = "gridtrain-env.json"
# Parts of the standard library that no worker imports: 170 MB of a 3.11 installation.
STDLIB_LEFT_OUT = ("site-packages", "test", "idlelib", "tkinter", "turtledemo", "ensurepip")
_EDITABLE = ("__editable__", "_editable_impl_gridtrain", "gridtrain.pth")


@dataclass(frozen=True)
class PackInfo:
    """What a packed environment holds (``gridtrain-env.json``)."""

    python: str
    gridtrain: str
    source: str  # gridtrain.condor.environment.source_fingerprint of the packed package
    platform: str
    glibc: str
    packed_from: str
    packed_at: float

    @classmethod
    def here(cls, prefix: Path) -> PackInfo:
        return cls(
            python=platform.python_version(),
            gridtrain=gridtrain.__version__,
            source=source_fingerprint(),
            platform=sysconfig.get_platform(),
            glibc="-".join(platform.libc_ver()),
            packed_from=str(prefix),
            packed_at=time.time(),
        )


def read_info(tarball: Path) -> PackInfo:
    """The ``gridtrain-env.json`` of a packed environment (read from its first member)."""
    try:
        with tarfile.open(tarball, "r:*") as tar:
            member = tar.next()
            if member is None or member.name != INFO_MEMBER:
                raise ConfigError(
                    f"{tarball}: not made by gridtrain pack-env (no {INFO_MEMBER} first); "
                    "make it again with `gridtrain pack-env`"
                )
            handle = tar.extractfile(member)
            assert handle is not None
            data: dict[str, Any] = json.loads(handle.read())
    except (OSError, tarfile.TarError, json.JSONDecodeError) as err:
        raise ConfigError(f"{tarball}: not a readable packed environment ({err})") from None
    return PackInfo(**data)


def stale_reason(tarball: Path, info: PackInfo | None = None) -> str | None:
    """Why a packed environment would not run the gridtrain of this checkout, or None."""
    info = info or read_info(tarball)
    if info.source != source_fingerprint():
        return (
            f"{tarball} holds gridtrain {info.gridtrain} from other sources (packed "
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(info.packed_at))}); "
            f"run `gridtrain pack-env -o {tarball}` again"
        )
    if info.python.rsplit(".", 1)[0] != platform.python_version().rsplit(".", 1)[0]:
        return f"{tarball} holds Python {info.python}, this host runs {platform.python_version()}"
    return None


def pack_env(
    output: Path,
    *,
    exclude: Sequence[str] = (),
    level: int = 6,
    prefix: Path | None = None,
    base: Path | None = None,
) -> PackInfo:
    """Write this (virtual) environment as a relocatable tarball to ``output``, atomically.

    ``exclude``: glob patterns of paths inside site-packages to leave out (``clang``,
    ``tensorflow/include``); gridtrain itself is always packed.
    """
    prefix = Path(prefix or sys.prefix)
    base = Path(base or sys.base_prefix)
    if prefix == base:
        raise ConfigError(
            f"{prefix} is not a virtual environment: gridtrain pack-env packs one made with "
            "`python -m venv` (for a conda environment use conda-pack; the job wrapper runs its "
            "conda-unpack)"
        )
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site = prefix / "lib" / version / "site-packages"
    interpreter = (base / "bin" / version).resolve()
    for needed in (site, interpreter, base / "lib" / version / "os.py"):
        if not needed.exists():
            raise ConfigError(f"{needed}: missing; cannot pack the environment {prefix}")
    info = PackInfo.here(prefix)
    output = output.absolute()
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        atomic_file(output) as handle,
        tarfile.open(fileobj=handle, mode="w:gz", compresslevel=level) as tar,
    ):
        _add_bytes(tar, INFO_MEMBER, json.dumps(asdict(info), indent=1).encode(), 0o644)
        tar.add(interpreter, f"bin/{version}")
        for alias in ("python3", "python"):
            _add_link(tar, f"bin/{alias}", version)
        _add_bytes(tar, "bin/gridtrain", _GRIDTRAIN_SCRIPT, 0o755)
        for library in sorted((base / "lib").glob("libpython*")):
            tar.add(library, f"lib/{library.name}")
        stdlib = base / "lib" / version
        for entry in sorted(stdlib.iterdir()):
            if entry.name not in STDLIB_LEFT_OUT and not entry.name.startswith("config-"):
                tar.add(entry, f"lib/{version}/{entry.name}")
        packages = f"lib/{version}/site-packages"
        for entry in sorted(site.iterdir()):
            if entry.name.startswith(_EDITABLE) or entry.name == "gridtrain":
                continue
            tar.add(entry, f"{packages}/{entry.name}", filter=_excluding(exclude, packages))
        tar.add(PACKAGE, f"{packages}/gridtrain", filter=_no_bytecode)
    return info


_GRIDTRAIN_SCRIPT = b'#!/bin/sh\nexec "$(dirname "$0")/python3" -m gridtrain "$@"\n'


def _add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mode: int) -> None:
    member = tarfile.TarInfo(name)
    member.size, member.mode, member.mtime = len(data), mode, int(time.time())
    tar.addfile(member, io.BytesIO(data))


def _add_link(tar: tarfile.TarFile, name: str, target: str) -> None:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.mode = tarfile.SYMTYPE, target, 0o777
    tar.addfile(member)


def _no_bytecode(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    return None if "__pycache__" in member.name.split("/") else member


def _excluding(patterns: Sequence[str], root: str) -> Any:
    def keep(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
        relative = member.name[len(root) + 1 :]
        parts = relative.split("/")
        for depth in range(1, len(parts) + 1):
            head = "/".join(parts[:depth])
            if any(fnmatch.fnmatchcase(head, pattern) for pattern in patterns):
                return None
        return member

    return keep


def register(subparsers: Any) -> None:
    pack = subparsers.add_parser(
        "pack-env",
        help="pack this virtual environment and its Python as a tarball for worker jobs",
        description="Write this virtual environment, its interpreter and gridtrain as one "
        "relocatable tarball; a profile with environment {kind: packed, path: TARBALL} "
        "transfers it with each worker job, which unpacks it in its scratch directory. "
        "Run it in an environment with the GPU build of TensorFlow (envs/requirements-gpu.txt).",
    )
    pack.add_argument(
        "-o", "--output", type=Path, default=Path("gridtrain-env.tar.gz"), help="the tarball"
    )
    pack.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="leave out paths inside site-packages (repeatable), e.g. 'clang' 'tensorflow/include'",
    )
    pack.add_argument(
        "--level", type=int, default=6, choices=range(1, 10), metavar="1-9", help="gzip level"
    )
    pack.set_defaults(func=_pack)


def _pack(args: Any) -> int:
    started = time.monotonic()
    info = pack_env(args.output, exclude=args.exclude, level=args.level)
    size = args.output.stat().st_size / 2**20
    print(
        f"packed Python {info.python} with gridtrain {info.gridtrain} ({info.source}) from "
        f"{info.packed_from} into {args.output} ({size:.0f} MiB, "
        f"{time.monotonic() - started:.0f} s); jobs need {info.platform}, glibc >= "
        f"{info.glibc.split('-')[-1]}"
    )
    return 0
