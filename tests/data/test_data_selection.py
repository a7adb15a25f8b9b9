import numpy as np
import pytest

from gridtrain.data.selection import Selection
from gridtrain.errors import ConfigError

ARRAYS = {"pt": np.array([10.0, 50.0, 400.0]), "eta": np.array([0.5, -3.0, 1.0])}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("pt > 20", [False, True, True]),
        ("pt > 20 && abs(eta) < 2", [False, False, True]),
        ("pt < 20 || !(eta < 0)", [True, False, True]),
        ("(pt > 20) and not eta > 0", [False, True, False]),
        ("20 < pt <= 400", [False, True, True]),
        ("sqrt(pt) * 2 > 10", [False, True, True]),
    ],
)
def test_selection_evaluates_root_and_python_spelling(expression, expected):
    selection = Selection(expression)
    assert selection.mask(ARRAYS).tolist() == expected
    assert set(selection.names) <= {"pt", "eta"}


@pytest.mark.parametrize(
    "expression",
    ["__import__('os').system('true')", "pt.real > 1", "open('x')", "[pt][0] > 1", "pt >"],
)
def test_selection_rejects_anything_but_arithmetic(expression):
    with pytest.raises(ConfigError, match=r"dataset\.selection"):
        Selection(expression)


def test_selection_that_is_not_boolean_is_refused():
    with pytest.raises(ConfigError, match="not a boolean"):
        Selection("pt * 2").mask(ARRAYS)


def test_names_that_are_no_identifiers_go_between_backquotes():
    arrays = {"EventInfoAuxDyn:eventNumber": np.array([1, 2, 3]), "lv.pt": np.array([5, 50, 5])}
    selection = Selection("`EventInfoAuxDyn:eventNumber` % 2 == 1 && `lv.pt` < 10")
    assert selection.names == ["EventInfoAuxDyn:eventNumber", "lv.pt"]
    assert selection.mask(arrays).tolist() == [True, False, True]
