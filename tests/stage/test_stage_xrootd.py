"""Push, pull, stage-in and check against a real xrootd server on 127.0.0.1."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from pathlib import Path

import pytest
from stage_helpers import fake_dataset, flip_byte, identity

from gridtrain.checksum import adler32_file
from gridtrain.cli import main
from gridtrain.config import DatasetConfig
from gridtrain.data.convert import convert
from gridtrain.data.gather import gather
from gridtrain.data.groups import group_count, plan_group
from gridtrain.data.manifest import load_manifest, verify_local
from gridtrain.errors import ChecksumMismatchError, StageError
from gridtrain.stage import StageIn
from gridtrain.stage.check import check
from gridtrain.stage.dataset import pull, push
from gridtrain.stage.transfer import Transfer, TransferOptions
from tests.conftest import split_toy, toy_config, toy_section

pytestmark = pytest.mark.xrootd

FAST = TransferOptions(parallel=3, timeout=3, retries=1, backoff=0.05)


@pytest.fixture(scope="module")
def dataset(toy_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real converted toy dataset: 12,000 events in 7 shards."""
    out = tmp_path_factory.mktemp("dataset")
    convert(toy_config(toy_dir, out, shard_events=2000))
    return out


def shard_files(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.h5"))


def test_push_then_pull_verifies_every_shard_and_writes_the_manifest_last(
    xrootd_server, area, dataset, tmp_path
):
    manifest = load_manifest(dataset)
    entries = [e for shards in manifest.shards.values() for e in shards]
    summary = push(dataset, xrootd_server.url(area), FAST)
    assert (summary.copied, summary.kept) == (len(entries), 0)

    remote = xrootd_server.local(area)
    for entry in entries:
        assert adler32_file(remote / entry.path) == entry.adler32
    assert not list(remote.glob(".*"))  # no .part left behind
    pushed_manifest = remote / "manifest.json"
    assert pushed_manifest.read_bytes() == (dataset / "manifest.json").read_bytes()
    last_shard = max(p.stat().st_mtime_ns for p in shard_files(remote))
    assert pushed_manifest.stat().st_mtime_ns >= last_shard

    again = push(dataset, xrootd_server.url(area), FAST)
    assert (again.copied, again.kept) == (0, len(entries))

    local = tmp_path / "pulled"
    pulled = pull(xrootd_server.url(area), local, FAST)
    assert pulled.copied == len(entries)
    assert (local / "manifest.json").read_bytes() == pushed_manifest.read_bytes()
    assert verify_local(load_manifest(local), local) == []
    assert not list(local.glob(".*"))


def test_a_grouped_dataset_keeps_its_subfolders_on_the_server(
    xrootd_server, area, toy_dir, tmp_path
):
    from gridtrain.train.driver import _shard_locations

    files = split_toy(toy_dir, tmp_path / "split", 2)
    section = toy_section(toy_dir, tmp_path / "grouped", files_per_job=1, shard_events=2000)
    for sample in section["samples"]:
        sample["files"] = files[sample["name"]]
    cfg = DatasetConfig.from_dict(section)
    for k in range(group_count(cfg)):
        convert(cfg, file_group=plan_group(cfg, k))
    manifest = gather(cfg)
    entries = [e for shards in manifest.shards.values() for e in shards]
    assert {e.path.rsplit("/", 1)[0] for e in entries} == {"groups/g0000", "groups/g0001"}

    summary = push(tmp_path / "grouped", xrootd_server.url(area), FAST)
    assert summary.copied == len(entries)
    remote = xrootd_server.local(area)
    for entry in entries:  # the remote layout is the local one
        assert adler32_file(remote / entry.path) == entry.adler32
    # What training does with stage.url set: every shard where push put it.
    locations = _shard_locations(manifest, str(tmp_path / "grouped"), xrootd_server.url(area))
    assert locations == {e.path: f"{xrootd_server.url(area)}/{e.path}" for e in entries}

    pull(xrootd_server.url(area), tmp_path / "pulled", FAST)
    assert verify_local(load_manifest(tmp_path / "pulled"), tmp_path / "pulled") == []
    only = tmp_path / "remote-only"
    pull(xrootd_server.url(area), only, FAST, manifest_only=True)
    urls = [e.path for shards in load_manifest(only).shards.values() for e in shards]
    assert urls == [f"{xrootd_server.url(area)}/{e.path}" for e in entries]


def test_url_paths_manifest_feeds_stagein_with_prefetch_and_eviction(
    xrootd_server, area, dataset, tmp_path
):
    url = xrootd_server.url(area)
    push(dataset, url, FAST, url_paths=True)
    remote_manifest = load_manifest(xrootd_server.local(area))
    entries = remote_manifest.shards["train"]
    assert all(e.path.startswith(url + "/") for e in entries)
    a, b, c = entries[:3]
    budget = a.bytes + b.bytes + c.bytes - 1  # never room for all three
    scratch = tmp_path / "scratch"
    with StageIn(scratch, budget, timeout=3, retries=1) as stagein:
        path_a = stagein.get(a.path, a.bytes, a.adler32)
        stagein.prefetch(b.path, b.bytes, b.adler32)
        path_b = stagein.get(b.path, b.bytes, b.adler32)
        assert path_a.read_bytes() == (dataset / Path(a.path).name).read_bytes()
        assert path_b.read_bytes() == (dataset / Path(b.path).name).read_bytes()
        stagein.release(a.path)
        path_c = stagein.get(c.path, c.bytes, c.adler32)
        assert adler32_file(path_c) == c.adler32
        assert not path_a.exists()  # evicted to make room for c
        assert path_b.exists()
        assert stagein.used_bytes() <= budget
    assert list(scratch.iterdir()) == []

    # A pull of that manifest fetches from the URLs and names the shards locally.
    local = tmp_path / "pulled"
    pull(f"{url}/manifest.json", local, FAST)
    assert all("://" not in e.path for e in load_manifest(local).shards["train"])
    assert verify_local(load_manifest(local), local) == []


def test_stagein_reports_a_corrupt_remote_shard_with_url_and_both_checksums(
    xrootd_server, area, tmp_path
):
    manifest = fake_dataset(tmp_path / "ds", [300_000, 200_000])
    push(tmp_path / "ds", xrootd_server.url(area), FAST)
    entry = manifest.shards["train"][0]
    flip_byte(xrootd_server.local(area) / entry.path)
    url = f"{xrootd_server.url(area)}/{entry.path}"
    with StageIn(tmp_path / "scratch", timeout=3, retries=2, backoff=0.05) as stagein:
        with pytest.raises(ChecksumMismatchError) as info:
            stagein.get(url, entry.bytes, entry.adler32)
        actual = adler32_file(xrootd_server.local(area) / entry.path)
        assert (info.value.expected, info.value.actual) == (entry.adler32, actual)
        assert url in str(info.value)
        assert list((tmp_path / "scratch").iterdir()) == []


def test_corrupt_shard_on_the_server_is_detected_removed_and_fetched_again(
    xrootd_server, area, tmp_path
):
    manifest = fake_dataset(tmp_path / "ds", [400_000] * 4)
    url = xrootd_server.url(area)
    push(tmp_path / "ds", url, FAST)
    bad = manifest.shards["train"][1]
    flip_byte(xrootd_server.local(area) / bad.path)
    actual = adler32_file(xrootd_server.local(area) / bad.path)

    local = tmp_path / "pulled"
    start = time.monotonic()
    with pytest.raises(ChecksumMismatchError) as info:
        pull(url, local, FAST)
    message = str(info.value)
    assert f"{url}/{bad.path}" in message
    assert bad.adler32 in message
    assert actual in message
    assert "push it again" in message
    assert time.monotonic() - start < 5  # the server's own checksum shows no retry can help
    assert not (local / bad.path).exists()
    assert not (local / f".{bad.path}.part").exists()
    assert not (local / "manifest.json").exists()  # never a manifest over incomplete shards

    repaired = push(tmp_path / "ds", url, FAST)  # the bad copy on the server is replaced
    assert repaired.copied == 1
    fetched = pull(url, local, FAST)
    assert fetched.copied >= 1
    assert verify_local(load_manifest(local), local) == []

    # A copy corrupted locally is fetched again; the good ones are kept as they are.
    kept = {p.name: identity(p) for p in shard_files(local)}
    flip_byte(local / bad.path)
    again = pull(url, local, FAST)
    assert (again.copied, again.kept) == (1, 3)
    for path in shard_files(local):
        if path.name != bad.path:
            assert identity(path) == kept[path.name]
    assert verify_local(load_manifest(local), local) == []


def test_interrupted_push_resumes_without_copying_complete_shards_again(start_xrootd, tmp_path):
    server = start_xrootd()
    sizes = [3_000_000] * 6
    manifest = fake_dataset(tmp_path / "ds", sizes)
    url = server.url("ds")
    victim = manifest.shards["train"][3].path

    def kill_halfway(transfer: Transfer, done: int) -> None:
        halfway = transfer.target.name == victim and done >= transfer.size // 2
        if halfway and server.process is not None:
            server.stop(signal.SIGKILL)

    slow = TransferOptions(
        parallel=1, parallel_chunks=1, chunk_size=256 << 10, timeout=2, retries=1, backoff=0.05
    )
    with pytest.raises(StageError, match=r"127\.0\.0\.1"):
        push(tmp_path / "ds", url, slow, progress=kill_halfway)
    assert server.process is None  # it was killed halfway through the victim

    remote = server.local("ds")
    complete = [e.path for e in manifest.shards["train"][:3]]
    assert sorted(p.name for p in shard_files(remote)) == complete
    assert not (remote / "manifest.json").exists()
    before = {name: identity(remote / name) for name in complete}

    server.start()
    summary = push(tmp_path / "ds", url, FAST)
    assert (summary.copied, summary.kept) == (3, 3)
    for name in complete:
        assert identity(remote / name) == before[name]
    assert not list(remote.glob(".*"))
    assert verify_local(load_manifest(remote), remote) == []


def test_a_stopped_server_is_reported_in_seconds(start_xrootd, tmp_path):
    server = start_xrootd()
    fake_dataset(tmp_path / "ds", [1000])
    url = server.url("ds")
    server.stop()
    options = TransferOptions(timeout=2, retries=3, backoff=1)
    for attempt in (
        lambda: push(tmp_path / "ds", url, options),
        lambda: pull(url, tmp_path / "pulled", options),
        lambda: check(url, 2),
        lambda: StageIn(tmp_path / "scratch", timeout=2, retries=0).get(
            f"{url}/x.h5", 1, "00000001"
        ),
    ):
        start = time.monotonic()
        with pytest.raises(StageError, match=rf"root://127\.0\.0\.1:{server.port}.*cannot connect"):
            attempt()
        assert time.monotonic() - start < 4


def test_a_server_that_never_answers_is_reported_within_the_timeout(tmp_path):
    fake_dataset(tmp_path / "ds", [1000])
    with socket.socket() as silent:  # accepts TCP connections, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"root://127.0.0.1:{silent.getsockname()[1]}//ds"
        server = re.escape(url.rsplit("//", 1)[0])
        for timeout in (1, 2):
            start = time.monotonic()
            with pytest.raises(StageError, match=rf"{server}.*no answer within {timeout} s"):
                push(tmp_path / "ds", url, TransferOptions(timeout=timeout, retries=2))
            took = time.monotonic() - start
            assert took < 2 * timeout + 1.5, took


def test_server_without_checksums_is_verified_by_reading_back(start_xrootd, tmp_path):
    server = start_xrootd(checksums=False)
    manifest = fake_dataset(tmp_path / "ds", [500_000] * 3)
    report = check(server.url("ds"), 3)
    assert not report.server_checksums
    assert any("reading every file back" in line for line in report.lines())
    push(tmp_path / "ds", server.url("ds"), FAST)
    bad = manifest.shards["train"][0].path
    flip_byte(server.local("ds") / bad)
    summary = push(tmp_path / "ds", server.url("ds"), FAST)
    assert (summary.copied, summary.kept) == (1, 2)
    assert verify_local(manifest, server.local("ds")) == []


def test_check_reports_latency_space_checksums_and_the_path(xrootd_server, area, tmp_path):
    fake_dataset(tmp_path / "ds", [1000])
    push(tmp_path / "ds", xrootd_server.url(area), FAST)
    report = check(xrootd_server.url(area), 3)
    assert report.remote
    assert report.latency_s is not None
    assert 0 < report.latency_s < 1
    assert report.version is not None
    assert report.version.startswith("v")
    assert report.free_bytes is not None
    assert report.total_bytes is not None
    assert 0 < report.free_bytes <= report.total_bytes
    assert report.server_checksums
    assert report.path_state == "a folder"
    assert check(xrootd_server.url(f"{area}/nothing"), 3).path_state.startswith("missing")
    assert check(xrootd_server.url(f"{area}/manifest.json"), 3).path_state.startswith("a file")


def test_cli_push_pull_check_and_one_line_errors(xrootd_server, area, tmp_path, capsys):
    manifest = fake_dataset(tmp_path / "ds", [100_000] * 3)
    url = xrootd_server.url(area)
    assert main(["stage", "push", str(tmp_path / "ds"), url, "--parallel", "2"]) == 0
    assert "pushed 3 shards" in capsys.readouterr().out
    assert main(["stage", "pull", url, str(tmp_path / "pulled"), "--timeout", "3"]) == 0
    assert "pulled 3 shards" in capsys.readouterr().out
    assert verify_local(manifest, tmp_path / "pulled") == []
    assert main(["stage", "check", url]) == 0
    out = capsys.readouterr().out
    assert "reachable" in out
    assert "round trip" in out
    assert "checksums: adler32 on the server" in out

    assert main(["stage", "pull", f"{url}/nothing", str(tmp_path / "x"), "--retries", "0"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"{url}/nothing/manifest.json" in err

    assert main(["stage", "push", str(tmp_path / "ds"), "https://example.org/x"]) == 2
    assert "unsupported scheme" in capsys.readouterr().err


def test_conversion_reads_root_urls_like_local_files(xrootd_server, area, toy_dir, tmp_path):
    remote = xrootd_server.local(area)
    remote.mkdir(parents=True)
    for name in ("signal.root", "background.root"):
        (remote / name).write_bytes((toy_dir / name).read_bytes())
    section = toy_section(toy_dir, tmp_path / "from-url", shard_events=4000)
    for sample in section["samples"]:
        sample["files"] = [xrootd_server.url(f"{area}/{Path(sample['files'][0]).name}")]
    from_url = convert(DatasetConfig.from_dict(section))
    from_disk = convert(toy_config(toy_dir, tmp_path / "from-disk", shard_events=4000))
    assert all(s.path.startswith("root://127.0.0.1:") for s in from_url.sources)
    assert json.dumps(
        {k: [(e.path, e.adler32) for e in v] for k, v in from_url.shards.items()}
    ) == json.dumps({k: [(e.path, e.adler32) for e in v] for k, v in from_disk.shards.items()})
