"""The error hierarchy shared by every layer.

Each error subclasses the built-in it refines, so callers that know nothing of gridtrain can still
catch ``ValueError`` or ``OSError``; ``GridtrainError`` marks them for the CLI, which alone turns
them into one-line messages and exit codes. Messages name the file, URL or value and the way out.
The parameter server's errors refine ``ConnectionError``, ``EOFError``, ``TimeoutError`` and
``OSError`` the same way. This module defines classes only; it never raises by itself.
"""

from __future__ import annotations


class GridtrainError(Exception):
    """Marker base: an error whose message is written for the user."""


class ConfigError(GridtrainError, ValueError):
    """The configuration is invalid; the message names the key and a valid example."""


class ConversionError(GridtrainError, ValueError):
    """A ROOT input cannot become training shards; the message names the file and the problem."""


class ShardError(GridtrainError, OSError):
    """A shard or manifest on disk is missing, corrupt or does not match its manifest entry."""


class StageError(GridtrainError, OSError):
    """A copy to or from storage failed; the message names the URL and what to try."""


class ChecksumMismatchError(StageError):
    """A copy's adler32 is not the manifest's; the message names the URL and both checksums."""

    def __init__(self, url: str, expected: str, actual: str, detail: str = "") -> None:
        self.url = url
        self.expected = expected
        self.actual = actual
        message = f"{url}: adler32 is {actual}, the manifest says {expected}"
        self.detail = detail
        super().__init__(f"{message}; {detail}" if detail else message)

    def __reduce__(self) -> tuple[type, tuple[str, str, str, str]]:
        return type(self), (self.url, self.expected, self.actual, self.detail)


class CondorError(GridtrainError, OSError):
    """HTCondor refused or failed a submission, query or removal; the message names the command."""


# -- the parameter server's (gridtrain.ps) -------------------------------------------------------


class ProtocolError(GridtrainError, ConnectionError):
    """The peer broke the wire protocol, or the connection broke in the middle of a frame."""


class PeerClosedError(GridtrainError, EOFError):
    """The peer closed the connection cleanly between two frames."""


class ReadTimeoutError(ProtocolError, TimeoutError):
    """The peer went silent in the middle of a frame (or for too long between frames)."""


class HandshakeDeadlineError(ReadTimeoutError):
    """A peer did not finish the whole handshake within the server's handshake timeout."""


class FrameTooLargeError(ProtocolError):
    """A header announced more bytes than the model signature allows; nothing was allocated."""


class ProtocolVersionError(ProtocolError):
    """Client and server speak different protocol versions."""


class AuthenticationError(ProtocolError):
    """Wrong secret, a forged or replayed frame, or a server that does not know the secret."""


class SignatureMismatchError(ProtocolError):
    """The client's model (tensor shapes and dtypes) is not the one the server holds."""


class ServerBusyError(ProtocolError):
    """The server refused the connection because it is at its connection limit."""


class RemoteError(ProtocolError):
    """The server reported an error it could not recover from on this connection."""


class StaleUpdateError(GridtrainError, RuntimeError):
    """A push was refused because its base version is too old; pull the center and retry.

    ``version`` is the center version at the server when it refused, ``staleness`` how far behind
    the push was.
    """

    def __init__(self, message: str, *, version: int, staleness: int) -> None:
        super().__init__(message)
        self.version = version
        self.staleness = staleness


class CheckpointError(GridtrainError, OSError):
    """A checkpoint is missing, unreadable or does not match the model being served."""


class ExportError(GridtrainError, ValueError):
    """A trained model cannot be exported, or its export does not score as the model does."""


class ApplyError(GridtrainError, ValueError):
    """A file cannot be scored with a run's model (no such tree or branch, no export), or a
    scores file exists and differs from what scoring would write."""
