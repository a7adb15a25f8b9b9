"""Staging throughput against plain serial ``xrdcp`` of the same files, in one run.

Starts Debian's ``xrootd`` on 127.0.0.1 (export under /tmp, ``xrootd.chksum adler32``), writes
(or reuses) a dataset of random shards of the toy's shard size (>= 500 MB in all; staging never
looks inside a shard, and random bytes do not compress, so nothing flatters the copy), then
measures, each round in a fresh destination:

  gridtrain push   ``gridtrain.stage.dataset.push``: parallel CopyProcess jobs, every shard
                   verified with the server's adler32 against the manifest, manifest last;
  gridtrain pull   ``pull``: parallel jobs, every shard's adler32 computed here and compared;
  xrdcp push/pull  one ``xrdcp -f`` per file, one after another, no verification: the baseline.

gridtrain runs in a fresh process per round (XRootD client start-up included, Python start-up
not); each xrdcp is its own process, as a user's loop would be. Best of ``--rounds``, page cache
warm for both, a ``sync`` before each measurement so that none pays for another's writeback,
and the order of gridtrain and xrdcp alternating between rounds. The last line is the ratio of
gridtrain's push+pull throughput to xrdcp's (goal >= 1.0).
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import time
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


def child(mode: str, source: str, dest: str, parallel: int) -> None:
    from gridtrain.stage.dataset import pull, push
    from gridtrain.stage.transfer import TransferOptions

    options = TransferOptions(parallel=parallel)
    start = time.perf_counter()
    summary = (push if mode == "push" else pull)(source, dest, options)
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "bytes": summary.bytes_copied}))


def gridtrain_round(mode: str, source: str, dest: str, parallel: int) -> tuple[float, int]:
    out = subprocess.run(
        [sys.executable, __file__, "--child", mode, source, dest, str(parallel)],
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["seconds"], result["bytes"]


def xrdcp_round(pairs: list[tuple[str, str]]) -> float:
    start = time.perf_counter()
    for source, target in pairs:
        subprocess.run(["xrdcp", "--silent", "--force", source, target], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=520, help="dataset size (>= 500)")
    parser.add_argument("--parallel", type=int, default=4, help="gridtrain's parallel files")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", default=".bench/stage")
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, source, dest, parallel = args.child
        child(mode, source, dest, int(parallel))
        return

    dataset = Path(args.workdir).absolute() / f"dataset-{args.megabytes}MB"
    make_dataset(dataset, args.megabytes * 1_000_000)
    shards = sorted(p.name for p in dataset.glob("*.h5"))
    total = sum((dataset / name).stat().st_size for name in shards)
    root = Path(tempfile.mkdtemp(prefix="gridtrain-bench-xrootd-", dir="/tmp"))
    server, port = start_server(root)
    url = f"root://127.0.0.1:{port}/"  # + "/path" gives root://host:port//path
    local = Path(tempfile.mkdtemp(prefix="gridtrain-bench-pull-", dir=args.workdir))

    def xrdcp_pass(i: int) -> dict[str, float]:
        pushes = [(str(dataset / n), f"{url}/xrdcp{i}/{n}") for n in shards]
        pulls = [(f"{url}/xrdcp{i}/{n}", str(local / f"xrdcp{i}" / n)) for n in shards]
        (local / f"xrdcp{i}").mkdir()
        os.sync()
        push_seconds = xrdcp_round(pushes)
        os.sync()
        return {"xrd push": push_seconds, "xrd pull": xrdcp_round(pulls)}

    def gridtrain_pass(i: int) -> dict[str, float]:
        os.sync()
        push_seconds, copied = gridtrain_round("push", str(dataset), f"{url}/gt{i}", args.parallel)
        assert copied == total, (copied, total)
        os.sync()
        pull_seconds, copied = gridtrain_round(
            "pull", f"{url}/gt{i}", str(local / f"gt{i}"), args.parallel
        )
        assert copied == total, (copied, total)
        return {"gt push": push_seconds, "gt pull": pull_seconds}

    results: dict[str, list[float]] = {"gt push": [], "gt pull": [], "xrd push": [], "xrd pull": []}
    try:
        for i in range(args.rounds):
            # Fresh destinations each round; the order alternates between rounds.
            order = (xrdcp_pass, gridtrain_pass) if i % 2 == 0 else (gridtrain_pass, xrdcp_pass)
            for run_pass in order:
                for key, seconds in run_pass(i).items():
                    results[key].append(seconds)
            for sub in (f"xrdcp{i}", f"gt{i}"):
                shutil.rmtree(local / sub)
                shutil.rmtree(root / "export" / sub)
    finally:
        server.terminate()
        server.wait(timeout=10)
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(local, ignore_errors=True)

    best = {k: min(v) for k, v in results.items()}
    print(f"dataset                                   {len(shards)} shards, {total / 1e6:,.0f} MB")
    for key, label in (
        ("xrd push", "xrdcp push, serial"),
        ("xrd pull", "xrdcp pull, serial"),
        ("gt push", f"gridtrain push, {args.parallel} parallel, verified"),
        ("gt pull", f"gridtrain pull, {args.parallel} parallel, verified"),
    ):
        print(f"{label:<42}{total / best[key] / 1e6:>8,.0f} MB/s")
    gridtrain = 2 * total / (best["gt push"] + best["gt pull"])
    xrdcp = 2 * total / (best["xrd push"] + best["xrd pull"])
    print(f"ratio gridtrain/xrdcp (push+pull)         {gridtrain / xrdcp:.2f}")


if __name__ == "__main__":
    main()
