"""Bad training configs fail with one clear line before any process starts."""

from __future__ import annotations

import pytest
from train_helpers import gridtrain, write_config

NOT_COMPILED = """
import keras


def build(inputs):
    x = keras.Input(shape=(len(inputs.features),), name="features")
    return keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(x))
"""


@pytest.mark.parametrize(
    ("train", "message"),
    [
        ({"model": {"name": "transformer"}}, "unknown model 'transformer'"),
        ({"features": ["jet_pt", "jet_charm"]}, "'jet_charm' not in the dataset"),
        ({"model": {"name": "mymodels.py:build"}}, "expected a compiled keras.Model"),
        ({"model": {"name": "mlp", "params": {"hiden": [8]}}}, "hiden"),
        ({"epochs": 0}, "train.epochs"),
        ({"wire": "topk-bf16", "algorithm": {"algorithm": "easgd"}}, "EASGD workers push"),
        ({"executor": "condor", "condor": {"profile": "nowhere"}}, "condor profile 'nowhere'"),
        # a profile that needs a grid proxy, and there is none (X509_USER_PROXY below)
        ({"executor": "condor", "condor": {"profile": "cms-connect"}}, "no grid proxy"),
    ],
)
def test_bad_config_is_refused_before_any_process_starts(
    tmp_path, toy_dir, toy_dataset, monkeypatch, train, message
):
    (tmp_path / "mymodels.py").write_text(NOT_COMPILED)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("X509_USER_PROXY", str(tmp_path / "no-proxy"))
    config = write_config(tmp_path / "c.yaml", toy_dir, toy_dataset, **train)
    run_dir = tmp_path / "run"
    result = gridtrain("train", "-c", str(config), "--run-dir", str(run_dir), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1, result.stderr[-2000:]
    assert message in lines[0]
    assert not run_dir.exists()  # nothing started, nothing written


@pytest.mark.parametrize(
    ("train", "refused"),
    [
        ({"model": {"name": "transformer"}}, True),
        ({"model": {"name": "mlp", "params": {"hiden": [8]}}}, True),
        ({"features": ["jet_pt", "jet_charm"]}, True),
        ({"model": {"name": "mymodels.py:build"}}, False),  # found wrong only once built
    ],
)
def test_what_is_refused_without_building_the_model_starts_no_worker(
    tmp_path, toy_dir, toy_dataset, monkeypatch, train, refused
):
    """The local workers are started (to import their backend while the model builds) only
    once every check that needs no Keras has passed: a typo costs no worker process."""
    from gridtrain.config import load_config
    from gridtrain.errors import ConfigError
    from gridtrain.train.driver import train as run_training
    from gridtrain.train.local_executor import LocalExecutor

    (tmp_path / "mymodels.py").write_text(NOT_COMPILED)
    monkeypatch.chdir(tmp_path)
    started: list[int] = []
    monkeypatch.setattr(LocalExecutor, "prewarm", lambda self, count, *rest: started.append(count))
    config = load_config(write_config(tmp_path / "c.yaml", toy_dir, toy_dataset, **train))
    with pytest.raises(ConfigError):
        run_training(config, tmp_path / "run")
    assert started == ([] if refused else [1])
    assert not (tmp_path / "run").exists()


def test_a_bug_in_a_user_model_shows_its_traceback(tmp_path, toy_dir, toy_dataset, monkeypatch):
    """Not gridtrain's own error, so not one line: the driver builds the model itself when its
    helper worker could not (train/helper.py), and the user sees where their code failed."""
    (tmp_path / "buggy.py").write_text(
        "def build(inputs):\n    raise ValueError('a bug in my model')\n"
    )
    monkeypatch.chdir(tmp_path)
    model = {"name": "buggy.py:build"}
    config = write_config(tmp_path / "c.yaml", toy_dir, toy_dataset, model=model)
    result = gridtrain("train", "-c", str(config), "--run-dir", str(tmp_path / "run"), timeout=120)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "Traceback" in result.stderr
    assert 'buggy.py", line 2, in build' in result.stderr
    assert result.stderr.rstrip().endswith("ValueError: a bug in my model")
    assert not (tmp_path / "run").exists()


def test_resume_needs_a_run_and_a_run_dir_is_not_reused(tmp_path, toy_dir, toy_dataset):
    missing = gridtrain("train", "--resume", str(tmp_path / "nothing"), timeout=120)
    assert missing.returncode == 2
    assert "holds no run to resume" in missing.stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "worker.json").write_text("{}")
    config = write_config(tmp_path / "c.yaml", toy_dir, toy_dataset)
    again = gridtrain("train", "-c", str(config), "--run-dir", str(tmp_path / "run"), timeout=120)
    assert again.returncode == 2
    assert "--resume" in again.stderr
