"""Event selection: a cut expression over branches, evaluated safely on numpy arrays.

The same evaluator computes the regression targets (``task.targets``' expressions, e.g.
``jet_pt_true / jet_pt``), the event weights and the derived features (``dataset.features``'
``{name, expr, fill}``): ``Selection(expression, key).values(arrays)`` gives the numbers where
``mask`` gives the cut.

A jagged branch (a list of numbers per event, ``Lists``) enters an expression only through an
element, ``Jet_pt[0]`` (``Jet_pt[-1]``: the last), or a reduction, ``len(Jet_pt)``,
``sum(Jet_pt)``, ``max(Jet_pt)``, ``min(Jet_pt)`` (with two arguments ``max`` and ``min`` stay
the larger or smaller of two numbers). An element past the end of an event's list and ``max`` or
``min`` of an empty one are *undefined*, and so is every expression that contains them, for that
event: ``evaluate`` returns the values with a mask of those events (a derived feature takes its
fill there, the selection drops them, a target is NaN). ``len`` and ``sum`` of an empty list are 0.

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
from dataclasses import dataclass
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
# Functions of one list branch; max and min with two arguments are the elementwise ones above.
_REDUCTIONS = ("len", "sum", "max", "min")
_CALLABLE = set(_FUNCTIONS) | set(_REDUCTIONS)
_ARGUMENTS = {"hypot": 2, "min": 2, "max": 2}  # the others take one
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


@dataclass(frozen=True)
class Lists:
    """A jagged branch over a block of events: each event's number of entries and the entries
    of all events one after the other (as the readers hand them, ``Jagged``)."""

    counts: np.ndarray
    content: np.ndarray

    def starts(self) -> np.ndarray:
        counts = self.counts.astype(np.int64)
        return np.cumsum(counts) - counts


def _reduction(node: ast.AST) -> str | None:
    """The function of ``len(x)``, ``sum(x)``, and ``max(x)``, ``min(x)`` of one argument."""
    if (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Name)
        and node.func.id in _REDUCTIONS
        and (node.func.id in ("len", "sum") or len(node.args) == 1)
    ):
        return node.func.id
    return None


class Selection:
    """A parsed expression; ``names`` are the branches it reads (``lists``: those it reads as
    lists, ``numbers``: those it reads as one number per event), ``mask(arrays)`` evaluates a
    cut and ``values(arrays, events)`` a quantity.

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
        # How each list branch is first used, for messages: 'Jet_pt[0]', 'max(Jet_pt)'.
        self.list_uses: dict[str, str] = {}
        # The entries each list needs for the expression to be defined: Jet_pt[1] needs 2.
        self.needs: dict[str, int] = {}
        for node in ast.walk(self._tree):
            if isinstance(node, ast.Subscript):
                index = self._index(node)
                needed = index + 1 if index >= 0 else -index
            elif isinstance(node, ast.Call) and _reduction(node):
                needed = 1 if _reduction(node) in ("max", "min") else 0
            else:
                continue
            name = self._list_name(node)
            self.list_uses.setdefault(name, self._text(node))
            self.needs[name] = max(self.needs.get(name, 0), needed)
        self.undefinable = any(self.needs.values())  # an element or max/min: may be undefined
        self.lists = sorted(self.list_uses)
        self.names = sorted(
            {
                self._quoted.get(n.id, n.id)
                for n in ast.walk(self._tree)
                if isinstance(n, ast.Name) and n.id not in _CALLABLE
            }
        )
        self.numbers = sorted(set(self.names) - set(self.lists) | self._number_names())
        # Evaluate once on one event to reject unsupported syntax before any file is read.
        one = Lists(np.ones(1, dtype=np.int64), np.ones(1))
        probe = {name: one if name in self.list_uses else np.ones(1) for name in self.names}
        try:
            with np.errstate(all="ignore"):
                self._eval(self._tree.body, probe, [])
        except ConfigError:
            raise
        except (TypeError, ValueError):
            pass  # a type the probe's floats lack (x & 2 on integers): checked on the data

    def guard(self) -> str:
        """A cut that keeps only the events where the expression is defined (or '')."""
        return " && ".join(
            f"len({_quote(name)}) >= {needed}" for name, needed in self.needs.items() if needed
        )

    def _text(self, node: ast.AST) -> str:
        """``node`` as the user wrote it (quoted names between backquotes again)."""
        text = ast.unparse(node)
        for identifier, name in self._quoted.items():
            text = text.replace(identifier, f"`{name}`")
        return text

    def _refuse(self, problem: str) -> ConfigError:
        return ConfigError(f"{self.key} {self.expression!r}: {problem}")

    def _list_name(self, node: ast.Subscript | ast.Call) -> str:
        """The list branch an element or a reduction reads; anything else is refused."""
        if isinstance(node, ast.Call) and (len(node.args) != 1 or node.keywords):
            function = ast.unparse(node.func)
            raise self._refuse(
                f"{self._text(node)!r}: {function}() takes one list branch, e.g. {function}(Jet_pt)"
            )
        inner = node.value if isinstance(node, ast.Subscript) else node.args[0]
        if not isinstance(inner, ast.Name) or inner.id in _CALLABLE:
            raise self._refuse(
                f"{self._text(node)!r}: an index or len, sum, max, min of one argument takes a "
                "branch name with a list per event, e.g. Jet_pt[0] or sum(Jet_pt)"
            )
        return self._quoted.get(inner.id, inner.id)

    def _number_names(self) -> set[str]:
        """Names used as one number per event somewhere (not as a list)."""
        inside = {
            id(node.value if isinstance(node, ast.Subscript) else node.args[0])
            for node in ast.walk(self._tree)
            if isinstance(node, ast.Subscript) or (isinstance(node, ast.Call) and _reduction(node))
        }
        return {
            self._quoted.get(n.id, n.id)
            for n in ast.walk(self._tree)
            if isinstance(n, ast.Name) and n.id not in _CALLABLE and id(n) not in inside
        }

    def _index(self, node: ast.Subscript) -> int:
        """The whole-number index of ``Jet_pt[0]`` or ``Jet_pt[-1]``; anything else refused."""
        index = node.slice
        sign = 1
        if isinstance(index, ast.UnaryOp) and isinstance(index.op, ast.USub):
            index, sign = index.operand, -1
        if (
            not isinstance(index, ast.Constant)
            or not isinstance(index.value, int)
            or isinstance(index.value, bool)
        ):
            raise self._refuse(
                f"{self._text(node)!r}: an index is a whole number, e.g. Jet_pt[0] (the leading "
                "entry), Jet_pt[1] or Jet_pt[-1] (the last)"
            )
        return sign * index.value

    def evaluate(
        self, arrays: Mapping[str, np.ndarray | Lists], events: int
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """The expression's value for each of ``events`` events (as the arithmetic gives it,
        undefined events hold a placeholder), and which events are undefined (``None``: none
        can be)."""
        undefined: list[np.ndarray] = []
        try:
            result = np.asarray(self._eval(self._tree.body, arrays, undefined))
        except TypeError as err:  # e.g. & of floats
            raise self._refuse(f"cannot be computed on these branches ({err})") from None
        if result.dtype.kind not in "biuf":
            raise self._refuse(f"evaluates to {result.dtype}, not a number")
        result = np.broadcast_to(result, (events,))
        if not undefined:
            return result, None
        return result, np.logical_or.reduce(undefined)

    def mask(self, arrays: Mapping[str, np.ndarray | Lists]) -> np.ndarray:
        """The cut: true for the events it keeps (false where it is undefined)."""
        result, undefined = self.evaluate(arrays, _events(arrays))
        if result.dtype != np.bool_:
            raise ConfigError(
                f"{self.key} {self.expression!r}: evaluates to {result.dtype}, not a "
                "boolean; compare with a value, e.g. 'jet_pt > 300'"
            )
        return result if undefined is None else result & ~undefined

    def values(self, arrays: Mapping[str, np.ndarray | Lists], events: int) -> np.ndarray:
        """The expression's value for each of ``events`` events, as float32 (NaN and inf where
        the arithmetic gives them, e.g. a division by zero, and NaN where it is undefined: the
        caller counts them)."""
        with np.errstate(all="ignore"):
            result, undefined = self.evaluate(arrays, events)
        if result.dtype == np.bool_:
            raise ConfigError(
                f"{self.key} {self.expression!r}: evaluates to {result.dtype}, not a number; "
                "write arithmetic of branches, e.g. 'jet_pt_true / jet_pt'"
            )
        with np.errstate(all="ignore"):
            values = result.astype(np.float32)
        if undefined is not None:
            values[undefined] = np.nan
        return values

    def _eval(
        self, node: ast.AST, arrays: Mapping[str, np.ndarray | Lists], undefined: list[np.ndarray]
    ) -> Any:
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float | bool):
            return node.value
        if isinstance(node, ast.Name):
            name = self._quoted.get(node.id, node.id)
            value = arrays[name]
            if isinstance(value, Lists):
                raise self._refuse(
                    f"{name!r} is a list per event; take an element ({name}[0]) or reduce it "
                    f"(len({name}), sum({name}), max({name}), min({name}))"
                )
            return value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
            return _BINARY[type(node.op)](
                self._eval(node.left, arrays, undefined), self._eval(node.right, arrays, undefined)
            )
        if isinstance(node, ast.UnaryOp):
            value = self._eval(node.operand, arrays, undefined)
            if isinstance(node.op, ast.USub):
                return -value
            if isinstance(node.op, ast.Invert | ast.Not):
                return np.logical_not(value)
        if isinstance(node, ast.BoolOp):
            combine = np.logical_and if isinstance(node.op, ast.And) else np.logical_or
            values = [self._eval(v, arrays, undefined) for v in node.values]
            result = values[0]
            for value in values[1:]:
                result = combine(result, value)
            return result
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, arrays, undefined)
            result = None
            for op, comparator in zip(node.ops, node.comparators, strict=True):
                if type(op) not in _COMPARE:
                    break
                right = self._eval(comparator, arrays, undefined)
                part = _COMPARE[type(op)](left, right)
                result = part if result is None else np.logical_and(result, part)
                left = right
            else:
                return result
        if isinstance(node, ast.Subscript):
            return self._element(node, self._lists(node, arrays), undefined)
        function = _reduction(node)
        if function is not None and isinstance(node, ast.Call):
            return _reduce(function, self._lists(node, arrays), undefined)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _FUNCTIONS
            and not node.keywords
        ):
            wanted = _ARGUMENTS.get(node.func.id, 1)
            if len(node.args) != wanted:
                takes = {1: "one argument", 2: "two arguments"}[wanted]
                if node.func.id in _REDUCTIONS:
                    takes += f", or one list branch ({node.func.id}(Jet_pt))"
                raise self._refuse(f"{self._text(node)!r}: {node.func.id}() takes {takes}")
            return _FUNCTIONS[node.func.id](*(self._eval(a, arrays, undefined) for a in node.args))
        raise ConfigError(
            f"{self.key} {self.expression!r}: {ast.unparse(node)!r} is not allowed; use "
            f"branch names, numbers, arithmetic, comparisons, &&, ||, !, {sorted(_FUNCTIONS)}, "
            "and of a list branch an element (Jet_pt[0]) or len, sum, max, min"
        )

    def _lists(self, node: ast.Subscript | ast.Call, arrays: Mapping[str, Any]) -> Lists:
        name = self._list_name(node)
        value = arrays[name]
        if not isinstance(value, Lists):
            raise self._refuse(
                f"{self.list_uses[name]!r} needs a list per event, but {name!r} is one number "
                f"per event; write {name} without an index or len, sum, max, min"
            )
        return value

    def _element(self, node: ast.Subscript, lists: Lists, undefined: list[np.ndarray]) -> Any:
        index = self._index(node)
        counts = lists.counts.astype(np.int64)
        if index >= 0:
            defined = counts > index
            position = lists.starts() + index
        else:
            defined = counts >= -index
            position = lists.starts() + counts + index
        return _pick(lists.content, position, defined, undefined)


def _quote(name: str) -> str:
    return name if name.isidentifier() else f"`{name}`"


def _events(arrays: Mapping[str, np.ndarray | Lists]) -> int:
    """The number of events in ``arrays`` (1 when it is empty: a constant expression)."""
    for value in arrays.values():
        return len(value.counts) if isinstance(value, Lists) else len(value)
    return 1


def _placeholder(content: np.ndarray, events: int) -> np.ndarray:
    """Values of undefined events: NaN for floats, 0 for integers (so integer arithmetic
    such as ``&`` still works on the defined ones)."""
    if content.dtype.kind == "f":
        return np.full(events, np.nan, dtype=np.float64)
    return np.zeros(events, dtype=np.int64 if content.dtype.kind in "iub" else content.dtype)


def _pick(
    content: np.ndarray, position: np.ndarray, defined: np.ndarray, undefined: list[np.ndarray]
) -> np.ndarray:
    values = _placeholder(content, len(position))
    values[defined] = content[position[defined]]
    if not defined.all():
        undefined.append(~defined)
    return values


def _reduce(function: str, lists: Lists, undefined: list[np.ndarray]) -> np.ndarray:
    """``len``, ``sum``, ``max`` or ``min`` of each event's list (``max`` and ``min`` of an
    empty list are undefined; ``len`` and ``sum`` are 0)."""
    counts = lists.counts.astype(np.int64)
    if function == "len":
        return counts
    content = lists.content
    if content.dtype.kind == "f":
        content = content.astype(np.float64)  # sums in double precision
    elif content.dtype.kind in "iub":
        content = content.astype(np.int64)
    filled = counts > 0
    starts = lists.starts()[filled]
    if function == "sum":
        values = np.zeros(len(counts), dtype=content.dtype)
        if filled.any():
            values[filled] = np.add.reduceat(content, starts)
        return values
    ufunc = np.maximum if function == "max" else np.minimum
    values = _placeholder(content, len(counts))
    if filled.any():
        values[filled] = ufunc.reduceat(content, starts)
    if not filled.all():
        undefined.append(~filled)
    return values
