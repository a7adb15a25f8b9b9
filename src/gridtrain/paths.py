"""Local paths and URLs of data: which a location is, and a shard's place under a dataset's.

Layer: foundation, no gridtrain imports, no I/O. A dataset or a shard lives in a local folder or
behind a URL (root://, https://, osdf://); manifests name shards relative to the manifest.
"""

from __future__ import annotations

import os


def is_url(location: str | os.PathLike[str]) -> bool:
    """A ``scheme://`` location (root://, https://, osdf://), as opposed to a local path."""
    return "://" in os.fspath(location)


def below(base: str, relative: str) -> str:
    """``relative`` (a shard's manifest path) under ``base`` (a folder or URL); an absolute path
    or a URL is returned as it is."""
    if is_url(relative) or os.path.isabs(relative):
        return relative
    if is_url(base):
        return f"{base.rstrip('/')}/{relative}"
    return os.path.join(base, relative)
