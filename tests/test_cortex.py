"""The vectorised ROI vertex lookup (core.cortex.roi_vertices) against pycortex's own get_roi_verts."""
from __future__ import annotations

import warnings

import numpy as np
import pytest

from core.cortex.geometry import _add_cut_neighbours, _mesh_adjacency


def _reference_add_cut_neighbours(roi_idx, goodpts, polys_full):
    """The loop of pycortex 1.4's get_roi_verts, verbatim in behaviour (a dict of neighbour sets)."""
    from cortex.utils import _get_neighbors_dict
    neighbors_dict = _get_neighbors_dict(polys_full)
    extra_idx = set()
    for idx in roi_idx:
        extra_idx.update(ii for ii in neighbors_dict[idx] if ii not in goodpts)
    if extra_idx:
        roi_idx = np.unique(np.concatenate((roi_idx, list(extra_idx)))).astype(int)
    return roi_idx


def test_cut_neighbours_match_pycortex_loop(rng):
    # A random triangle mesh over 400 vertices; the "flat" surface drops 15% of them (the cuts).
    n = 400
    polys = np.array([rng.choice(n, 3, replace=False) for _ in range(1500)], dtype=np.uint32)
    goodpts = np.sort(rng.choice(n, int(n * 0.85), replace=False))
    good = np.zeros(n, bool)
    good[goodpts] = True
    adj = _mesh_adjacency(polys, n)
    used = np.unique(polys)
    for size in (1, 5, 40, 200):
        roi_idx = np.sort(rng.choice(np.intersect1d(used, goodpts), size, replace=False))
        got = _add_cut_neighbours(roi_idx, good, adj)
        want = _reference_add_cut_neighbours(roi_idx, goodpts, polys)
        np.testing.assert_array_equal(got, want)
    # Nothing to add: the ROI comes back unchanged.
    inner = np.array([v for v in np.intersect1d(used, goodpts) if good[adj[[v]].indices].all()][:3])
    if inner.size:
        np.testing.assert_array_equal(_add_cut_neighbours(inner, good, adj), inner)


@pytest.mark.slow
def test_roi_vertices_equal_pycortex_get_roi_verts():
    import cortex

    from core.cortex.geometry import roi_vertices
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = cortex.get_roi_verts("S1")     # ~25 s: the reference
        got = roi_vertices("S1")
    assert list(got) == list(want)
    assert sum(len(v) for v in want.values()) > 0
    for name in want:
        np.testing.assert_array_equal(got[name], np.asarray(want[name]), err_msg=name)
