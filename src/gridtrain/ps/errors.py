"""Errors raised by the parameter-server layer.

Layer: ps. Each error subclasses ``GridtrainError`` and the built-in it refines, so code that knows
nothing of gridtrain can still catch ``ConnectionError``, ``EOFError``, ``TimeoutError`` or
``OSError``. Messages name the value that was wrong and the way out. This module defines classes
only; it never raises by itself.
"""

from __future__ import annotations

from gridtrain.errors import GridtrainError


class ProtocolError(GridtrainError, ConnectionError):
    """The peer broke the wire protocol, or the connection broke in the middle of a frame."""


class PeerClosedError(GridtrainError, EOFError):
    """The peer closed the connection cleanly between two frames."""


class ReadTimeoutError(ProtocolError, TimeoutError):
    """The peer went silent in the middle of a frame (or for too long between frames)."""


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
