import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gridtrain.data.arrays import RunningStats, pad_group, validation_mask


def naive_pad(counts, contents, length, fill):
    out = np.full((len(counts), length, len(contents)), fill, dtype=np.float32)
    start = 0
    for row, count in enumerate(counts):
        for c, content in enumerate(contents):
            values = content[start : start + count][:length]
            out[row, : len(values), c] = values
        start += count
    return out


def test_pad_group_clips_pads_and_fills_by_hand():
    counts = np.array([3, 0, 1])
    contents = [np.array([1.0, 2.0, 3.0, 4.0]), np.array([10.0, 20.0, 30.0, 40.0])]
    out = np.empty((3, 2, 2), dtype=np.float32)
    clipped = pad_group(counts, contents, 2, -1.0, out)
    assert clipped.tolist() == [2, 0, 1]
    assert out[0].tolist() == [[1.0, 10.0], [2.0, 20.0]]
    assert out[1].tolist() == [[-1.0, -1.0], [-1.0, -1.0]]
    assert out[2].tolist() == [[4.0, 40.0], [-1.0, -1.0]]


@settings(max_examples=60, deadline=None)
@given(
    counts=st.lists(st.integers(0, 9), min_size=0, max_size=30),
    length=st.integers(1, 6),
    fill=st.sampled_from([0.0, -999.0]),
)
def test_pad_group_matches_a_naive_loop(counts, length, fill):
    counts = np.array(counts, dtype=np.int64)
    rng = np.random.default_rng(len(counts))
    contents = [rng.random(int(counts.sum()), dtype=np.float32) for _ in range(3)]
    out = np.empty((len(counts), length, 3), dtype=np.float32)
    pad_group(counts, contents, length, fill, out)
    np.testing.assert_array_equal(out, naive_pad(counts, contents, length, fill))


def test_validation_split_depends_only_on_the_event_id():
    rng = np.random.default_rng(1)
    ids = np.stack([np.ones(200_000), rng.integers(1, 1000, 200_000), np.arange(200_000)], 1)
    ids = ids.astype(np.uint64)
    mask = validation_mask(ids, 0.2, seed=5)
    assert mask.mean() == pytest.approx(0.2, abs=0.005)
    order = rng.permutation(len(ids))
    np.testing.assert_array_equal(validation_mask(ids[order], 0.2, seed=5), mask[order])
    assert not np.array_equal(validation_mask(ids, 0.2, seed=6), mask)
    assert not validation_mask(ids, 0.0, seed=5).any()


def test_running_stats_match_numpy_in_float64_over_many_blocks():
    rng = np.random.default_rng(2)
    data = (rng.normal(1e4, 0.5, (50_000, 3))).astype(np.float32)  # large offset, small spread
    stats = RunningStats(3)
    for block in np.array_split(data, 17):
        stats.update(block)
    reference = data.astype(np.float64)
    assert stats.count == len(data)
    np.testing.assert_allclose(stats.mean, reference.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, reference.std(0), rtol=1e-9)
    np.testing.assert_array_equal(stats.minimum, reference.min(0))
    np.testing.assert_array_equal(stats.maximum, reference.max(0))
