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
import os
import pty
import select
import ssl
import stat
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from serve_helpers import SERVE, Service, toy_config

from tests.certificates import self_signed

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
    from gridtrain.config import validate_config
    from gridtrain.train.settings import TrainConfig, WorkerSpec

    (folder / "plots").mkdir(parents=True)
    sample = {"name": "s", "files": ["s.root"], "label": 1}
    config = validate_config({"dataset": {"tree": "t", "samples": [sample]}, "train": {}})
    WorkerSpec(
        manifest={"shards": {"train": [{"path": "a.h5"}]}},
        source="manifest.json",
        settings=TrainConfig.from_dict({**config["train"], "epochs": 1, "workers": 1}),
        features=("x",),
    ).write(folder / "worker.json")
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
    (outside / "driver.json").write_text(json.dumps({"pid": 1, "host": "far", **OUTSIDE_JSON}))
    (outside / "state.json").write_text(json.dumps({"leases": {"stopped": OUTSIDE_SECRET}}))
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
    control = fake_run(root / "control")  # the files status, cancel and resume read
    (control / "driver.json").symlink_to(outside / "driver.json")
    (control / "state.json").symlink_to(outside / "state.json")
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
    assert set(runs) == {"real", "links", "inner"}  # no run: a linked folder or driver.json
    assert set(runs["real"]["files"]) == {"model", "export", "plots"}
    assert runs["links"]["files"] == ["plots"]  # model.keras and export/ are links out
    assert runs["links"]["auc"] is None  # metrics.json is a link out
    assert runs["links"]["progress"]["epoch"] == 0  # and so is history.jsonl
    assert runs["links"]["phase"] != "finished"  # metrics.json is a link out
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
        "/api/runs/control",
        "/api/runs/control/status",  # it served driver.json's target
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
    for action in ("cancel", "resume"):
        assert call(linked, "POST", f"/api/runs/control/{action}")[0] == 404
    status, raw = call(linked, "GET", "/api/runs/inner/export.zip")
    assert status == 200
    assert OUTSIDE_SECRET.encode() not in raw
    for tail in ("model", "plots/roc.png", "metrics", "status"):
        status, raw = call(linked, "GET", f"/api/runs/real/{tail}")
        assert status == 200, (tail, raw[:200])  # a run's own files are still served


# -- 3. Data confined like code --------------------------------------------------------------------

STAGE_PREFIX = "root://eos.example.org//store/user/me/"


@pytest.fixture(scope="module")
def confined(
    tmp_path_factory: pytest.TempPathFactory, toy_dir: Path
) -> Iterator[tuple[Service, Path]]:
    """A service that may read its root, the toy files and one more folder (--allow-data), and
    stage only below STAGE_PREFIX; the folder ``outside`` is none of them."""
    base = tmp_path_factory.mktemp("confined")
    allowed = base / "allowed"
    (allowed / "dataset").mkdir(parents=True)
    (allowed / "condor.yaml").write_text("request_gpus: 0\n")
    outside = base / "outside"
    (outside / "dataset").mkdir(parents=True)
    (outside / "secrets.yaml").write_text("api_key: x\nsecond_secret_name: y\n")
    (allowed / "out").symlink_to(outside)
    root = base / "runs"
    root.mkdir()
    (root / "out").symlink_to(outside)
    args = ["--allow-data", str(allowed), "--allow-data", str(toy_dir)]
    service = Service(root, *args, "--allow-stage", STAGE_PREFIX).start()
    try:
        yield service, base
    finally:
        service.stop()


def with_key(config: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    """``config`` with the dotted ``key`` (list indices as numbers) set to ``value``."""
    config = json.loads(json.dumps(config))
    *parents, last = key.split(".")
    node: Any = config
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
    if isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return config


PATH_KEYS = [
    "dataset.outdir",
    "dataset.samples.0.files.0",
    "toy.outdir",
    "train.run_dir",
    "train.condor.profile",
]


def test_a_path_outside_the_root_and_the_allowed_folders_is_refused_alike(
    confined: tuple[Service, Path], toy_dir: Path
) -> None:
    service, base = confined
    good = toy_config(toy_dir, base / "allowed" / "dataset")
    assert call_json(service, "POST", "/api/configs/validate", {"config": good})[0] == 200
    outside = base / "outside"
    candidates = {  # each exists, or not, or is a link out from an allowed folder
        "exists": str(outside / "dataset"),
        "missing": str(outside / "nothing-here"),
        "file": str(outside / "secrets.yaml"),
        "etc": "/etc/passwd",
        "link in root": str(service.root / "out" / "dataset"),
        "link in allowed": str(base / "allowed" / "out" / "secrets.yaml"),
        "dot-dot": str(base / "allowed" / ".." / "outside" / "dataset"),
        "relative": "../../outside/dataset",
    }
    for key in PATH_KEYS:
        messages = set()
        for label, value in candidates.items():
            config = with_key(good, key, value)
            for path in ("/api/configs/validate", "/api/runs"):
                status, body = call_json(service, "POST", path, {"name": "x", "config": config})
                assert status == 422, (key, label, path, body)
                assert [p["key"] for p in body["detail"]] == [key], body
                messages.add(body["detail"][0]["message"].replace(repr(value), "VALUE"))
        assert len(messages) == 1, (key, messages)  # says nothing of what is there
        assert "--allow-data" in messages.pop()
    assert [p.name for p in service.root.iterdir() if not p.name.startswith(".")] == ["out"]


def test_the_site_profile_probe_learns_nothing_of_the_file(
    confined: tuple[Service, Path], toy_dir: Path
) -> None:
    service, base = confined
    good = toy_config(toy_dir, base / "allowed" / "dataset", executor="condor")
    probe = with_key(good, "train.condor.profile", str(base / "outside" / "secrets.yaml"))
    for path in ("/api/configs/validate", "/api/runs"):
        status, raw = call(service, "POST", path, {"name": "probe", "config": probe})
        assert status == 422, raw[:300]
        assert b"api_key" not in raw
        assert b"second_secret_name" not in raw
    for name in ("local-pool", "lxplus", str(base / "allowed"), str(base / "allowed/condor.yaml")):
        config = with_key(good, "train.condor.profile", name)
        status, body = call_json(service, "POST", "/api/configs/validate", {"config": config})
        assert status == 200, (name, body)  # a built-in name, or a file in an allowed folder
    assert not (service.root / "probe").exists()


def test_a_storage_url_needs_an_allowed_prefix(
    confined: tuple[Service, Path], toy_dir: Path
) -> None:
    service, base = confined
    good = toy_config(toy_dir, base / "allowed" / "dataset")
    allowed = [STAGE_PREFIX + "ds", STAGE_PREFIX.rstrip("/"), STAGE_PREFIX + "a/b?x=1"]
    for url in allowed:
        config = with_key(good, "stage.url", url)
        status, body = call_json(service, "POST", "/api/configs/validate", {"config": config})
        assert status == 200, (url, body)
    refused = [
        "root://eos.example.org//store/user/meX/ds",
        "root://eos.example.org//store/user/me/../other",
        "root://evil.example.org//store/user/me/ds",
        "root://eos.example.org.evil.example//store/user/me/ds",
        str(base / "outside"),
        "https://example.org/x",
    ]
    for url in refused:
        config = with_key(good, "stage.url", url)
        status, body = call_json(service, "POST", "/api/configs/validate", {"config": config})
        assert status == 422, (url, body)
        assert [p["key"] for p in body["detail"]] == ["stage.url"]
        assert "--allow-stage" in body["detail"][0]["message"]
    remote = with_key(good, "dataset.samples.0.files.0", "root://evil.example.org//x.root")
    status, body = call_json(service, "POST", "/api/configs/validate", {"config": remote})
    assert status == 422
    assert body["detail"][0]["key"] == "dataset.samples.0.files.0"


def test_without_allow_stage_no_storage_url_is_accepted(plain: Service, toy_dir: Path) -> None:
    config = with_key(toy_config(toy_dir, plain.root), "stage.url", STAGE_PREFIX + "ds")
    config["dataset"]["samples"] = [
        {"name": "s", "files": [str(plain.root / "s.root")], "label": 1}
    ]
    status, body = call_json(plain, "POST", "/api/configs/validate", {"config": config})
    assert status == 422
    assert [p["key"] for p in body["detail"]] == ["stage.url"]


# -- 4. A finished run is not resumed --------------------------------------------------------------


def test_resuming_a_finished_run_is_refused_with_409(linked: Service) -> None:
    run = linked.root / "real"
    before = {name: (run / name).read_bytes() for name in ("model.keras", "metrics.json")}
    status, body = call_json(linked, "POST", "/api/runs/real/resume")
    assert status == 409, body
    assert "finished" in body["detail"][0]["message"]
    assert {name: (run / name).read_bytes() for name in before} == before
    assert not (run / "driver.log").exists()  # no driver was started


# -- 5. Beyond loopback only on purpose ------------------------------------------------------------


def test_a_non_loopback_host_is_refused_without_insecure_bind_or_tls(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    try:
        result = subprocess.run(
            [*SERVE, "--root", str(root), "--host", "0.0.0.0", "--port", "0"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("gridtrain serve --host 0.0.0.0 started without --insecure-bind or TLS")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "0.0.0.0" in line
    assert "--insecure-bind" in line
    assert "--certfile" in line
    assert result.stdout == ""


def test_insecure_bind_starts_beyond_loopback(start_service: Any, tmp_path: Path) -> None:
    service = start_service(tmp_path / "runs", "--host", "0.0.0.0", "--insecure-bind")
    assert call_json(service, "GET", "/api/runs") == (200, {"runs": []})


def test_tls_serves_https(start_service: Any, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    service = start_service(tmp_path / "runs", "--certfile", str(cert), "--keyfile", str(key))
    assert service.url.startswith("https://")
    assert call_json(service, "GET", "/api/runs") == (200, {"runs": []})
    parts = urlsplit(service.url)  # plain HTTP on the TLS port gets no answer with data
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        connection.request("GET", "/api/runs", headers={"Authorization": f"Bearer {service.token}"})
        assert b'"runs"' not in connection.getresponse().read()
    except (http.client.HTTPException, OSError):
        pass  # the TLS server drops it
    finally:
        connection.close()


# -- 6. The login link stays out of logs -----------------------------------------------------------


def test_the_login_link_goes_to_a_private_file_when_stdout_is_not_a_terminal(
    plain: Service,
) -> None:
    log = plain.log.read_text()
    assert plain.token not in log
    login = plain.root / ".serve-login"
    assert str(login) in log
    assert stat.S_IMODE(login.stat().st_mode) == 0o600
    assert f"{plain.url}/#token={plain.token}" in login.read_text()


def test_on_a_terminal_the_login_link_is_printed(tmp_path: Path) -> None:
    root = tmp_path / "runs"
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [*SERVE, "--root", str(root), "--port", "0"],
        stdin=subprocess.DEVNULL,
        stdout=follower,
        stderr=follower,
    )
    os.close(follower)
    seen = b""
    try:
        deadline = time.monotonic() + 60
        while b"#token=" not in seen and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 0.5)
            if ready:
                try:
                    seen += os.read(leader, 4096)
                except OSError:
                    break
        token = (root / ".serve-token").read_text().strip()
        assert f"#token={token}".encode() in seen, seen
        assert not (root / ".serve-login").exists()
    finally:
        process.terminate()
        process.wait(timeout=30)
        os.close(leader)


def test_a_yaml_config_over_allowed_data_validates(
    confined: tuple[Service, Path], toy_dir: Path
) -> None:
    service, base = confined
    text = yaml.safe_dump(toy_config(toy_dir, base / "allowed" / "dataset"), sort_keys=False)
    status, body = call_json(service, "POST", "/api/configs/validate", {"yaml": text})
    assert status == 200, body
    assert body["config"]["dataset"]["outdir"] == str(base / "allowed" / "dataset")
