"""A real XRootD server for the staging tests: Debian's ``xrootd`` on 127.0.0.1, a free port.

The server exports a folder under /tmp (``oss.localroot``, so ``root://127.0.0.1:PORT//a/b`` is
``<export>/a/b`` on disk, which tests read and corrupt directly) and computes adler32
(``xrootd.chksum adler32``) unless asked not to. xrootd refuses to run as root, so as root it
runs as the ``xrootd`` user the package creates (``-R xrootd``), which owns the export, admin and
log folders; pytest's own tmp_path may sit under /root, which that user cannot enter, hence /tmp.
Each server is stopped by its PID in a ``finally``. Outside CI a missing ``xrootd`` binary skips
these tests with the install command; in CI (``CI=true``) it fails them.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import in_ci

XROOTD_USER = "xrootd"
START_TIMEOUT = 20.0


def _require_xrootd() -> str:
    binary = shutil.which("xrootd")
    if binary is None:
        reason = (
            "the xrootd server is not installed (apt-get install xrootd-server xrootd-client, "
            "or run 'make test', which installs them)"
        )
        if in_ci():
            pytest.fail(f"CI must run the XRootD tests, but {reason}")
        pytest.skip(reason)
    return binary


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class AddressInUseError(RuntimeError):
    """xrootd could not bind its port: something else holds it."""


@dataclass
class XRootDServer:
    """One xrootd process; ``stop()`` and ``start()`` again keep the port and the export."""

    root: Path
    checksums: bool = True
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    _started: bool = False

    @property
    def export(self) -> Path:
        return self.root / "export"

    @property
    def log(self) -> Path:
        return self.root / "log" / "xrootd.log"

    def url(self, path: str = "") -> str:
        """``root://127.0.0.1:PORT//path``: ``path`` is relative to the export."""
        return f"root://127.0.0.1:{self.port}//{path.lstrip('/')}"

    def local(self, path: str) -> Path:
        """The file on disk behind ``url(path)``."""
        return self.export / path.lstrip("/")

    def write_config(self) -> Path:
        lines = [
            f"xrd.port {self.port}",
            "xrd.network nodnr",
            "all.export /",
            f"oss.localroot {self.export}",
            f"all.adminpath {self.root / 'admin'}",
            f"all.pidpath {self.root / 'admin'}",
        ]
        if self.checksums:
            lines.append("xrootd.chksum adler32")
        config = self.root / "xrootd.cfg"
        config.write_text("\n".join(lines) + "\n")
        return config

    def start(self) -> None:
        """Start xrootd; the first start of a server takes another free port when the one it
        picked was taken before xrootd could bind it (a connection elsewhere got it meanwhile:
        seen once in a loaded suite run). A restart keeps its port, as tests that stop and
        start a server expect."""
        first = self.process is None and not self._started
        for attempt in range(5 if first else 1):
            try:
                self._start()
            except AddressInUseError:
                if attempt == (5 if first else 1) - 1:
                    raise
                self.port = free_port()
            else:
                self._started = True
                return

    def _start(self) -> None:
        binary = _require_xrootd()
        for sub in ("export", "admin", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        command = [binary, "-c", str(self.write_config()), "-l", str(self.log)]
        if os.geteuid() == 0:
            user = pwd.getpwnam(XROOTD_USER)
            for sub in ("export", "admin", "log"):
                for dirpath, _, files in os.walk(self.root / sub):
                    for p in [dirpath, *(os.path.join(dirpath, f) for f in files)]:
                        os.chown(p, user.pw_uid, user.pw_gid, follow_symlinks=False)
            command += ["-R", XROOTD_USER]
        stdout = open(self.root / "stdout.txt", "ab")  # noqa: SIM115 (lives as long as the server)
        self.process = subprocess.Popen(
            command, stdout=stdout, stderr=subprocess.STDOUT, cwd=self.root
        )
        stdout.close()
        self._wait_for_port()

    def _wait_for_port(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code, self.process = self.process.returncode, None
                tail = self.tail()
                kind = AddressInUseError if "address already in use" in tail else RuntimeError
                raise kind(f"xrootd exited with {code}:\n{tail}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2),
            ):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"xrootd did not listen on {self.port} in {START_TIMEOUT} s\n{self.tail()}"
        )

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server by its PID and wait until it is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def tail(self, lines: int = 30) -> str:
        texts = []
        for candidate in (self.root / "stdout.txt", self.log):
            if candidate.exists():
                texts.append(candidate.read_text(errors="replace"))
        return "\n".join("\n".join(t.splitlines()[-lines:]) for t in texts)


def _server_root() -> Path:
    root = Path(tempfile.mkdtemp(prefix="gridtrain-xrootd-", dir="/tmp"))
    root.chmod(0o755)  # the xrootd user must be able to enter it
    return root


@pytest.fixture(scope="module")
def xrootd_server() -> Iterator[XRootDServer]:
    """One server with checksums per test module; tests use their own sub-folders.

    Module scope, not session: no xrootd child outlives the staging tests, so tests elsewhere
    that check for left-over child processes see none of ours.
    """
    _require_xrootd()
    server = XRootDServer(_server_root())
    try:
        server.start()
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def start_xrootd() -> Iterator[Callable[..., XRootDServer]]:
    """A factory of servers of the test's own, which it may stop and restart."""
    _require_xrootd()
    servers: list[XRootDServer] = []

    def start(checksums: bool = True) -> XRootDServer:
        server = XRootDServer(_server_root(), checksums=checksums)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()
            shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture
def area(request: pytest.FixtureRequest, xrootd_server: XRootDServer) -> str:
    """A folder of this test's own on the session server, as a path below the export."""
    return f"t/{request.node.name.replace('[', '_').replace(']', '')}"
