"""The Python environment a worker job runs in, chosen by the profile's ``environment``.

Layer: batch-system edge, pure data plus file packaging; nothing here talks to HTCondor. The job
wrapper ``jobs/worker.sh`` reads three variables that this module sets in the submit
description, and the files it ships travel in ``transfer_input_files``:

========== ====================================================== ===============================
kind       Python and its packages on the execute node            gridtrain
========== ====================================================== ===============================
host       the submit host's environment at the same path         installed there
           (a shared filesystem: AFS on lxplus, the test pool)
lcg        an LCG view from /cvmfs/sft.cern.ch (``setup.sh``):     shipped: a wheel built at
           TensorFlow with CUDA, h5py, uproot, XRootD bindings     submit time
container  the image of ``container_image`` (``+SingularityImage``) from the image, or shipped
packed     a tarball of ``gridtrain pack-env`` (or conda-pack),    inside the tarball
           transferred with the job and unpacked in its scratch
========== ====================================================== ===============================

Extra ``wheels`` (packages a view or image lacks, built for its Python) are shipped with every
kind and put on ``PYTHONPATH`` ahead of the environment's own.
"""

from __future__ import annotations

import base64
import hashlib
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gridtrain
from gridtrain.errors import ConfigError
from gridtrain.files import atomic_file
from gridtrain.paths import is_url

KINDS = ("host", "lcg", "container", "packed")
GRIDTRAIN_SOURCES = ("shipped", "image")
PACKAGE = Path(gridtrain.__file__).resolve().parent
_EPOCH = (1980, 1, 1, 0, 0, 0)  # zip timestamps: the same sources give the same wheel bytes

_EXAMPLE = """environment:
  kind: lcg        # host | lcg | container | packed
  path: /cvmfs/sft.cern.ch/lcg/views/LCG_106_cuda/x86_64-el9-gcc11-opt"""


@dataclass(frozen=True)
class JobEnvironment:
    """A profile's ``environment`` mapping (see the module's table)."""

    kind: str = "host"
    # host: the environment's prefix (None: the submitting process's); lcg: the view's folder;
    # packed: the tarball, a local path or a URL that HTCondor transfers (osdf://, https://).
    path: str | None = None
    gridtrain: str = "shipped"  # container: "image" when the image has gridtrain installed
    wheels: tuple[str, ...] = ()

    @classmethod
    def from_profile(cls, data: Any, source: Path) -> JobEnvironment:
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: environment must be a mapping such as\n{_EXAMPLE}")
        unknown = sorted(set(data) - set(cls.__dataclass_fields__))
        if unknown:
            raise ConfigError(
                f"{source}: unknown environment key(s) {', '.join(map(str, unknown))}; "
                f"known: {', '.join(cls.__dataclass_fields__)}"
            )
        kind = data.get("kind", "host")
        if kind not in KINDS:
            raise ConfigError(
                f"{source}: environment kind {kind!r} is not one of {', '.join(KINDS)}"
            )
        gridtrain_from = data.get("gridtrain") or "shipped"
        if gridtrain_from not in GRIDTRAIN_SOURCES or (
            gridtrain_from == "image" and kind != "container"
        ):
            raise ConfigError(
                f"{source}: environment gridtrain {gridtrain_from!r}: 'shipped', or 'image' "
                "with kind container"
            )
        wheels = data.get("wheels") or []
        if isinstance(wheels, str) or not all(isinstance(w, str) for w in wheels):
            raise ConfigError(f"{source}: environment wheels must be a list of wheel files")
        path = data.get("path")
        if kind in ("lcg", "packed") and not path:
            way = (
                "the view's folder, e.g. /cvmfs/sft.cern.ch/lcg/views/LCG_106_cuda/"
                "x86_64-el9-gcc11-opt"
                if kind == "lcg"
                else "the tarball made by `gridtrain pack-env -o gridtrain-env.tar.gz`"
            )
            raise ConfigError(f"{source}: environment kind {kind} needs a path: {way}")
        return cls(kind, None if path is None else str(path), gridtrain_from, tuple(wheels))

    @property
    def local_tarball(self) -> Path | None:
        """The packed environment's tarball when it is a file on this host (not a URL)."""
        if self.kind != "packed" or not self.path or is_url(self.path):
            return None
        return Path(self.path)

    @property
    def ships_gridtrain(self) -> bool:
        """Whether a gridtrain wheel goes with the jobs (built by ``build_wheel``)."""
        return self.kind == "lcg" or (self.kind == "container" and self.gridtrain == "shipped")

    def files(self, wheel: Path | None) -> list[str]:
        """What the jobs get in ``transfer_input_files``, besides worker.json and ps.secret."""
        files = []
        if self.ships_gridtrain:
            if wheel is None:
                raise ConfigError(
                    f"environment {self.kind} ships gridtrain as a wheel; build it first "
                    "(gridtrain.condor.environment.build_wheel)"
                )
            files.append(str(wheel))
        files += [str(Path(w).absolute()) for w in self.wheels]
        if self.kind == "packed":
            assert self.path is not None
            files.append(self.path if is_url(self.path) else str(Path(self.path).absolute()))
        return files

    def variables(self, venv: Path | None, wheel: Path | None) -> dict[str, str]:
        """The job environment variables that tell the wrapper what to set up."""
        path: str | None = self.path
        if self.kind == "host" and path is None and venv is not None:
            path = str(venv)
        elif self.kind == "packed":
            assert self.path is not None
            path = _basename(self.path)  # transferred into the job's scratch directory
        values = {"GRIDTRAIN_ENV": self.kind}
        if path:
            values["GRIDTRAIN_ENV_PATH"] = path
        shipped = [f.rsplit("/", 1)[-1] for f in self.files(wheel) if f.endswith(".whl")]
        if shipped:
            values["GRIDTRAIN_WHEELS"] = ",".join(shipped)
        return values

    def check(self) -> None:
        """Refuse before submitting what cannot work: shipped files that do not exist here."""
        packed = self.local_tarball
        if packed is not None and not packed.is_file():
            raise ConfigError(
                f"packed environment {packed}: no such file; make it with "
                f"`gridtrain pack-env -o {packed}` in the environment the jobs should use"
            )
        for wheel in self.wheels:
            if not Path(wheel).is_file():
                raise ConfigError(
                    f"environment wheel {wheel}: no such file; build it with "
                    "`pip wheel --no-deps -w wheels/ PACKAGE` for the job's Python"
                )


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1]


# -- shipping gridtrain ---------------------------------------------------------------------------


def package_files(package: Path = PACKAGE) -> Iterator[tuple[str, Path]]:
    """(name in a wheel, file) of every file of the gridtrain package, compiled files left out."""
    for path in sorted(package.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield f"gridtrain/{path.relative_to(package).as_posix()}", path


def source_fingerprint(package: Path = PACKAGE) -> str:
    """A digest of the package's files: tells a stale shipped copy from the code here."""
    digest = hashlib.sha256()
    for name, path in package_files(package):
        digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def build_wheel(folder: Path, package: Path = PACKAGE) -> Path:
    """A pure-Python wheel of the gridtrain package as it is here (editable installs included).

    Written directly (no build backend, no network: an access point may have neither), with
    fixed timestamps, so the same sources give the same bytes; atomically renamed into place.
    """
    version = gridtrain.__version__
    info = f"gridtrain-{version}.dist-info"
    target = folder / f"gridtrain-{version}-py3-none-any.whl"
    metadata = f"Metadata-Version: 2.1\nName: gridtrain\nVersion: {version}\n"
    entries = [(name, path.read_bytes()) for name, path in package_files(package)]
    entries += [
        (f"{info}/METADATA", metadata.encode()),
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: gridtrain\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        ),
        (f"{info}/entry_points.txt", b"[console_scripts]\ngridtrain = gridtrain.cli:main\n"),
        (f"{info}/SOURCE", f"{source_fingerprint(package)}\n".encode()),
    ]
    record = [f"{name},sha256={_urlsafe_digest(data)},{len(data)}" for name, data in entries]
    entries.append((f"{info}/RECORD", ("\n".join([*record, f"{info}/RECORD,,"]) + "\n").encode()))
    folder.mkdir(parents=True, exist_ok=True)
    with atomic_file(target) as handle, zipfile.ZipFile(handle, "w") as zf:
        for name, data in entries:
            member = zipfile.ZipInfo(name, date_time=_EPOCH)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(member, data)
    return target


def _urlsafe_digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
