"""Configuration: load a YAML file, validate it against the packaged schema, fill defaults.

Edge-free: this module reads one file and returns plain records; it never touches ROOT or HDF5.
The schema (``gridtrain/schemas/config.schema.yaml``, also what Snakemake validates against) is the
single source of defaults. Records that cross module lines are frozen dataclasses.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gridtrain.errors import ConfigError

EXAMPLE = """\
dataset:
  tree: events
  samples:
    - {name: signal, files: [data/toy/signal.root], label: 1}
    - {name: background, files: [data/toy/background.root], label: 0}
  features: [jet_pt, jet_mass]
  jagged:
    constituents: {branches: [part_pt, part_deta, part_dphi], length: 50}
"""


def load_schema() -> dict[str, Any]:
    text = resources.files("gridtrain").joinpath("schemas/config.schema.yaml").read_text()
    schema: dict[str, Any] = yaml.safe_load(text)
    return schema


def _with_defaults(validator_class: Any) -> Any:
    # jsonschema validates but does not fill defaults; this extension fills them while validating.
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator: Any, properties: Any, instance: Any, schema: Any) -> Any:
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = json.loads(json.dumps(subschema["default"]))
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def validate_config(config: dict[str, Any], source: str = "config") -> dict[str, Any]:
    """Validate ``config`` in place (defaults filled) and return it; raise ``ConfigError``."""
    validator = _with_defaults(jsonschema.Draft202012Validator)(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join(str(p) for p in err.absolute_path) or "(top level)"
        raise ConfigError(
            f"{source}: {where}: {err.message}; see config/config.yaml for a working example"
        )
    return config


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and validate a YAML configuration file."""
    p = Path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{p}: no such configuration file; start from config/config.yaml"
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"{p}: expected a mapping with a 'dataset' section, for example:\n{EXAMPLE}"
        )
    return validate_config(raw, str(p))


@dataclass(frozen=True)
class Sample:
    name: str
    files: tuple[str, ...]
    label: int | str
    tree: str


@dataclass(frozen=True)
class JaggedGroup:
    name: str
    branches: tuple[str, ...]
    length: int
    fill: float = 0.0


IMAGE_STATISTICS = ("global", "per-pixel")
# Names the shard already uses for other datasets, which a jagged group or an image cannot take.
_RESERVED = ("features", "label", "weight", "event_id")


@dataclass(frozen=True)
class ImageGroup:
    """Fixed-size array branches kept as one tensor: one branch as its own shape, several
    stacked on a last, channel axis; ``statistics`` is ``global`` (per channel) or
    ``per-pixel``."""

    name: str
    branches: tuple[str, ...]
    statistics: str = "global"


@dataclass(frozen=True)
class DatasetConfig:
    """The ``dataset`` section: everything conversion needs, and nothing about machines."""

    name: str
    samples: tuple[Sample, ...]
    features: tuple[str, ...]
    jagged: tuple[JaggedGroup, ...]
    weight: str | None
    event_id: tuple[str, ...]
    selection: str | None
    validation_fraction: float
    shard_events: int
    chunk_events: int
    step_events: int
    codec: str
    seed: int
    outdir: str
    files_per_job: int | None = None  # None: one conversion job (gridtrain.data.groups)
    images: tuple[ImageGroup, ...] = ()

    @classmethod
    def from_dict(cls, section: dict[str, Any]) -> DatasetConfig:
        """Build from a ``dataset`` section; validates it and fills the schema's defaults."""
        section = validate_config({"dataset": json.loads(json.dumps(section))})["dataset"]
        tree = section["tree"]
        samples = tuple(
            Sample(s["name"], tuple(s["files"]), s["label"], s.get("tree", tree))
            for s in section["samples"]
        )
        jagged = tuple(
            JaggedGroup(name, tuple(g["branches"]), int(g["length"]), float(g["fill"]))
            for name, g in section["jagged"].items()
        )
        images = tuple(
            ImageGroup(name, tuple(g["branches"]), g["statistics"])
            for name, g in section["images"].items()
        )
        _check_names([g.name for g in jagged], [g.name for g in images])
        if not section["features"] and not jagged and not images:
            raise ConfigError(
                "dataset: none of 'features', 'jagged' and 'images' names a branch; "
                f"there is nothing to train on. For example:\n{EXAMPLE}"
            )
        if section["files_per_job"] is not None and not section["event_id"]:
            raise ConfigError(
                "dataset.files_per_job needs dataset.event_id branches: without them an event's "
                "id is its entry number within one job's files, which repeats across jobs; "
                "name the id branches, or set files_per_job: null"
            )
        scalars = ["name", "weight", "selection", "validation_fraction", "shard_events"]
        scalars += ["chunk_events", "step_events", "codec", "seed", "outdir", "files_per_job"]
        return cls(
            samples=samples,
            features=tuple(section["features"]),
            jagged=jagged,
            images=images,
            event_id=tuple(section["event_id"]),
            **{key: section[key] for key in scalars},
        )

    def content_hash(self) -> str:
        """A hash of everything that determines the converted arrays (not where they go)."""
        content = asdict(self)
        content.pop("outdir")
        # Datasets converted before these keys existed keep their hash.
        if content["files_per_job"] is None:
            content.pop("files_per_job")
        if not content["images"]:
            content.pop("images")
        blob = json.dumps(content, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


def _check_names(jagged: list[str], images: list[str]) -> None:
    """Jagged groups and images become shard datasets and model inputs: their names must differ
    from each other and from what the shard already holds."""
    seen: set[str] = set()
    for kind, name in [("jagged group", n) for n in jagged] + [("image", n) for n in images]:
        if name in _RESERVED or name.endswith("_count") or name in seen:
            raise ConfigError(
                f"dataset: {kind} name {name!r} clashes with another shard dataset "
                f"({', '.join(_RESERVED)}, '<group>_count', or another group or image); "
                "rename it"
            )
        seen.add(name)


@dataclass(frozen=True)
class StageConfig:
    """The ``stage`` section: where rule ``stage`` pushes, and how copies run."""

    url: str | None
    parallel: int
    parallel_chunks: int
    chunk_mib: int
    timeout: float
    retries: int
    backoff: float

    @classmethod
    def from_dict(cls, section: dict[str, Any]) -> StageConfig:
        """Build from a ``stage`` section (may be empty); validates it and fills the defaults."""
        section = _validate_section("stage", section)
        return cls(**section)


def _validate_section(name: str, section: dict[str, Any]) -> dict[str, Any]:
    """Validate one top-level section against its part of the schema; defaults filled."""
    section = json.loads(json.dumps(section))
    schema = load_schema()["properties"][name]
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(section), key=lambda e: list(e.absolute_path))
    if errors:
        err = errors[0]
        where = ".".join([name, *(str(p) for p in err.absolute_path)])
        raise ConfigError(f"{where}: {err.message}; see config/config.yaml for a working example")
    validated: dict[str, Any] = section
    return validated
