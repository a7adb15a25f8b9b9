"""``gridtrain serve``: the web page and REST API over the runs under --root, with uvicorn."""

from __future__ import annotations

import argparse
import ipaddress
import socket
import ssl
import sys
from pathlib import Path
from typing import Any

from gridtrain.errors import ConfigError, StageError
from gridtrain.serve.settings import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    MAX_BODY,
    MAX_STREAMS,
    MAX_STREAMS_PER_CLIENT,
    TOKEN_FILE,
)

LOGIN_FILE = ".serve-login"  # the login link, where stdout is not a terminal


def register(subparsers: Any) -> None:
    serve = subparsers.add_parser(
        "serve",
        help="a web page and REST API to submit, follow and collect trainings (head node)",
        description="Serve the runs under --root: submit configs (each runs as gridtrain train "
        "--detach), follow them live, cancel, resume and download. Binds 127.0.0.1 by default; "
        "another address needs TLS (--certfile, --keyfile) or --insecure-bind. Reach it from a "
        "laptop with ssh -L PORT:localhost:PORT. Every request needs the access token "
        f"(ROOT/{TOKEN_FILE}, mode 0600); the login link is printed on a terminal, and written "
        f"to ROOT/{LOGIN_FILE} (mode 0600) otherwise, so that no log captures it.",
    )
    serve.add_argument("--root", type=Path, required=True, help="the folder of the runs")
    serve.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to bind ({DEFAULT_HOST}); any other needs TLS or --insecure-bind",
    )
    serve.add_argument(
        "--certfile", type=Path, help="serve HTTPS with this certificate (PEM), with --keyfile"
    )
    serve.add_argument("--keyfile", type=Path, help="the certificate's private key (PEM)")
    serve.add_argument(
        "--insecure-bind",
        action="store_true",
        help="allow a --host other than loopback over plain HTTP, where anyone on the path can "
        "read the token",
    )
    serve.add_argument(
        "--port", type=int, default=DEFAULT_PORT, help=f"port ({DEFAULT_PORT}; 0: any free one)"
    )
    serve.add_argument(
        "--allow-models",
        type=Path,
        metavar="DIR",
        help="the only folder whose files a config may name as train.model.name "
        "('file.py:function'); without it, only built-in models",
    )
    serve.add_argument(
        "--allow-data",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a folder whose files a config may read (dataset.outdir, dataset.samples' files, "
        "a site profile), besides --root; repeatable. Without it, only --root",
    )
    serve.add_argument(
        "--allow-stage",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a storage URL prefix a config may name (stage.url, root:// inputs), e.g. "
        "root://eos.example.org//store/user/me/; repeatable. Without it, none",
    )
    serve.add_argument(
        "--token-file", type=Path, help=f"where the token is kept (ROOT/{TOKEN_FILE})"
    )
    serve.add_argument(
        "--new-token", action="store_true", help="replace the token (old links stop working)"
    )
    serve.add_argument(
        "--max-body", type=int, default=MAX_BODY, help=f"largest request body in bytes ({MAX_BODY})"
    )
    serve.add_argument(
        "--max-streams",
        type=int,
        default=MAX_STREAMS,
        help=f"open event streams (pages, notebooks following runs) in all ({MAX_STREAMS})",
    )
    serve.add_argument(
        "--max-streams-per-client",
        type=int,
        default=MAX_STREAMS_PER_CLIENT,
        help="open event streams from one address and credential "
        f"({MAX_STREAMS_PER_CLIENT}; everyone behind one ssh tunnel counts as one client)",
    )
    serve.set_defaults(func=_serve)


def _serve(args: argparse.Namespace) -> int:
    tls = _check_bind(args)
    try:
        import uvicorn
    except ImportError:
        print(
            "gridtrain serve: error: FastAPI and uvicorn are missing; install them with "
            "pip install 'gridtrain[serve]'",
            file=sys.stderr,
        )
        return 2
    from gridtrain.serve.app import SHUTDOWN_GRACE_S, create_app
    from gridtrain.serve.settings import ServeSettings, read_or_create_token

    root = args.root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    token = read_or_create_token(args.token_file or root / TOKEN_FILE, new=args.new_token)
    allow = args.allow_models.resolve() if args.allow_models else None
    settings = ServeSettings(
        root,
        token,
        allow,
        args.max_body,
        allow_data=tuple(_folder("--allow-data", path) for path in args.allow_data),
        allow_stage=tuple(_prefix(prefix) for prefix in args.allow_stage),
        max_streams=_positive("--max-streams", args.max_streams),
        max_streams_per_client=_positive("--max-streams-per-client", args.max_streams_per_client),
    )
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    sock.listen(128)  # connections queue from here on: the link works once printed
    port = sock.getsockname()[1]
    host = f"[{args.host}]" if family == socket.AF_INET6 else args.host
    url = f"{'https' if tls else 'http'}://{host}:{port}"
    print(f"gridtrain serve: runs under {root}", flush=True)
    _announce(url, token, root / LOGIN_FILE)
    print(
        f"  (from a laptop: ssh -L {port}:localhost:{port} THIS_HOST, then the login link)",
        flush=True,
    )
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(settings),
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=SHUTDOWN_GRACE_S,
            ssl_certfile=str(args.certfile) if tls else None,
            ssl_keyfile=str(args.keyfile) if tls else None,
        )
    )
    server.run(sockets=[sock])
    return 0


def _folder(option: str, path: Path) -> Path:
    if not path.is_dir():
        raise ConfigError(f"{option} {path}: not a folder; give an existing folder")
    return path.resolve()


def _prefix(prefix: str) -> str:
    from gridtrain.stage.location import parse_location

    try:
        parse_location(prefix)
    except StageError as err:
        raise ConfigError(f"--allow-stage {prefix}: {err}") from None
    return prefix


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        return False


def _check_bind(args: argparse.Namespace) -> bool:
    """Whether to serve TLS; refuses plain HTTP beyond loopback unless --insecure-bind."""
    if (args.certfile is None) != (args.keyfile is None):
        raise ConfigError("--certfile and --keyfile go together: give both, or neither")
    tls = args.certfile is not None
    if tls:  # a bad certificate or key: one line now, not a traceback from uvicorn later
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                args.certfile, args.keyfile
            )
        except (OSError, ssl.SSLError) as err:
            raise ConfigError(
                f"--certfile {args.certfile} --keyfile {args.keyfile}: not a PEM certificate "
                f"and its private key ({err.strerror or err}); give both as PEM files"
            ) from None
    elif not _loopback(args.host) and not args.insecure_bind:
        raise ConfigError(
            f"--host {args.host} is not loopback, and over plain HTTP the token would cross the "
            "network readable by anyone on the path; serve TLS with --certfile CERT --keyfile "
            f"KEY, or accept that with --insecure-bind (or keep {DEFAULT_HOST} and use ssh -L)"
        )
    return tls


def _announce(url: str, token: str, login: Path) -> None:
    """The login link on a terminal; otherwise only where it is, so that no log holds the token
    (the link goes to ``login``, mode 0600, written under a temporary name and renamed)."""
    link = f"{url}/#token={token}"
    if sys.stdout.isatty():
        login.unlink(missing_ok=True)  # no stale link lying around
        print(f"  open {link}", flush=True)
        return
    from gridtrain.files import write_text

    write_text(login, link + "\n", mode=0o600)
    print(
        f"  listening on {url}/ ; the login link is in {login} (mode 0600), not printed, since "
        "stdout is not a terminal",
        flush=True,
    )


def _positive(option: str, value: int) -> int:
    if value < 1:
        raise ConfigError(f"{option} {value}: give at least 1")
    return value
