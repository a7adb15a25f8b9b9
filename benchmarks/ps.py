"""Benchmark of the parameter server against the physical limit and a pickle baseline.

All in one run, each server in its own process and each worker in its own process:

(a) raw: a loopback echo of the same bytes (send P*4 bytes, ``recv_into`` P*4 bytes back) over
    the same number of connections and processes, measured two ways: the plain ``recv_into``
    loop the issue names, and received in MSG_WAITALL chunks of the size gridtrain uses (fewer
    wake-ups). The limit is the FASTER of the two in each configuration: no framing, no
    authentication, no update applied, just the bytes through the kernel and back;
(b) gridtrain: authenticated push-and-pull round trips (``PSClient.push_pull`` into preallocated
    arrays; the server adds each update to the center, Downpour with optimizer ``add``);
(c) pickle: the dist-keras framing (pickle of the weight list, 20-digit length prefix, ``recv``
    into a growing ``bytes``), server applying the same update: what dist-keras users run; and,
    the user's better alternative, the same pickle framing received with ``recv_into`` into one
    buffer.

Every measurement gets the same treatment: one untimed warm-up exchange on an open connection,
then ``--seconds`` of exchanges, best of ``--repeats`` runs (pickle included).

Prints round trips/s, GB/s (both directions), the ratios gridtrain/raw (against the faster raw
loop) and gridtrain/pickle and the PS's peak RSS (VmHWM) against the goal 3x model bytes + 200
MB. The last line is the 10M-parameter single-worker ratio gridtrain / fastest raw exchange.

    python benchmarks/ps.py                       # about a minute on a 2-core machine
    python benchmarks/ps.py --sizes 1e6 --workers 1,2 --seconds 1
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import multiprocessing as mp
import os
import pickle
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.poly1305 import Poly1305

from gridtrain.ps import auth
from gridtrain.ps.center import CenterStore
from gridtrain.ps.client import PSClient
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.ps.server import ParameterServer
from gridtrain.ps.transport import CHUNK

CTX = mp.get_context("fork")  # the parent holds no threads when it forks
GOAL_RAW_RATIO = 0.8
GOAL_PICKLE_RATIO = 5.0


@dataclass
class Rate:
    round_trips: int
    seconds: float
    nbytes: int  # one direction, per round trip

    @property
    def per_second(self) -> float:
        return self.round_trips / self.seconds

    @property
    def gb_per_second(self) -> float:
        return 2 * self.nbytes * self.round_trips / self.seconds / 1e9


def peak_rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc: this benchmark needs Linux")


def recv_exact_into(sock: socket.socket, view: memoryview, chunked: bool = False) -> bool:
    """The plain recv_into loop; ``chunked``: MSG_WAITALL per CHUNK, as gridtrain receives."""
    got = 0
    while got < view.nbytes:
        if chunked:
            want = min(view.nbytes - got, CHUNK)
            count = sock.recv_into(view[got : got + want], want, socket.MSG_WAITALL)
        else:
            count = sock.recv_into(view[got:])
        if count == 0:
            return False
        got += count
    return True


# -- servers (each runs in its own process) ------------------------------------------------------


def _thread_per_connection(
    listener: socket.socket, handle: Callable[[socket.socket], None]
) -> None:
    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=handle, args=(sock,), daemon=True).start()


def raw_server(parameters: int, chunked: bool, ready: Any) -> None:
    nbytes = parameters * 4

    def echo(sock: socket.socket) -> None:
        buffer = memoryview(bytearray(nbytes))
        while recv_exact_into(sock, buffer, chunked):
            sock.sendall(buffer)

    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])
    _thread_per_connection(listener, echo)


def dist_keras_recvall(sock: socket.socket, num_bytes: int) -> bytes:
    """dist-keras ``networking.recvall``, verbatim in behaviour: a growing ``bytes``."""
    byte_buffer = b""
    buffer_size = 0
    bytes_left = num_bytes
    while buffer_size < num_bytes:
        data = sock.recv(bytes_left)
        if not data:
            raise ConnectionError("peer closed")
        delta = len(data)
        buffer_size += delta
        bytes_left -= delta
        byte_buffer += data
    return byte_buffer


def pickle_send(sock: socket.socket, value: object) -> None:
    data = pickle.dumps(value, -1)
    sock.sendall(str(len(data)).zfill(20).encode())
    sock.sendall(data)


def pickle_recv(sock: socket.socket, efficient: bool) -> Any:
    length = int(dist_keras_recvall(sock, 20).decode())
    if efficient:
        buffer = bytearray(length)
        if not recv_exact_into(sock, memoryview(buffer)):
            raise ConnectionError("peer closed")
        return pickle.loads(buffer)  # the baseline being measured
    return pickle.loads(dist_keras_recvall(sock, length))


def pickle_server(parameters: int, efficient: bool, ready: Any) -> None:
    center = [np.zeros(parameters, np.float32)]
    lock = threading.Lock()

    def serve(sock: socket.socket) -> None:
        try:
            while True:
                update = pickle_recv(sock, efficient)
                with lock:
                    for c, u in zip(center, update, strict=True):
                        c += u
                    pickle_send(sock, center)
        except (ConnectionError, ValueError):
            sock.close()

    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])
    _thread_per_connection(listener, serve)


def gridtrain_server(parameters: int, secret: bytes, ready: Any) -> None:
    store = CenterStore([np.zeros(parameters, np.float32)], AlgorithmConfig(optimizer="add"))
    server = ParameterServer(store, secret, ServerConfig(read_timeout=60.0))
    ready.put(server.start()[1])
    server.wait()


# -- workers (each in its own process) --------------------------------------------------------


def _timed(
    exchange: Callable[[], None], seconds: float, start: Any, results: Any, warmup: int = 1
) -> None:
    for _ in range(warmup):
        exchange()
    start.wait()
    count = 0
    began = time.perf_counter()
    deadline = began + seconds
    while True:
        exchange()
        count += 1
        if time.perf_counter() >= deadline:
            break
    results.put((count, time.perf_counter() - began))


def raw_worker(
    port: int, parameters: int, seconds: float, start: Any, results: Any, chunked: bool
) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    data = np.ones(parameters, np.float32).data.cast("B")
    out = memoryview(bytearray(parameters * 4))

    def exchange() -> None:
        sock.sendall(data)
        recv_exact_into(sock, out, chunked)

    _timed(exchange, seconds, start, results)
    sock.close()


def pickle_worker(
    port: int, parameters: int, seconds: float, start: Any, results: Any, efficient: bool
) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    update = [np.full(parameters, 1e-6, np.float32)]

    def exchange() -> None:
        pickle_send(sock, update)
        pickle_recv(sock, efficient)

    _timed(exchange, seconds, start, results)
    sock.close()


def gridtrain_worker(
    port: int, parameters: int, seconds: float, start: Any, results: Any, secret: bytes
) -> None:
    weights = [np.zeros(parameters, np.float32)]
    update = [np.full(parameters, 1e-6, np.float32)]
    out = [np.empty(parameters, np.float32)]
    with PSClient(("127.0.0.1", port), secret, weights) as client:
        version, _ = client.pull(out)

        def exchange() -> None:
            nonlocal version
            version = client.push_pull(update, version, out).version

        _timed(exchange, seconds, start, results)


def measure(
    server: Callable[..., None],
    server_args: tuple[Any, ...],
    worker: Callable[..., None],
    worker_extra: tuple[Any, ...],
    parameters: int,
    workers: int,
    seconds: float,
) -> tuple[Rate, int]:
    """One server process, ``workers`` worker processes: (aggregate rate, server peak RSS)."""
    ready = CTX.Queue()
    results = CTX.Queue()
    start = CTX.Barrier(workers)
    server_process = CTX.Process(target=server, args=(parameters, *server_args, ready), daemon=True)
    server_process.start()
    worker_processes: list[Any] = []
    try:
        port = ready.get(timeout=60)
        for _ in range(workers):
            process = CTX.Process(
                target=worker, args=(port, parameters, seconds, start, results, *worker_extra)
            )
            process.start()
            worker_processes.append(process)
        outcomes = [results.get(timeout=seconds * 10 + 120) for _ in range(workers)]
        rss = peak_rss(server_process.pid or 0)
    finally:
        for process in worker_processes:
            process.join(30)
            if process.is_alive():
                process.kill()
        server_process.kill()
        server_process.join(30)
    count = sum(c for c, _ in outcomes)
    elapsed = max(e for _, e in outcomes)
    return Rate(count, elapsed, parameters * 4), rss


# -- MAC choice ---------------------------------------------------------------------------------


def mac_table(megabytes: int = 40) -> list[tuple[str, float]]:
    data = np.random.default_rng(0).random(megabytes * 250_000, np.float32).data.cast("B")
    key = os.urandom(32)
    gcm = AESGCM(key)

    def gmac_streamed() -> None:
        context = Cipher(algorithms.AES(key), modes.GCM(os.urandom(12))).encryptor()
        for offset in range(0, data.nbytes, CHUNK):
            context.authenticate_additional_data(data[offset : offset + CHUNK])
        context.finalize()

    def poly1305() -> None:
        mac = Poly1305(key)
        mac.update(data)
        mac.finalize()

    candidates: list[tuple[str, Callable[[], object]]] = [
        ("AES-GCM as GMAC (one shot)", lambda: gcm.encrypt(os.urandom(12), b"", data)),
        ("AES-GCM as GMAC (512 KiB chunks, used)", gmac_streamed),
        ("Poly1305", poly1305),
        ("HMAC-SHA256", lambda: hmac.new(key, data, hashlib.sha256).digest()),
        ("keyed BLAKE2b", lambda: hashlib.blake2b(data, key=key).digest()),
    ]
    rows = []
    for name, run in candidates:
        run()
        repeats = 5
        began = time.perf_counter()
        for _ in range(repeats):
            run()
        rows.append((name, data.nbytes * repeats / (time.perf_counter() - began) / 1e9))
    return rows


def best_of(repeats: int, run: Callable[[], tuple[Rate, int]]) -> tuple[Rate, int]:
    """The fastest of ``repeats`` runs (other load on the machine only slows runs down)."""
    results = [run() for _ in range(repeats)]
    return max(results, key=lambda result: result[0].per_second)


def verdict(met: bool) -> str:
    return "met" if met else "NOT met"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1e6,1e7", help="parameter counts (default %(default)s)")
    parser.add_argument("--workers", default="1,2,4", help="worker counts (default %(default)s)")
    parser.add_argument("--seconds", type=float, default=2.0, help="per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="keep the best of N runs")
    parser.add_argument("--pickle-seconds", type=float, default=2.0)
    parser.add_argument("--no-mac", action="store_true", help="skip the MAC comparison")
    args = parser.parse_args()
    sizes = [int(float(s)) for s in args.sizes.split(",")]
    worker_counts = [int(w) for w in args.workers.split(",")]
    secret = auth.new_secret()

    print(
        f"gridtrain parameter-server benchmark: {os.cpu_count()} cores, {args.seconds:g} s per "
        f"measurement, best of {args.repeats}"
    )
    if not args.no_mac:
        print("\nMAC throughput over a 40 MB frame (GB/s):")
        for name, speed in mac_table():
            print(f"  {name:<40} {speed:6.2f}")

    header = (
        f"\n{'params':>8} {'wrk':>3} | {'raw rt/s':>8} {'raw+WAITALL':>11} {'max GB/s':>8} | "
        f"{'gridtrain rt/s':>14} "
        f"{'GB/s':>5} {'/raw':>5} | {'pickle rt/s':>11} {'GB/s':>5} {'gt/pkl':>6} | "
        f"{'pickle+recv_into':>16} {'gt/pkl':>6} | {'PS RSS MB':>9} {'goal':>5}"
    )
    print(header)
    print("-" * (len(header) - 1))
    ratios: dict[tuple[int, int], float] = {}
    verdicts = []
    for parameters in sizes:
        for workers in worker_counts:

            def run(
                server: Callable[..., None],
                client: Callable[..., None],
                *extra: Any,
                size: int = parameters,
                count: int = workers,
            ) -> Callable[[], tuple[Rate, int]]:
                return lambda: measure(server, extra, client, extra, size, count, args.seconds)

            plain, _ = best_of(args.repeats, run(raw_server, raw_worker, False))
            tuned, _ = best_of(args.repeats, run(raw_server, raw_worker, True))
            raw = max(plain, tuned, key=lambda rate: rate.per_second)  # the limit
            grid, rss = best_of(args.repeats, run(gridtrain_server, gridtrain_worker, secret))
            ratio = ratios[parameters, workers] = grid.per_second / raw.per_second
            cells = f"{'':>11} {'':>5} {'':>6} | {'':>16} {'':>6}"
            if workers == worker_counts[0]:

                def pickled(efficient: bool, size: int = parameters) -> Callable[[], Any]:
                    return lambda: measure(
                        pickle_server, (efficient,), pickle_worker, (efficient,), size,
                        worker_counts[0], args.pickle_seconds,
                    )  # fmt: skip

                slow, _ = best_of(args.repeats, pickled(False))
                fast, _ = best_of(args.repeats, pickled(True))
                vs_pickle = grid.per_second / slow.per_second
                cells = (
                    f"{slow.per_second:11.2f} {slow.gb_per_second:5.2f} {vs_pickle:6.1f} | "
                    f"{fast.per_second:16.2f} {grid.per_second / fast.per_second:6.1f}"
                )
                verdicts.append(
                    f"P={parameters:.0e} workers={workers}: gridtrain/pickle (dist-keras) "
                    f"{vs_pickle:.1f}x, goal >= {GOAL_PICKLE_RATIO:g}x "
                    f"{verdict(vs_pickle >= GOAL_PICKLE_RATIO)}"
                )
            limit_mb = 3 * parameters * 4 / 1e6 + 200
            print(
                f"{parameters:>8.0e} {workers:>3} | {plain.per_second:8.1f} "
                f"{tuned.per_second:11.1f} {raw.gb_per_second:8.2f} | "
                f"{grid.per_second:14.1f} {grid.gb_per_second:5.2f} "
                f"{ratio:5.2f} | {cells} | {rss / 1e6:9.0f} {limit_mb:5.0f}",
                flush=True,
            )
            verdicts.append(
                f"P={parameters:.0e} workers={workers}: gridtrain/raw {ratio:.2f} against the "
                f"faster raw loop ({'MSG_WAITALL' if raw is tuned else 'plain recv_into'}), goal "
                f">= {GOAL_RAW_RATIO} {verdict(ratio >= GOAL_RAW_RATIO)} (plain recv_into: "
                f"{grid.per_second / plain.per_second:.2f}, MSG_WAITALL: "
                f"{grid.per_second / tuned.per_second:.2f}); PS peak RSS "
                f"{rss / 1e6:.0f} MB, goal <= {limit_mb:.0f} {verdict(rss / 1e6 <= limit_mb)}"
            )
    print()
    for line in verdicts:
        print(line)
    key = (10_000_000, 1) if (10_000_000, 1) in ratios else next(reversed(ratios))
    print(
        f"gridtrain/fastest raw exchange, {key[0]:.0e} parameters, {key[1]} worker(s): "
        f"{ratios[key]:.2f}"
    )


if __name__ == "__main__":
    main()
