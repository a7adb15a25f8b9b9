"""The error hierarchy shared by every layer.

Each error subclasses the built-in it refines, so callers that know nothing of gridtrain can still
catch ``ValueError`` or ``OSError``; ``GridtrainError`` marks them for the CLI, which alone turns
them into one-line messages and exit codes. Messages name the file, URL or value and the way out.
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
