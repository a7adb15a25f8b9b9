"""Trained toy runs to export: one per built-in model, trained once per session."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "train"))
from train_helpers import dataset_section, gridtrain, write_config

MODELS = {
    "mlp": {"hidden": [16, 16]},
    "deepsets": {"phi": [16], "rho": [16], "group": "constituents"},
}


@pytest.fixture(scope="session")
def export_dataset(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from gridtrain.config import DatasetConfig
    from gridtrain.data.convert import convert

    out = tmp_path_factory.mktemp("export-dataset")
    convert(DatasetConfig.from_dict(dataset_section(toy_dir, out)), out)
    return out


@pytest.fixture(scope="session")
def trained(toy_dir: Path, export_dataset: Path, tmp_path_factory: pytest.TempPathFactory):
    """A function: the run directory of a short training of a built-in model (cached)."""
    runs: dict[str, Path] = {}

    def run(model: str) -> Path:
        if model not in runs:
            work = tmp_path_factory.mktemp(f"export-{model}")
            config = write_config(
                work / "config.yaml",
                toy_dir,
                export_dataset,
                epochs=2,
                model={"name": model, "params": MODELS[model]},
                early_stopping={"patience": None},
            )
            done = gridtrain("train", "-c", str(config), "--run-dir", str(work / "run"))
            assert done.returncode == 0, done.stderr[-3000:]
            runs[model] = work / "run"
        return runs[model]

    return run


REPO = Path(__file__).resolve().parents[2]
TASK_CONFIGS = {
    "binary": "config.yaml",
    "multiclass": "multiclass.yaml",
    "regression": "regression.yaml",
}
NEGATIVE_WEIGHT_FRACTION = 0.15  # genWeight negative in this share: metrics must zero them


def task_config(kind: str, work: Path) -> Path:
    """The shipped config of ``kind`` made small (2400 toy events, one short epoch), with NLO-like
    negative weights (genWeight); ``nanoaod``: config/nanoaod.yaml as it is (real NanoAOD, NLO
    weights normalised to xsec x lumi, collision data, derived features), an MLP reading them."""
    import yaml

    if kind == "nanoaod":
        config = yaml.safe_load((REPO / "config" / "nanoaod.yaml").read_text())
        for sample in config["dataset"]["samples"]:
            sample["files"] = [str(REPO / name) for name in sample["files"]]
        config["dataset"]["outdir"] = str(work / "dataset")
        config["train"].update(
            {
                "model": {"name": "mlp", "params": {"hidden": [16]}},
                "epochs": 1,
                "early_stopping": {"patience": None},
                "run_dir": str(work / "run"),
            }
        )
        path = work / "config.yaml"
        path.write_text(yaml.safe_dump(config))
        return path
    task = "binary" if kind == "kfold" else kind  # kfold: the binary toy trained as 2 folds
    config = yaml.safe_load((REPO / "config" / TASK_CONFIGS[task]).read_text())
    config["toy"].update({"events": 2400, "outdir": str(work / "toy")})
    for sample in config["dataset"]["samples"]:
        sample["files"] = [str(work / "toy" / Path(sample["files"][0]).name)]
    config["dataset"].update(
        {"weight": "genWeight", "shard_events": 400, "outdir": str(work / "dataset")}
    )
    config["dataset"]["jagged"]["constituents"]["length"] = 8
    config["train"] = {
        "model": {"name": "mlp", "params": {"hidden": [16]}},
        "epochs": 1,
        "workers": 1,
        "batch_size": 128,
        "learning_rate": 0.003,
        "early_stopping": {"patience": None},
        "run_dir": str(work / "run"),
    }
    if kind == "kfold":
        config["train"]["folds"] = 2
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def task_run(tmp_path_factory: pytest.TempPathFactory):
    """A function: ``(config file, run directory)`` of a trained and exported run of a task
    (binary, multiclass or regression on the toy, kfold: the binary toy as 2 folds, or nanoaod)
    with negative weights, made once per session."""
    runs: dict[str, tuple[Path, Path]] = {}

    def run(kind: str) -> tuple[Path, Path]:
        if kind not in runs:
            import yaml

            from gridtrain.export.run import export_run

            work = tmp_path_factory.mktemp(f"task-{kind}")
            config = task_config(kind, work)
            toy = yaml.safe_load(config.read_text()).get("toy")
            steps = [("convert", "-c", str(config)), ("train", "-c", str(config))]
            if toy is not None:  # write the toy's files first
                fraction = f"--negative-weight-fraction={NEGATIVE_WEIGHT_FRACTION}"
                events, out = f"--events={toy['events']}", f"--out={toy['outdir']}"
                task = "binary" if kind == "kfold" else kind
                steps.insert(0, ("toy", f"--task={task}", events, out, fraction))
            for args in steps:
                done = gridtrain(*args)
                assert done.returncode == 0, (args, done.stderr[-3000:])
            export_run(work / "run", ("onnx",))
            runs[kind] = (config, work / "run")
        return runs[kind]

    return run
