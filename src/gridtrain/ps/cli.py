"""``gridtrain ps serve`` and ``gridtrain ps status``: thin commands over the ps library.

Layer: CLI edge of ps. Parses options, builds the library objects and prints; it raises the
library's errors unchanged (``gridtrain.cli`` turns them into one-line messages) and holds no
protocol or training logic.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import ssl
import time
import typing
from dataclasses import fields
from pathlib import Path
from types import FrameType
from typing import Any

from gridtrain.errors import ConfigError
from gridtrain.ps import auth
from gridtrain.ps.address import write_address_file
from gridtrain.ps.admission import StartupBudget
from gridtrain.ps.center import CenterStore
from gridtrain.ps.checkpoint import read_checkpoint, read_initial_weights
from gridtrain.ps.client import PSClient
from gridtrain.ps.config import ServerConfig
from gridtrain.ps.rules import (
    ALGORITHMS,
    GEM_PLACEMENTS,
    OPTIMIZERS,
    STALENESS_SCALINGS,
    AlgorithmConfig,
)
from gridtrain.ps.server import ParameterServer

log = logging.getLogger(__name__)

DEFAULT_SECRET_FILE = Path("gridtrain-ps.secret")
DEFAULT_ADDRESS_FILE = Path("gridtrain-ps.address")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "ps", help="run or query the parameter server", description="The parameter server."
    )
    commands = parser.add_subparsers(dest="ps_command", required=True, metavar="PS_COMMAND")
    _register_serve(commands)
    _register_status(commands)


def _register_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="serve a model's weights to workers",
        description="Serve the center variable to workers until SIGTERM or SIGINT; checkpoint "
        "on the way out.",
    )
    source = serve.add_argument_group("model")
    source.add_argument(
        "--init", type=Path, help="initial weights: np.savez(PATH, *model.get_weights())"
    )
    source.add_argument(
        "--resume", action="store_true", help="restart from the checkpoint at --checkpoint"
    )
    net = serve.add_argument_group("network")
    net.add_argument(
        "--bind", default="127.0.0.1", help="interface to listen on (default %(default)s)"
    )
    net.add_argument(
        "--port",
        default="0",
        help="port, or range LO-HI to take the first free one (grid sites open ranges); "
        "0: any free port (default)",
    )
    net.add_argument(
        "--secret-file",
        type=Path,
        default=DEFAULT_SECRET_FILE,
        help="secret (hex, mode 0600); reused if it exists, else written (default %(default)s)",
    )
    net.add_argument(
        "--address-file",
        type=Path,
        default=DEFAULT_ADDRESS_FILE,
        help="where to write HOST:PORT for the job submission (default %(default)s)",
    )
    net.add_argument("--tls-cert", type=Path, help="PEM certificate: also encrypt with TLS")
    net.add_argument("--tls-key", type=Path, help="PEM private key for --tls-cert")
    net.add_argument(
        "--max-connections",
        type=int,
        default=256,
        help="authenticated connections (workers, monitors) at once; more are told 'busy' "
        "(default %(default)s)",
    )
    net.add_argument(
        "--max-startups",
        default=str(StartupBudget()),
        metavar="START:RATE:FULL",
        help="handshakes not yet authenticated, as OpenSSH's MaxStartups: from START on, refuse "
        "new ones with RATE %% chance, rising to all at FULL (default %(default)s)",
    )
    net.add_argument(
        "--per-source-max-startups",
        type=int,
        default=8,
        help="handshakes one source address may have open at once (default %(default)s)",
    )
    net.add_argument(
        "--handshake-timeout",
        type=float,
        default=5.0,
        help="seconds a new connection has for the whole handshake, TLS included (default "
        "%(default)s)",
    )
    net.add_argument(
        "--read-timeout",
        type=float,
        default=30.0,
        help="seconds a peer may stall inside a frame (default %(default)s)",
    )
    net.add_argument(
        "--idle-timeout",
        type=float,
        default=3600.0,
        help="seconds a worker may stay silent between frames (default %(default)s)",
    )
    net.add_argument(
        "--receive-buffers",
        type=int,
        default=4,
        help="pushes received at once, each one model copy (default %(default)s)",
    )
    algo = serve.add_argument_group("algorithm")
    _add_algorithm_options(algo)
    keep = serve.add_argument_group("checkpoints and metrics")
    keep.add_argument("--checkpoint", type=Path, help="checkpoint file (.npz)")
    keep.add_argument("--checkpoint-every", type=int, default=0, help="every N center updates")
    keep.add_argument("--checkpoint-interval", type=float, default=0.0, help="every T seconds")
    keep.add_argument("--metrics-log", type=Path, help="append JSON-lines metrics here")
    keep.add_argument("--metrics-interval", type=float, default=10.0)
    serve.set_defaults(func=serve_command)


# The algorithm options are AlgorithmConfig's fields, in its order, with its defaults and
# types: the dataclass is the one place they are written (tests/ps/test_ps_defaults.py).
_ALGORITHM_CHOICES: dict[str, tuple[str, ...]] = {
    "algorithm": ALGORITHMS,
    "optimizer": OPTIMIZERS,
    "staleness_scaling": STALENESS_SCALINGS,
    "gem_on": GEM_PLACEMENTS,
}
_ALGORITHM_HELP = {
    "optimizer": "downpour/sync: add pushed deltas, or treat pushes as gradients",
    "alpha": "EASGD moving rate",
    "window": "ADAG: local steps per push",
    "max_staleness": "refuse pushes older than this",
    "sync_workers": "sync: updates per round",
    "backup_workers": "sync: extra workers whose late updates are dropped",
    "kappa": "GEM proxy amplification",
    "proxy_momentum": "GEM: momentum of the proxy",
    "gem_on": "GEM: rescale on each worker (the paper) or on the server (NNLO)",
}


def _add_algorithm_options(group: Any) -> None:
    """``--algorithm``, ``--learning-rate``, ...: one option per field of AlgorithmConfig."""
    hints = typing.get_type_hints(AlgorithmConfig)
    for field in fields(AlgorithmConfig):
        kinds = [t for t in typing.get_args(hints[field.name]) if t is not type(None)]
        help_text = _ALGORITHM_HELP.get(field.name, "")
        if field.default is not None:
            help_text += f"{' ' if help_text else ''}(default %(default)s)"
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=kinds[0] if kinds else hints[field.name],
            choices=_ALGORITHM_CHOICES.get(field.name),
            default=field.default,
            help=help_text,
        )


def _register_status(commands: Any) -> None:
    status = commands.add_parser(
        "status",
        help="print a running parameter server's metrics",
        description="Connect as a monitor and print updates/s, staleness and workers.",
    )
    status.add_argument("address", help="HOST:PORT (the contents of the address file)")
    status.add_argument("--secret-file", type=Path, default=DEFAULT_SECRET_FILE)
    status.add_argument("--tls-ca", type=Path, help="CA file: connect with TLS")
    status.add_argument("--timeout", type=float, default=10.0)
    status.add_argument("--json", action="store_true", help="print the raw JSON")
    status.set_defaults(func=status_command)


def parse_port_range(text: str) -> tuple[int, int]:
    low, sep, high = text.partition("-")
    try:
        first = int(low)
        last = int(high) if sep else first
    except ValueError:
        raise ConfigError(
            f"--port {text!r} is not a port or a range; use e.g. 9000 or 9000-9100"
        ) from None
    return first, last


def _algorithm_from(args: argparse.Namespace) -> AlgorithmConfig:
    return AlgorithmConfig(
        **{field.name: getattr(args, field.name) for field in fields(AlgorithmConfig)}
    )


def build_store(args: argparse.Namespace) -> CenterStore:
    algorithm = _algorithm_from(args)
    if args.resume:
        if args.checkpoint is None:
            raise ConfigError("--resume needs --checkpoint PATH, the file to resume from")
        snapshot = read_checkpoint(args.checkpoint)
        if snapshot.algorithm != algorithm.to_dict():
            log.warning("algorithm settings differ from the checkpoint's; using the new ones")
        log.info("resuming from %s at center version %d", args.checkpoint, snapshot.version)
        return CenterStore.resume(snapshot, algorithm)
    if args.init is None:
        raise ConfigError(
            "give the initial weights with --init weights.npz (np.savez(path, "
            "*model.get_weights())), or --resume --checkpoint PATH"
        )
    return CenterStore(read_initial_weights(args.init), algorithm)


def serve_command(args: argparse.Namespace) -> int:
    store = build_store(args)
    tls = None
    if args.tls_cert or args.tls_key:
        if not (args.tls_cert and args.tls_key):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(args.tls_cert, args.tls_key)
    config = ServerConfig(
        host=args.bind,
        port_range=parse_port_range(args.port),
        read_timeout=args.read_timeout,
        idle_timeout=args.idle_timeout,
        max_connections=args.max_connections,
        max_startups=StartupBudget.parse(args.max_startups),
        per_source_max_startups=args.per_source_max_startups,
        handshake_timeout=args.handshake_timeout,
        receive_buffers=args.receive_buffers,
        checkpoint_path=args.checkpoint,
        checkpoint_every=args.checkpoint_every,
        checkpoint_interval=args.checkpoint_interval,
        metrics_log=args.metrics_log,
        metrics_interval=args.metrics_interval,
        tls=tls,
    )
    secret = auth.load_or_create_secret_file(args.secret_file)
    server = ParameterServer(store, secret, config)
    stop_signal: list[int] = []

    def on_signal(signum: int, frame: FrameType | None) -> None:
        del frame
        stop_signal.append(signum)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        host, port = server.start()
        write_address_file(args.address_file, host, port)
        print(
            f"gridtrain ps: serving {len(store.signature)} tensors "
            f"({store.signature.nbytes / 1e6:.1f} MB) at {host}:{port}, version {store.version}",
            flush=True,
        )
        while not stop_signal:
            time.sleep(0.2)
        log.info("received %s, checkpointing and stopping", signal.Signals(stop_signal[0]).name)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    print(f"gridtrain ps: stopped at version {store.version}", flush=True)
    return 0


def status_command(args: argparse.Namespace) -> int:
    secret = auth.read_secret_file(args.secret_file)
    tls = None
    if args.tls_ca:
        tls = ssl.create_default_context(cafile=str(args.tls_ca))
    with PSClient(args.address, secret, None, name="status", timeout=args.timeout, tls=tls) as ps:
        status = ps.status()
    if args.json:
        print(json.dumps(status, indent=2, sort_keys=True))
    else:
        print(format_status(status))
    return 0


def _size(nbytes: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if nbytes < 1000:
            return f"{nbytes:.1f} {unit}"
        nbytes /= 1000
    return f"{nbytes:.1f} PB"


def _lease_lines(leases: dict[str, Any] | None) -> list[str]:
    if not leases:
        return []
    latest = leases.get("latest_validation") or {}
    validation = f", last validation AUC {latest['auc']:.4f}" if "auc" in latest else ""
    return [
        f"leases     epoch {leases['epoch'] + 1}/{leases['epochs']}, shards "
        f"{leases['shards_done']}/{leases['shards_total']}, {leases['leases_out']} out"
        f"{validation}{', ' + leases['stopped'] if leases['stopped'] else ''}"
    ]


def format_status(status: dict[str, Any]) -> str:
    """The human-readable report of ``gridtrain ps status``."""
    algorithm = status.get("algorithm", {})
    lines = [
        f"parameter server {status.get('address', '?')}  center version {status['version']}  "
        f"(checkpointed {status.get('checkpointed_version', '?')})  up {status['uptime_s']:.0f} s",
        f"algorithm  {algorithm.get('algorithm', '?')} (optimizer {algorithm.get('optimizer')}, "
        f"lr {algorithm.get('learning_rate')}, staleness scaling "
        f"{algorithm.get('staleness_scaling')}, max staleness {algorithm.get('max_staleness')})",
        f"updates    {status['pushes']} accepted, {status['refused']} refused, "
        f"{status['updates_per_s']:.2f}/s overall, {status['recent_updates_per_s']:.2f}/s recently",
        f"traffic    in {_size(status['bytes_in'])}, out {_size(status['bytes_out'])}, "
        f"{_size(status['bytes_per_s'])}/s",
        "staleness  "
        + "  ".join(f"{bucket}:{count}" for bucket, count in status["staleness_histogram"].items()),
        *_lease_lines(status.get("leases")),
        f"workers    {status['workers_connected']} connected, {len(status['workers'])} seen",
        f"  {'id':>4} {'name':<24} {'state':<12} {'last seen':>10} {'lag':>6} {'pushes':>8} "
        f"{'refused':>8}",
    ]
    for worker in status["workers"]:
        state = "connected" if worker["connected"] else "gone"
        lines.append(
            f"  {worker['worker_id']:>4} {worker['name'][:24]:<24} {state:<12} "
            f"{worker['seconds_since_seen']:>9.1f}s {worker['lag']:>6} {worker['pushes']:>8} "
            f"{worker['refused']:>8}"
        )
    return "\n".join(lines)
