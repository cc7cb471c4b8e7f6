"""bench/compare_results.py, the before/after check of a refactor: identical folders pass, one changed value fails."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from core.testing.synthetic import make_synthetic_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.compare_results import compare, compare_arrays, main  # noqa: E402


def test_identical_and_changed_folders(tmp_path, capsys):
    a = make_synthetic_results(tmp_path / "a", n_voxels=300, n_test=20, seed=3, flatmap_height=64,
                               with_thumbnails=False)
    b = make_synthetic_results(tmp_path / "b", n_voxels=300, n_test=20, seed=3, flatmap_height=64,
                               with_thumbnails=False)
    assert main([str(a), str(b)]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("RESULT stages_identical=")

    # One element of one array changed in place (the file stays a valid .npy of the same shape).
    rep = compare(a, b)
    stage = "stats"
    entry = next((b / "cache" / "stages").glob(f"{stage}-*"))
    name = sorted(rep["stages"][stage]["arrays"])[0]
    arr = np.load(entry / f"{name}.npy")
    flat = arr.reshape(-1)
    flat[0] = flat[0] + 1 if arr.dtype.kind in "iuf" else not flat[0]
    np.save(entry / f"{name}.npy", arr)
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    assert f"    {name}: " in out and "stages_differing=1" in out.splitlines()[-1]


def test_array_comparison_rules():
    x = np.array([1.0, np.nan, 3.0], np.float32)
    assert compare_arrays(x, x.copy()) is None                       # NaN equals NaN
    assert "dtype/shape" in compare_arrays(x, x.astype(np.float64))  # same values, other dtype: not identical
    y = x.copy()
    y[2] = 3.5
    assert compare_arrays(x, y).startswith("max |diff| 0.5")
