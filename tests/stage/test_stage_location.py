"""Locations are parsed and joined as strings: the double slash of a root:// URL survives."""

from __future__ import annotations

import os

import pytest

from gridtrain.errors import StageError
from gridtrain.stage.location import parse_location


def test_root_url_keeps_its_double_slash_through_join_and_parent():
    base = parse_location("root://eos.example.org:1094//store/user/ds/")
    assert base.is_remote
    assert base.server == "eos.example.org:1094"
    assert base.path == "/store/user/ds"
    shard = base.join("train-00001.h5")
    assert shard.url == "root://eos.example.org:1094//store/user/ds/train-00001.h5"
    assert shard.parent.url == "root://eos.example.org:1094//store/user/ds"
    assert shard.with_name(".x.part").url == "root://eos.example.org:1094//store/user/ds/.x.part"
    assert shard.server_url == "root://eos.example.org:1094"
    assert shard.name == "train-00001.h5"


def test_single_slash_root_url_means_the_same_absolute_path():
    one = parse_location("root://host/store/f.h5")
    assert one.url == "root://host//store/f.h5"
    assert one == parse_location("root://host//store//f.h5")


def test_opaque_query_is_kept():
    loc = parse_location("root://host//store/f.h5?xrd.wantprot=unix")
    assert loc.path == "/store/f.h5"
    assert loc.url == "root://host//store/f.h5?xrd.wantprot=unix"


def test_local_paths_and_file_urls_are_the_same_location(tmp_path):
    plain = parse_location(str(tmp_path / "a.h5"))
    assert not plain.is_remote
    assert plain == parse_location(f"file://{tmp_path}/a.h5")
    assert plain == parse_location(f"file://localhost{tmp_path}/a.h5")
    assert plain.url == str(tmp_path / "a.h5")


def test_relative_local_path_becomes_absolute(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert parse_location("sub/a.h5").path == os.path.join(str(tmp_path), "sub", "a.h5")


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("https://host/f.h5", "unsupported scheme"),
        ("root://", "root://host"),
        ("root://host", "root://host"),
        ("file://otherhost/x", "local absolute path"),
        ("", "empty location"),
    ],
)
def test_bad_locations_are_refused_with_the_way_out(text, needle):
    with pytest.raises(StageError, match=needle):
        parse_location(text)


def test_join_refuses_parent_references():
    with pytest.raises(StageError, match=r"'\.\.'"):
        parse_location("root://host//store").join("../etc/passwd")
