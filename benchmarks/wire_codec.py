"""The bf16 wire codec: encode and widen a model's float32 tensors, against a plain copy of them.

``train.wire: bf16`` halves the bytes of every push and center, but each side pays for it in CPU:
the worker encodes its push and widens the center, the parameter server widens every push and
encodes the center once per version. On a host bound by moving bytes (``ps_capacity.py``: the PS
on this 2-core machine), that CPU decides whether bf16 raises the capacity at all.

For a model of ``--parameters`` float32 values (1M and 10M by default), best of ``--repeats``
after a warm-up, one thread:

  encode      ``protocol.bf16_encode`` into a reused buffer (round to nearest even);
  widen       ``protocol.bf16_expand`` in place, as a receive buffer is widened;
  memcpy      the baseline: ``np.copyto`` of the float32 tensor into another, the least any
              pass over the model costs (a codec reads 4 bytes and writes 2, or the reverse);
  loopback    for scale: sending the 2 bytes per parameter that bf16 saves through a loopback
              socket pair and receiving them (what the saving buys back on this host).

Last line: (encode + widen) / (2 x memcpy) for the largest model: how close one round of the
codec comes to two plain copies (1.0 would be as cheap as copying).

    python benchmarks/wire_codec.py                 # a few seconds
"""

from __future__ import annotations

import argparse
import socket
import threading
import time
from collections.abc import Callable

import numpy as np

from gridtrain.ps import protocol


def best_of(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up: page faults, caches
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - started)
    return best


def loopback_seconds(nbytes: int, repeats: int) -> float:
    """Send ``nbytes`` through a loopback socket pair and receive them; best of ``repeats``."""
    sender, receiver = socket.socketpair()
    payload = memoryview(bytearray(nbytes))
    into = memoryview(bytearray(nbytes))

    def once() -> None:
        thread = threading.Thread(target=sender.sendall, args=(payload,))
        thread.start()
        got = 0
        while got < nbytes:
            got += receiver.recv_into(into[got:])
        thread.join()

    try:
        return best_of(once, repeats)
    finally:
        sender.close()
        receiver.close()


def measure(size: int, repeats: int) -> tuple[float, float, float, float]:
    """Seconds for (encode, widen, memcpy, loopback of the 2 bytes a parameter saves)."""
    values = np.random.default_rng(0).normal(scale=1e-3, size=size).astype(np.float32)
    encoded = np.empty(size, np.uint16)
    received = np.empty(size, np.float32)
    copy = np.empty_like(values)
    protocol.bf16_encode(values, encoded)

    def fill() -> None:
        received.view(np.uint16)[:size] = encoded  # what the socket wrote

    def widen() -> None:
        fill()
        protocol.bf16_expand([received])

    encode = best_of(lambda: protocol.bf16_encode(values, encoded), repeats)
    expand = max(best_of(widen, repeats) - best_of(fill, repeats), 0.0)
    memcpy = best_of(lambda: np.copyto(copy, values), repeats)
    saved = loopback_seconds(2 * size, max(3, repeats // 4))
    widen()
    np.testing.assert_array_equal(protocol.bf16_encode(received), encoded)  # widened exactly
    return encode, expand, memcpy, saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parameters", default="1e6,1e7", help="comma-separated model sizes")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    sizes = [int(float(size)) for size in args.parameters.split(",")]
    print(f"one thread, best of {args.repeats} after a warm-up; milliseconds per model")
    print(f"{'parameters':>11}{'encode':>9}{'widen':>9}{'memcpy':>9}{'loopback 2P':>13}")
    ratio = float("nan")
    for size in sizes:
        encode, expand, memcpy, saved = measure(size, args.repeats)
        print(
            f"{size:>11,}{encode * 1e3:>9.2f}{expand * 1e3:>9.2f}{memcpy * 1e3:>9.2f}"
            f"{saved * 1e3:>13.2f}"
        )
        ratio = (encode + expand) / (2 * memcpy)
    print(
        f"ratio (encode + widen) / (2 x memcpy), {sizes[-1]:,} parameters: {ratio:.2f} "
        "(1.0: as cheap as two plain copies)"
    )


if __name__ == "__main__":
    main()
