"""Start, resume and stop trainings exactly as the command line does.

Layer: serve. A submission is validated against the schema here (every problem, by key), then
handed to ``gridtrain train -c CONFIG --run-dir RUN_DIR --detach`` in a new process: the same
checks, the same prepared run directory and the same detached driver as on the command line,
and no TensorFlow in the service. Cancel is ``gridtrain cancel``'s own function.

What a config may read is checked first (``confine``: data inside --root and --allow-data, site
profiles built in or from there, storage below --allow-stage). A submitted config cannot grow in
the service: YAML anchors and aliases are refused (an alias
bomb of a few hundred bytes expands to gigabytes), nesting is bounded, and a 422 carries at most
``MAX_PROBLEMS`` problems of at most ``MAX_MESSAGE`` characters each.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from gridtrain.config import load_schema, validate_config
from gridtrain.errors import ConfigError, GridtrainError
from gridtrain.rundir import RunDir
from gridtrain.serve.confine import confine, given_paths
from gridtrain.serve.schemas import ConfigProblem
from gridtrain.serve.security import check_model
from gridtrain.serve.settings import ServeSettings, check_run_name
from gridtrain.serve.store import phase

START_TIMEOUT = 300.0  # the CLI builds the model once before it detaches
MAX_PROBLEMS = 50  # a 422 names at most this many problems, then says how many more there are
MAX_MESSAGE = 300  # characters of one problem's message (values echoed in it are cut to fit)
MAX_KEY = 200
MAX_DEPTH = 32  # nesting of a config; the schema's deepest key is a handful of levels down


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class InvalidConfig(ConfigError):
    """A config with problems; ``problems`` names each key (at most MAX_PROBLEMS, each short)."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        kept = [
            ConfigProblem(
                key=None if p.key is None else _cut(p.key, MAX_KEY),
                message=_cut(" ".join(p.message.split()), MAX_MESSAGE),
            )
            for p in problems[:MAX_PROBLEMS]
        ]
        if len(problems) > MAX_PROBLEMS:
            more = len(problems) - MAX_PROBLEMS
            kept.append(ConfigProblem(key=None, message=f"and {more} more problems not shown"))
        self.problems = kept
        super().__init__("; ".join(f"{p.key or '(config)'}: {p.message}" for p in kept))


class _NoAliasLoader(yaml.SafeLoader):
    """PyYAML's safe loader without anchors and aliases: a config is a tree, never a graph."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None,
                None,
                "YAML anchors and aliases (&name, *name) are not accepted by gridtrain serve; "
                "write the values out",
                event.start_mark,
            )
        return super().compose_node(parent, index)


def _too_deep(value: Any) -> bool:
    """Whether ``value`` nests lists and mappings deeper than MAX_DEPTH (without recursing)."""
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for node in level
            if isinstance(node, dict | list)
            for child in (node.values() if isinstance(node, dict) else node)
        ]
        if not level:
            return False
    return any(isinstance(node, dict | list) for node in level)


class RunExists(ConfigError, FileExistsError):
    """A run of that name is there already."""


class StartFailed(GridtrainError, RuntimeError):
    """``gridtrain train --detach`` refused the run; the message is its own."""


class RunFinished(GridtrainError, FileExistsError):
    """A finished run is not resumed: that would rewrite its model.keras and metrics.json."""


def parse_config(config: dict[str, Any] | None, text: str | None) -> dict[str, Any]:
    """The config from a JSON object or YAML text; ``InvalidConfig`` when it is neither."""
    if (config is None) == (text is None):
        raise InvalidConfig([ConfigProblem(key=None, message="give either config or yaml")])
    if text is not None:
        try:
            config = yaml.load(text, Loader=_NoAliasLoader)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark is not None else ""
            message = f"not valid YAML{where}: {str(err).splitlines()[0]}"
            raise InvalidConfig([ConfigProblem(key=None, message=message)]) from None
        except RecursionError:  # the composer recurses once per level
            raise _nested_too_deep() from None
    if not isinstance(config, dict):
        message = "the config must be a mapping with a 'dataset' section"
        raise InvalidConfig([ConfigProblem(key=None, message=message)])
    if _too_deep(config):
        raise _nested_too_deep()
    return config


def _nested_too_deep() -> InvalidConfig:
    message = f"the config nests lists and mappings more than {MAX_DEPTH} levels deep"
    return InvalidConfig([ConfigProblem(key=None, message=message)])


def check_config(config: dict[str, Any], settings: ServeSettings) -> dict[str, Any]:
    """The config with defaults filled; ``InvalidConfig`` naming every key that is wrong."""
    validator = jsonschema.Draft202012Validator(load_schema())
    problems = [
        ConfigProblem(key=".".join(str(p) for p in err.absolute_path) or None, message=err.message)
        for err in sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    ]
    if problems:
        raise InvalidConfig(problems)
    given = given_paths(config)
    try:
        config = validate_config(config, "config")
    except ConfigError as err:
        raise InvalidConfig([ConfigProblem(key=None, message=str(err))]) from None
    problems = confine(config, settings, given)
    try:
        check_model(config, settings.allow_models)
    except ConfigError as err:
        problems.append(ConfigProblem(key="train.model.name", message=str(err)))
    if problems:
        raise InvalidConfig(problems)
    return config


def _gridtrain(*args: str, workdir: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gridtrain", "-q", *args],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=START_TIMEOUT,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def _failure(result: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in (result.stderr or result.stdout).splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return _cut((errors or lines or [f"exit status {result.returncode}"])[-1], 4 * MAX_MESSAGE)


def submit(name: str, config: dict[str, Any], settings: ServeSettings) -> RunDir:
    """Prepare ``ROOT/name`` and start its detached driver; the config is checked first."""
    check_run_name(name)
    config = check_config(config, settings)
    files = RunDir(settings.root.resolve() / name)
    try:
        files.path.mkdir(parents=True)
    except FileExistsError:
        raise RunExists(f"run {name!r} exists already under {settings.root}") from None
    try:
        files.config.write_text(yaml.safe_dump(config, sort_keys=False))
        result = _gridtrain(
            "train", "-c", str(files.config), "--run-dir", str(files.path), "--detach",
            workdir=settings.workdir,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(files.path, ignore_errors=True)
        raise
    if result.returncode != 0:
        if not files.spec.exists():  # nothing prepared: leave no half run behind
            shutil.rmtree(files.path, ignore_errors=True)
        raise StartFailed(_failure(result))
    return files


def resume(files: RunDir, settings: ServeSettings) -> str:
    """``gridtrain train --resume RUN_DIR --detach``; its message. ``RunFinished`` (409) for a
    finished run, whose model and metrics a resume would write again."""
    if phase(files) == "finished":
        raise RunFinished(
            f"run {files.path.name!r} has finished: resuming it would rewrite its model.keras "
            "and metrics.json; submit its config as a new run instead"
        )
    result = _gridtrain("train", "--resume", str(files.path), "--detach", workdir=settings.workdir)
    if result.returncode != 0:
        raise StartFailed(_failure(result))
    return result.stdout.strip()


def cancel(files: RunDir) -> str:
    """``gridtrain cancel RUN_DIR``; its message."""
    from gridtrain.train.status import cancel as cancel_run

    return cancel_run(files.path)
