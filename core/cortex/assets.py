"""A run's cortex assets from correlation bins: flatmap images and the WebGL viewer's datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from core.vocabulary import DEFAULT_BINS, NS_CODE, PAIR, BinScheme


def _cortex_assets(geometry, bins: dict, workdir: Path, title: str, pc_cache: Path,
                   scheme: BinScheme = DEFAULT_BINS):
    """The flatmaps and the WebGL viewer of ``bins`` into ``workdir``; returns (flatmap paths, viewer datasets).

    ``scheme`` (the run's, :meth:`BinScheme.from_config`) colours the bins and names the viewer's per-bin
    datasets (``"on: r 0-0.1"``).
    """
    from core.cortex.flatmap import make_flatmaps
    from core.cortex.viewer import make_viewer, viewer_surfaces_in_background
    # The viewer's cold surface info builds on the second core while the flatmaps build on the first.
    with viewer_surfaces_in_background(geometry.subject, pc_cache):
        flat = make_flatmaps(geometry, bins, workdir, cache_dir=pc_cache, scheme=scheme)
    datasets = {m: scheme.to_rgba(b) for m, b in bins.items()}
    for m in PAIR:
        for code, label in zip(scheme.codes, scheme.labels):
            only = np.where(bins[m] == code, code, NS_CODE).astype(np.int8)
            only_rgba = scheme.to_rgba(only)
            only_rgba[only == NS_CODE] = 0   # other bins fully transparent in a per-bin dataset
            datasets[f"{m}: r {label}"] = only_rgba
    make_viewer(geometry, datasets, workdir / "viewer", title=title, cache_dir=pc_cache)
    return flat, datasets
