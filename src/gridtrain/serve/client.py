"""A small Python client for ``gridtrain serve``: for notebooks and scripts.

Layer: serve, the far side of the HTTP API. Standard library only (``urllib``): it needs neither
FastAPI nor TensorFlow, so a laptop's notebook can drive trainings on the head node through an
ssh tunnel. The token comes in the ``Authorization`` header, never in a URL.

    client = Client("http://localhost:8765", token_file="runs/.serve-token")
    client.submit("mlp-1", config)
    client.wait("mlp-1", progress=lambda run: print(run["progress"]["fraction"]))
    client.metrics("mlp-1")["auc"]
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from gridtrain.errors import GridtrainError

ENDED = frozenset({"finished", "stopped", "lost"})


class ApiError(GridtrainError, RuntimeError):
    """The service answered with an error; ``status`` and ``problems`` (key, message) say what."""

    def __init__(self, status: int, problems: list[dict[str, Any]], url: str) -> None:
        self.status = status
        self.problems = problems
        text = "; ".join(f"{p.get('key') or 'error'}: {p.get('message')}" for p in problems)
        super().__init__(f"{url}: HTTP {status}: {text}")


def _problems(body: bytes) -> list[dict[str, Any]]:
    try:
        detail = json.loads(body)["detail"]
    except (ValueError, KeyError, TypeError):
        return [{"key": None, "message": body.decode(errors="replace")[:500]}]
    if isinstance(detail, list):
        return [dict(p) for p in detail]
    return [{"key": None, "message": str(detail)}]


class Client:
    """The REST API of one ``gridtrain serve`` at ``url``."""

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        token_file: str | Path | None = None,
        timeout: float = 330.0,
    ) -> None:
        if token is None:
            if token_file is None:
                raise ValueError("give the token, or the token file gridtrain serve wrote")
            token = Path(token_file).read_text().strip()
        self.url = url.rstrip("/")
        self.timeout = timeout
        self._headers = {"Authorization": f"Bearer {token}"}

    # -- transport ---------------------------------------------------------------------------

    def _open(self, method: str, path: str, body: Any = None, timeout: float | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = dict(self._headers)
        if data is not None:
            headers["Content-Type"] = "application/json"
        request = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as err:
            raise ApiError(err.code, _problems(err.read()), self.url + path) from None

    def _json(self, method: str, path: str, body: Any = None) -> Any:
        with self._open(method, path, body) as response:
            return json.loads(response.read())

    def _bytes(self, path: str) -> bytes:
        with self._open("GET", path) as response:
            data: bytes = response.read()
            return data

    # -- the API -------------------------------------------------------------------------------

    def validate(self, config: dict[str, Any] | str) -> dict[str, Any]:
        """The config with defaults filled; ``ApiError`` (422) naming each wrong key."""
        result: dict[str, Any] = self._json("POST", "/api/configs/validate", _body(config))
        return result["config"]

    def submit(self, name: str, config: dict[str, Any] | str) -> dict[str, Any]:
        """Start a training called ``name`` from a config (a mapping, or YAML text)."""
        result: dict[str, Any] = self._json("POST", "/api/runs", {"name": name, **_body(config)})
        return result

    def runs(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self._json("GET", "/api/runs")["runs"]
        return result

    def run(self, name: str) -> dict[str, Any]:
        """The run's summary: phase, progress, final AUC, downloads present."""
        result: dict[str, Any] = self._json("GET", f"/api/runs/{name}")
        return result

    def status(self, name: str) -> dict[str, Any]:
        """What ``gridtrain status --json`` prints for the run."""
        result: dict[str, Any] = self._json("GET", f"/api/runs/{name}/status")
        return result

    def cancel(self, name: str) -> str:
        return str(self._json("POST", f"/api/runs/{name}/cancel")["message"])

    def resume(self, name: str) -> str:
        return str(self._json("POST", f"/api/runs/{name}/resume")["message"])

    def events(self, name: str) -> Iterator[tuple[str, Any]]:
        """The run's server-sent events, (event, data), until its ``end`` event."""
        with self._open("GET", f"/api/runs/{name}/events") as response:
            event, data = "message", list[str]()
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        yield event, json.loads("\n".join(data))
                        if event == "end":
                            return
                    event, data = "message", []
                elif line.startswith("event:"):
                    event = line[6:].strip()
                elif line.startswith("data:"):
                    data.append(line[5:].strip())

    def wait(
        self,
        name: str,
        progress: Callable[[dict[str, Any]], None] | None = None,
        timeout: float = 3600.0,
    ) -> dict[str, Any]:
        """Follow the run until it is finished, stopped or lost; its last summary.

        ``progress`` is called with each new summary (``summary["progress"]["fraction"]``), and
        always with the last one: a run that ended before it was followed (a short one) is
        reported once, ended.
        """
        deadline = time.monotonic() + timeout
        last: dict[str, Any] = self.run(name)
        reported: dict[str, Any] | None = None
        while last["phase"] not in ENDED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {name!r} still {last['phase']} after {timeout:g} s")
            for event, data in self.events(name):
                if event == "progress":
                    last = reported = data
                    if progress is not None:
                        progress(data)
                if time.monotonic() > deadline:
                    break
            last = self.run(name)
        if progress is not None and last != reported:
            progress(last)
        return last

    def metrics(self, name: str) -> dict[str, Any]:
        """metrics.json of a finished run, as a dict."""
        result: dict[str, Any] = self._json("GET", f"/api/runs/{name}/metrics")
        return result

    def history(self, name: str) -> list[dict[str, Any]]:
        """The training curves: history.jsonl's records."""
        result: list[dict[str, Any]] = self._json("GET", f"/api/runs/{name}/history")
        return result

    def plots(self, name: str) -> dict[str, bytes]:
        """The report's PNGs, by file name (``IPython.display.Image(data=...)`` shows one)."""
        names = self._json("GET", f"/api/runs/{name}/plots")["plots"]
        return {plot: self._bytes(f"/api/runs/{name}/plots/{plot}") for plot in names}

    def download_model(self, name: str, path: str | Path) -> Path:
        """Save model.keras to ``path``."""
        target = Path(path)
        target.write_bytes(self._bytes(f"/api/runs/{name}/model"))
        return target

    def download_export(self, name: str, path: str | Path) -> Path:
        """Save RUN_DIR/export as a zip file at ``path``."""
        target = Path(path)
        target.write_bytes(self._bytes(f"/api/runs/{name}/export.zip"))
        return target


def _body(config: dict[str, Any] | str) -> dict[str, Any]:
    return {"yaml": config} if isinstance(config, str) else {"config": config}
