"""Authentication for the parameter-server protocol: secrets, challenge-response, frame MACs.

Layer: ps, beside ``protocol``. Pure cryptography on bytes; it never touches a socket (the
handshake is driven by ``client.py`` and ``session.py`` over ``transport.py``, each step of
``session.Conversation`` named after its row below).

Handshake (each row one frame; ``cn``, ``sn`` are fresh 32-byte random nonces)::

    client                                    server
    HELLO  version, cn, role, name,   ->
           wire (and top-k fraction)
                                              version mismatch: ERROR naming both, close
                                      <-      CHALLENGE sn
    AUTH   proof, signature table     ->
                                              proof != HMAC(secret, "client"|cn|sn|table):
                                              ERROR "authentication failed", close
           session key K = HKDF-SHA256(secret, salt=cn|sn)    (both sides)
                                              from here every frame carries a tag under K
                                              HELLO's wire unknown, top-k fraction out of
                                              range, or top-k asked of an EASGD server:
                                              ERROR naming the rule, close
                                              a worker's signature mismatch: ERROR naming the
                                              tensor, close
                                              authenticated connections full: ERROR "busy", close
                                      <-      WELCOME worker id, version, algorithm, wire
    client checks WELCOME's tag: only a server that knows the secret can produce it.

The wire and the signature are checked after the proof, so that a peer without the secret
learns neither the model's shapes nor the algorithm (what it does learn, the protocol version:
docs/explanation/security.md). Replays fail: the session key
is fresh per connection, and each frame's nonce is (direction, sequence number), with the
receiver counting sequence numbers itself.

Choice of MAC, by measurement on the project's machines (AMD EPYC with AES-NI, VAES and
VPCLMULQDQ; 40 MB buffer, ``cryptography`` 50; see ``benchmarks/ps.py --mac``):

    AES-256-GCM, frame as associated data (GMAC)   27 GB/s   (the same fed in 512 KiB chunks)
    Poly1305                                        14 GB/s
    HMAC-SHA256                                      2 GB/s   (stdlib and cryptography alike)
    keyed BLAKE2b                                  1.4 GB/s
    AES-GCM / ChaCha20-Poly1305 encrypting         1.5 GB/s   (confidentiality; that is TLS's job)

Loopback TCP moves about 3.2 GB/s here, so an HMAC over every byte would halve throughput while
GMAC costs about a tenth of the transfer. GMAC is used with a 96-bit nonce built from the
direction and the sequence number under a per-connection key, so a (key, nonce) pair is never
reused. GCM's streaming interface lets the MAC be fed chunk by chunk while the bytes are still in
cache, so scatter-gather frames need no concatenation. Users who also want confidentiality add
TLS (``ssl.SSLContext`` on both sides); the frame MAC stays on.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import stat
import struct
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms, modes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gridtrain.errors import AuthenticationError, ConfigError
from gridtrain.files import write_bytes

log = logging.getLogger(__name__)

NONCE_SIZE = 32
SECRET_SIZE = 32
MIN_SECRET_SIZE = 16
_CLIENT_LABEL = b"gridtrain-ps v1 client proof"
_SESSION_INFO = b"gridtrain-ps v1 session key"
_frame_nonce_format = struct.Struct(">IQ")

CLIENT_TO_SERVER = 0
SERVER_TO_CLIENT = 1


def new_secret() -> bytes:
    return secrets.token_bytes(SECRET_SIZE)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


def client_proof(secret: bytes, client_nonce: bytes, server_nonce: bytes, table: bytes) -> bytes:
    """The client's answer to the challenge; binds both nonces and the signature it sends."""
    message = _CLIENT_LABEL + client_nonce + server_nonce + sha256(table).digest()
    return hmac.new(secret, message, sha256).digest()


def check_client_proof(
    secret: bytes, client_nonce: bytes, server_nonce: bytes, table: bytes, proof: bytes
) -> None:
    expected = client_proof(secret, client_nonce, server_nonce, table)
    if not hmac.compare_digest(expected, proof):
        raise AuthenticationError(
            "authentication failed: the client does not hold this parameter server's secret; "
            "give it the secret file written by `gridtrain ps serve`"
        )


def session_key(secret: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    hkdf = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=client_nonce + server_nonce, info=_SESSION_INFO
    )
    return hkdf.derive(secret)


class FrameMac:
    """GMAC of one frame, fed incrementally; one instance per frame, never reused."""

    __slots__ = ("_context",)

    def __init__(self, key: bytes, direction: int, sequence: int) -> None:
        nonce = _frame_nonce_format.pack(direction, sequence)
        self._context: CipherContext = Cipher(algorithms.AES(key), modes.GCM(nonce)).encryptor()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._context.authenticate_additional_data(data)  # type: ignore[attr-defined]

    def tag(self) -> bytes:
        self._context.finalize()
        tag: bytes = self._context.tag  # type: ignore[attr-defined]
        return tag

    def verify(self, received: bytes | bytearray | memoryview) -> None:
        if not hmac.compare_digest(self.tag(), bytes(received)):
            raise AuthenticationError(
                "frame failed authentication (forged, corrupted or replayed); connection closed"
            )


@dataclass(frozen=True)
class SessionKeys:
    """The per-connection key and which direction this side sends in."""

    key: bytes
    sends: int

    def sending_mac(self, sequence: int) -> FrameMac:
        return FrameMac(self.key, self.sends, sequence)

    def receiving_mac(self, sequence: int) -> FrameMac:
        return FrameMac(self.key, 1 - self.sends, sequence)


def write_secret_file(path: Path, secret: bytes) -> None:
    """Write ``secret`` as hex to a new file of mode 0600 (never widening an existing one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, secret.hex().encode() + b"\n", mode=0o600)


def load_or_create_secret_file(path: Path) -> bytes:
    """The secret in ``path``; a new one written there (mode 0600) when there is none yet."""
    if path.exists():
        return read_secret_file(path)
    secret = new_secret()
    write_secret_file(path, secret)
    log.info("new secret written to %s", path)
    return secret


def read_secret_file(path: Path) -> bytes:
    """Read a secret written by ``write_secret_file``; refuse files others can read."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise FileNotFoundError(
            f"secret file {path} does not exist; `gridtrain ps serve --secret-file {path}` "
            "writes it"
        ) from None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(
            f"secret file {path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}`"
        )
    text = path.read_text().strip()
    try:
        secret = bytes.fromhex(text)
    except ValueError:
        raise ConfigError(f"secret file {path} does not hold a hex secret") from None
    if len(secret) < MIN_SECRET_SIZE:
        raise ConfigError(
            f"secret in {path} is {len(secret)} bytes, at least {MIN_SECRET_SIZE} are needed; "
            "delete the file and let `gridtrain ps serve` write a new one"
        )
    return secret
