"""A run's cortex assets from correlation bins: flatmap images and the WebGL viewer's datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _cortex_assets(geometry, bins: dict, workdir: Path, title: str, pc_cache: Path):
    """The flatmaps and the WebGL viewer of ``bins`` into ``workdir``; returns (flatmap paths, viewer datasets)."""
    from core.cortex.flatmap import make_flatmaps
    from core.cortex.palette import BIN_LABELS, bin_to_rgba
    from core.cortex.viewer import make_viewer, viewer_surfaces_in_background
    # The viewer's cold surface info builds on the second core while the flatmaps build on the first.
    with viewer_surfaces_in_background(geometry.subject, pc_cache):
        flat = make_flatmaps(geometry, bins, workdir, cache_dir=pc_cache)
    datasets = {m: bin_to_rgba(b) for m, b in bins.items()}
    for m in ("off", "on"):
        for b, label in enumerate(BIN_LABELS):
            only = np.where(bins[m] == b, b, -1).astype(np.int8)
            only_rgba = bin_to_rgba(only)
            only_rgba[only < 0] = 0   # other bins fully transparent in a per-bin dataset
            datasets[f"{m}: r {label}"] = only_rgba
    make_viewer(geometry, datasets, workdir / "viewer", title=title, cache_dir=pc_cache)
    return flat, datasets


