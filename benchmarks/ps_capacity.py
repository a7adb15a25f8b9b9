"""How many workers can one parameter server feed: sustained exchanges/s as simulated workers grow.

One real ``ParameterServer`` (Downpour, optimizer ``add``) in its own process; N simulated
workers as threads spread over 4 client processes, each with its own authenticated ``PSClient``.
A worker sleeps until its next exchange (one every ``--interval`` seconds, at a random phase so
the workers do not march in step), then pushes a delta and pulls the center in one round trip
(``push_pull``). When the server keeps up, every worker makes one exchange per interval; past the
knee the round trips queue, the sustained rate falls below the offered N / interval and the p99
latency climbs past the interval.

For each model size (1M and 10M float32 parameters by default) and worker count it prints the
offered and sustained exchanges/s, the GB/s both directions together and the MB per exchange,
the p50/p99 round-trip latency and whether the server kept up (sustained >= 90% of offered and
p99 < interval). Bytes are counted, not modelled: every worker's ``PSClient`` channel counts the
bytes of each frame it sends and receives (headers, tables and MAC tags included; TCP/IP headers
not), and the benchmark adds up what moved during the timed exchanges. The baseline, measured in
the same run: a raw loopback echo of the same bytes (send the model, receive the model, no
framing, no authentication, no update) from the same 4 client processes holding
``--raw-connections`` connections in all (16), as fast as they can, its bytes counted by its
clients as they send and get them back: what the machine moves between processes at all. Per
size it reports the knee (the most workers the server kept up with) and the peak sustained GB/s
of any point (where the sustained rate flattens: the server's capacity). The last line is that
peak for the largest size against the raw loopback figure of the same size.

Every point is measured for each wire encoding ``PSClient`` offers (``wire``: float32, bf16,
topk, topk-bf16), and the peak exchanges/s of each is compared with float32's:
the factor by which fewer bytes per exchange move the knee (bf16 promises 2).

On this host the server is bound by the CPU moving bytes through loopback, and encoding bf16
costs about what it saves in copies (docs/reference/benchmarks.md), so the knee barely moves.
A parameter server on a login host is bound by its network link instead: ``--link BITS`` puts the
server behind ``tests/wan_relay.py``'s relay with one shared link of BITS per second each way (in
its own process), the raw echo baseline going through the same relay. There the knee moves by
the bytes an exchange saves: bf16 halves both directions; top-k shrinks the push only, so on a
duplex link the float32 centers coming back set its pace, and ``topk-bf16`` (top-k pushes, bf16
centers) halves that too.

    python benchmarks/ps_capacity.py              # about 8 minutes on 2 cores
    python benchmarks/ps_capacity.py --quick      # 1M: 8, 32 workers; 10M: 8; 3 s each
    python benchmarks/ps_capacity.py --link 4e8 --plan "1e6:4,8,16,32,48" --seconds 6
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import random
import socket
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gridtrain.ps import auth
from gridtrain.ps.center import CenterStore
from gridtrain.ps.client import PSClient
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.protocol import WIRE_ENCODINGS
from gridtrain.ps.rules import AlgorithmConfig
from gridtrain.ps.server import ParameterServer

CTX = mp.get_context("fork")  # the parent holds no threads when it forks
PROCESSES = 4
KEPT_UP = 0.9  # sustained / offered at or above which the server keeps up


@dataclass
class Point:
    wire: str
    parameters: int
    workers: int
    interval: float
    exchanges: int
    seconds: float
    latencies: list[float]
    moved: int  # bytes the workers' channels sent and received in the timed exchanges

    @property
    def offered(self) -> float:
        return self.workers / self.interval

    @property
    def sustained(self) -> float:
        return self.exchanges / self.seconds

    @property
    def gb_per_s(self) -> float:
        return self.moved / self.seconds / 1e9

    @property
    def mb_per_exchange(self) -> float:
        return self.moved / self.exchanges / 1e6 if self.exchanges else float("nan")

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q)) if self.latencies else float("nan")

    @property
    def kept_up(self) -> bool:
        return self.sustained >= KEPT_UP * self.offered and self.percentile(99) < self.interval


# -- processes ---------------------------------------------------------------------------------


def serve_center(parameters: int, secret: bytes, connections: int, ready: Any) -> None:
    config = AlgorithmConfig(optimizer="add", staleness_scaling="none")
    store = CenterStore([np.zeros(parameters, np.float32)], config)
    # every simulated worker comes from 127.0.0.1, unlike a grid's: no per-source handshake cap
    settings = ServerConfig(
        read_timeout=60.0, max_connections=connections, per_source_max_startups=connections
    )
    server = ParameterServer(store, secret, settings)
    ready.put(server.start()[1])
    server.wait()


def simulated_workers(
    port: int,
    wire: str,
    secret: bytes,
    parameters: int,
    threads: int,
    interval: float,
    seconds: float,
    seed: int,
    start: Any,
    results: Any,
) -> None:
    """``threads`` workers in this process: sleep, then push-and-pull, until the deadline."""
    update = [np.full(parameters, 1e-7, np.float32)]  # read by every thread, never written
    rng = random.Random(seed)
    phases = [rng.uniform(0, interval) for _ in range(threads)]
    counts = [0] * threads
    moved = [0] * threads  # bytes each worker's channel sent and received, timed exchanges only
    latencies: list[list[float]] = [[] for _ in range(threads)]
    connected = threading.Barrier(threads + 1)

    options = {"wire": wire} if wire != "float32" else {}

    def channel_bytes(client: PSClient) -> tuple[Any, int]:
        channel = client.channel  # the client's framing layer counts every byte of its frames
        return channel, channel.bytes_sent + channel.bytes_received

    def worker(index: int) -> None:
        out = [np.empty(parameters, np.float32)]
        with PSClient(("127.0.0.1", port), secret, out, timeout=300.0, **options) as client:
            version, _ = client.pull(out)
            version = client.push_pull(update, version, out).version  # warm-up
            connected.wait()
            start.wait()
            began = time.monotonic()
            deadline = began + seconds
            due = began + phases[index]
            while True:
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                if time.monotonic() >= deadline:
                    break
                channel, before = channel_bytes(client)
                sent = time.perf_counter()
                version = client.push_pull(update, version, out).version
                latencies[index].append(time.perf_counter() - sent)
                counts[index] += 1
                after_channel, after = channel_bytes(client)
                # a reconnect inside the exchange starts a new channel counting from zero
                moved[index] += after - (before if after_channel is channel else 0)
                due += interval  # behind schedule: exchange again at once, never two per slot

    pool = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for thread in pool:
        thread.start()
    connected.wait()
    results.put(("ready", 0, [], 0))
    for thread in pool:
        thread.join()
    results.put(("done", sum(counts), [x for per in latencies for x in per], sum(moved)))


def relay(upstream: int, link: float, ready: Any) -> None:
    """The parameter server host's network link: a shaping relay in front of ``upstream``."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.wan_relay import ShapingRelay

    shaper = ShapingRelay(("127.0.0.1", upstream), server_link=link)
    ready.put(shaper.start()[1])
    threading.Event().wait()  # until terminated


def echo_server(parameters: int, ready: Any) -> None:
    nbytes = parameters * 4
    listener = socket.create_server(("127.0.0.1", 0))
    ready.put(listener.getsockname()[1])

    def echo(sock: socket.socket) -> None:
        buffer = memoryview(bytearray(nbytes))
        while receive_into(sock, buffer):
            sock.sendall(buffer)

    while True:
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=echo, args=(sock,), daemon=True).start()


def receive_into(sock: socket.socket, view: memoryview) -> bool:
    got = 0
    while got < view.nbytes:
        count = sock.recv_into(view[got:])
        if count == 0:
            return False
        got += count
    return True


def echo_client(
    port: int, parameters: int, connections: int, seconds: float, start: Any, results: Any
) -> None:
    """``connections`` threads, each sending the model and receiving it back, flat out."""
    data = np.ones(parameters, np.float32).data.cast("B")
    counts = [0] * connections
    moved = [0] * connections  # bytes sent and received back, timed round trips only
    connected = threading.Barrier(connections + 1)

    def loop(index: int) -> None:
        sock = socket.create_connection(("127.0.0.1", port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        out = memoryview(bytearray(parameters * 4))
        sock.sendall(data)
        receive_into(sock, out)
        connected.wait()
        start.wait()
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            sock.sendall(data)
            if not receive_into(sock, out):
                break
            counts[index] += 1
            moved[index] += data.nbytes + out.nbytes
        sock.close()

    pool = [threading.Thread(target=loop, args=(i,), daemon=True) for i in range(connections)]
    for thread in pool:
        thread.start()
    connected.wait()
    results.put(("ready", 0, [], 0))
    for thread in pool:
        thread.join()
    results.put(("done", sum(counts), [], sum(moved)))


# -- measurements ------------------------------------------------------------------------------


def _run(
    server: Any,
    server_args: tuple[Any, ...],
    clients: list[tuple[Any, tuple[Any, ...]]],
    link: float | None,
) -> tuple[int, list[float], int]:
    """Start the server (behind a ``link`` relay when given), then the clients; release them
    together; (exchanges, latencies, bytes the clients moved)."""
    ready, results, start = CTX.Queue(), CTX.Queue(), CTX.Event()
    server_process = CTX.Process(target=server, args=(*server_args, ready), daemon=True)
    server_process.start()
    port = ready.get(timeout=60)
    servers = [server_process]
    if link is not None:
        servers.append(CTX.Process(target=relay, args=(port, link, ready), daemon=True))
        servers[-1].start()
        port = ready.get(timeout=60)
    processes = [
        CTX.Process(target=target, args=(port, *args, start, results), daemon=True)
        for target, args in clients
    ]
    try:
        for process in processes:
            process.start()
        for _ in processes:
            kind, _, _, _ = results.get(timeout=600)
            assert kind == "ready"
        start.set()
        exchanges, latencies, moved = 0, [], 0
        for _ in processes:
            kind, count, times, nbytes = results.get(timeout=600)
            exchanges += count
            latencies += times
            moved += nbytes
        return exchanges, latencies, moved
    finally:
        for process in processes:
            process.join(30)
            if process.is_alive():
                process.terminate()
        for process in servers:
            process.terminate()
            process.join(10)


def measure_ps(
    wire: str, parameters: int, workers: int, interval: float, seconds: float, link: float | None
) -> Point:
    secret = auth.new_secret()
    shares = [workers // PROCESSES + (i < workers % PROCESSES) for i in range(PROCESSES)]
    clients = [
        (simulated_workers, (wire, secret, parameters, share, interval, seconds, seed))
        for seed, share in enumerate(shares)
        if share
    ]
    exchanges, latencies, moved = _run(
        serve_center, (parameters, secret, workers + 16), clients, link
    )
    return Point(wire, parameters, workers, interval, exchanges, seconds, latencies, moved)


def measure_raw(parameters: int, connections: int, seconds: float, link: float | None) -> float:
    """GB/s (both directions) of a raw loopback echo from PROCESSES client processes holding
    ``connections`` connections in all, as fast as they go (through the ``link`` relay)."""
    share = max(1, connections // PROCESSES)
    clients = [(echo_client, (parameters, share, seconds)) for _ in range(PROCESSES)]
    _, _, moved = _run(echo_server, (parameters,), clients, link)
    return moved / seconds / 1e9


def parse_plan(text: str) -> list[tuple[int, list[int]]]:
    """'1e6:8,32;1e7:8' -> [(1000000, [8, 32]), (10000000, [8])]."""
    plan = []
    for part in text.split(";"):
        size, _, counts = part.partition(":")
        plan.append((int(float(size)), [int(n) for n in counts.split(",")]))
    return plan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--plan",
        default="1e6:8,32,64,128,192;1e7:4,8,16,32",
        help="SIZE:WORKERS,...;SIZE:... (parameters: simulated worker counts)",
    )
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between exchanges")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured per point")
    parser.add_argument(
        "--raw-connections", type=int, default=16, help="connections of the raw echo, in all"
    )
    parser.add_argument("--quick", action="store_true", help="1e6:8,32;1e7:8 for 3 s each")
    parser.add_argument(
        "--link", type=float, help="bits/s each way of the server's link (a relay); none: loopback"
    )
    args = parser.parse_args()
    if args.quick:
        args.plan, args.seconds = "1e6:8,32;1e7:8", 3.0
    plan = parse_plan(args.plan)
    wires = list(WIRE_ENCODINGS)
    print(
        f"one ParameterServer process; simulated workers as threads in {PROCESSES} processes, "
        f"one push-and-pull every {args.interval:g} s each; {args.seconds:g} s per point; "
        f"wire encodings {', '.join(wires)}"
        + (f"; behind a shared {args.link / 1e6:g} Mb/s link each way" if args.link else "")
    )
    where = f"through the {args.link / 1e6:g} Mb/s link" if args.link else "on loopback"
    knees: dict[tuple[str, int], Point | None] = {}
    peaks: dict[tuple[str, int], Point] = {}
    raw: dict[int, float] = {}
    for parameters, counts in plan:
        raw[parameters] = measure_raw(parameters, args.raw_connections, args.seconds, args.link)
        print(
            f"\n{parameters / 1e6:g}M parameters ({parameters * 4 / 1e6:.0f} MB each way in "
            f"float32); raw echo {where}, {PROCESSES} processes, {args.raw_connections} "
            f"connections flat out: {raw[parameters]:.2f} GB/s"
        )
        print(
            f"{'wire':>8}{'workers':>8}{'offered/s':>11}{'sustained/s':>13}{'GB/s':>7}"
            f"{'MB/exch':>9}{'p50 ms':>9}{'p99 ms':>9}  kept up"
        )
        for wire in wires:
            key = (wire, parameters)
            knees[key] = None
            for workers in counts:
                point = measure_ps(
                    wire, parameters, workers, args.interval, args.seconds, args.link
                )
                print(
                    f"{wire:>8}{workers:>8}{point.offered:>11.1f}{point.sustained:>13.1f}"
                    f"{point.gb_per_s:>7.2f}{point.mb_per_exchange:>9.2f}"
                    f"{point.percentile(50) * 1e3:>9.1f}"
                    f"{point.percentile(99) * 1e3:>9.1f}  {'yes' if point.kept_up else 'no'}",
                    flush=True,
                )
                if key not in peaks or point.sustained > peaks[key].sustained:
                    peaks[key] = point
                best = knees[key]
                if point.kept_up and (best is None or point.workers > best.workers):
                    knees[key] = point
    print()
    for (wire, parameters), peak in peaks.items():
        knee = knees[(wire, parameters)]
        size = f"{parameters / 1e6:g}M {wire}"
        kept = (
            f"kept up with {knee.workers} workers (p50 {knee.percentile(50) * 1e3:.0f} ms, "
            f"p99 {knee.percentile(99) * 1e3:.0f} ms)"
            if knee is not None
            else "kept up with none of the worker counts"
        )
        factor = peak.sustained / peaks[("float32", parameters)].sustained
        print(
            f"{size}: {kept}; peak {peak.sustained:.1f} exchanges/s, {peak.gb_per_s:.2f} GB/s "
            f"on the wire at {peak.workers} workers ({factor:.2f}x float32's exchanges/s); raw "
            f"echo {raw[parameters]:.2f} GB/s"
        )
    largest = max(raw)
    peak = peaks[("float32", largest)]
    baseline = raw[largest]
    if args.link:  # the link's own rate, both ways, is the limit if the relay echoes slower
        baseline = max(baseline, 2 * args.link / 8 / 1e9)
        print(f"the link's rate, both ways: {2 * args.link / 8 / 1e9:.3f} GB/s")
    print(
        f"ratio PS peak sustained GB/s / {'link' if args.link else 'raw loopback'} GB/s "
        f"({largest / 1e6:g}M float32, {PROCESSES} client processes each side): "
        f"{peak.gb_per_s / baseline:.2f}"
    )


if __name__ == "__main__":
    main()
