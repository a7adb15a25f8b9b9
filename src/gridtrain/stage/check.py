"""``gridtrain stage check URL``: what a user asks first when a site misbehaves.

Reachability and round-trip latency (``kXR_ping``), the server's version, free space if it reports
it (``kXR_query`` space), whether it computes adler32 checksums, and whether the path is there.
Local folders get the same report from ``os``. Raises ``StageError`` when the server does not
answer within the timeout; everything else is reported, not raised.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gridtrain.stage import xrd
from gridtrain.stage.location import Location, parse_location
from gridtrain.stage.storage import Storage

PINGS = 3


@dataclass(frozen=True)
class CheckReport:
    url: str
    remote: bool
    latency_s: float | None  # best of PINGS round trips; None for local folders
    version: str | None
    total_bytes: int | None
    free_bytes: int | None
    server_checksums: bool  # False for local folders: gridtrain computes adler32 itself
    path_state: str  # "a folder", "a file of N bytes", "missing"

    def lines(self) -> list[str]:
        if self.remote:
            out = [f"{self.url}: reachable" + (f", xrootd {self.version}" if self.version else "")]
        else:
            out = [f"{self.url}: local file system"]
        if self.latency_s is not None:
            out.append(f"round trip: {self.latency_s * 1e3:.2f} ms (best of {PINGS} pings)")
        if self.free_bytes is not None and self.total_bytes is not None:
            out.append(
                f"space: {self.free_bytes / 1e9:,.1f} GB free of {self.total_bytes / 1e9:,.1f} GB"
            )
        else:
            out.append("space: not reported by the server")
        if not self.remote:
            out.append("checksums: adler32 computed locally")
        elif self.server_checksums:
            out.append("checksums: adler32 on the server (push verifies with the server's sum)")
        else:
            out.append(
                "checksums: not enabled on the server (no 'xrootd.chksum adler32'); "
                "push verifies by reading every file back, which doubles the traffic"
            )
        out.append(f"path: {self.path_state}")
        return out


def check(url: str, timeout: float) -> CheckReport:
    location = parse_location(url)
    if not location.is_remote:
        return _check_local(location)
    latency = min(xrd.ping(location, timeout) for _ in range(PINGS))
    space = xrd.space(location, timeout)
    return CheckReport(
        url=location.url,
        remote=True,
        latency_s=latency,
        version=xrd.server_version(location, timeout),
        total_bytes=space.total if space else None,
        free_bytes=space.free if space else None,
        server_checksums=Storage(timeout).server_checksums(location),
        path_state=_path_state(xrd.stat_kind(location, timeout)),
    )


def _check_local(location: Location) -> CheckReport:
    existing = location
    while not os.path.exists(existing.path) and existing.path != "/":
        existing = existing.parent
    vfs = os.statvfs(existing.path)
    if os.path.isdir(location.path):
        kind: tuple[str, int] | None = ("folder", 0)
    elif os.path.isfile(location.path):
        kind = ("file", os.path.getsize(location.path))
    else:
        kind = None
    return CheckReport(
        url=location.url,
        remote=False,
        latency_s=None,
        version=None,
        total_bytes=vfs.f_frsize * vfs.f_blocks,
        free_bytes=vfs.f_frsize * vfs.f_bavail,
        server_checksums=False,
        path_state=_path_state(kind),
    )


def _path_state(kind: tuple[str, int] | None) -> str:
    if kind is None:
        return "missing (push creates it)"
    if kind[0] == "folder":
        return "a folder"
    return f"a file of {kind[1]:,} bytes"
