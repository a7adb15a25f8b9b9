"""gridtrain.files.atomic_file: the final name holds the old content or the whole new one."""

from __future__ import annotations

from pathlib import Path

import pytest

from gridtrain.files import atomic_file


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    target = tmp_path / "manifest.json"
    target.write_text("old")

    def write_half() -> None:
        with atomic_file(target) as handle:
            handle.write(b"half of the new")
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        write_half()
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.json"]


def test_a_complete_write_replaces_the_file_with_the_mode_asked(tmp_path: Path) -> None:
    target = tmp_path / "ps.secret"
    with atomic_file(target, mode=0o600) as handle:
        handle.write(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ps.secret"]
