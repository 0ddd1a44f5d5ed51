"""TableRows reads exact rows of a .npy table with pread: any index shape, the bytes of the
file, a bounded cache, out-of-range rows refused."""
from __future__ import annotations

import numpy as np
import pytest

from bitgen_core.runtime.table_rows import TableRows


@pytest.fixture()
def table(tmp_path):
    arr = np.random.default_rng(0).standard_normal((300, 8)).astype(np.float32)
    path = tmp_path / "t.npy"
    np.save(path, arr)
    mm = np.load(path, mmap_mode="r")
    return arr, TableRows(path, mm.shape, mm.offset, capacity=50)


def test_rows_equal_the_file_for_any_index_shape(table):
    arr, rows = table
    assert np.array_equal(rows[7], arr[7]) and rows[np.int64(7)].shape == (8,)
    assert np.array_equal(rows[[3, 299, 0]], arr[[3, 299, 0]])
    ids = np.array([[1, 2, 3], [4, 5, 6]])
    assert np.array_equal(rows[ids], arr[ids]) and rows[ids].dtype == np.float32
    assert rows[[]].shape == (0, 8)


def test_cache_stays_bounded_and_rows_stay_exact(table):
    arr, rows = table
    for i in range(300):
        assert np.array_equal(rows[i], arr[i])
        assert rows.cached_rows <= 50
    with pytest.raises(ValueError):
        rows[5][0] = 1.0          # read-only: a caller cannot corrupt the cache


def test_out_of_range_rows_are_refused(table):
    _, rows = table
    with pytest.raises(IndexError):
        rows[300]
    with pytest.raises(IndexError):
        rows[[-1]]
