"""What a study leaves in its folder: trials.csv, trials.json, best.yaml, plots, a summary.

Layer: tune, outputs. Everything is computed from the study (the journal) and the config the
study was started with, so ``--resume`` and a finished study write the same files. Plots go
through Optuna's matplotlib backend; none needs TensorFlow.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import TYPE_CHECKING, Any

import yaml

from gridtrain.files import atomic_path, write_text
from gridtrain.tune.space import apply
from gridtrain.tune.study import ATTEMPT, REASON, StudyDir, TuneConfig, ledger, origin_of

if TYPE_CHECKING:
    import optuna

log = logging.getLogger(__name__)

MIN_TRIALS_FOR_IMPORTANCE = 4  # completed trials; fewer give an importance that means nothing
COLUMNS = ["number", "origin", "attempt", "state", "value", "epochs", "wall_time_s"]


def trial_rows(study: optuna.Study, tune: TuneConfig) -> list[dict[str, Any]]:
    """One record per attempt: params (config values), state, objective, epochs, wall time."""
    rows = []
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if trial.state.name == "WAITING":
            continue
        value = trial.value if trial.state.name == "COMPLETE" else _last_intermediate(trial)
        wall = trial.user_attrs.get("wall_time_s")
        if wall is None and trial.datetime_start and trial.datetime_complete:
            wall = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 1)
        rows.append(
            {
                "number": trial.number,
                "origin": origin_of(trial),
                "attempt": int(trial.user_attrs.get(ATTEMPT, 0)) + 1,
                "state": trial.state.name.lower(),
                "value": value,
                "epochs": trial.user_attrs.get("epochs", len(trial.intermediate_values)),
                "wall_time_s": wall,
                "params": tune.space.decode(trial.params),
                "reason": trial.user_attrs.get(REASON, ""),
                "run_dir": trial.user_attrs.get("run_dir", ""),
            }
        )
    return rows


def _last_intermediate(trial: optuna.trial.FrozenTrial) -> float | None:
    if not trial.intermediate_values:
        return None
    return trial.intermediate_values[max(trial.intermediate_values)]


def best_trial(study: optuna.Study) -> optuna.trial.FrozenTrial | None:
    complete = [t for t in study.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
    return study.best_trial if complete else None


def best_config(
    config: dict[str, Any], tune: TuneConfig, trial: optuna.trial.FrozenTrial
) -> dict[str, Any]:
    """The study's config with the best parameters in its train section and no tune section:
    ready for ``gridtrain train -c best.yaml`` (train.workers and run_dir stay the config's)."""
    best = {key: value for key, value in config.items() if key != "tune"}
    best["train"] = apply(config.get("train") or {}, tune.space.decode(trial.params))
    return best


def write_outputs(
    study: optuna.Study, tune: TuneConfig, files: StudyDir, config: dict[str, Any]
) -> None:
    rows = trial_rows(study, tune)
    keys = sorted({key for row in rows for key in row["params"]})
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow([*COLUMNS, *keys, "reason", "run_dir"])
    for row in rows:
        params = [json.dumps(row["params"][k]) if k in row["params"] else "" for k in keys]
        writer.writerow([row[c] for c in COLUMNS] + params + [row["reason"], row["run_dir"]])
    write_text(files.trials_csv, text.getvalue())
    best = best_trial(study)
    summary = {
        "objective": tune.objective,
        "direction": tune.direction,
        "trials": tune.trials,
        "best": None
        if best is None
        else {"number": best.number, "value": best.value, "params": tune.space.decode(best.params)},
        "attempts": rows,
    }
    write_text(files.trials_json, json.dumps(summary, indent=1, default=str) + "\n")
    if best is not None:
        text_config = yaml.safe_dump(best_config(config, tune, best), sort_keys=False)
        header = f"# gridtrain tune: trial {best.number}, {tune.objective} {best.value:.6g}\n"
        write_text(files.best, header + text_config)
    write_plots(study, tune, files)


def write_plots(study: optuna.Study, tune: TuneConfig, files: StudyDir) -> list[str]:
    """Optimisation history; intermediate values (pruned beside complete); importances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from optuna.visualization import matplotlib as plots

    files.plots.mkdir(parents=True, exist_ok=True)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    wanted: list[tuple[str, Any]] = []
    if complete:
        wanted.append(
            (
                "optimization_history",
                lambda: plots.plot_optimization_history(study, target_name=tune.objective),
            )
        )
    if any(t.intermediate_values for t in trials):
        wanted.append(("intermediate_values", lambda: plots.plot_intermediate_values(study)))
    if len(tune.space.params) >= 2 and len(complete) >= MIN_TRIALS_FOR_IMPORTANCE:
        wanted.append(
            (
                "param_importances",
                lambda: plots.plot_param_importances(study, target_name=tune.objective),
            )
        )
    written = []
    for name, draw in wanted:
        try:
            axes = draw()
        except (ValueError, RuntimeError) as err:  # e.g. importances of a parameter never varied
            log.info("plot %s skipped: %s", name, err)
            continue
        figure = getattr(axes, "figure", None) or axes.flat[0].figure
        figure.set_size_inches(8, 5)
        figure.tight_layout()
        path = files.plots / f"{name}.png"
        with atomic_path(path) as tmp:
            figure.savefig(tmp, dpi=100, format="png")
        plt.close(figure)
        written.append(name)
    return written


def counts(study: optuna.Study, tune: TuneConfig) -> dict[str, int]:
    """Parameter sets by where they stand: complete, pruned, failed, running, retry."""
    found = {"complete": 0, "pruned": 0, "failed": 0, "running": 0, "retry": 0}
    for search in ledger(study).values():
        found[search.state(tune.retries)] += 1
    return found


def progress_line(study: optuna.Study, tune: TuneConfig, wall: float) -> str:
    n = counts(study, tune)
    done = n["complete"] + n["pruned"] + n["failed"]
    parts = [
        f"trials {done}/{tune.trials}",
        f"running {n['running']}",
        f"pruned {n['pruned']}",
        f"failed {n['failed']}",
    ]
    best = best_trial(study)
    if best is not None:
        parts.append(f"best {tune.objective} {best.value:.4f} (trial {best.number})")
    parts.append(f"{wall:.0f} s")
    return "tune: " + " | ".join(parts)


def summary(study: optuna.Study, tune: TuneConfig, files: StudyDir, wall: float) -> str:
    n = counts(study, tune)
    attempts = len([t for t in study.get_trials(deepcopy=False) if t.state.name != "WAITING"])
    lines = [
        f"gridtrain tune: {n['complete'] + n['pruned'] + n['failed']} of {tune.trials} trials "
        f"({n['complete']} complete, {n['pruned']} pruned, {n['failed']} failed; "
        f"{attempts} trainings) in {wall:.0f} s"
    ]
    best = best_trial(study)
    if best is None:
        lines.append("  no trial completed; see the reasons in " + str(files.trials_csv))
        return "\n".join(lines)
    lines.append(f"  best: trial {best.number}, {tune.objective} {best.value:.4f}")
    for key, value in tune.space.decode(best.params).items():
        lines.append(f"    {key}: {json.dumps(value)}")
    lines.append(
        f"  results in {files.path} (trials.csv, trials.json, best.yaml, plots/); train the best "
        f"with: gridtrain train -c {files.best}"
    )
    return "\n".join(lines)
