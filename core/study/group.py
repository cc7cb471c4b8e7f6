"""The group table of a study: per run (subject, layer, weights) and ROI, what the group view plots.

One row per finished run and ROI (``"all"`` for the whole cortex, then the run's ROIs): the share of voxels
significant with attention on and off (the run's rule), the median test r of each over the ROI's voxels, the
median r_on - r_off, and, where the run has the paired test, the shares of voxels where on predicts better and
where off does (BH q <= contrasts.level). Layers before layer4 come from the trunk, where attention does not
act: ``shared_layer`` marks their rows, the study's built-in negative control (their on and off features are
identical, so their differences must be 0).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from core.vocabulary import SHARED_LAYERS

__all__ = ["group_table", "GROUP_COLUMNS"]

#: The columns of :func:`group_table`, with what they hold.
GROUP_COLUMNS = {
    "subject": "the run's subject label", "layer": "features.layer", "weights": "features.weights",
    "run_id": "the run's id in the results folder", "roi": "ROI name ('all' = every voxel of the run)",
    "n_voxels": "voxels in the ROI", "share_sig_on": "share significant with attention on (r > 0, the run's rule)",
    "share_sig_off": "the same with attention off", "median_r_on": "median test r, attention on",
    "median_r_off": "median test r, attention off", "median_delta_r": "median r_on - r_off",
    "share_on_better": "share where on predicts better (paired test, BH q <= contrasts.level; NaN without it)",
    "share_off_better": "share where off predicts better (the same)",
    "shared_layer": "True for layers before layer4: identical on and off features (the negative control)",
}


def _rows_for_run(res, entry: dict) -> list[dict[str, Any]]:
    r_on, r_off = (np.asarray(res.stats(m)["r"], np.float64) for m in ("on", "off"))
    sig_on, sig_off = (np.asarray(res.stats(m)["significant"], bool) for m in ("on", "off"))
    outcome = np.asarray(res.contrast("on_off")["outcome"]) if "on_off" in res.contrast_names() else None
    groups = [("all", np.ones(r_on.size, bool))]
    geo = res.geometry()
    if geo is not None and res.roi_names:
        roi = np.asarray(geo["roi"])
        groups += [(name, roi == i) for i, name in enumerate(res.roi_names) if i > 0 and (roi == i).any()]
    rows = []
    for name, mask in groups:
        n = int(mask.sum())
        row = {"subject": entry["subject"], "layer": entry["layer"], "weights": entry["weights"],
               "run_id": entry["run_id"], "roi": name, "n_voxels": n,
               "share_sig_on": float(sig_on[mask].mean()), "share_sig_off": float(sig_off[mask].mean()),
               "median_r_on": float(np.median(r_on[mask])), "median_r_off": float(np.median(r_off[mask])),
               "median_delta_r": float(np.median(r_on[mask] - r_off[mask])),
               "share_on_better": float((outcome[mask] == 1).mean()) if outcome is not None else float("nan"),
               "share_off_better": float((outcome[mask] == -1).mean()) if outcome is not None else float("nan"),
               "shared_layer": entry["layer"] in SHARED_LAYERS}
        rows.append(row)
    return rows


def group_table(out: str | Path, study_summary: dict):
    """The group table (pandas DataFrame, :data:`GROUP_COLUMNS`) of a study's finished runs in ``out``, from its
    ``study-<id>.json`` summary (loaded as a dict)."""
    import pandas as pd

    from core.outputs.reader import open_results
    rows: list[dict[str, Any]] = []
    for entry in study_summary.get("runs", []):
        if entry.get("state") != "done":
            continue
        res = open_results(out, run_id=entry["run_id"])
        if not res.has_stage("stats"):
            continue
        rows += _rows_for_run(res, entry)
    return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))
