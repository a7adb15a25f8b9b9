"""The study: the tune section as a record, the study's folder, and the edge to Optuna.

Layer: tune, the only module that creates Optuna storages, samplers and pruners. The study lives
in one journal file on the head node (``JournalStorage`` over a ``JournalFileBackend``); the tuner
is its one writer. Everything else the tuner knows is recomputed from that journal, so a killed
tuner loses nothing: ``ledger`` reads, per parameter set, its attempts and where it stands.

A parameter set is a *search trial*; each training of it is an Optuna trial (an *attempt*),
tagged with the number of its first attempt (``origin``). A failed attempt is retried under the
same origin, so ``tune.trials`` counts parameter sets, never retries.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gridtrain.errors import ConfigError, GridtrainError
from gridtrain.tune.space import SearchSpace

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

STUDY_NAME = "gridtrain"
OBJECTIVES = {"val_loss": ("loss", "minimize"), "val_auc": ("auc", "maximize")}
# User attributes of an attempt.
ORIGIN, ATTEMPT, REASON, COUNTS = "origin", "attempt", "reason", "counts"


class TuneError(GridtrainError, RuntimeError):
    """The study cannot go on; the message says why and how to continue."""


@dataclass(frozen=True)
class TuneConfig:
    """The validated ``tune`` section (defaults come from the schema)."""

    space: SearchSpace
    objective: str
    direction: str
    trials: int
    parallel: int
    workers: int
    sampler: str
    pruner: str
    prune_after: int
    seed: int | None
    retries: int
    run_dir: str

    @classmethod
    def from_dict(cls, section: dict[str, Any]) -> TuneConfig:
        objective = section["objective"]
        direction = section["direction"] or OBJECTIVES[objective][1]
        if direction != OBJECTIVES[objective][1]:
            raise ConfigError(
                f"tune.direction: {direction} contradicts tune.objective {objective} (which is "
                f"{OBJECTIVES[objective][1]}d); drop tune.direction"
            )
        space = SearchSpace.from_dict(section["space"])
        trials = section["trials"]
        if section["sampler"] == "grid":
            size = 1
            for values in space.grid().values():
                size *= len(values)
            if trials > size:
                log.info("the grid has %d points: tune.trials %d lowered to it", size, trials)
                trials = size
        return cls(
            space=space,
            objective=objective,
            direction=direction,
            trials=trials,
            parallel=section["parallel"],
            workers=section["workers"],
            sampler=section["sampler"],
            pruner=section["pruner"],
            prune_after=section["prune_after"],
            seed=section["seed"],
            retries=section["retries"],
            run_dir=section["run_dir"],
        )

    @property
    def metric(self) -> str:
        """The key of the objective in metrics.json (the epoch records add ``val_``)."""
        return OBJECTIVES[self.objective][0]


@dataclass(frozen=True)
class StudyDir:
    """The study's folder: the journal, the config it was started with, one run per attempt."""

    path: Path

    @property
    def journal(self) -> Path:
        return self.path / "study.journal"

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def lock(self) -> Path:
        return self.path / ".tuner.lock"

    @property
    def tuner(self) -> Path:
        return self.path / "tuner.json"

    @property
    def trials_csv(self) -> Path:
        return self.path / "trials.csv"

    @property
    def trials_json(self) -> Path:
        return self.path / "trials.json"

    @property
    def best(self) -> Path:
        return self.path / "best.yaml"

    @property
    def plots(self) -> Path:
        return self.path / "plots"

    def trial(self, number: int) -> Path:
        """The run directory of attempt ``number``: a gridtrain run like any other."""
        return self.path / "trials" / f"{number:04d}"


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Optuna's experimental-feature and sampler notices are not the user's business."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", category=UserWarning, module="optuna")
        yield


def _optuna() -> Any:
    try:
        import optuna
    except ImportError:
        raise ConfigError(
            "gridtrain tune needs Optuna: pip install 'gridtrain[tune]' (or uv sync --extra tune)"
        ) from None
    return optuna


def make_sampler(tune: TuneConfig) -> optuna.samplers.BaseSampler:
    optuna = _optuna()
    if tune.sampler == "random":
        return optuna.samplers.RandomSampler(seed=tune.seed)
    if tune.sampler == "grid":
        return _grid_sampler(optuna)(tune.space.grid(), seed=tune.seed)
    if tune.sampler == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=tune.seed, warn_independent_sampling=False)
    # constant_liar: trials still running count as bad, so parallel asks spread out
    return optuna.samplers.TPESampler(seed=tune.seed, constant_liar=tune.parallel > 1)


def _grid_sampler(optuna: Any) -> Any:
    """Optuna's grid sampler stops the study after its last point, which only works inside
    ``study.optimize``; the tuner stops at the grid's size itself (``TuneConfig.trials``)."""

    class GridSampler(optuna.samplers.GridSampler):  # type: ignore[misc]
        def after_trial(self, *args: Any) -> None:
            del args

    return GridSampler


def make_pruner(tune: TuneConfig) -> optuna.pruners.BasePruner:
    optuna = _optuna()
    if tune.pruner == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=tune.prune_after)
    if tune.pruner == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if tune.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner()
    return optuna.pruners.NopPruner()


def open_study(tune: TuneConfig, files: StudyDir, *, create: bool) -> optuna.Study:
    """The study in ``files.journal``: a new one, or the one a previous tuner left."""
    optuna = _optuna()
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    storage = JournalStorage(JournalFileBackend(str(files.journal)))
    with quiet_optuna():
        if create:
            return optuna.create_study(
                storage=storage,
                study_name=STUDY_NAME,
                direction=tune.direction,
                sampler=make_sampler(tune),
                pruner=make_pruner(tune),
            )
        return optuna.load_study(
            storage=storage,
            study_name=STUDY_NAME,
            sampler=make_sampler(tune),
            pruner=make_pruner(tune),
        )


# -- the ledger: what the journal says about each parameter set ---------------------------------


@dataclass
class SearchTrial:
    """One parameter set and its attempts, oldest first."""

    origin: int
    attempts: list[optuna.trial.FrozenTrial] = field(default_factory=list)

    @property
    def latest(self) -> optuna.trial.FrozenTrial:
        return self.attempts[-1]

    def failures(self) -> int:
        """Failed attempts that count against the retry budget (not those the tuner stopped)."""
        return sum(
            1 for t in self.attempts if t.state.name == "FAIL" and t.user_attrs.get(COUNTS, True)
        )

    def state(self, retries: int) -> str:
        """complete, pruned, failed (for good), retry (to be attempted again) or running."""
        latest = self.latest
        name = latest.state.name
        if name == "COMPLETE":
            return "complete"
        if name == "PRUNED":
            return "pruned"
        if name == "FAIL":
            final = latest.user_attrs.get("final", False) or self.failures() > retries
            return "failed" if final else "retry"
        return "running"  # RUNNING or WAITING (asked again soon)


def origin_of(trial: optuna.trial.FrozenTrial) -> int:
    return int(trial.user_attrs.get(ORIGIN, trial.number))


def ledger(study: optuna.Study) -> dict[int, SearchTrial]:
    """Every parameter set of the study, by the number of its first attempt."""
    found: dict[int, SearchTrial] = {}
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        origin = origin_of(trial)
        found.setdefault(origin, SearchTrial(origin)).attempts.append(trial)
    return found
