"""StageIn with local paths and file:// URLs: the embedded default, no server needed."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from gridtrain.checksum import adler32_file
from gridtrain.errors import ChecksumMismatchError, GridtrainError, StageError
from gridtrain.stage import StageIn, xrd
from tests.waiting import wait_until

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


class CopySpy:
    """Stands in for ``xrd.copy``, the call that moves a shard's bytes: it records every copy,
    its thread and its outcome, and can hold a copy back until the test lets it go."""

    def __init__(self, real) -> None:
        self._real = real
        self._lock = threading.Lock()
        self.calls: list[tuple[str, str]] = []  # (source file name, thread name)
        self.outcomes: dict[str, list[str]] = defaultdict(list)  # "copied" or the error's class
        self.started: dict[str, threading.Event] = defaultdict(threading.Event)
        self._held: dict[str, threading.Event] = {}

    def hold(self, name: str) -> threading.Event:
        """Copies of ``name`` wait, once started, until the event is set (or they are cancelled)."""
        self._held[name] = threading.Event()
        return self._held[name]

    def count(self, name: str) -> int:
        return len(self.threads(name))

    def threads(self, name: str) -> list[str]:
        with self._lock:
            return [thread for source, thread in self.calls if source == name]

    def __call__(self, source, target, settings, progress=None, cancel=None) -> None:
        name = Path(source.path).name
        with self._lock:
            self.calls.append((name, threading.current_thread().name))
            started = self.started[name]
        started.set()
        release = self._held.get(name)
        deadline = time.monotonic() + 60
        while release is not None and not release.is_set():
            if cancel is not None and cancel.is_set():
                break
            assert time.monotonic() < deadline, f"the test never released the copy of {name}"
            release.wait(0.01)
        try:
            self._real(source, target, settings, progress, cancel)
        except BaseException as err:
            self.outcomes[name].append(type(err).__name__)
            raise
        self.outcomes[name].append("copied")


@pytest.fixture
def copies(monkeypatch: pytest.MonkeyPatch) -> CopySpy:
    spy = CopySpy(xrd.copy)
    monkeypatch.setattr(xrd, "copy", spy)
    return spy


def test_get_returns_a_verified_copy_inside_scratch(tmp_path, copies):
    (shard,) = make_shards(tmp_path / "src", 1)
    scratch = tmp_path / "scratch"
    with StageIn(scratch) as stagein:
        path = stagein.get(*shard)
        assert path.parent == scratch
        assert path.name.endswith("train-00000.h5")
        assert path.read_bytes() == Path(shard[0]).read_bytes()
        assert path.stat().st_ino != Path(shard[0]).stat().st_ino  # a copy, not the original
        assert stagein.get(*shard) == path  # a second get reuses it
        assert copies.count("train-00000.h5") == 1  # rather than copying it again
        assert not [n for n in listing(scratch) if n.endswith(".part")]
    assert listing(scratch) == []  # close removes what it staged
    assert Path(shard[0]).exists()  # and never the source


def test_plain_path_and_file_url_are_one_shard(tmp_path, copies):
    (shard,) = make_shards(tmp_path / "src", 1)
    with StageIn(tmp_path / "scratch") as stagein:
        a = stagein.get(*shard)
        b = stagein.get(f"file://{shard[0]}", shard[1], shard[2])
        assert a == b
        assert len(listing(tmp_path / "scratch")) == 1
        assert copies.count("train-00000.h5") == 1


def test_prefetch_copies_in_the_background_and_get_waits_for_that_copy(tmp_path, copies):
    shards = make_shards(tmp_path / "src", 2)
    release = copies.hold("train-00001.h5")
    with StageIn(tmp_path / "scratch") as stagein, ThreadPoolExecutor(1) as waiter:
        stagein.prefetch(*shards[1])  # returns while that copy is held back
        assert copies.started["train-00001.h5"].wait(10)  # copying before anyone asked for it
        first = stagein.get(*shards[0])  # the worker's own copy, at the same time
        second_get = waiter.submit(stagein.get, *shards[1])
        with pytest.raises(TimeoutError):
            second_get.result(timeout=0.3)  # get waits for the unfinished prefetch...
        release.set()
        second = second_get.result(timeout=10)
        assert copies.outcomes["train-00001.h5"] == ["copied"]  # ...and takes its copy
        [prefetch_thread] = copies.threads("train-00001.h5")
        assert prefetch_thread.startswith("stagein")  # StageIn's background thread
        assert copies.threads("train-00000.h5") == [threading.current_thread().name]
        assert adler32_file(second) == shards[1][2]
        inode = second.stat().st_ino
        stagein.prefetch(*shards[1])  # already there: nothing happens
        assert stagein.get(*shards[1]).stat().st_ino == inode
        assert copies.count("train-00001.h5") == 1
        assert set(stagein.staged().values()) == {first, second}


def test_concurrent_gets_of_one_shard_make_one_copy(tmp_path, copies, monkeypatch):
    (shard,) = make_shards(tmp_path / "src", 1)
    release = copies.hold("train-00000.h5")  # until every get has asked for the shard
    joined = []  # gets that found the shard already being staged
    check_same = StageIn._check_same

    def counting_check_same(copy, size, adler32):
        joined.append(threading.current_thread().name)
        check_same(copy, size, adler32)

    monkeypatch.setattr(StageIn, "_check_same", staticmethod(counting_check_same))
    with StageIn(tmp_path / "scratch") as stagein, ThreadPoolExecutor(4) as pool:
        gets = [pool.submit(stagein.get, *shard) for _ in range(4)]
        # all four inside get: three found the shard being staged, one is copying (held)
        wait_until(
            lambda: len(joined) == 3 and copies.count("train-00000.h5") == 1,
            30,
            "three gets to join the one copying the shard",
            0.01,
        )
        release.set()
        paths = [get.result(timeout=10) for get in gets]
        assert len(set(paths)) == 1
        assert copies.count("train-00000.h5") == 1
        assert copies.outcomes["train-00000.h5"] == ["copied"]
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


def test_prefetch_without_room_is_skipped_and_get_copies_later(tmp_path, copies):
    a, b = make_shards(tmp_path / "src", 2)
    scratch = tmp_path / "scratch"
    with StageIn(scratch, budget_bytes=int(1.5 * MB)) as stagein:
        stagein.get(*a)
        stagein.prefetch(*b)  # does not fit beside a, which is in use
        assert stagein.used_bytes() == MB  # nothing reserved for b
        stagein.release(a[0])
        path_b = stagein.get(*b)
        assert listing(scratch) == [path_b.name]
        # b was copied once, by the get, in the caller's thread: the prefetch never ran
        assert copies.threads("train-00001.h5") == [threading.current_thread().name]


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


def test_failed_prefetch_is_reported_by_get_and_a_later_get_tries_again(tmp_path, copies):
    (shard,) = make_shards(tmp_path / "src", 1)
    source = Path(shard[0])
    content = source.read_bytes()
    source.write_bytes(b"\0" * len(content))  # corrupt before the prefetch reads it
    with StageIn(tmp_path / "scratch", retries=0) as stagein:
        stagein.prefetch(*shard)
        assert copies.started["train-00000.h5"].wait(10)  # the prefetch's copy, not get's
        with pytest.raises(ChecksumMismatchError, match=shard[2]):
            stagein.get(*shard)
        source.write_bytes(content)  # repaired
        assert stagein.get(*shard).read_bytes() == content
        prefetched, again = copies.threads("train-00000.h5")
        assert prefetched.startswith("stagein")
        assert again == threading.current_thread().name


def test_close_stops_a_running_prefetch_and_leaves_scratch_empty(tmp_path, copies):
    (big,) = make_shards(tmp_path / "src", 1, size=20 * MB)
    scratch = tmp_path / "scratch"
    stagein = StageIn(scratch)
    copies.hold("train-00000.h5")  # never released: only cancelling lets this copy go on
    stagein.prefetch(*big)
    assert copies.started["train-00000.h5"].wait(10)  # running when close is called
    start = time.monotonic()
    stagein.close()
    assert time.monotonic() - start < 10
    # the copy ran, was told to stop, and stopped: it did not run to the end
    assert copies.outcomes["train-00000.h5"] == ["StageError"]
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
