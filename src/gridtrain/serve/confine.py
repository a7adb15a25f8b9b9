"""What a submitted config may read: the service's data confinement.

Layer: serve. A config's paths are checked here, as strings, before anything opens them: data
(``dataset.outdir``, ``dataset.samples[].files``, and where given ``toy.outdir``, ``train.run_dir``
and ``tune.run_dir``) must lie inside ``--root`` or a folder given with ``--allow-data`` once every
link is followed (``os.path.realpath``); a site profile (``train.condor.profile``) is a built-in
name or a file in those folders; a storage URL (``stage.url``, a root:// input or outdir) must lie
below an ``--allow-stage`` prefix. A refusal names the key and the way out and reads the same
whether the path exists or not, so the service cannot be used to probe the file system. The command
line keeps its freedom: only ``gridtrain serve`` calls this module.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from gridtrain.condor.site import BUILTIN, PROFILE_FILE, builtin_profiles
from gridtrain.errors import StageError
from gridtrain.paths import is_url
from gridtrain.serve.schemas import ConfigProblem
from gridtrain.serve.settings import ServeSettings
from gridtrain.stage.location import Location, parse_location

SHOWN = 120  # characters of a refused value echoed back


def _shown(value: str) -> str:
    return repr(value if len(value) <= SHOWN else value[: SHOWN - 1] + "…")


def readable_folders(settings: ServeSettings) -> tuple[str, ...]:
    """The real paths of ``--root`` and every ``--allow-data`` folder."""
    return tuple(os.path.realpath(p) for p in (settings.root, *settings.allow_data))


def _inside(path: str, folders: tuple[str, ...]) -> bool:
    try:
        real = os.path.realpath(path)
    except (ValueError, OSError):  # a NUL byte, a path too long
        return False
    return any(real == f or real.startswith(f.rstrip(os.sep) + os.sep) for f in folders)


def _local(value: str, settings: ServeSettings) -> str:
    """A config's local path as the driver sees it: relative to the service's working folder."""
    return os.path.join(settings.workdir, value)


def below_prefix(location: Location, prefixes: tuple[str, ...]) -> bool:
    """Whether ``location`` is an ``--allow-stage`` prefix or lies below one (same server; local
    prefixes compared after following links)."""
    for prefix in prefixes:
        allowed = parse_location(prefix)
        if allowed.is_remote != location.is_remote:
            continue
        if location.is_remote:
            same = (allowed.scheme, allowed.server.lower()) == (
                location.scheme,
                location.server.lower(),
            )
            path, base = location.path, allowed.path
        else:
            same = True
            path, base = os.path.realpath(location.path), os.path.realpath(allowed.path)
        if same and (path == base or path.startswith(base.rstrip("/") + "/")):
            return True
    return False


class _Checker:
    """Collects one problem per refused key of one config."""

    def __init__(self, settings: ServeSettings) -> None:
        self.settings = settings
        self.folders = readable_folders(settings)
        self.problems: list[ConfigProblem] = []

    def data(self, key: str, value: str) -> None:
        """A path or URL the training may read: a local one inside the readable folders, a
        remote one below an --allow-stage prefix."""
        path = value
        if is_url(value):
            try:
                location: Location | None = parse_location(value)
            except StageError:
                location = None
            if location is None or location.is_remote:
                self.stage(key, value)
                return
            path = location.path  # file:///path
        if not _inside(_local(path, self.settings), self.folders):
            self.problems.append(
                ConfigProblem(
                    key=key,
                    message=f"{key}: {_shown(value)} is outside the folders this service may read; "
                    "move it into --root, or restart gridtrain serve with --allow-data DIR",
                )
            )

    def stage(self, key: str, value: str) -> None:
        """A storage location: below an --allow-stage prefix, or refused."""
        try:
            location = parse_location(value)
        except StageError:
            location = None
        if location is not None and below_prefix(location, self.settings.allow_stage):
            return
        prefixes = ", ".join(self.settings.allow_stage) or "none"
        self.problems.append(
            ConfigProblem(
                key=key,
                message=f"{key}: {_shown(value)} is not below a storage prefix this service may "
                f"use; restart gridtrain serve with --allow-stage PREFIX (allowed: {prefixes})",
            )
        )

    def profile(self, train: dict[str, Any]) -> None:
        """A built-in site profile by name, or a profile file inside the readable folders; the
        config is pointed at the file that was checked, so nothing else is looked up."""
        condor = train.setdefault("condor", {})
        value = str(condor.get("profile", ""))
        if value in builtin_profiles():
            condor["profile"] = str(BUILTIN / f"{value}.yaml")
            return
        path = _local(value, self.settings)
        if _inside(path, self.folders):
            real = os.path.realpath(path)
            if os.path.isdir(real):  # a profile folder: its condor.yaml, as resolve_profile does
                real = os.path.realpath(os.path.join(real, PROFILE_FILE))
            if _inside(real, self.folders):
                if not os.path.isfile(real):
                    message = f"train.condor.profile: no site profile file at {real}"
                    self.problems.append(ConfigProblem(key="train.condor.profile", message=message))
                condor["profile"] = real  # the driver reads this file and looks nowhere else
                return
        builtin = ", ".join(builtin_profiles())
        self.problems.append(
            ConfigProblem(
                key="train.condor.profile",
                message=f"train.condor.profile: {_shown(value)} is neither a built-in site "
                "profile nor a file in a folder this service may read; name a built-in one "
                f"({builtin}), or put the file in a folder given with --allow-data DIR",
            )
        )


def _sample_files(dataset: dict[str, Any]) -> Iterator[tuple[str, str]]:
    for i, sample in enumerate(dataset.get("samples") or []):
        for j, path in enumerate(sample.get("files") or []):
            yield f"dataset.samples.{i}.files.{j}", str(path)


def confine(
    config: dict[str, Any], settings: ServeSettings, given: dict[str, str]
) -> list[ConfigProblem]:
    """Every key of ``config`` (defaults filled) that reads outside what the service allows.

    ``given`` holds ``toy.outdir``, ``train.run_dir`` and ``tune.run_dir`` as the user wrote them
    (their defaults are not checked: a training started by the service reads none of them, and
    runs in ROOT/NAME). The site profile is rewritten in place to the absolute path of the file
    that was checked.
    """
    check = _Checker(settings)
    dataset = config.get("dataset") or {}
    check.data("dataset.outdir", str(dataset.get("outdir", "")))
    for key, path in _sample_files(dataset):
        check.data(key, path)
    for key, value in given.items():
        check.data(key, value)
    check.profile(config.setdefault("train", {}))
    url = (config.get("stage") or {}).get("url")
    if url is not None:
        check.stage("stage.url", str(url))
    return check.problems


GIVEN_ONLY = (("toy", "outdir"), ("train", "run_dir"), ("tune", "run_dir"))


def given_paths(config: dict[str, Any]) -> dict[str, str]:
    """The paths of GIVEN_ONLY that the submitted config (before defaults) names, by key."""
    found = {}
    for section, name in GIVEN_ONLY:
        part = config.get(section)
        if isinstance(part, dict) and part.get(name) is not None:
            found[f"{section}.{name}"] = str(part[name])
    return found
