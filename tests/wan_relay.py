"""A shaping TCP relay on 127.0.0.1: a wide-area link in the test bed (a test helper).

This kernel has no ``sch_netem``, so ``tc`` cannot delay loopback traffic; this relay does it in
user space. Every connection accepted on its listening port is forwarded to ``upstream`` (the
parameter server), each direction with its own

* one-way ``latency`` (seconds): a chunk read at t leaves the relay at t + latency;
* optional ``jitter`` (seconds): a uniform extra delay in [0, jitter] per chunk, never reordering
  (a chunk never leaves before the one read before it: TCP keeps byte order, so does the relay);
* ``bandwidth`` cap (bits/s, None for none): a token bucket per direction and connection, as a
  per-worker access link would be;
* ``server_link`` cap (bits/s, None for none): one token bucket per direction shared by all
  connections, as the parameter server host's own network link is (``benchmarks/ps_capacity.py
  --link``).

Tests and benchmarks import it (``from tests.wan_relay import ShapingRelay``; benchmarks put the
repository root on ``sys.path``). It runs an asyncio loop in one background thread::

    with ShapingRelay(("127.0.0.1", ps_port), latency=0.015, bandwidth=200e6) as relay:
        connect(relay.address)                # "127.0.0.1:PORT"

It is not product code: no TLS, no limits, no authentication of its own; it forwards bytes.

``python -m tests.wan_relay train -c CONFIG --run-dir DIR --latency 0.015 --bandwidth 200e6``
(from the repository root) runs ``gridtrain train`` with its local workers dialling the parameter
server through a relay (``RelayedExecutor``), and writes the relay's counters to DIR/relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import random
import sys
import threading
from pathlib import Path
from types import TracebackType
from typing import Any

CHUNK = 64 * 1024  # bytes read at a time: the granularity of delay and shaping
QUEUED_CHUNKS = 256  # per direction: 16 MiB in flight at most, then the sender is held back


class TokenBucket:
    """Bytes at ``rate`` per second with a burst of ``burst`` bytes (virtual finish times)."""

    def __init__(self, rate: float, burst: float) -> None:
        if not rate > 0:
            raise ValueError(f"bandwidth must be > 0 bytes/s, got {rate}")
        self.rate = rate
        self.burst = burst
        self._free_at = 0.0  # when the link has sent everything given to it so far

    def delay(self, size: int, now: float) -> float:
        """Seconds to wait before ``size`` more bytes have left the link."""
        self._free_at = max(self._free_at, now - self.burst / self.rate) + size / self.rate
        return max(0.0, self._free_at - now)


def _bucket(bits_per_second: float) -> TokenBucket:
    """A link of ``bits_per_second`` with a burst of one chunk or 2 ms, whichever is more."""
    rate = bits_per_second / 8
    return TokenBucket(rate, burst=max(CHUNK, rate * 0.002))


class ShapingRelay:
    """Forward every connection to ``upstream`` through a link with latency and a bandwidth cap.

    ``latency`` and ``jitter`` are one-way seconds, ``bandwidth`` bits per second (None: no cap).
    ``start`` returns the listening (host, port); ``address`` is it as "HOST:PORT".
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        latency: float = 0.0,
        bandwidth: float | None = None,
        jitter: float = 0.0,
        server_link: float | None = None,
        seed: int = 0,
    ) -> None:
        if latency < 0 or jitter < 0:
            raise ValueError(f"latency {latency} and jitter {jitter} must be >= 0 seconds")
        self.upstream = upstream
        # the server's link, one bucket per direction (True: towards the server) for everyone
        self._server_link = (
            {towards: _bucket(server_link) for towards in (True, False)} if server_link else {}
        )
        self.latency = latency
        self.bandwidth = bandwidth
        self.jitter = jitter
        self.bytes_up = 0  # client -> upstream
        self.bytes_down = 0  # upstream -> client
        self.connections = 0
        self._random = random.Random(seed)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._listening: tuple[str, int] | None = None

    # -- public, thread-safe -----------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._handle, "127.0.0.1", 0)
                )
                host, port = self._server.sockets[0].getsockname()[:2]
                self._listening = (host, port)
            except BaseException as err:  # reported to the starting thread
                failure.append(err)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="wan-relay", daemon=True)
        self._thread.start()
        ready.wait(10)
        if failure:
            raise failure[0]
        assert self._listening is not None
        return self._listening

    @property
    def address(self) -> str:
        if self._listening is None:
            raise RuntimeError("start the relay first")
        return f"{self._listening[0]}:{self._listening[1]}"

    def stop(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            future.result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)

    def __enter__(self) -> ShapingRelay:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.stop()

    # -- the loop ------------------------------------------------------------------------------

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        try:
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.upstream)
            except OSError:
                writer.close()
                return
            try:
                await asyncio.gather(
                    self._pipe(reader, up_writer, upstream=True),
                    self._pipe(up_reader, writer, upstream=False),
                )
            finally:
                for end in (writer, up_writer):
                    end.close()
        finally:
            self._tasks.discard(task)

    async def _pipe(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool
    ) -> None:
        """One direction of one connection: read, stamp, delay, shape, write, in order."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(QUEUED_CHUNKS)
        buckets = [_bucket(self.bandwidth)] if self.bandwidth else []
        if self._server_link:
            buckets.append(self._server_link[upstream])

        async def receive() -> None:
            last_release = 0.0
            try:
                while chunk := await reader.read(CHUNK):
                    extra = self._random.uniform(0, self.jitter) if self.jitter else 0.0
                    last_release = max(last_release, loop.time() + self.latency + extra)
                    await queue.put((last_release, chunk))
            except (ConnectionError, OSError):
                pass
            await queue.put((0.0, b""))  # end of stream

        async def send() -> None:
            while True:
                release, chunk = await queue.get()
                if not chunk:
                    with contextlib.suppress(OSError, RuntimeError):
                        if writer.can_write_eof():
                            writer.write_eof()
                    return
                wait = release - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                for bucket in buckets:  # the access link, then the server's
                    wait = bucket.delay(len(chunk), loop.time())
                    if wait > 0:
                        await asyncio.sleep(wait)
                writer.write(chunk)
                if upstream:
                    self.bytes_up += len(chunk)
                else:
                    self.bytes_down += len(chunk)
                await writer.drain()

        receiving = asyncio.ensure_future(receive())
        try:
            await send()
        except (ConnectionError, OSError):
            pass
        finally:
            receiving.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await receiving


def relayed_executor(**link: Any) -> Any:
    """A local executor whose workers dial the PS through a ``ShapingRelay`` with ``link``.

    The driver passes the server's address in ``Launch``; the executor puts a relay in front of
    it and starts (and restarts) the workers with the relay's address instead: no product hook.
    """
    from gridtrain.train.executor import Launch
    from gridtrain.train.local_executor import LocalExecutor

    class RelayedExecutor(LocalExecutor):
        relay: ShapingRelay | None = None

        def start(self, launch: Launch, count: int) -> None:
            host, port = launch.address.rsplit(":", 1)
            self.relay = ShapingRelay((host, int(port)), **link)
            self.relay.start()
            super().start(dataclasses.replace(launch, address=self.relay.address), count)

        def stop(self, grace: float) -> None:
            try:
                super().stop(grace)
            finally:
                if self.relay is not None:
                    self.relay.stop()

    return RelayedExecutor()


def train_through_relay(
    config_path: Path, run_dir: Path, workers: int | None = None, **link: Any
) -> int:
    """``gridtrain train`` with the workers behind a relay; DIR/relay.json gets its counters."""
    from gridtrain.config import load_config
    from gridtrain.train.driver import TrainingRun, prepare

    files = prepare(load_config(config_path), run_dir, workers)
    executor = relayed_executor(**link)
    code = TrainingRun(files, executor, plots=False).execute()
    relay = executor.relay
    if relay is not None:
        counters = {
            "connections": relay.connections,
            "bytes_up": relay.bytes_up,
            "bytes_down": relay.bytes_down,
            **link,
        }
        (run_dir / "relay.json").write_text(json.dumps(counters))
    return int(code)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="gridtrain train through a shaping relay")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train")
    train.add_argument("-c", "--config", type=Path, required=True)
    train.add_argument("--run-dir", type=Path, required=True)
    train.add_argument("--workers", type=int)
    train.add_argument("--latency", type=float, default=0.0, help="one-way seconds")
    train.add_argument("--bandwidth", type=float, help="bits/s per direction and connection")
    train.add_argument("--jitter", type=float, default=0.0, help="seconds")
    args = parser.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return train_through_relay(
        args.config,
        args.run_dir,
        args.workers,
        latency=args.latency,
        bandwidth=args.bandwidth,
        jitter=args.jitter,
    )


if __name__ == "__main__":
    sys.exit(main())
