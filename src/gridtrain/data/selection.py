"""Event selection: a cut expression over flat branches, evaluated safely on numpy arrays.

The same evaluator computes the regression targets (``task.targets``' expressions, e.g.
``jet_pt_true / jet_pt``): ``Selection(expression, key).values(arrays)`` gives the numbers where
``mask`` gives the cut.

Pure logic: the expression is parsed with ``ast`` and only arithmetic, comparisons, boolean
operators, numbers, branch names and a few math functions are accepted, so a configuration file can
never run code. ROOT's spelling (``&&``, ``||``, ``!``) is accepted beside Python's. A name that
is no Python identifier (ATLAS PHYSLITE's ``EventInfoAuxDyn:eventNumber``, an RNTuple subfield
``three_LV.pt``) is written between backquotes: `` `EventInfoAuxDyn:eventNumber` % 2 == 0 ``.
"""

from __future__ import annotations

import ast
import operator
import re
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from gridtrain.errors import ConfigError

_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "abs": np.abs,
    "sqrt": np.sqrt,
    "log": np.log,
    "exp": np.exp,
    "cos": np.cos,
    "sin": np.sin,
    "cosh": np.cosh,
    "sinh": np.sinh,
    "hypot": np.hypot,
    "min": np.minimum,
    "max": np.maximum,
}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
    ast.Mod: operator.mod,
    ast.BitAnd: operator.and_,
    ast.BitOr: operator.or_,
}
_COMPARE: dict[type, Callable[[Any, Any], Any]] = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}


class Selection:
    """A parsed cut; ``names`` are the branches it reads, ``mask(arrays)`` evaluates it.

    ``key`` names the expression in messages: ``dataset.selection`` or, for a target's,
    ``task.targets 'pt' expression``.
    """

    def __init__(self, expression: str, key: str = "dataset.selection") -> None:
        self.expression = expression
        self.key = key
        # `quoted names` become identifiers the parser accepts, and are named back below.
        quoted: dict[str, str] = {}

        def placeholder(match: re.Match[str]) -> str:
            return quoted.setdefault(match.group(1), f"_quoted_{len(quoted)}")

        text = re.sub(r"`([^`]+)`", placeholder, expression)
        self._quoted = {identifier: name for name, identifier in quoted.items()}
        # and/or/not bind like ROOT's &&, ||, ! (looser than comparisons); & and | do not.
        text = re.sub(r"&&", " and ", text)
        text = re.sub(r"\|\|", " or ", text)
        text = re.sub(r"!(?!=)", " not ", text)
        try:
            self._tree = ast.parse(text.strip(), mode="eval")
        except SyntaxError as err:
            raise ConfigError(
                f"{key} {expression!r}: not a valid expression ({err.msg}); "
                "write it like 'jet_pt > 300 && abs(jet_eta) < 2'"
            ) from None
        self.names = sorted(
            {
                self._quoted.get(n.id, n.id)
                for n in ast.walk(self._tree)
                if isinstance(n, ast.Name) and n.id not in _FUNCTIONS
            }
        )
        # Evaluate once on scalars to reject unsupported syntax before any file is read.
        with np.errstate(all="ignore"):
            self._eval(self._tree.body, {name: np.ones(1) for name in self.names})

    def mask(self, arrays: Mapping[str, np.ndarray]) -> np.ndarray:
        result = np.asarray(self._eval(self._tree.body, arrays))
        if result.dtype != np.bool_:
            raise ConfigError(
                f"{self.key} {self.expression!r}: evaluates to {result.dtype}, not a "
                "boolean; compare with a value, e.g. 'jet_pt > 300'"
            )
        return result

    def values(self, arrays: Mapping[str, np.ndarray], events: int) -> np.ndarray:
        """The expression's value for each of ``events`` events, as float32 (NaN and inf where
        the arithmetic gives them, e.g. a division by zero: the caller counts them)."""
        with np.errstate(all="ignore"):
            result = np.asarray(self._eval(self._tree.body, arrays))
        if result.dtype == np.bool_ or result.dtype.kind not in "biuf":
            raise ConfigError(
                f"{self.key} {self.expression!r}: evaluates to {result.dtype}, not a number; "
                "write arithmetic of branches, e.g. 'jet_pt_true / jet_pt'"
            )
        with np.errstate(all="ignore"):
            return np.broadcast_to(result.astype(np.float32), (events,))

    def _eval(self, node: ast.AST, arrays: Mapping[str, np.ndarray]) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | bool):
            return node.value
        if isinstance(node, ast.Name):
            return arrays[self._quoted.get(node.id, node.id)]
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](
                self._eval(node.left, arrays), self._eval(node.right, arrays)
            )
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, arrays)
            if isinstance(node.op, ast.USub):
                return -value
            if isinstance(node.op, ast.Invert | ast.Not):
                return np.logical_not(value)
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            values = [self._eval(v, arrays) for v in node.values]
            result = values[0]
            for value in values[1:]:
                result = combine(result, value)
            return result
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, arrays)
            result = None
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                if type(op) not in _COMPARE:
                    break
                right = self._eval(comparator, arrays)
                part = _COMPARE[type(op)](left, right)
                result = part if result is None else np.logical_and(result, part)
                left = right
            else:
                return result
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
        ):
            return _FUNCTIONS[node.func.id](*(self._eval(a, arrays) for a in node.args))
        raise ConfigError(
            f"{self.key} {self.expression!r}: {ast.unparse(node)!r} is not allowed; use "
            f"branch names, numbers, arithmetic, comparisons, &&, ||, ! and {sorted(_FUNCTIONS)}"
        )
