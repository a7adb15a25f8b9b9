"""Staging throughput against ``xrdcp --parallel N -r --cksum adler32:source``, in one run.

Starts Debian's ``xrootd`` on 127.0.0.1 (export under /tmp, ``xrootd.chksum adler32``), writes
(or reuses) a dataset of random shards of the toy's shard size (>= 500 MB in all; staging never
looks inside a shard, and random bytes do not compress, so nothing flatters the copy), then
measures, each round in fresh destinations:

  gridtrain        ``python -m gridtrain stage push|pull DIR URL --parallel N``, timed as a whole
                   process from its launch (interpreter start, imports, XRootD client start-up
                   included): N files in flight, every shard verified by adler32 against the
                   manifest (push: the server's checksum of the new file; pull: one computed
                   here), manifest last. Its own copy time (from its summary line, start-up
                   excluded) is printed for information, so the start-up's share shows;
  xrdcp, baseline  ``xrdcp --parallel N -r --cksum adler32:source DIR DEST/``: what a user who
                   wants the same result types, one process for the whole dataset, the same N
                   files in flight, every file verified (push: adler32 of the local source
                   against the server's of the copy; pull: the server's of the source against one
                   computed here). The checksum is the same adler32 gridtrain uses, so both sides
                   give the same guarantee: parity. gridtrain takes the expected value from the
                   manifest, xrdcp has to ask the source for it, so the baseline pays one
                   checksum more per file; for that reason the same command without ``--cksum``
                   (unverified, the plain copy limit) is measured too and its ratio printed;
  xrdcp, serial    one ``xrdcp -f`` process per file, one after another, unverified: the loop a
                   user might write, kept for information.

The destination folders are created before the clock starts (``xrdfs mkdir -p``; xrdcp -r
needs them, gridtrain creates its own inside its time). After every copy, outside the timing,
each shard at the destination is checked against the manifest's size and adler32 (the
export folder of the local server is read directly). Best of ``--rounds``, page cache warm for
all, a ``sync`` before each measurement so that none pays for another's writeback, and the order
of the four rotating between rounds. The last line is the ratio of gridtrain's push+pull
throughput to that of ``xrdcp --parallel N -r --cksum adler32:source`` (goal >= 1.0).
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

SHARD_BYTES = 20_000_000  # a default toy shard: 32,768 events, Blosc-LZ4


def start_server(root: Path) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("xrootd")
    if binary is None:
        sys.exit("xrootd is not installed: apt-get install xrootd-server xrootd-client")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for sub in ("export", "admin", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    config = root / "xrootd.cfg"
    config.write_text(
        f"xrd.port {port}\nxrd.network nodnr\nall.export /\noss.localroot {root / 'export'}\n"
        f"all.adminpath {root / 'admin'}\nall.pidpath {root / 'admin'}\nxrootd.chksum adler32\n"
    )
    command = [binary, "-c", str(config), "-l", str(root / "log" / "xrootd.log")]
    if os.geteuid() == 0:  # xrootd refuses root; run it as the user the package creates
        user = pwd.getpwnam("xrootd")
        root.chmod(0o755)
        for sub in ("export", "admin", "log"):
            os.chown(root / sub, user.pw_uid, user.pw_gid)
        command += ["-R", "xrootd"]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    sys.exit("xrootd did not start; see its log under " + str(root / "log"))


def make_dataset(folder: Path, total_bytes: int) -> None:
    """Random shards of a toy shard's size and a manifest naming them (reused between runs)."""
    from gridtrain import __version__
    from gridtrain.checksum import adler32_file
    from gridtrain.data.manifest import Manifest, ShardEntry, write_manifest

    if (folder / "manifest.json").exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(-(-total_bytes // SHARD_BYTES)):
        path = folder / f"train-{i:05d}.h5"
        path.write_bytes(os.urandom(SHARD_BYTES))
        entries.append(ShardEntry(path.name, 32768, SHARD_BYTES, adler32_file(path)))
    manifest = Manifest(
        name="bench", gridtrain_version=__version__, config_hash="0" * 64, codec="none",
        chunk_events=1024, features=[], jagged=[], event_id=[], weight=None, split={},
        stats={}, sources=[], shards={"train": entries},
    )  # fmt: skip
    write_manifest(manifest, folder)


def timed(commands: list[list[str]]) -> tuple[float, str]:
    """Seconds to run ``commands`` one after another (fresh processes that must succeed), stdout."""
    output = ""
    start = time.perf_counter()
    for command in commands:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
            )
        output += done.stdout
    return time.perf_counter() - start, output


def library_seconds(summary: str) -> float:
    """The copy's own seconds from gridtrain's summary line ("... (520.0 MB, 350 MB/s) ...")."""
    found = re.search(r"\(([\d,.]+) MB, ([\d,]+) MB/s\)", summary)
    if found is None:
        raise RuntimeError(f"no summary line in gridtrain's output: {summary!r}")
    megabytes, rate = (float(x.replace(",", "")) for x in found.groups())
    return megabytes / rate


def verify(folder: Path, expected: dict[str, tuple[int, str]]) -> None:
    """Every shard in ``folder`` with the manifest's size and adler32 (outside the timing)."""
    from gridtrain.checksum import adler32_file

    for name, (size, checksum) in expected.items():
        path = folder / name
        if path.stat().st_size != size or adler32_file(path) != checksum:
            raise RuntimeError(f"{path}: not a correct copy (size or adler32 differ)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=520, help="dataset size (>= 500)")
    parser.add_argument("--parallel", type=int, default=4, help="files in flight (both sides)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=".bench/stage")
    args = parser.parse_args()

    from gridtrain.data.manifest import load_manifest

    dataset = Path(args.workdir).absolute() / f"dataset-{args.megabytes}MB"
    make_dataset(dataset, args.megabytes * 1_000_000)
    entries = load_manifest(dataset).shards["train"]
    expected = {e.path: (e.bytes, e.adler32) for e in entries}
    total = sum(size for size, _ in expected.values())
    root = Path(tempfile.mkdtemp(prefix="gridtrain-bench-xrootd-", dir="/tmp"))
    server, port = start_server(root)
    url = f"root://127.0.0.1:{port}/"  # + "/path" gives root://host:port//path
    export = root / "export"
    local = Path(tempfile.mkdtemp(prefix="gridtrain-bench-pull-", dir=args.workdir)).absolute()
    parallel = str(args.parallel)
    outputs: list[tuple[str, str]] = []  # stdout of each pass, the last one's at the end
    inside: list[tuple[float, float]] = []  # gridtrain's own copy seconds: start-up excluded

    def measured(
        push: list[list[str]], pull: list[list[str]], pushed: Path, pulled: Path
    ) -> tuple[float, float]:
        os.sync()
        push_seconds, push_output = timed(push)
        verify(pushed, expected)
        os.sync()
        pull_seconds, pull_output = timed(pull)
        verify(pulled, expected)
        outputs.append((push_output, pull_output))
        return push_seconds, pull_seconds

    def gridtrain_pass(sub: str) -> tuple[float, float]:
        stage = [sys.executable, "-m", "gridtrain", "stage"]
        seconds = measured(
            [[*stage, "push", str(dataset), f"{url}/{sub}", "--parallel", parallel]],
            [[*stage, "pull", f"{url}/{sub}", str(local / sub), "--parallel", parallel]],
            export / sub,
            local / sub,
        )
        inside.append((library_seconds(outputs[-1][0]), library_seconds(outputs[-1][1])))
        return seconds

    def xrdcp_parallel_pass(sub: str, checksum: bool) -> tuple[float, float]:
        # The destination folders exist before the clock starts: xrdcp -r needs them.
        subprocess.run(["xrdfs", f"127.0.0.1:{port}", "mkdir", "-p", f"/{sub}"], check=True)
        (local / sub).mkdir()
        xrdcp = ["xrdcp", "--parallel", parallel, "--recursive", "--silent"]
        xrdcp += ["--cksum", "adler32:source"] if checksum else []
        return measured(
            [[*xrdcp, str(dataset), f"{url}/{sub}/"]],  # into {sub}/{dataset.name}/
            [[*xrdcp, f"{url}/{sub}/{dataset.name}", f"{local / sub}/"]],
            export / sub / dataset.name,
            local / sub / dataset.name,
        )

    def xrdcp_serial_pass(sub: str) -> tuple[float, float]:
        (local / sub).mkdir()
        xrdcp = ["xrdcp", "--silent", "--force"]
        return measured(
            [[*xrdcp, str(dataset / n), f"{url}/{sub}/{n}"] for n in expected],
            [[*xrdcp, f"{url}/{sub}/{n}", str(local / sub / n)] for n in expected],
            export / sub,
            local / sub,
        )

    passes: dict[str, Callable[[str], tuple[float, float]]] = {
        "gridtrain": gridtrain_pass,
        "xrdcp-cksum": lambda sub: xrdcp_parallel_pass(sub, checksum=True),
        "xrdcp-parallel": lambda sub: xrdcp_parallel_pass(sub, checksum=False),
        "xrdcp-serial": xrdcp_serial_pass,
    }
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in passes}
    try:
        for i in range(args.rounds):
            names = list(passes)
            for name in names[i % len(names) :] + names[: i % len(names)]:  # rotating order
                sub = f"{name}{i}"
                results[name].append(passes[name](sub))
                shutil.rmtree(local / sub)
                shutil.rmtree(export / sub)
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(local, ignore_errors=True)

    best = {
        name: (min(r[0] for r in runs), min(r[1] for r in runs)) for name, runs in results.items()
    }
    rate = {name: 2 * total / (push + pull) for name, (push, pull) in best.items()}
    n = args.parallel
    print(
        f"dataset                                            {len(expected)} shards, "
        f"{total / 1e6:,.0f} MB, best of {args.rounds}"
    )
    for name, label in (
        ("xrdcp-serial", "xrdcp, one process per file, serial"),
        ("xrdcp-parallel", f"xrdcp --parallel {n} -r, unverified"),
        ("xrdcp-cksum", f"xrdcp --parallel {n} -r --cksum adler32:source"),
        ("gridtrain", f"gridtrain stage --parallel {n}, verified"),
    ):
        push, pull = best[name]
        print(f"{label + ' push':<51}{total / push / 1e6:>8,.0f} MB/s")
        print(f"{label + ' pull':<51}{total / pull / 1e6:>8,.0f} MB/s")
    push, pull = min(r[0] for r in inside), min(r[1] for r in inside)
    print(
        f"{'  (gridtrain without process start-up, info)':<51}{total / push / 1e6:>8,.0f} / "
        f"{total / pull / 1e6:,.0f} MB/s push / pull"
    )
    ours = rate["gridtrain"]
    for name, label in (
        ("xrdcp-serial", "ratio gridtrain/xrdcp serial per file (info)"),
        ("xrdcp-parallel", f"ratio gridtrain/xrdcp --parallel {n}, unverified"),
        ("xrdcp-cksum", f"ratio gridtrain/xrdcp --parallel {n} --cksum (push+pull)"),
    ):
        print(f"{label:<55}{ours / rate[name]:.2f}")


if __name__ == "__main__":
    main()
