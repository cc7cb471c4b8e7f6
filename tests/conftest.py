"""Shared fixtures: seeded randomness in one place, and the pycortex S1 geometry computed once per session."""
from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

# Keep numba's compiled-function cache out of site-packages and reusable between test runs.
os.environ.setdefault("NUMBA_CACHE_DIR", os.path.expanduser("~/.cache/attnbrain/numba"))


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def cortex_cache_dir(tmp_path_factory):
    """Where the session's pycortex-derived caches live (ATTNBRAIN_TEST_CACHE keeps them across sessions)."""
    return os.environ.get("ATTNBRAIN_TEST_CACHE") or str(tmp_path_factory.mktemp("cortex"))


@pytest.fixture(scope="session")
def s1_geometry(cortex_cache_dir):
    """Voxel geometry of pycortex's bundled S1/fullhead/thick (~35 s the first time, then cached)."""
    from core.cortex.geometry import load_geometry
    cache = cortex_cache_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_geometry("S1", "fullhead", "thick", cache)
