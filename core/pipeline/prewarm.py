"""Background preparation a run starts when it begins: numba's kernel cache, pycortex's caches."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from core.config import RunConfig
from core.cortex.assets import _cortex_assets
from core.pipeline.inputs import run_geometry
from core.vocabulary import NS_CODE, BinScheme


def _prewarm_umap(cfg: RunConfig, cache_dir: Path):
    from core.embedding.umap import prewarm_numba_cache
    return prewarm_numba_cache()


def _pycortex_cache(cache_dir: Path) -> Path:
    return Path(cache_dir) / "cortex" / "pycortex"


def _pycortex_lock(cache_dir: Path) -> Path:
    """The lock the cortex stage and its background preparation hold while they use pycortex's caches."""
    return _pycortex_cache(cache_dir).parent / "pycortex.lock"


def _cortex_warm_marker(cfg: RunConfig, cache_dir: Path) -> Path:
    from core.cortex.flatmap import FLATMAP_VERSION
    d = cfg.data
    return _pycortex_cache(cache_dir).parent / f"pycortex-warm-{d.subject}-{d.transform}-{d.mask}-v{FLATMAP_VERSION}"


def _prewarm_cortex(cfg: RunConfig, cache_dir: Path):
    """Build pycortex's per-subject caches (pixel map, flat mask, curvature, the viewer's surfaces and mesh
    pack: ~35-50 s cold) in a background process from the start of the run, so that the cortex stage, which
    comes after the statistics, finds them warm (~4-7 s instead). Only once per results folder and subject;
    the pipeline calls it only when it runs stages side by side (cores to spare). Returns the process or None.
    """
    from core._proc import start_helper
    if not cfg.data.subject or cfg.data.mapper or _cortex_warm_marker(cfg, cache_dir).exists():
        return None
    return start_helper(_warm_cortex_job, cfg, str(cache_dir), name="pycortex-prewarm")


def _warm_cortex_job(cfg: RunConfig, cache_dir: str) -> None:
    """Background side of :func:`_prewarm_cortex`: the cortex stage's own code on empty bins, its pycortex caches
    written to a private folder and moved into the shared one file by file (rename), so that a helper stopped
    half-way (the run ended or failed first) never leaves a half-written cache behind."""
    import logging
    import shutil
    import tempfile

    from core._io import file_lock
    cache = Path(cache_dir)
    pc_cache = _pycortex_cache(cache)
    try:
        with file_lock(_pycortex_lock(cache)):
            if _cortex_warm_marker(cfg, cache).exists():
                return
            geometry = run_geometry(cfg, cache)
            pc_cache.mkdir(parents=True, exist_ok=True)
            for stale in pc_cache.parent.glob(".prewarm-*"):   # left by a helper that was stopped
                shutil.rmtree(stale, ignore_errors=True)
            with tempfile.TemporaryDirectory(prefix=".prewarm-", dir=pc_cache.parent) as tmp:
                private = Path(tmp) / "pycortex"
                if pc_cache.is_dir():   # start from what is there: only the missing caches get built
                    shutil.copytree(pc_cache, private)
                empty = {m: np.full(geometry.n_voxels, NS_CODE, np.int8) for m in cfg.features.modes}
                _cortex_assets(geometry, empty, Path(tmp) / "assets", "", private, BinScheme.from_config(cfg))
                for f in sorted(p for p in private.rglob("*") if p.is_file()):
                    target = pc_cache / f.relative_to(private)
                    if not target.exists():
                        target.parent.mkdir(parents=True, exist_ok=True)
                        os.replace(f, target)
            _cortex_warm_marker(cfg, cache).touch()
    except Exception as exc:  # noqa: BLE001 - the cortex stage builds whatever is missing itself
        logging.getLogger(__name__).warning("background pycortex preparation failed (%s); the cortex stage "
                                            "builds its caches itself", exc)


