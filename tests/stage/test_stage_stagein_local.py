"""StageIn with local paths and file:// URLs: the embedded default, no server needed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from gridtrain.checksum import adler32_file
from gridtrain.errors import ChecksumMismatchError, GridtrainError, StageError
from gridtrain.stage import StageIn

MB = 1_000_000


def make_shards(folder: Path, count: int, size: int = MB) -> list[tuple[str, int, str]]:
    """Random files standing in for shards: (location, size, adler32) as a manifest resolves."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = []
    for i in range(count):
        path = folder / f"train-{i:05d}.h5"
        path.write_bytes(os.urandom(size))
        shards.append((str(path), size, adler32_file(path)))
    return shards


def listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_get_returns_a_verified_copy_inside_scratch(tmp_path):
    (shard,) = make_shards(tmp_path / "src", 1)
    scratch = tmp_path / "scratch"
    with StageIn(scratch) as stagein:
        path = stagein.get(*shard)
        assert path.parent == scratch
        assert path.name.endswith("train-00000.h5")
        assert path.read_bytes() == Path(shard[0]).read_bytes()
        assert path.stat().st_ino != Path(shard[0]).stat().st_ino  # a copy, not the original
        assert stagein.get(*shard) == path  # a second get reuses it
        assert not [n for n in listing(scratch) if n.endswith(".part")]
    assert listing(scratch) == []  # close removes what it staged
    assert Path(shard[0]).exists()  # and never the source


def test_plain_path_and_file_url_are_one_shard(tmp_path):
    (shard,) = make_shards(tmp_path / "src", 1)
    with StageIn(tmp_path / "scratch") as stagein:
        a = stagein.get(*shard)
        b = stagein.get(f"file://{shard[0]}", shard[1], shard[2])
        assert a == b
        assert len(listing(tmp_path / "scratch")) == 1


def test_prefetch_copies_in_the_background_and_get_waits_for_that_copy(tmp_path):
    shards = make_shards(tmp_path / "src", 2, size=40 * MB)
    with StageIn(tmp_path / "scratch") as stagein:
        stagein.prefetch(*shards[1])
        first = stagein.get(*shards[0])
        second = stagein.get(*shards[1])
        assert adler32_file(second) == shards[1][2]
        inode = second.stat().st_ino
        stagein.prefetch(*shards[1])  # already there: nothing happens
        assert stagein.get(*shards[1]).stat().st_ino == inode
        assert set(stagein.staged().values()) == {first, second}


def test_concurrent_gets_of_one_shard_make_one_copy(tmp_path):
    (shard,) = make_shards(tmp_path / "src", 1, size=30 * MB)
    paths: list[Path] = []
    with StageIn(tmp_path / "scratch") as stagein:
        threads = [
            threading.Thread(target=lambda: paths.append(stagein.get(*shard))) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(set(paths)) == 1
        assert len(paths) == 4
        assert listing(tmp_path / "scratch") == [paths[0].name]


def test_released_shards_are_evicted_least_recently_used_first(tmp_path):
    a, b, c = make_shards(tmp_path / "src", 3)
    scratch = tmp_path / "scratch"
    with StageIn(scratch, budget_bytes=int(2.5 * MB)) as stagein:
        path_a, path_b = stagein.get(*a), stagein.get(*b)
        stagein.release(a[0])
        stagein.release(b[0])
        stagein.get(*b)  # b used again: a is now the least recently used
        stagein.release(b[0])
        path_c = stagein.get(*c)
        assert not path_a.exists()
        assert path_b.exists()
        assert path_c.exists()
        assert stagein.used_bytes() <= 2.5 * MB


def test_shards_in_use_are_never_evicted_and_the_error_says_what_to_do(tmp_path):
    a, b, c = make_shards(tmp_path / "src", 3)
    with StageIn(tmp_path / "scratch", budget_bytes=int(2.5 * MB)) as stagein:
        path_a = stagein.get(*a)
        stagein.get(*b)
        with pytest.raises(StageError, match=r"scratch budget.*raise the budget or release"):
            stagein.get(*c)
        assert path_a.exists()


def test_prefetch_without_room_is_skipped_and_get_copies_later(tmp_path):
    a, b = make_shards(tmp_path / "src", 2)
    scratch = tmp_path / "scratch"
    with StageIn(scratch, budget_bytes=int(1.5 * MB)) as stagein:
        stagein.get(*a)
        stagein.prefetch(*b)  # does not fit beside a, which is in use
        assert stagein.used_bytes() == MB
        stagein.release(a[0])
        path_b = stagein.get(*b)
        assert listing(scratch) == [path_b.name]


def test_corrupt_source_names_location_and_both_checksums_and_leaves_nothing(tmp_path):
    (shard,) = make_shards(tmp_path / "src", 1)
    wrong = "0badc0de"
    scratch = tmp_path / "scratch"
    with StageIn(scratch, retries=2, backoff=0.01) as stagein:
        with pytest.raises(ChecksumMismatchError) as info:
            stagein.get(shard[0], shard[1], wrong)
        assert isinstance(info.value, GridtrainError)
        message = str(info.value)
        assert shard[0] in message
        assert wrong in message
        assert shard[2] in message
        assert listing(scratch) == []


def test_missing_source_is_reported_at_once(tmp_path):
    with StageIn(tmp_path / "scratch", retries=3, backoff=5) as stagein:
        start = time.monotonic()
        with pytest.raises(StageError, match=r"nothere\.h5: no such file"):
            stagein.get(str(tmp_path / "nothere.h5"), 10, "00000001")
        assert time.monotonic() - start < 2  # no back-off for what retries cannot fix


def test_failed_prefetch_is_reported_by_get_and_a_later_get_tries_again(tmp_path):
    (shard,) = make_shards(tmp_path / "src", 1)
    source = Path(shard[0])
    content = source.read_bytes()
    source.write_bytes(b"\0" * len(content))  # corrupt before the prefetch reads it
    with StageIn(tmp_path / "scratch", retries=0) as stagein:
        stagein.prefetch(*shard)
        with pytest.raises(ChecksumMismatchError, match=shard[2]):
            stagein.get(*shard)
        source.write_bytes(content)  # repaired
        assert stagein.get(*shard).read_bytes() == content


def test_close_stops_a_running_prefetch_and_leaves_scratch_empty(tmp_path):
    (big,) = make_shards(tmp_path / "src", 1, size=100 * MB)
    scratch = tmp_path / "scratch"
    stagein = StageIn(scratch)
    stagein.prefetch(*big)
    start = time.monotonic()
    stagein.close()
    assert time.monotonic() - start < 10
    assert listing(scratch) == []
    with pytest.raises(StageError, match="closed"):
        stagein.get(*big)


def test_a_bad_location_is_a_stage_error(tmp_path):
    with StageIn(tmp_path / "scratch") as stagein, pytest.raises(StageError, match="scheme"):
        stagein.get("https://example.org/x.h5", 1, "00000001")


@pytest.mark.slow
def test_after_tensorflow_the_client_refuses_to_load_instead_of_crashing(tmp_path):
    (shard,) = make_shards(tmp_path / "src", 1, size=1000)
    script = (
        "import tensorflow\n"
        "from gridtrain.errors import StageError\n"
        "from gridtrain.stage import StageIn\n"
        f"with StageIn({str(tmp_path / 'scratch')!r}) as s:\n"
        "    try:\n"
        f"        s.get(*{shard!r})\n"
        "    except StageError as err:\n"
        "        print('refused:', err)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]  # not -11 (SIGSEGV)
    assert "refused: the XRootD client cannot be loaded after TensorFlow" in result.stdout
    assert "import gridtrain.stage before tensorflow" in result.stdout
