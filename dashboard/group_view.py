"""The group view of a study: figures from its group table (:func:`core.study.group.group_table`).

- :func:`layer_profile_figure`: x = layer (in network order), one line per condition (the median over subjects
  of an ROI's median r, or of its share of significant voxels), a dot per subject; layers before layer4 shaded
  and labelled as the negative control (attention does not act there: on and off are identical).
- :func:`roi_layer_heatmap`: ROI x layer, one metric (median r_on - r_off, or the paired test's share of voxels
  where on predicts better), the median over subjects or one subject's; each cell carries the run it opens.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go

from core.vocabulary import FEATURE_LAYERS, SHARED_LAYERS

from .plotting import CONDITION_COLOURS, TEMPLATE

__all__ = ["PROFILE_METRICS", "HEATMAP_METRICS", "layer_order", "layer_profile_figure", "roi_layer_heatmap",
           "run_from_heatmap_click"]

#: Layer-profile metrics: label and the group table's column per condition.
PROFILE_METRICS = {"median_r": ("median test r", {"on": "median_r_on", "off": "median_r_off"}),
                   "share_sig": ("share of voxels significant", {"on": "share_sig_on", "off": "share_sig_off"})}
#: Heat-map metrics: label and column.
HEATMAP_METRICS = {"median_delta_r": "median r_on - r_off", "share_on_better": "share where on predicts better",
                   "share_off_better": "share where off predicts better"}


def layer_order(layers) -> list[str]:
    """The layers in network order (known ABN layers first, in their order; others after, sorted)."""
    known = [lay for lay in FEATURE_LAYERS if lay in set(layers)]
    return known + sorted(set(layers) - set(known))


def layer_profile_figure(table, roi: str = "all", metric: str = "median_r", weights: str | None = None) -> go.Figure:
    """The layer profile of one ROI (see the module docstring); ``weights``: which weights' runs (default: the
    table's first)."""
    label, columns = PROFILE_METRICS[metric]
    rows = table[table["roi"] == roi]
    if weights is None and len(rows):
        weights = rows["weights"].iloc[0]
    rows = rows[rows["weights"] == weights]
    layers = layer_order(rows["layer"].unique())
    x = {lay: i for i, lay in enumerate(layers)}
    fig = go.Figure(layout=dict(template=TEMPLATE, height=320, margin=dict(l=50, r=10, t=50, b=40),
                                title=dict(text=f"{label} by layer, {roi} ({weights})", x=0.01, font=dict(size=13)),
                                xaxis=dict(tickmode="array", tickvals=list(range(len(layers))), ticktext=layers,
                                           title="layer"), yaxis=dict(title=label)))
    shared = [x[lay] for lay in layers if lay in SHARED_LAYERS]
    if shared:
        fig.add_vrect(x0=min(shared) - 0.5, x1=max(shared) + 0.5, fillcolor="#eeeeee", line_width=0, layer="below",
                      annotation_text="negative control: before attention", annotation_position="top left")
    jitter = {"on": -0.06, "off": 0.06}
    for cond, col in columns.items():
        med = rows.groupby("layer")[col].median()
        fig.add_trace(go.Scatter(x=[x[lay] for lay in layers], y=[float(med[lay]) for lay in layers],
                                 mode="lines+markers", name=f"attention {cond} (median over subjects)",
                                 line=dict(color=CONDITION_COLOURS[cond], width=2)))
        fig.add_trace(go.Scatter(x=[x[lay] + jitter[cond] for lay in rows["layer"]], y=rows[col].astype(float),
                                 mode="markers", name=f"attention {cond}, one subject", showlegend=False,
                                 text=rows["subject"], customdata=rows["run_id"],
                                 hovertemplate="%{text}: %{y:.3f}<extra></extra>",
                                 marker=dict(color=CONDITION_COLOURS[cond], size=6, opacity=0.6)))
    return fig


def roi_layer_heatmap(table, metric: str = "median_delta_r", subject: str | None = None,
                      weights: str | None = None) -> go.Figure:
    """ROI x layer heat map of ``metric``: the median over subjects (``subject`` None) or one subject's values;
    each cell's ``customdata`` is the run it opens (one subject's), or "" for a median cell."""
    rows = table if weights is None else table[table["weights"] == weights]
    if weights is None and len(rows):
        rows = rows[rows["weights"] == rows["weights"].iloc[0]]
    if subject is not None:
        rows = rows[rows["subject"] == subject]
    layers = layer_order(rows["layer"].unique())
    rois = ["all"] + sorted(set(rows["roi"]) - {"all"})
    z = np.full((len(rois), len(layers)), np.nan)
    runs = np.full((len(rois), len(layers)), "", dtype=object)
    for i, roi in enumerate(rois):
        for j, lay in enumerate(layers):
            cell = rows[(rows["roi"] == roi) & (rows["layer"] == lay)]
            if len(cell):
                z[i, j] = float(np.median(cell[metric].astype(float)))
                if subject is not None:
                    runs[i, j] = cell["run_id"].iloc[0]
    finite = z[np.isfinite(z)]
    span = float(np.max(np.abs(finite))) if finite.size else 1.0
    diverging = metric == "median_delta_r"
    heat = go.Heatmap(z=z, x=layers, y=rois, customdata=runs, colorscale="RdBu_r" if diverging else "Viridis",
                      zmid=0 if diverging else None, zmin=-span if diverging else None,
                      zmax=span if diverging else None, colorbar=dict(title=HEATMAP_METRICS[metric][:18]),
                      hovertemplate="%{y}, %{x}: %{z:.3f}<extra></extra>")
    who = "median over subjects" if subject is None else subject
    return go.Figure(data=[heat], layout=dict(template=TEMPLATE, height=60 + 22 * len(rois),
                                              margin=dict(l=80, r=10, t=50, b=40),
                                              title=dict(text=f"{HEATMAP_METRICS[metric]}, ROI x layer ({who})",
                                                         x=0.01, font=dict(size=13))))


def run_from_heatmap_click(click) -> str | None:
    """The run a heat-map click opens (one subject's cell), or None (a median cell, or no click)."""
    try:
        run = click["points"][0]["customdata"]
    except (TypeError, KeyError, IndexError):
        return None
    return run or None
