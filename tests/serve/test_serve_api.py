"""gridtrain serve end to end over HTTP: the example notebook trains through the API, the event
stream follows it, the model loads; another run is cancelled, survives a service restart and
is resumed."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from serve_helpers import Service, toy_yaml

from gridtrain.serve.client import Client

NOTEBOOK = Path(__file__).parents[2] / "docs" / "examples" / "serve_client.ipynb"


@pytest.mark.slow
def test_the_example_notebook_trains_through_the_api_and_the_model_loads(
    start_service: Any, toy_dir: Path, serve_dataset: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    import nbformat
    from nbclient import NotebookClient

    service: Service = start_service()
    config = tmp_path / "config.yaml"
    config.write_text(toy_yaml(toy_dir, serve_dataset, epochs=1))
    for key, value in {
        "GRIDTRAIN_URL": service.url,
        "GRIDTRAIN_TOKEN_FILE": str(service.root / ".serve-token"),
        "GRIDTRAIN_CONFIG": str(config),
        "GRIDTRAIN_RUN": "notebook",
    }.items():
        monkeypatch.setenv(key, value)
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = "".join(
        output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", [])
    )
    assert "validation AUC" in printed
    assert "100% of the shards" in printed
    assert (tmp_path / "model.keras").stat().st_size > 0

    client = Client(service.url, service.token)
    events = list(client.events("notebook"))  # a finished run: its state, history, then end
    kinds = [event for event, _ in events]
    assert kinds[-1] == "end"
    assert events[-1][1]["phase"] == "finished"
    assert "history" in kinds
    assert "progress" in kinds
    assert client.status("notebook")["phase"] == "finished"
    assert "roc.png" in client.plots("notebook")

    from gridtrain.models import load_model

    model = load_model(client.download_model("notebook", tmp_path / "again.keras"))
    assert model.count_params() > 0


def wait_for(condition: Any, timeout: float = 120.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.5)


@pytest.mark.slow
def test_a_run_outlives_a_service_restart_and_is_cancelled_and_resumed(
    start_service: Any, toy_dir: Path, serve_dataset: Path
) -> None:
    service: Service = start_service()
    client = Client(service.url, service.token)
    client.submit(
        "long", toy_yaml(toy_dir, serve_dataset, epochs=2000, early_stopping={"patience": None})
    )  # cannot finish before it is cancelled, however fast the training
    wait_for(lambda: client.run("long")["progress"]["shards_done"] > 0, what="a trained shard")
    driver = client.status("long")["driver"]["pid"]

    service.stop()  # the training goes on without the service ...
    service.start()  # ... and the new service shows it again
    client = Client(service.url, service.token)
    assert [run["name"] for run in client.runs()] == ["long"]
    status = client.status("long")
    assert status["phase"] == "training"
    assert status["driver"]["pid"] == driver
    before = client.run("long")["progress"]["shards_done"]
    wait_for(
        lambda: client.run("long")["progress"]["shards_done"] > before, what="training to go on"
    )

    assert "stopped the driver" in client.cancel("long")
    assert client.run("long")["phase"] == "stopped"
    assert list(client.events("long"))[-1] == ("end", {"name": "long", "phase": "stopped"})

    client.resume("long")
    resumed = client.status("long")
    assert resumed["phase"] == "training"
    assert resumed["driver"]["pid"] != driver
    stopped_at = client.run("long")["progress"]["shards_done"]
    wait_for(
        lambda: client.run("long")["progress"]["shards_done"] > stopped_at,
        what="the resumed run to train",
    )
    client.cancel("long")
