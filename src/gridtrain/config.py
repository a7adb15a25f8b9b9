"""Configuration: load a YAML file, validate it against the packaged schema, fill defaults.

Edge-free: this module reads one file and returns plain records; it never touches ROOT or HDF5.
The schema (``gridtrain/schemas/config.schema.yaml``, also what Snakemake validates against) is the
single source of defaults. Records that cross module lines are frozen dataclasses.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from importlib import resources
from itertools import pairwise
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gridtrain.errors import ConfigError
from gridtrain.task import Task

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
        message = err.message
        if err.validator == "not" and err.validator_value == {"required": ["label", "class"]}:
            message = "gives both label and class; give one (class: NAME, or label: INDEX)"
        raise ConfigError(
            f"{source}: {where}: {message}; see config/config.yaml for a working example"
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
    """One sample's files; ``label`` is its class index (from ``label`` or ``class``), the name
    of a label branch, or ``None`` (a regression sample without a label: 0 in the shards)."""

    name: str
    files: tuple[str, ...]
    label: int | str | None
    tree: str
    data: bool = False  # collision data: weight 1 unless ``weight`` is given, no ``xsec``
    weight: float | str | None = None  # overrides dataset.weight: a number, branch or expression
    xsec: float | None = None  # cross-section in pb: normalised to dataset.lumi
    aliases: tuple[tuple[str, str], ...] = ()  # (the file's branch name, the config's name)

    def event_weight(self, dataset_weight: str | None) -> float | str:
        """What each event of this sample weighs before normalisation: its own ``weight``, 1
        for data, else ``dataset.weight`` (1 when that is null)."""
        if self.weight is not None:
            return self.weight
        if self.data or dataset_weight is None:
            return 1.0
        return dataset_weight


@dataclass(frozen=True)
class JaggedGroup:
    name: str
    branches: tuple[str, ...]
    length: int
    fill: float = 0.0


@dataclass(frozen=True)
class DerivedFeature:
    """A feature column computed from branches: ``expr`` in the selection's syntax, with
    elements and reductions of jagged branches (``Jet_pt[0]``, ``len(Jet_pt)``); ``fill`` is
    its value where ``expr`` is undefined (``None``: not given)."""

    name: str
    expr: str
    fill: float | None = None


IMAGE_STATISTICS = ("global", "per-pixel")
# Names the shard already uses for other datasets, which a jagged group or an image cannot take.
_RESERVED = ("features", "label", "weight", "event_id", "target")


@dataclass(frozen=True)
class ImageGroup:
    """Fixed-size array branches kept as one tensor: one branch as its own shape, several
    stacked on a last, channel axis; ``statistics`` is ``global`` (per channel) or
    ``per-pixel``."""

    name: str
    branches: tuple[str, ...]
    statistics: str = "global"


@dataclass(frozen=True)
class Reweight:
    """``dataset.reweight``: the variables and their bin edges in which every class is weighted
    to the distribution of ``to`` (a class of the task, or ``flat``) on the training split, each
    weight capped at ``max_weight`` (``gridtrain.data.reweight``)."""

    variables: tuple[str, ...]
    edges: tuple[tuple[float, ...], ...]
    to: str
    max_weight: float

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(len(e) - 1 for e in self.edges)


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
    task: Task = field(default_factory=Task)  # the top-level ``task`` section
    on_bad_target: str = "refuse"  # task.on_bad_target: refuse | drop
    lumi: float | None = None  # pb^-1, for the samples with an xsec
    derived: tuple[DerivedFeature, ...] = ()  # the features (by name) that are expressions
    reweight: Reweight | None = None  # kinematic reweighting (gridtrain.data.reweight)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> DatasetConfig:
        """Build from a whole configuration: its ``dataset`` and ``task`` sections."""
        return cls.from_dict(config["dataset"], config.get("task"))

    @classmethod
    def from_dict(
        cls, section: dict[str, Any], task: Mapping[str, Any] | None = None
    ) -> DatasetConfig:
        """Build from a ``dataset`` section and the config's ``task`` section (``None``: the
        binary task); validates both and fills the schema's defaults."""
        checked = validate_config(
            json.loads(json.dumps({"dataset": section, "task": dict(task or {})}))
        )
        section, task_section = checked["dataset"], checked["task"]
        parsed = Task.from_dict({k: v for k, v in task_section.items() if k != "on_bad_target"})
        tree = section["tree"]
        samples = tuple(_sample(s, parsed, tree, section["lumi"]) for s in section["samples"])
        jagged = tuple(
            JaggedGroup(name, tuple(g["branches"]), int(g["length"]), float(g["fill"]))
            for name, g in section["jagged"].items()
        )
        images = tuple(
            ImageGroup(name, tuple(g["branches"]), g["statistics"])
            for name, g in section["images"].items()
        )
        _check_names([g.name for g in jagged], [g.name for g in images])
        features, derived = _features(section["features"])
        if parsed.kind == "multiclass" and all(isinstance(s.label, int) for s in samples):
            for index, name in enumerate(parsed.classes):
                if all(s.label != index for s in samples):
                    raise ConfigError(
                        f"task.classes: no sample has class {name!r} (label {index}); give one "
                        f"sample class: {name}, or remove the class"
                    )
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
        scalars += ["lumi"]
        return cls(
            samples=samples,
            features=features,
            derived=derived,
            jagged=jagged,
            images=images,
            event_id=tuple(section["event_id"]),
            task=parsed,
            on_bad_target=task_section["on_bad_target"],
            reweight=_reweight(section["reweight"], parsed),
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
        if content["lumi"] is None:
            content.pop("lumi")
        if not content["derived"]:
            content.pop("derived")
        if content["reweight"] is None:
            content.pop("reweight")
        for sample in content["samples"]:
            for key, default in _SAMPLE_DEFAULTS.items():
                if sample[key] == default:
                    sample.pop(key)
        # Binary datasets (every one converted before tasks existed) keep their hash too.
        content["task"] = self.task.to_dict()
        if self.task == Task():
            content.pop("task")
        if self.on_bad_target == "refuse":
            content.pop("on_bad_target")
        blob = json.dumps(content, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()


# Sample keys that datasets converted before them lack: left out of the hash at these values.
_SAMPLE_DEFAULTS: dict[str, Any] = {"data": False, "weight": None, "xsec": None, "aliases": ()}


def _sample(section: dict[str, Any], task: Task, tree: str, lumi: float | None) -> Sample:
    """One sample of the validated ``dataset.samples``; data and cross-sections checked."""
    name = section["name"]
    xsec = section.get("xsec")
    if xsec is not None and section["data"]:
        raise ConfigError(
            f"dataset.samples: sample {name!r} is data: true and has xsec: {xsec:g}; data is "
            "not normalised to a cross-section: remove the xsec, or data: true if it is simulation"
        )
    if xsec is not None and lumi is None:
        raise ConfigError(
            f"dataset.samples: sample {name!r} has xsec: {xsec:g} (pb) but dataset.lumi is not "
            "set; give the integrated luminosity in pb^-1 (dataset.lumi: 59830), or remove xsec"
        )
    weight = section.get("weight")
    aliases = section["aliases"]
    if len(set(aliases.values())) < len(aliases):
        raise ConfigError(
            f"dataset.samples: sample {name!r} aliases {aliases} give one config name to several "
            "branches; map each of the file's branches to a name of its own"
        )
    return Sample(
        name,
        tuple(section["files"]),
        _sample_label(section, task),
        section.get("tree", tree),
        data=section["data"],
        weight=float(weight) if isinstance(weight, int | float) else weight,
        xsec=None if xsec is None else float(xsec),
        aliases=tuple(aliases.items()),
    )


def _sample_label(sample: dict[str, Any], task: Task) -> int | str | None:
    """The sample's label: an index checked against the task's classes, a label branch, or
    ``None`` for a regression sample that names none."""
    name = sample["name"]
    if "class" in sample:
        if not task.is_classifier:
            raise ConfigError(
                f"dataset.samples: sample {name!r} names class {sample['class']!r} but "
                "task.kind is regression; remove it"
            )
        if sample["class"] not in task.classes:
            raise ConfigError(
                f"dataset.samples: sample {name!r} names class {sample['class']!r}, not one of "
                f"task.classes {list(task.classes)}; add it there or correct the name"
            )
        return task.classes.index(sample["class"])
    label: int | str | None = sample.get("label")
    if label is None and task.is_classifier:
        raise ConfigError(
            f"dataset.samples: sample {name!r} has neither label nor class; a {task.kind} "
            f"classifier needs one (class: one of {list(task.classes)}, or label: 0 .. "
            f"{len(task.classes) - 1}, or label: a label branch)"
        )
    if isinstance(label, int) and task.is_classifier and label >= len(task.classes):
        raise ConfigError(
            f"dataset.samples: sample {name!r} has label {label}, but the {task.kind} task has "
            f"{len(task.classes)} classes ({', '.join(task.classes)}): use 0 .. "
            f"{len(task.classes) - 1}, or add the class to task.classes"
        )
    return label


DEFAULT_MAX_WEIGHT = 10.0  # dataset.reweight.max_weight


def _reweight(section: dict[str, Any] | None, task: Task) -> Reweight | None:
    """``dataset.reweight`` with every variable's bins resolved into edges, or None."""
    if section is None:
        return None
    if not task.is_classifier:
        raise ConfigError(
            "dataset.reweight weighs each class to one distribution, and a regression has no "
            "classes: remove dataset.reweight, or make the task binary or multiclass"
        )
    variables, bins = section["variables"], section["bins"]
    for name in variables:
        if variables.count(name) > 1 or name not in bins:
            raise ConfigError(
                f"dataset.reweight: variable {name!r} "
                + ("is named twice" if name in bins else "has no bins")
                + "; give each variable once, with its bins: edges ([0, 30, 60, 120]) or "
                f"{{n: 20, lo: 0, hi: 500}} under dataset.reweight.bins.{name}"
            )
    for name in bins:
        if name not in variables:
            raise ConfigError(
                f"dataset.reweight.bins: {name!r} is not one of the variables "
                f"({', '.join(variables)}); add it to dataset.reweight.variables, or remove it"
            )
    if section["to"] != "flat" and section["to"] not in task.classes:
        raise ConfigError(
            f"dataset.reweight.to: {section['to']!r} is not a class of the task "
            f"({', '.join(task.classes)}); name one of them, or flat"
        )
    edges = tuple(_bin_edges(name, bins[name]) for name in variables)
    cap = float(section.get("max_weight", DEFAULT_MAX_WEIGHT))
    return Reweight(tuple(variables), edges, section["to"], cap)


def _bin_edges(name: str, spec: list[float] | dict[str, Any]) -> tuple[float, ...]:
    """Bin edges from a list of edges, or from ``{n, lo, hi}`` (``log: true``: equal in log)."""
    where = f"dataset.reweight.bins.{name}"
    if isinstance(spec, dict):
        n, lo, hi = int(spec["n"]), float(spec["lo"]), float(spec["hi"])
        log = bool(spec.get("log", False))
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi) or (log and lo <= 0):
            raise ConfigError(
                f"{where}: lo {lo:g} and hi {hi:g} do not make bins: give finite lo < hi"
                + (", both above 0 for log: true" if log else "")
            )
        if log:
            edges = [lo * (hi / lo) ** (i / n) for i in range(n)] + [hi]
        else:
            edges = [lo + (hi - lo) * i / n for i in range(n)] + [hi]
        return tuple(edges)
    edges = [float(e) for e in spec]
    if not all(math.isfinite(e) for e in edges) or any(b <= a for a, b in pairwise(edges)):
        raise ConfigError(
            f"{where}: edges {spec} are not finite and increasing; give them in increasing "
            "order, e.g. [0, 30, 60, 120], or {n: 20, lo: 0, hi: 500}"
        )
    return tuple(edges)


def _features(
    listed: list[str | dict[str, Any]],
) -> tuple[tuple[str, ...], tuple[DerivedFeature, ...]]:
    """The feature columns' names in order, and those that are expressions; a derived name must
    not repeat another feature's (a branch's is checked against the files)."""
    names: list[str] = []
    derived = []
    for item in listed:
        if isinstance(item, str):
            names.append(item)
            continue
        fill = item.get("fill")
        derived.append(
            DerivedFeature(item["name"], item["expr"], None if fill is None else float(fill))
        )
        names.append(item["name"])
    for feature in derived:
        if names.count(feature.name) > 1:
            raise ConfigError(
                f"dataset.features: the derived feature {feature.name!r} ({feature.expr}) has the "
                "name of another feature; give it a name of its own"
            )
    return tuple(names), tuple(derived)


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
