"""The search space: the config's ``tune.space`` as records, checked, and turned into trainings.

Layer: tune, pure logic. Keys are dotted paths into the ``train`` section (``learning_rate``,
``algorithm.every``, ``model.params.hidden``). Nothing here starts a process or imports Optuna:
``suggest`` takes any object with Optuna's ``suggest_*`` methods, so every contradiction in a
space is found before the first training starts.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from gridtrain.errors import ConfigError

KINDS = ("float", "int", "categorical")
MODEL_PARAMS = "model.params."
# Set by the tuner itself for every trial, never searched.
NOT_TUNABLE = {
    "workers": "set tune.workers (workers per trial) instead",
    "run_dir": "every trial gets its own run directory under tune.run_dir",
    "executor": "set train.executor for every trial",
}
EXAMPLE = "learning_rate: {type: float, low: 1.0e-4, high: 1.0e-1, log: true}"


class Suggester(Protocol):
    """What ``suggest`` needs of an Optuna trial."""

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...

    def suggest_int(
        self, name: str, low: int, high: int, *, step: int = 1, log: bool = False
    ) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class Param:
    """One searched key: its kind, range or choices, and when it applies."""

    key: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    log: bool = False
    choices: tuple[Any, ...] = ()
    when: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    @property
    def encoded(self) -> bool:
        """Optuna stores categorical choices as None, bool, int, float or str: lists go as JSON."""
        return any(not isinstance(c, str | int | float | bool | None) for c in self.choices)

    def optuna_choices(self) -> tuple[Any, ...]:
        return tuple(json.dumps(c) for c in self.choices) if self.encoded else self.choices

    def decode(self, value: Any) -> Any:
        """The config value of what Optuna stored."""
        return json.loads(value) if self.encoded else value

    def candidates(self) -> tuple[Any, ...]:
        """The values to check before any training: the ends of a range, or every choice."""
        if self.kind == "categorical":
            return self.choices
        if self.kind == "int":
            return (int(self.low or 0), int(self.high or 0))
        return (self.low, self.high)

    def grid(self) -> tuple[Any, ...]:
        """Every value the grid sampler tries."""
        if self.kind == "categorical":
            return self.optuna_choices()
        assert self.low is not None
        assert self.high is not None
        if self.kind == "int":
            return tuple(range(int(self.low), int(self.high) + 1, int(self.step or 1)))
        if self.step is None:
            raise ConfigError(
                f"tune.space.{self.key}: the grid sampler needs a step for a float, or choices; "
                f"e.g. {{type: float, low: {self.low}, high: {self.high}, step: 0.1}}"
            )
        count = math.floor((self.high - self.low) / self.step + 1e-9) + 1
        return tuple(round(self.low + i * self.step, 12) for i in range(count))


@dataclass(frozen=True)
class SearchSpace:
    """The parameters, parents (the keys others are conditional on) first."""

    params: tuple[Param, ...]

    @classmethod
    def from_dict(cls, space: Mapping[str, Any]) -> SearchSpace:
        """Build from ``tune.space``; a contradiction is a ``ConfigError`` naming the key."""
        if not space:
            raise ConfigError(f"tune.space is empty: name a train key to search, e.g. {EXAMPLE}")
        params = {key: _param(key, dict(spec)) for key, spec in space.items()}
        for param in params.values():
            _check_conditions(param, params)
        return cls(tuple(_parents_first(params)))

    def suggest(self, trial: Suggester) -> dict[str, Any]:
        """The config values of one trial, by key; parameters whose condition fails are left out."""
        values: dict[str, Any] = {}
        for param in self.params:
            if not all(values.get(key, _MISSING) in allowed for key, allowed in param.when.items()):
                continue
            if param.kind == "float":
                assert param.low is not None
                assert param.high is not None
                value: Any = trial.suggest_float(
                    param.key, param.low, param.high, step=param.step, log=param.log
                )
            elif param.kind == "int":
                value = trial.suggest_int(
                    param.key,
                    int(param.low or 0),
                    int(param.high or 0),
                    step=int(param.step or 1),
                    log=param.log,
                )
            else:
                value = param.decode(trial.suggest_categorical(param.key, param.optuna_choices()))
            values[param.key] = value
        return values

    def decode(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        """Config values from a finished trial's Optuna params."""
        by_key = {param.key: param for param in self.params}
        return {key: by_key[key].decode(v) if key in by_key else v for key, v in stored.items()}

    def grid(self) -> dict[str, tuple[Any, ...]]:
        return {param.key: param.grid() for param in self.params}

    def check(self, config: Mapping[str, Any], validate: Any, check_model: Any) -> None:
        """Every candidate value in the train section: accepted by the schema and the model.

        ``validate(config)`` validates a whole config (raising ``ConfigError``);
        ``check_model(name, params)`` checks a model's parameters. Both come from the caller, so
        this module stays pure.
        """
        train = config.get("train") or {}
        for param in self.params:
            _check_key(param.key, train)
            for condition in self._conditions(param):
                for value in param.candidates():
                    section = apply(train, {**condition, param.key: value})
                    where = f"tune.space.{param.key}: {json.dumps(value)}"
                    try:
                        validate({**config, "train": section})
                        model = section.get("model") or {}
                        if param.key.startswith("model."):
                            check_model(model.get("name", "mlp"), model.get("params") or {})
                    except ConfigError as err:
                        raise ConfigError(f"{where}: {err}") from None

    def _conditions(self, param: Param) -> Iterator[dict[str, Any]]:
        keys = list(param.when)
        for values in itertools.product(*(param.when[key] for key in keys)):
            yield dict(zip(keys, values, strict=True))


_MISSING = object()


def apply(train: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the train section with each dotted key set to its value."""
    section = copy.deepcopy(dict(train))
    for key, value in values.items():
        node = section
        *parents, last = key.split(".")
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                child = {}
                node[part] = child
            node = child
        node[last] = copy.deepcopy(value)
    return section


def _param(key: str, spec: dict[str, Any]) -> Param:
    kind = spec.get("type")
    where = f"tune.space.{key}"
    if kind not in KINDS:
        raise ConfigError(f"{where}: type is {kind!r}; choose one of {', '.join(KINDS)}")
    first = key.split(".", maxsplit=1)[0]
    if first in NOT_TUNABLE:
        raise ConfigError(f"{where}: train.{first} is not searched; {NOT_TUNABLE[first]}")
    when = {k: tuple(v) if isinstance(v, list) else (v,) for k, v in spec.get("when", {}).items()}
    if kind == "categorical":
        extra: list[str] = [name for name in ("low", "high", "step") if name in spec]
        if spec.get("log"):
            extra.append("log")
        if extra:
            raise ConfigError(f"{where}: a categorical takes choices, not {', '.join(extra)}")
        choices = tuple(spec.get("choices") or ())
        if not choices:
            raise ConfigError(f"{where}: no choices; e.g. {{type: categorical, choices: [a, b]}}")
        encoded = [json.dumps(c, sort_keys=True) for c in choices]
        if len(set(encoded)) != len(encoded):
            raise ConfigError(f"{where}: choices {json.dumps(list(choices))} repeat a value")
        return Param(key, kind, choices=choices, when=when)
    if "choices" in spec:
        raise ConfigError(
            f"{where}: a {kind} takes low and high, not choices; or make it categorical"
        )
    if "low" not in spec or "high" not in spec:
        raise ConfigError(f"{where}: a {kind} needs low and high, e.g. {EXAMPLE}")
    low, high, step, log = spec["low"], spec["high"], spec.get("step"), bool(spec.get("log"))
    if kind == "int" and not all(
        isinstance(v, int) and not isinstance(v, bool) for v in (low, high, step or 1)
    ):
        raise ConfigError(f"{where}: an int needs whole numbers for low, high and step")
    if not low < high:
        raise ConfigError(f"{where}: low ({low}) must be below high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log scale needs low > 0 (it is {low})")
    if log and step is not None:
        raise ConfigError(f"{where}: step and log exclude each other; drop one")
    if step is not None and step > high - low:
        raise ConfigError(f"{where}: step {step} is wider than the range [{low}, {high}]")
    return Param(key, kind, float(low), float(high), step, log, when=when)


def _check_conditions(param: Param, params: Mapping[str, Param]) -> None:
    for key, allowed in param.when.items():
        where = f"tune.space.{param.key}.when.{key}"
        parent = params.get(key)
        if parent is None or parent.kind != "categorical" or key == param.key:
            raise ConfigError(f"{where}: a condition names another categorical key of tune.space")
        missing = [v for v in allowed if v not in parent.choices]
        if missing:
            raise ConfigError(
                f"{where}: {json.dumps(missing)} not among its choices "
                f"{json.dumps(list(parent.choices))}; the parameter would never be searched"
            )


def _parents_first(params: Mapping[str, Param]) -> list[Param]:
    ordered: list[Param] = []
    placed: set[str] = set()
    pending = dict(params)
    while pending:
        ready = [p for p in pending.values() if set(p.when) <= placed]
        if not ready:
            raise ConfigError(
                f"tune.space: the conditions of {', '.join(sorted(pending))} depend on one another"
            )
        for param in ready:
            ordered.append(param)
            placed.add(param.key)
            del pending[param.key]
    return ordered


def _check_key(key: str, train: Mapping[str, Any]) -> None:
    """The key must name a setting of the (defaults-filled) train section."""
    if key.startswith(MODEL_PARAMS) and len(key) > len(MODEL_PARAMS):
        return  # the model's own check names an unknown parameter
    node: Any = train
    walked = "train"
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            options = ", ".join(sorted(node)) if isinstance(node, Mapping) else "no keys"
            hint = "; model parameters go as model.params.NAME" if walked == "train.model" else ""
            raise ConfigError(
                f"tune.space.{key}: there is no train.{key} ({walked} has {options}){hint}"
            )
        walked += f".{part}"
        node = node[part]
    if isinstance(node, Mapping) and key != "model.params":
        raise ConfigError(f"tune.space.{key}: train.{key} is a section; name one of its keys")
    if key == "model.params":
        raise ConfigError(f"tune.space.{key}: name one parameter, model.params.NAME")
