"""Find a user's model function named ``package.module:function`` or ``path/to/file.py:function``.

Layer: models, import machinery. It locates and imports the function and checks that the
configured parameters fit its signature; it never calls it (``gridtrain.models.build`` does).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from gridtrain.errors import ConfigError

SYNTAX = "'package.module:function' or 'path/to/file.py:function'"


def is_user_model(name: str) -> bool:
    return ":" in name


def _is_file(target: str) -> bool:
    return target.endswith(".py") or "/" in target


def absolute_model_name(name: str, cwd: str | Path | None = None) -> str:
    """The model name with a file path made absolute, for processes started elsewhere."""
    if not is_user_model(name):
        return name
    target, _, function = name.rpartition(":")
    if not _is_file(target):
        return name
    return f"{(Path(cwd or Path.cwd()) / target).resolve()}:{function}"


def _import_file(name: str, path: Path) -> Any:
    if not path.is_file():
        raise ConfigError(
            f"model {name!r}: no file {path}; the path is relative to the working directory "
            f"({Path.cwd()}), or give {SYNTAX}"
        )
    # A stable, unique module name: classes defined in the file can be found again by name.
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"gridtrain_user_model_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"model {name!r}: {path} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:
        del sys.modules[module_name]
        raise ConfigError(
            f"model {name!r}: importing {path} failed: {type(err).__name__}: {err}"
        ) from err
    return module


def _import_module(name: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise ConfigError(
            f"model {name!r}: cannot import {module_name!r} ({err}); install it or put it on "
            f"PYTHONPATH, or give a file as 'path/to/file.py:function'"
        ) from err
    except Exception as err:
        raise ConfigError(
            f"model {name!r}: importing {module_name!r} failed: {type(err).__name__}: {err}"
        ) from err


def load_function(name: str) -> Callable[..., Any]:
    """The function that ``name`` refers to; a ``ConfigError`` saying why when there is none."""
    target, _, function_name = name.rpartition(":")
    if not target or not function_name.isidentifier():
        raise ConfigError(f"model {name!r}: a user model is named {SYNTAX}")
    module = _import_file(name, Path(target)) if _is_file(target) else _import_module(name, target)
    function = getattr(module, function_name, None)
    if not callable(function):
        there = sorted(
            k for k, v in vars(module).items() if inspect.isfunction(v) and not k.startswith("_")
        )
        raise ConfigError(
            f"model {name!r}: {target} has no function {function_name!r}; its functions: "
            f"{', '.join(there) or 'none'}"
        )
    return function


def check_signature(name: str, function: Callable[..., Any], params: Mapping[str, Any]) -> None:
    """The configured parameters must fit ``function(inputs, **params)``."""
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        return  # a builtin or C function: let the call speak for itself
    try:
        signature.bind(None, **params)
    except TypeError as err:
        raise ConfigError(
            f"model {name!r}: parameters {sorted(params)} do not fit "
            f"{getattr(function, '__name__', 'the function')}{signature} ({err}); it is called "
            "as function(inputs, **params)"
        ) from err
