import numpy as np
import pytest

from gridtrain.data.selection import Lists, Selection
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


# Jagged branches: three events with 2, 0 and 3 jets.
JETS = Lists(np.array([2, 0, 3]), np.array([50.0, 40.0, 90.0, 30.0, 60.0], dtype=np.float32))
EVENTS = {"Jet_pt": JETS, "MET_pt": np.array([10.0, 20.0, 30.0]), "n": np.array([1.0, 5.0, 2.0])}
NAN = float("nan")


@pytest.mark.parametrize(
    ("expression", "values", "undefined"),
    [
        ("Jet_pt[0]", [50, NAN, 90], [False, True, False]),
        ("Jet_pt[1]", [40, NAN, 30], [False, True, False]),
        ("Jet_pt[2]", [NAN, NAN, 60], [True, True, False]),
        ("Jet_pt[-1]", [40, NAN, 60], [False, True, False]),
        ("Jet_pt[-3]", [NAN, NAN, 90], [True, True, False]),
        ("len(Jet_pt)", [2, 0, 3], None),
        ("sum(Jet_pt)", [90, 0, 180], None),
        ("max(Jet_pt)", [50, NAN, 90], [False, True, False]),
        ("min(Jet_pt)", [40, NAN, 30], [False, True, False]),
        ("Jet_pt[0] / MET_pt", [5, NAN, 3], [False, True, False]),
        ("sum(Jet_pt) / len(Jet_pt)", [45, NAN, 60], None),  # 0 / 0: NaN, but defined
        ("max(MET_pt, n)", [10, 20, 30], None),  # two arguments: elementwise, as before
        ("min(Jet_pt[1], MET_pt)", [10, NAN, 30], [False, True, False]),
    ],
)
def test_elements_and_reductions_of_jagged_branches(expression, values, undefined):
    selection = Selection(expression, "dataset.features 'x' expr")
    with np.errstate(all="ignore"):
        result, mask = selection.evaluate(EVENTS, 3)
    got = np.where(mask, NAN, result) if mask is not None else result
    np.testing.assert_array_equal(got.astype(np.float64), values)
    assert (mask.tolist() if mask is not None else None) == undefined
    assert selection.undefinable == (undefined is not None)
    np.testing.assert_array_equal(selection.values(EVENTS, 3), np.asarray(values, np.float32))


def test_a_cut_drops_the_events_where_it_is_undefined():
    assert Selection("Jet_pt[1] > 35").mask(EVENTS).tolist() == [True, False, False]
    assert Selection("!(Jet_pt[1] > 35)").mask(EVENTS).tolist() == [False, False, True]
    assert Selection("len(Jet_pt) >= 2 && MET_pt > 15").mask(EVENTS).tolist() == [
        False,
        False,
        True,
    ]
    assert Selection("Jet_pt[1] + Jet_pt[-1] > 0").guard() == "len(Jet_pt) >= 2"
    assert Selection("sum(Jet_pt) > 0").guard() == ""


def test_integer_lists_keep_integer_arithmetic():
    ids = Lists(np.array([1, 0, 2]), np.array([6, 2, 4], dtype=np.int32))
    result, undefined = Selection("(ids[0] & 4) > 0").evaluate({"ids": ids}, 3)
    assert result.tolist() == [True, False, False]
    assert undefined is not None
    assert undefined.tolist() == [False, True, False]
    assert Selection("sum(ids)").evaluate({"ids": ids}, 3)[0].tolist() == [6, 0, 6]
    # as a number (a target's), an undefined element is NaN, not the placeholder 0
    np.testing.assert_array_equal(Selection("ids[1]").values({"ids": ids}, 3), [NAN, NAN, 4])


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("Jet_pt[i]", r"'Jet_pt\[i\]': an index is a whole number"),
        ("Jet_pt[0.5]", r"an index is a whole number"),
        ("Jet_pt[True]", r"an index is a whole number"),
        ("Jet_pt[0:2]", r"an index is a whole number"),
        ("Jet_pt[0][1]", r"takes a branch name with a list per event"),
        ("(Jet_pt * 2)[0]", r"takes a branch name with a list per event"),
        ("sum(Jet_pt * 2)", r"takes a branch name with a list per event"),
        ("sum(Jet_pt, 1)", r"sum\(\) takes one list branch"),
        ("len()", r"len\(\) takes one list branch"),
        ("max()", r"max\(\) takes two arguments, or one list branch"),
        ("hypot(MET_pt)", r"hypot\(\) takes two arguments"),
        ("Jet_pt[0] / Jet_pt", r"'Jet_pt' is a list per event; take an element"),
        ("Jet_pt[__import__('os')]", r"an index is a whole number"),
        ("Jet_pt.count(1)", r"is not allowed"),
        ("Jet_pt[0].real", r"is not allowed"),
    ],
)
def test_jagged_expressions_that_are_refused(expression, message):
    with pytest.raises(ConfigError, match=r"^k .+: .*" + message):
        Selection(expression, "k")


def test_a_per_event_branch_is_no_list_and_a_list_no_number():
    with pytest.raises(ConfigError, match=r"'MET_pt\[0\]' needs a list per event, but 'MET_pt' "):
        Selection("MET_pt[0]").mask(EVENTS)
    with pytest.raises(ConfigError, match=r"'Jet_pt' is a list per event; take an element"):
        Selection("Jet_pt > 30").mask(EVENTS)
