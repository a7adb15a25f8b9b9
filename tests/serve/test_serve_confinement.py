"""What a token holder can reach through gridtrain serve, and what it cannot (issue 27).

Each test holds one line of the table in docs/explanation/security.md ("The web service"):
configs that cannot explode (YAML aliases refused, replies bounded), downloads that never follow
a link out of a run, data read only from --root and the --allow-data folders, no resume of a
finished run, no plain-HTTP bind beyond loopback, and a login link kept out of logs. Everything
goes over HTTP to a real ``gridtrain serve`` on 127.0.0.1 (https for the TLS test).
"""

from __future__ import annotations

import http.client
import json
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from serve_helpers import Service

OUTSIDE_SECRET = "5e0c1f4b-a file outside the root"
OUTSIDE_JSON = {"auc": 0.99, "leaked": OUTSIDE_SECRET}


def call(
    service: Service, method: str, path: str, body: Any = None, timeout: float = 60
) -> tuple[int, bytes]:
    """The status and the bytes of one authenticated request (https where the service is)."""
    parts = urlsplit(service.url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
        connection = http.client.HTTPSConnection(
            parts.hostname, parts.port, timeout=timeout, context=context
        )
    else:
        connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    headers = {"Authorization": f"Bearer {service.token}"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    try:
        connection.request(method, path, data, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def call_json(service: Service, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    status, raw = call(service, method, path, body)
    return status, json.loads(raw)


def fake_run(folder: Path, *, finished: bool = True) -> Path:
    """A run directory as the driver leaves it, without a training: what the service reads."""
    (folder / "plots").mkdir(parents=True)
    spec = {
        "manifest": {"shards": {"train": [{"path": "a.h5"}]}},
        "settings": {"epochs": 1, "executor": "local", "workers": 1},
    }
    (folder / "worker.json").write_text(json.dumps(spec))
    (folder / "config.yaml").write_text("dataset: {}\n")
    (folder / "history.jsonl").write_text('{"type": "epoch", "epoch": 1, "val_loss": 0.5}\n')
    if finished:
        (folder / "metrics.json").write_text(json.dumps({"auc": 0.75}))
        (folder / "model.keras").write_bytes(b"PK a model")
        (folder / "plots" / "roc.png").write_bytes(b"\x89PNG roc")
        (folder / "export" / "model").mkdir(parents=True)
        (folder / "export" / "model" / "model.onnx").write_bytes(b"onnx")
    return folder


# -- 1. YAML that cannot explode -------------------------------------------------------------------

BOMB_LEVELS = 9  # 10**9 strings once expanded: a 2.2 GB reply and +10.6 GB before the fix


def alias_bomb(levels: int = BOMB_LEVELS) -> str:
    """Each anchor repeats the one before ten times: a few hundred bytes, 10**levels leaves."""
    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels):
        before = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{','.join([before] * 10)}]")
    lines.append(f"train: {{epochs: *a{levels - 1}}}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A service over an empty root, with nothing allowed beyond it."""
    service = Service(tmp_path_factory.mktemp("plain") / "runs").start()
    try:
        yield service
    finally:
        service.stop()


def test_a_yaml_alias_bomb_is_refused_quickly_with_a_small_reply(plain: Service) -> None:
    import psutil

    bomb = alias_bomb()
    assert len(bomb) < 600
    process = psutil.Process(plain.process.pid if plain.process else 0)
    before = process.memory_info().rss
    started = time.monotonic()
    status, raw = call(plain, "POST", "/api/configs/validate", {"yaml": bomb}, timeout=120)
    elapsed = time.monotonic() - started
    grown = process.memory_info().rss - before
    assert status == 422, raw[:300]
    assert len(raw) < 64 * 1024
    assert grown < 100 * 1024 * 1024, f"the service grew by {grown / 2**20:.0f} MiB"
    assert elapsed < 10
    (problem,) = json.loads(raw)["detail"]
    assert "alias" in problem["message"]
    assert "\n" not in problem["message"]
    for path in ("/api/runs", "/api/configs/validate"):  # submit refuses it the same way
        status, raw = call(plain, "POST", path, {"name": "bomb", "yaml": bomb})
        assert status == 422
        assert len(raw) < 64 * 1024
    assert not (plain.root / "bomb").exists()


def test_a_config_with_many_long_problems_gets_a_bounded_reply(plain: Service) -> None:
    long = "x" * 200_000
    config = {
        "dataset": {"tree": long, "samples": [{"name": long, "files": [1] * 3000}]},
        "train": {"epochs": long},
    }
    status, raw = call(plain, "POST", "/api/configs/validate", {"config": config})
    assert status == 422
    assert len(raw) < 64 * 1024
    problems = json.loads(raw)["detail"]
    assert len(problems) <= 51
    assert all(len(p["message"]) <= 400 and len(p["key"] or "") <= 200 for p in problems)
    assert "more" in problems[-1]["message"]  # says how many were left out


def test_deeply_nested_yaml_is_refused_not_a_crash(plain: Service) -> None:
    status, body = call_json(plain, "POST", "/api/configs/validate", {"yaml": "[" * 100_000})
    assert status == 422, body
    deep: Any = {"dataset": {}}
    for _ in range(500):
        deep = {"train": deep}
    status, body = call_json(plain, "POST", "/api/configs/validate", {"config": deep})
    assert status == 422, body
    assert "levels deep" in body["detail"][0]["message"]


# -- 2. Downloads never follow a link out ----------------------------------------------------------


@pytest.fixture(scope="module")
def linked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """A root with a real finished run, a run whose files are links out, and a run folder that
    is itself a link to a folder outside the root."""
    base = tmp_path_factory.mktemp("linked")
    outside = base / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(OUTSIDE_SECRET)
    (outside / "secret.json").write_text(json.dumps(OUTSIDE_JSON))
    (outside / "secret.jsonl").write_text(json.dumps(OUTSIDE_JSON) + "\n")
    (outside / "export").mkdir()
    (outside / "export" / "leak.onnx").write_text(OUTSIDE_SECRET)
    root = base / "runs"
    fake_run(root / "real")
    run = fake_run(root / "links", finished=False)
    (run / "model.keras").symlink_to(outside / "secret.txt")
    (run / "metrics.json").symlink_to(outside / "secret.json")
    (run / "history.jsonl").unlink()
    (run / "history.jsonl").symlink_to(outside / "secret.jsonl")
    (run / "plots" / "roc.png").symlink_to(outside / "secret.txt")
    (run / "export").symlink_to(outside / "export")
    inner = fake_run(root / "inner")  # links below a real export/ and plots/
    (inner / "export" / "model" / "leak.onnx").symlink_to(outside / "secret.txt")
    (inner / "export" / "out").symlink_to(outside / "export")
    (inner / "plots" / "leak.png").symlink_to(outside / "secret.txt")
    fake_run(outside / "elsewhere")
    (outside / "elsewhere" / "model.keras").write_text(OUTSIDE_SECRET)
    (root / "escaped").symlink_to(outside / "elsewhere")
    service = Service(root).start()
    try:
        yield service
    finally:
        service.stop()


def test_links_out_of_a_run_are_neither_listed_nor_served(linked: Service) -> None:
    status, body = call_json(linked, "GET", "/api/runs")
    assert status == 200
    runs = {run["name"]: run for run in body["runs"]}
    assert set(runs) == {"real", "links", "inner"}  # the linked run folder is no run
    assert set(runs["real"]["files"]) == {"model", "export", "plots"}
    assert runs["links"]["files"] == ["plots"]  # model.keras and export/ are links out
    assert runs["links"]["auc"] is None  # metrics.json is a link out
    assert runs["links"]["progress"]["epoch"] == 0  # and so is history.jsonl
    refused = [
        "/api/runs/links/model",
        "/api/runs/links/metrics",
        "/api/runs/links/plots/roc.png",
        "/api/runs/links/export.zip",
        "/api/runs/links/export/leak.onnx",
        "/api/runs/inner/export/model/leak.onnx",
        "/api/runs/inner/export/out/leak.onnx",
        "/api/runs/inner/plots/leak.png",
        "/api/runs/escaped",
        "/api/runs/escaped/model",
        "/api/runs/escaped/metrics",
        "/api/runs/escaped/history",
        "/api/runs/escaped/status",
        "/runs/escaped",
    ]
    for path in refused:
        status, raw = call(linked, "GET", path)
        assert status == 404, (path, raw[:200])
        assert OUTSIDE_SECRET.encode() not in raw, path
    listed = {
        "/api/runs/links/plots": {"plots": []},
        "/api/runs/links/export": {"files": []},
        "/api/runs/links/history": [],
        "/api/runs/inner/plots": {"plots": ["roc.png"]},
        "/api/runs/inner/export": {"files": ["model/model.onnx"]},
    }
    for path, expected in listed.items():
        assert call_json(linked, "GET", path) == (200, expected), path
    status, raw = call(linked, "GET", "/api/runs/inner/export.zip")
    assert status == 200
    assert OUTSIDE_SECRET.encode() not in raw
    for path in ("/api/runs/real/model", "/api/runs/real/plots/roc.png", "/api/runs/real/metrics"):
        assert call(linked, "GET", path)[0] == 200, path  # real files are still served
