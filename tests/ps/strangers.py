"""Strangers on the network for tests and benchmarks: connections that stall a parameter server's
handshake and reconnect when dropped (a test helper, not product code).

Two kinds, each from its own source address (all of 127/8 is loopback on Linux, so they look
like other hosts to a server on 127.0.0.1):

* drippers send a valid HELLO header one byte every ``drip_interval`` seconds;
* stallers send a whole HELLO, read the CHALLENGE and never answer it.

Both reconnect ``reconnect_delay`` seconds after the server drops them. Run it in its own process
so that its loop does not share a GIL with the server under test::

    python tests/ps/strangers.py 127.0.0.1:9000 --drippers 180 --stallers 20 --seconds 60

It prints ``started`` once its connections are under way, and one JSON line of counts when it
stops (after ``--seconds``, or at once on SIGTERM).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2] / "src"))

from gridtrain.ps import protocol
from gridtrain.ps.protocol import MessageType


@dataclass
class Counts:
    connects: int = 0
    refused: int = 0  # closed before the first drip or HELLO got an answer
    dropped: int = 0  # closed later, at the handshake deadline
    challenges: int = 0


def hello_frame() -> bytes:
    meta = protocol.encode_meta({"nonce": "00" * 32, "role": "worker", "name": "stranger"})
    return protocol.encode_header(MessageType.HELLO, meta_length=len(meta)) + meta


async def _closed(reader: asyncio.StreamReader, seconds: float) -> bool:
    """Wait up to ``seconds`` for the server to close; True if it did."""
    try:
        while True:
            if not await asyncio.wait_for(reader.read(4096), seconds):
                return True
    except TimeoutError:
        return False
    except OSError:
        return True


async def dripper(
    address: tuple[str, int], source: str, options: argparse.Namespace, counts: Counts
) -> None:
    frame = hello_frame()
    while True:
        try:
            reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0))
        except OSError:
            counts.refused += 1
            await asyncio.sleep(options.reconnect_delay)
            continue
        counts.connects += 1
        sent = 0
        try:
            while sent < len(frame):
                writer.write(frame[sent : sent + 1])
                sent += 1
                if await _closed(reader, options.drip_interval):
                    break
        except OSError:
            pass
        finally:
            writer.close()
        if sent <= 1:
            counts.refused += 1
        else:
            counts.dropped += 1
        await asyncio.sleep(options.reconnect_delay)


async def staller(
    address: tuple[str, int], source: str, options: argparse.Namespace, counts: Counts
) -> None:
    frame = hello_frame()
    while True:
        challenged = False
        try:
            reader, writer = await asyncio.open_connection(*address, local_addr=(source, 0))
        except OSError:
            counts.refused += 1
            await asyncio.sleep(options.reconnect_delay)
            continue
        counts.connects += 1
        try:
            writer.write(frame)
            header = protocol.decode_header(
                await asyncio.wait_for(reader.readexactly(protocol.HEADER_SIZE), 10)
            )
            await reader.readexactly(header.payload_length)
            challenged = header.msg_type is MessageType.CHALLENGE
            counts.challenges += challenged
            await _closed(reader, 3600)
        except (OSError, asyncio.IncompleteReadError, TimeoutError, ValueError):
            pass
        finally:
            writer.close()
        if challenged:
            counts.dropped += 1
        else:
            counts.refused += 1
        await asyncio.sleep(options.reconnect_delay)


async def main(options: argparse.Namespace) -> Counts:
    host, _, port = options.address.rpartition(":")
    address = (host, int(port))
    counts = Counts()

    def report_and_exit(signum: int, frame: object) -> None:
        del signum, frame
        print(json.dumps(asdict(counts)), flush=True)
        os._exit(0)  # no orderly unwinding of hundreds of sockets: the test is waiting

    signal.signal(signal.SIGTERM, report_and_exit)
    tasks = [
        asyncio.create_task(dripper(address, options.drip_source, options, counts))
        for _ in range(options.drippers)
    ]
    tasks += [
        asyncio.create_task(staller(address, options.stall_source, options, counts))
        for _ in range(options.stallers)
    ]
    print("started", flush=True)
    await asyncio.sleep(options.seconds)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return counts


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of the parameter server")
    parser.add_argument("--drippers", type=int, default=180)
    parser.add_argument("--stallers", type=int, default=20)
    parser.add_argument("--drip-source", default="127.0.0.2")
    parser.add_argument("--stall-source", default="127.0.0.3")
    parser.add_argument("--drip-interval", type=float, default=2.0)
    parser.add_argument("--reconnect-delay", type=float, default=0.25)
    parser.add_argument("--seconds", type=float, default=600.0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    result = asyncio.run(main(parse()))
    print(json.dumps(asdict(result)), flush=True)
