"""A user model exports like a built-in one, and what cannot be scored is one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import gridtrain, write_config

from gridtrain.cli import main
from gridtrain.errors import ExportError
from gridtrain.export.run import export_run
from gridtrain.rundir import RunDir

pytestmark = pytest.mark.slow

USER_MODEL = Path(__file__).resolve().parent / "arange_mask.py"


def test_a_user_model_with_an_arange_mask_exports_to_every_format(
    toy_dir, export_dataset, tmp_path, capsys
):
    """Its mask's slot numbers are a tensor captured when the model was built; traced for ONNX
    they became an input nobody feeds ('Required inputs ([...Less/x:0]) are missing')."""
    config = write_config(
        tmp_path / "config.yaml", toy_dir, export_dataset, epochs=1,
        model={"name": f"{USER_MODEL}:arange_mask", "params": {"width": 8}},
        early_stopping={"patience": None},
    )  # fmt: skip
    run_dir = tmp_path / "run"
    done = gridtrain("train", "-c", str(config), "--run-dir", str(run_dir))
    assert done.returncode == 0, done.stderr[-3000:]
    assert main(["export", str(run_dir)]) == 0
    printed = capsys.readouterr()
    described = json.loads((run_dir / "export" / "export.json").read_text())
    checks = {c["format"]: c for c in described["verification"]["checks"]}
    assert set(checks) == {"onnx", "saved_model", "frozen"}
    events = json.loads(RunDir(run_dir).metrics.read_text())["validation_events"]
    for check in checks.values():
        assert check["events"] == events
        assert check["max_abs_diff"] <= 1e-5
    assert "Traceback" not in printed.err

    import onnxruntime

    session = onnxruntime.InferenceSession(str(run_dir / "export" / "model.onnx"))
    assert sorted(i.name for i in session.get_inputs()) == ["constituents", "constituents_count"]
    count = np.array([0, 3, 40], dtype=np.float32)
    values = np.random.default_rng(2).normal(size=(3, 40, 5)).astype(np.float32)
    padded = np.arange(40)[None, :, None] >= count[:, None, None]
    first = session.run(["score"], {"constituents": values, "constituents_count": count})[0]
    garbage = np.where(padded, np.float32(1e30), values)
    second = session.run(["score"], {"constituents": garbage, "constituents_count": count})[0]
    np.testing.assert_array_equal(first, second)  # the mask still masks


def test_a_runtime_that_cannot_score_fails_in_one_line_naming_the_format(
    trained, tmp_path, monkeypatch
):
    from gridtrain.export import formats

    def unfed(written):  # what ONNX Runtime says when the graph wants an input nobody feeds
        def score(feed):
            raise ValueError(
                "Required inputs (['functional_1/Less/x:0']) are missing from input feed "
                "(['features']).\n  File ...\n  line 2 of a long traceback"
            )

        return score

    monkeypatch.setattr(formats, "load", unfed)
    with pytest.raises(ExportError) as raised:
        export_run(trained("mlp"), ("onnx",), tmp_path / "export")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("onnx cannot score the validation events: Required inputs")
    assert message.endswith("nothing was written")
    assert list(tmp_path.iterdir()) == []
