"""gridtrain serve's security: tokens, CSRF, path parameters, body size, user code in configs.

Everything goes over HTTP (``http.client``, which sends a path exactly as written) to a real
``gridtrain serve`` on 127.0.0.1; no training is started, so each refusal is also checked to
have changed nothing under --root.
"""

from __future__ import annotations

import http.client
import json
import socket
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from serve_helpers import Service, toy_config

from gridtrain.serve.security import COOKIE, csrf_token


def raw_request(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """The status and the response's bytes exactly as they came."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    data = json.dumps(body).encode() if body is not None else None
    all_headers = {"Content-Type": "application/json"} if data is not None else {}
    all_headers.update(headers or {})
    try:
        connection.request(method, path, data, all_headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def request(
    url: str,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    """The status and the body: parsed when it is JSON, the raw bytes otherwise."""
    status, raw = raw_request(url, method, path, body, headers)
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# What the files beside and above the run hold: no response may carry these bytes. (The 404
# details name the path asked for, "ps.secret" included, so the file names prove nothing.)
SECRET_CONTENTS = "7c1d0e9a-the-ps-secret-itself"
OUTSIDE_CONTENTS = "3f5b2a41-a file outside every run"
WORKER_SPEC_MARKER = "a90e6c27-the worker spec"


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory, toy_dir: Path) -> Iterator[Service]:
    """A service over a root with one run directory (no training: only its files matter here);
    it may read the toy files (--allow-data), and datasets under its root."""
    base = tmp_path_factory.mktemp("security")
    root = base / "runs"
    known = root / "known"
    (known / "plots").mkdir(parents=True)
    (known / "worker.json").write_text(json.dumps({"written_by": WORKER_SPEC_MARKER}))
    (known / "ps.secret").write_text(SECRET_CONTENTS)
    (known / "plots" / "roc.png").write_bytes(b"\x89PNG")
    (known / "export" / "model").mkdir(parents=True)
    (known / "export" / "model" / "model.onnx").write_bytes(b"onnx")
    (root / "outside.txt").write_text(OUTSIDE_CONTENTS)
    allowed = base / "models"
    allowed.mkdir()
    (allowed / "net.py").write_text("def build(**kw):\n    raise SystemExit\n")
    service = Service(root, "--allow-models", str(allowed), "--allow-data", str(toy_dir)).start()
    try:
        yield service
    finally:
        service.stop()


GET_ROUTES = [
    "/",
    "/runs/known",
    "/static/app.js",
    "/api/openapi.json",
    "/api/runs",
    "/api/events",
    "/api/runs/known",
    "/api/runs/known/status",
    "/api/runs/known/history",
    "/api/runs/known/metrics",
    "/api/runs/known/model",
    "/api/runs/known/plots",
    "/api/runs/known/plots/roc.png",
    "/api/runs/known/export",
    "/api/runs/known/export.zip",
    "/api/runs/known/export/model/model.onnx",
    "/api/runs/known/events",
]
POST_ROUTES = [
    "/api/runs",
    "/api/configs/validate",
    "/api/runs/known/cancel",
    "/api/runs/known/resume",
    "/api/session",
]


def test_the_token_file_is_private_and_the_token_long(service: Service) -> None:
    mode = stat.S_IMODE((service.root / ".serve-token").stat().st_mode)
    assert mode == 0o600
    assert len(service.token) >= 32


def test_without_the_right_token_every_route_answers_401_and_nothing_changes(
    service: Service,
) -> None:
    before = tree(service.root)
    wrong = {
        "none": {},
        "wrong bearer": {"Authorization": "Bearer " + "x" * len(service.token)},
        "other scheme": {"Authorization": f"Basic {service.token}"},
        "wrong cookie": {"Cookie": f"{COOKIE}={'y' * 40}"},
    }
    for label, headers in wrong.items():
        for path in GET_ROUTES:
            status, _ = request(service.url, "GET", path, headers=headers)
            assert status == 401, (label, path)
        for path in POST_ROUTES:
            status, _ = request(service.url, "POST", path, {"name": "x"}, headers=headers)
            assert status == 401, (label, path)
    for path in GET_ROUTES:  # the token in the query string is not a token
        status, _ = request(service.url, "GET", f"{path}?token={service.token}")
        assert status == 401, path
    status, _ = request(service.url, "POST", f"/api/runs/known/cancel?token={service.token}")
    assert status == 401
    assert tree(service.root) == before


def test_the_login_page_comes_with_401_and_holds_no_data(service: Service) -> None:
    status, page = request(service.url, "GET", "/", headers={"Accept": "text/html"})
    assert status == 401
    assert b"#token=" in page
    assert b"known" not in page


def test_dot_dot_in_every_path_parameter_reaches_nothing(service: Service) -> None:
    auth = {"Authorization": f"Bearer {service.token}"}
    before = tree(service.root)
    names = ["..", "../known", "..%2Fknown", "%2E%2E", "known%2F..", ".hidden", "known/.."]
    for name in names:
        for tail in ["", "/status", "/model", "/plots", "/export", "/export.zip", "/metrics"]:
            status, _ = request(service.url, "GET", f"/api/runs/{name}{tail}", headers=auth)
            assert status == 404, (name, tail)
        status, _ = request(service.url, "POST", f"/api/runs/{name}/cancel", headers=auth)
        assert status == 404, name
        status, _ = request(service.url, "GET", f"/runs/{name}", headers=auth)
        assert status == 404, name
    escapes = ["..%2Fps.secret", "../ps.secret", "..%2F..%2Foutside.txt", "%2E%2E%2Fworker.json"]
    for escape in escapes:
        for prefix in ("/api/runs/known/plots/", "/api/runs/known/export/", "/static/"):
            status, raw = raw_request(service.url, "GET", prefix + escape, headers=auth)
            for contents in (SECRET_CONTENTS, OUTSIDE_CONTENTS, WORKER_SPEC_MARKER):
                assert contents.encode() not in raw, (prefix + escape, raw[:200])
            assert status == 404, prefix + escape
    status, _ = request(service.url, "GET", "/api/runs/known/export/model/model.onnx", headers=auth)
    assert status == 200  # a file the export lists is served
    for name in ("..", "../evil", "a/b", ".x", "x" * 65, ""):
        status, _ = request(
            service.url, "POST", "/api/runs", {"name": name, "config": {}}, headers=auth
        )
        assert status == 422, name
    assert tree(service.root) == before


def test_a_100_mb_body_is_refused_early_with_413(service: Service) -> None:
    parts = urlsplit(service.url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        head = (
            f"POST /api/runs HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Authorization: Bearer {service.token}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {100 * 1000 * 1000}\r\n\r\n"
        )
        sock.sendall(head.encode() + b"{" + b" " * 65536)  # the rest is never sent
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    chunked = (  # no Content-Length: counted as it arrives
        f"POST /api/configs/validate HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Authorization: Bearer {service.token}\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(chunked.encode())
        chunk = b" " * 600_000  # two of them: just over the 1 MiB limit, then the last chunk
        sock.sendall((f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n") * 2 + b"0\r\n\r\n")
        answer = sock.recv(65536).decode(errors="replace")
    assert answer.startswith("HTTP/1.1 413"), answer[:200]


def test_a_user_model_outside_the_allowed_folder_is_refused(
    service: Service, toy_dir: Path, tmp_path: Path
) -> None:
    auth = {"Authorization": f"Bearer {service.token}"}
    before = tree(service.root)
    evil = tmp_path / "evil.py"
    evil.write_text("import os\nos.system('touch /tmp/pwned')\n")
    dataset = service.root / "dataset"  # inside the root: only the model is wrong
    for model in (str(evil) + ":build", "../evil.py:build", "os:system", "gridtrain.cli:main"):
        config = toy_config(toy_dir, dataset, model={"name": model})
        for path in ("/api/configs/validate", "/api/runs"):
            status, body = request(
                service.url, "POST", path, {"name": "evil", "config": config}, headers=auth
            )
            assert status == 422, (model, path)
            assert body["detail"][0]["key"] == "train.model.name", body
    config = toy_config(toy_dir, dataset, model={"name": "net.py:build"})
    status, body = request(service.url, "POST", "/api/configs/validate", {"config": config}, auth)
    assert status == 200
    assert body["config"]["train"]["model"]["name"].endswith("/models/net.py:build")
    assert tree(service.root) == before


def test_schema_errors_come_back_by_key(service: Service, toy_dir: Path, tmp_path: Path) -> None:
    auth = {"Authorization": f"Bearer {service.token}"}
    config = toy_config(toy_dir, tmp_path, epochs="many", nonsense=1)
    status, body = request(service.url, "POST", "/api/configs/validate", {"config": config}, auth)
    assert status == 422
    keys = {problem["key"] for problem in body["detail"]}
    assert {"train.epochs", "train"} <= keys, body
    status, body = request(
        service.url, "POST", "/api/configs/validate", {"yaml": "train: [1,\n"}, auth
    )
    assert status == 422
    assert "YAML" in body["detail"][0]["message"]


def test_a_cross_site_form_post_without_the_csrf_token_is_refused(service: Service) -> None:
    cookie = {"Cookie": f"{COOKIE}={service.token}"}
    before = tree(service.root)
    body = {"yaml": "dataset: {}"}
    attacks = [
        {**cookie, "Sec-Fetch-Site": "cross-site", "Origin": "https://evil.example"},
        {**cookie, "Origin": "https://evil.example"},
        cookie,  # same site, but no CSRF token
        {**cookie, "X-CSRF-Token": "0" * 64},
        {**cookie, "Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf_token(service.token)},
    ]
    for headers in attacks:
        for path in ("/api/configs/validate", "/api/runs/known/cancel", "/api/runs"):
            status, _ = request(service.url, "POST", path, body, headers=headers)
            assert status == 403, (headers, path)
    good = {**cookie, "Sec-Fetch-Site": "same-origin", "X-CSRF-Token": csrf_token(service.token)}
    status, _ = request(service.url, "POST", "/api/configs/validate", body, headers=good)
    assert status == 422  # through the checks: the (empty) dataset section is what is wrong
    assert tree(service.root) == before
