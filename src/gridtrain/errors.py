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
