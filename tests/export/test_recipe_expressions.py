"""The recipe's expression evaluator (docs/examples/score_with_onnx.py): derived features, targets
and weights computed from ROOT branches with numpy and awkward alone, as export.json's
``derived`` spec of a flat input describes them."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import awkward as ak
import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "docs" / "examples" / "score_with_onnx.py"
JETS = [[50.0, 30.0, 10.0], [], [20.0], [40.0, 35.0]]
MET = [10.0, 20.0, 30.0, 40.0]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("score_with_onnx", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def branches() -> dict[str, ak.Array]:
    met = ak.Array(np.asarray(MET, dtype=np.float32))
    return {
        "Jet_pt": ak.values_astype(ak.Array(JETS), np.float32),
        "MET_pt": met,
        "MET.pt": met,  # a name that is no identifier: `MET.pt` in an expression
    }


@pytest.mark.parametrize(
    ("expression", "fill", "expected"),
    [
        ("Jet_pt[0]", -1.0, [50, -1, 20, 40]),
        ("Jet_pt[1]", -1.0, [30, -1, -1, 35]),
        ("Jet_pt[-1]", -1.0, [10, -1, 20, 35]),
        ("len(Jet_pt)", None, [3, 0, 1, 2]),
        ("sum(Jet_pt)", None, [90, 0, 20, 75]),
        ("max(Jet_pt)", 0.0, [50, 0, 20, 40]),
        ("min(Jet_pt)", 0.0, [10, 0, 20, 35]),
        ("max(MET_pt, 25)", None, [25, 25, 30, 40]),  # two arguments: elementwise
        ("min(MET_pt, 25) - 1", None, [9, 19, 24, 24]),
        ("hypot(MET_pt, Jet_pt[0])", -1.0, [np.hypot(10, 50), -1, np.hypot(30, 20), 40 * 2**0.5]),
        ("Jet_pt[0] / MET_pt + sqrt(abs(MET_pt - 26))", -9, [5 + 4, -9, 20 / 30 + 2, 1 + 14**0.5]),
        ("log(MET_pt) + exp(0) + cos(0) + sin(0) + cosh(0) + sinh(0)", None, np.log(MET) + 3),
        ("2 ** 3 % 5 * `MET.pt`", None, [30, 60, 90, 120]),
        ("MET_pt > 15 && !(len(Jet_pt) == 0) || MET_pt == 10", None, [1, 0, 1, 1]),
        ("15 < MET_pt <= 30 and not MET_pt != 20", None, [0, 1, 0, 0]),
        ("(MET_pt > 25) & (len(Jet_pt) > 1) | (MET_pt < 15)", None, [1, 0, 0, 1]),
        ("Jet_pt[1] > 0 || MET_pt > 0", 0.0, [1, 0, 0, 1]),  # undefined in every part it touches
    ],
)  # fmt: skip
def test_the_recipe_evaluates_expressions_as_conversion_defines_them(
    recipe, expression, fill, expected
):
    arrays = branches()
    found = recipe.evaluate(expression, arrays.__getitem__, fill)
    np.testing.assert_allclose(found.astype(np.float64), np.asarray(expected, dtype=np.float64),
                               rtol=1e-6)  # fmt: skip


def test_the_recipe_refuses_what_expressions_do_not_allow(recipe):
    with pytest.raises(ValueError, match="not supported"):
        recipe.evaluate("MET_pt.__class__", branches().__getitem__)
    with pytest.raises(ValueError, match="not supported"):
        recipe.evaluate("__import__('os')", branches().__getitem__)
    with pytest.raises(ValueError, match="not supported"):
        recipe.evaluate("round(MET_pt)", branches().__getitem__)


def test_the_recipe_fills_derived_feature_columns_from_a_root_file(recipe, tmp_path):
    import uproot

    path = tmp_path / "events.root"
    with uproot.recreate(path) as out:
        out["Events"] = {"Jet_pt": branches()["Jet_pt"], "MET_pt": np.asarray(MET, np.float32)}
    inputs = [
        {
            "name": "features",
            "shape": [None, 4],
            "dtype": "float32",
            "columns": ["MET_pt", "lead_jet_pt", "n_jets", "ht_over_met"],
            "derived": {
                "lead_jet_pt": {"expr": "Jet_pt[0]", "fill": -1.0},
                "n_jets": {"expr": "len(Jet_pt)", "fill": 0.0},
                "ht_over_met": {"expr": "sum(Jet_pt) / MET_pt", "fill": 0.0},
            },
        }
    ]
    with uproot.open(path) as file:
        feed = recipe.fill_inputs(file["Events"], inputs)
    assert feed["features"].dtype == np.float32
    np.testing.assert_array_equal(
        feed["features"],
        np.array([[10, 50, 3, 9], [20, -1, 0, 0], [30, 20, 1, 20 / 30], [40, 40, 2, 75 / 40]],
                 dtype=np.float32),
    )  # fmt: skip
