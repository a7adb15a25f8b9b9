"""The dataset manifest: the one file training reads to know a converted dataset.

Records only (dataclasses and JSON); writing is atomic (temporary name, fsync, rename). Shard paths
are relative to the manifest's directory, or root:// URLs, and are kept as strings: a URL never
passes through ``os.path``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gridtrain.checksum import adler32_file
from gridtrain.errors import ShardError
from gridtrain.files import write_text
from gridtrain.paths import below, is_url

MANIFEST_NAME = "manifest.json"
FORMAT = "gridtrain-manifest"
FORMAT_VERSION = 1
SPLITS = ("train", "validation")


@dataclass(frozen=True)
class ShardEntry:
    path: str
    events: int
    bytes: int
    adler32: str


@dataclass(frozen=True)
class SourceEntry:
    sample: str
    path: str
    tree: str
    label: int | str
    entry_start: int
    entry_stop: int
    selected: int
    kind: str = "TTree"  # or "RNTuple"


@dataclass
class Manifest:
    """Everything about a converted dataset that training and staging need."""

    name: str
    gridtrain_version: str
    config_hash: str
    codec: str
    chunk_events: int
    features: list[str]
    jagged: list[dict[str, Any]]
    event_id: list[str]
    weight: str | None
    split: dict[str, Any]
    stats: dict[str, Any]
    sources: list[SourceEntry]
    shards: dict[str, list[ShardEntry]] = field(default_factory=dict)
    # name, branches, shape (with the channel axis when several branches), statistics
    images: list[dict[str, Any]] = field(default_factory=list)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def events(self, split: str) -> int:
        return sum(s.events for s in self.shards.get(split, []))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        data = dict(data)
        data["sources"] = [SourceEntry(**s) for s in data["sources"]]
        data["shards"] = {k: [ShardEntry(**s) for s in v] for k, v in data["shards"].items()}
        return cls(**data)


def write_manifest(manifest: Manifest, directory: str | Path) -> Path:
    final = Path(directory) / MANIFEST_NAME
    write_text(final, manifest.to_json())
    return final


def load_manifest(path: str | Path) -> Manifest:
    """Load ``manifest.json`` (or the folder holding it); raise ``ShardError`` naming the file."""
    p = Path(path)
    if p.is_dir():
        p = p / MANIFEST_NAME
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise ShardError(f"{p}: no manifest; run 'gridtrain convert' first") from None
    except json.JSONDecodeError as err:
        raise ShardError(f"{p}: not valid JSON ({err}); re-run 'gridtrain convert'") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ShardError(f"{p}: not a gridtrain manifest (no format: {FORMAT!r})")
    if data.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{p}: manifest format version {data.get('format_version')} is not "
            f"{FORMAT_VERSION}; convert again with this gridtrain"
        )
    try:
        return Manifest.from_dict(data)
    except (KeyError, TypeError) as err:
        raise ShardError(
            f"{p}: manifest is incomplete ({err}); re-run 'gridtrain convert'"
        ) from None


def verify_local(manifest: Manifest, directory: str | Path) -> list[str]:
    """Check every local shard's size and adler32; return one problem line per bad shard."""
    problems = []
    for split, entries in manifest.shards.items():
        for entry in entries:
            location = below(str(directory), entry.path)
            if is_url(location):
                continue
            try:
                size = os.path.getsize(location)
            except FileNotFoundError:
                problems.append(f"{location}: missing ({split} shard)")
                continue
            if size != entry.bytes:
                problems.append(f"{location}: {size} bytes, manifest says {entry.bytes}")
                continue
            actual = adler32_file(location)
            if actual != entry.adler32:
                problems.append(f"{location}: adler32 {actual}, manifest says {entry.adler32}")
    return problems
