"""The summary panel: bins, ROI means, ROI RDMs, RDM agreement and the neighbourhood change (a histogram and a
clickable map), beside the r scatter; the pure figure builders, clicks on the map and its highlight patch.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import Input, Output, Patch, html

from core.vocabulary import (ADDS_RGBA, CONDITION_LABELS, CONTRAST_LABELS, DEFAULT_BINS, NEGATIVE_RGBA, OUTCOME_RGBA, PAIR,
                             BinScheme, rgba_hex)

from . import ids
from .data import DashboardData, FilterState, JaccardMapView
from .plotting import (CONDITION_COLOURS, HIGHLIGHT_COLOUR, HIGHLIGHT_TRACE, TEMPLATE, empty_figure, first_point, graph,
                       title)
from .r_scatter import r_scatter_panel

__all__ = [
    "JACCARD_COLORSCALE", "make_bin_counts_figure", "make_roi_means_figure", "make_roi_rdm_figure",
    "make_agreement_figure", "make_jaccard_figure", "make_jaccard_map_figure", "make_roi_contrast_figure",
    "bin_counts_figure", "roi_contrast_figure", "make_roi_partition_figure", "roi_partition_figure",
    "summary_figures", "summary_panel", "graphs", "voxel_from_jaccard_click",
    "highlight_patches", "register",
]

#: Colour scale of the neighbourhood-change map (Jaccard 0..1): perceptually uniform, sequential, readable
#: with colour-vision deficiencies, and neither the viridis of the r bins nor close to the magenta highlight.
JACCARD_COLORSCALE = "Cividis"


def make_bin_counts_figure(counts: dict[str, np.ndarray], *, run_id: str, simulated: bool,
                           scheme: BinScheme = DEFAULT_BINS, significant: bool = True) -> go.Figure:
    """Voxels per correlation bin and condition (bars in the bin colours, off hatched).

    Parameters
    ----------
    counts : dict of str -> int array of shape (n_bins + 1,)
        Per condition: counts of the codes ``scheme.filter_codes`` (the negative category, then each bin).
    scheme : BinScheme
        The run's bins (labels and colours).
    significant : bool
        Whether the counts are of significant voxels only (else of every voxel with a defined r).
    """
    negative = scheme.negative_label if significant else f"r<{scheme.edges[0]:g}"
    labels = [negative, *scheme.labels]
    colours = [rgba_hex(NEGATIVE_RGBA), *scheme.hex]
    bars = [go.Bar(x=labels, y=np.asarray(c, dtype=np.int64), name=CONDITION_LABELS.get(m, m),
                   marker=dict(color=colours, pattern=dict(shape="/" if m == PAIR[0] else ""),
                               line=dict(color="#333", width=1)),
                   hovertemplate=f"{CONDITION_LABELS.get(m, m)}<br>%{{x}}: %{{y}} voxels<extra></extra>")
            for m, c in counts.items()]
    return go.Figure(data=bars, layout=dict(
        template=TEMPLATE, height=300, barmode="group", margin=dict(l=50, r=10, t=60, b=40),
        title=title(f"{'Significant voxels' if significant else 'All voxels'} per correlation bin ({PAIR[0]} "
                    "hatched)", run_id, simulated),
        yaxis=dict(title="voxels", gridcolor="#eee"), legend=dict(orientation="h", y=1.0, x=1, xanchor="right")))


def make_roi_means_figure(roi_names: list[str], means: dict[str, np.ndarray], counts: np.ndarray, *,
                          run_id: str, simulated: bool) -> go.Figure:
    """Mean test r per ROI, attention off vs on (horizontal grouped bars).

    Parameters
    ----------
    roi_names : list of str
    means : dict of str -> float array of shape (n_rois,)
        Mean r of the ROI's voxels per condition (NaN for an empty ROI).
    counts : int array of shape (n_rois,)
        Voxels per ROI (in the hover).
    """
    bars = [go.Bar(y=roi_names, x=np.asarray(v, dtype=np.float64), orientation="h", name=CONDITION_LABELS.get(m, m),
                   marker_color=CONDITION_COLOURS.get(m, "#777"), customdata=np.asarray(counts, dtype=np.int64),
                   hovertemplate=f"%{{y}} · {CONDITION_LABELS.get(m, m)}<br>mean r %{{x:.3f}} over "
                                 "%{customdata} voxels<extra></extra>")
            for m, v in means.items()]
    return go.Figure(data=bars, layout=dict(
        template=TEMPLATE, height=max(300, 24 * len(roi_names) + 100), barmode="group",
        margin=dict(l=70, r=10, t=60, b=40), title=title("Mean test r per ROI (all voxels)", run_id, simulated),
        xaxis=dict(title="mean r", gridcolor="#eee", zeroline=True), yaxis=dict(autorange="reversed"),
        legend=dict(orientation="h", y=1.0, x=1, xanchor="right")))


def make_roi_rdm_figure(rdms: dict[str, np.ndarray], roi_names: list[str], counts: np.ndarray | None, *,
                        run_id: str, simulated: bool) -> go.Figure:
    """ROI x ROI block-mean correlation distance per condition, side by side on one colour scale.

    Parameters
    ----------
    rdms : dict of str -> float array of shape (n_rois, n_rois)
        ``roi_rdm_<m>`` of the RSA stage (NaN where a block has no voxel pairs).
    roi_names : list of str
    counts : int array of shape (n_rois,) or None
        Embedded voxels per ROI; empty ROIs are left out.
    """
    from plotly.subplots import make_subplots
    conds = list(rdms)
    keep = np.arange(len(roi_names)) if counts is None else np.flatnonzero(np.asarray(counts) > 0)
    names = [roi_names[i] for i in keep]
    fig = make_subplots(rows=1, cols=len(conds), subplot_titles=[CONDITION_LABELS.get(m, m) for m in conds],
                        horizontal_spacing=0.12)
    finite = np.concatenate([np.asarray(rdms[m])[np.ix_(keep, keep)].ravel() for m in conds])
    finite = finite[np.isfinite(finite)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for col, m in enumerate(conds, start=1):
        z = np.asarray(rdms[m], dtype=np.float64)[np.ix_(keep, keep)]
        fig.add_trace(go.Heatmap(z=z, x=names, y=names, coloraxis="coloraxis",
                                 hovertemplate=f"{CONDITION_LABELS.get(m, m)}<br>%{{y}} – %{{x}}: %{{z:.3f}}"
                                               "<extra></extra>"),
                      row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(template=TEMPLATE, height=380, margin=dict(l=60, r=10, t=80, b=60),
                      title=title("ROI x ROI mean correlation distance (1 - r of predicted responses)", run_id,
                                   simulated),
                      coloraxis=dict(colorscale="Cividis", cmin=lo, cmax=hi,
                                     colorbar=dict(title="1 - r", thickness=12)))
    return fig


def make_agreement_figure(rdms: dict[str, np.ndarray], agreement: dict, *, run_id: str,
                          simulated: bool) -> go.Figure:
    """How much the two conditions' RDMs agree: ROI-block entries off vs on, and the voxel-pair statistics.

    Parameters
    ----------
    rdms : dict of the two conditions of ``PAIR`` -> float array of shape (n_rois, n_rois)
    agreement : dict
        The RSA stage's ``agreement`` (``pearson``, ``spearman``, their ``_ci`` and ``n_pairs``) over a
        random sample of voxel pairs; may be empty.
    """
    off, on = (np.asarray(rdms[m], dtype=np.float64) for m in PAIR)
    iu = np.triu_indices_from(off)
    x, y = off[iu], on[iu]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    lo = float(min(x.min(initial=0), y.min(initial=0)))
    hi = float(max(x.max(initial=1), y.max(initial=1)))
    fig = go.Figure(data=[go.Scatter(x=x, y=y, mode="markers", marker=dict(size=7, color="#333"), showlegend=False,
                                     hovertemplate=f"{PAIR[0]} %{{x:.3f}} · {PAIR[1]} %{{y:.3f}}"
                                                   "<extra>ROI block</extra>")],
                    layout=dict(template=TEMPLATE, height=380, margin=dict(l=55, r=10, t=80, b=50),
                                title=title("On vs off RDM agreement", run_id, simulated),
                                xaxis=dict(title=f"ROI-block distance, {CONDITION_LABELS[PAIR[0]]}", gridcolor="#eee"),
                                yaxis=dict(title=f"ROI-block distance, {CONDITION_LABELS[PAIR[1]]}", gridcolor="#eee"),
                                shapes=[dict(type="line", x0=lo, y0=lo, x1=hi, y1=hi,
                                             line=dict(color="#888", dash="dash"))]))
    if agreement:
        def ci(name):
            c = agreement.get(f"{name}_ci")
            return f" [{c[0]:.3f}, {c[1]:.3f}]" if c else ""
        text = (f"voxel pairs (n = {int(agreement.get('n_pairs', 0)):,}):<br>"
                f"Pearson {agreement['pearson']:.3f}{ci('pearson')}<br>"
                f"Spearman {agreement['spearman']:.3f}{ci('spearman')}")
    else:
        text = "voxel-pair agreement not computed for this run"
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.02, y=0.98, xanchor="left", yanchor="top",
                       showarrow=False, align="left", bgcolor="rgba(255,255,255,0.85)", bordercolor="#ccc")
    return fig


def make_jaccard_figure(jaccard: np.ndarray, *, run_id: str, simulated: bool, n_bins: int = 20) -> go.Figure:
    """Distribution of the per-voxel neighbourhood change: Jaccard overlap of the on and off kNN sets.

    Parameters
    ----------
    jaccard : float array of shape (n_emb,)
        ``knn_jaccard`` of the RSA stage (1 = same neighbours, 0 = none in common).
    """
    j = np.asarray(jaccard, dtype=np.float64)
    counts, edges = np.histogram(j, bins=n_bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    med = float(np.median(j)) if j.size else float("nan")
    fig = go.Figure(data=[go.Bar(x=centres, y=counts, width=np.diff(edges), marker_color="#555",
                                 hovertemplate="Jaccard %{x:.2f}: %{y} voxels<extra></extra>")],
                    layout=dict(template=TEMPLATE, height=300, margin=dict(l=50, r=10, t=60, b=45),
                                title=title("Neighbourhood change: on vs off kNN overlap per voxel", run_id,
                                             simulated),
                                xaxis=dict(title="Jaccard overlap (1 = same neighbours)", range=[0, 1]),
                                yaxis=dict(title="voxels", gridcolor="#eee"), bargap=0.05))
    if j.size:
        fig.add_vline(x=med, line=dict(color=HIGHLIGHT_COLOUR, dash="dash"),
                      annotation=dict(text=f"median {med:.2f}", font=dict(color=HIGHLIGHT_COLOUR)))
    return fig


def make_jaccard_map_figure(view: JaccardMapView, *, run_id: str, simulated: bool,
                            highlight: int | None = None, height: int = 430) -> go.Figure:
    """Neighbourhood change on the cortex: every embedded voxel at its flatmap position, coloured by the
    Jaccard overlap of its on and off kNN sets (WebGL; click a voxel to select it).

    Parameters
    ----------
    view : JaccardMapView
        :func:`jaccard_map_view` of the run.
    highlight : int or None
        Voxel drawn in the "selected voxel" trace.

    Returns
    -------
    go.Figure
        Traces ``0 .. len(view.names) - 1``: the voxels of one ROI each (uint16 x/y, float32 Jaccard as the
        colour on the shared colour axis, int32 voxel ids as customdata for the hover); then the selected voxel
        (``view.highlight_trace``). About 12 bytes per voxel before base64.
    """
    size = 3 if view.voxels.size > 20000 else 4 if view.voxels.size > 3000 else 6
    traces = []
    for g, name in enumerate(view.names):
        s, e = int(view.starts[g]), int(view.starts[g + 1])
        traces.append(go.Scattergl(
            x=view.coords[s:e, 0], y=view.coords[s:e, 1], mode="markers", name=name, showlegend=False,
            customdata=view.voxels[s:e].astype(np.int32),
            marker=dict(size=size, color=view.values[s:e], coloraxis="coloraxis"),
            hovertemplate=f"voxel %{{customdata}}<br>ROI {name}<br>Jaccard %{{marker.color:.2f}}<extra></extra>"))
    pos = -1 if highlight is None else int(view.position[int(highlight)])
    hx, hy = ([int(view.coords[pos, 0])], [int(view.coords[pos, 1])]) if pos >= 0 else ([], [])
    traces.append(go.Scattergl(x=hx, y=hy, mode="markers", hoverinfo="skip", showlegend=False,
                               name=HIGHLIGHT_TRACE,
                               marker=dict(size=15, symbol="circle-open", color=HIGHLIGHT_COLOUR,
                                           line=dict(width=3))))
    labels = [dict(text=name, x=x, y=y, showarrow=False, font=dict(size=10, color="#222"),
                   bgcolor="rgba(255,255,255,0.6)", borderpad=0) for name, x, y in view.labels]
    axis = dict(visible=False, showgrid=False, zeroline=False)
    med = float(np.median(view.values)) if view.values.size else float("nan")
    return go.Figure(data=traces, layout=dict(
        template=TEMPLATE, height=height, margin=dict(l=0, r=0, t=60, b=0), uirevision="jaccard-map",
        title=title(f"Neighbourhood change on the flatmap: on vs off kNN overlap per voxel (median {med:.2f}; "
                     "click a voxel)", run_id, simulated),
        xaxis=axis, yaxis=dict(axis, scaleanchor="x"), hovermode="closest", dragmode="zoom",
        annotations=labels,
        coloraxis=dict(colorscale=JACCARD_COLORSCALE, cmin=0.0, cmax=1.0,
                       colorbar=dict(title=dict(text="Jaccard", side="right"), thickness=12, len=0.9,
                                     tickvals=[0, 0.25, 0.5, 0.75, 1],
                                     ticktext=["0 all changed", "0.25", "0.5", "0.75", "1 same"]))))


def make_roi_contrast_figure(summaries: dict[str, dict], contrast: str, *, run_id: str, simulated: bool,
                             overall: dict | None = None) -> go.Figure:
    """Per ROI, what a contrast's paired test found: the share of voxels where a predicts better (right) and
    where b does (left), and the median Δr with its interval.

    Parameters
    ----------
    summaries : dict of ROI name -> dict
        The contrasts stage's per-ROI summaries (``meta["contrasts"][c]["rois"]``: ``n_voxels``, ``share_helped``,
        ``share_hurt``, ``median_delta``, ``median_delta_ci``).
    contrast : str
        Its name (``"on_off"``, ...), for the labels.
    overall : dict, optional
        The run-wide summary (``meta["contrasts"][c]["all"]``), drawn as the first row "all voxels".
    """
    from plotly.subplots import make_subplots
    from .filters import outcome_labels
    rows = ([("all voxels", overall)] if overall else []) + [(n, s) for n, s in summaries.items()
                                                              if n not in ("", "other") and s.get("n_voxels")]
    names = [n for n, _ in rows]
    helped = np.array([s.get("share_helped", 0.0) for _, s in rows], dtype=np.float64)
    hurt = np.array([s.get("share_hurt", 0.0) for _, s in rows], dtype=np.float64)
    med = np.array([s.get("median_delta", np.nan) for _, s in rows], dtype=np.float64)
    ci = np.array([s.get("median_delta_ci", [np.nan, np.nan]) for _, s in rows], dtype=np.float64).reshape(-1, 2)
    n = np.array([s.get("n_voxels", 0) for _, s in rows], dtype=np.int64)
    words = outcome_labels(contrast)
    fig = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.04, column_widths=[0.55, 0.45])
    for share, sign, code in ((helped, 1, 1), (hurt, -1, -1)):
        fig.add_trace(go.Bar(y=names, x=sign * share, orientation="h", name=words[code],
                             marker_color=rgba_hex(OUTCOME_RGBA[code]), customdata=np.column_stack([share, n]),
                             hovertemplate=f"%{{y}}: {words[code]} in %{{customdata[0]:.1%}} of "
                                           "%{customdata[1]} voxels<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(y=names, x=med, mode="markers", name="median Δr", showlegend=False,
                             marker=dict(color="#333", size=7),
                             error_x=dict(type="data", symmetric=False, array=ci[:, 1] - med, arrayminus=med - ci[:, 0],
                                          color="#333", thickness=1.2),
                             hovertemplate="%{y}: median Δr %{x:.4f}<extra></extra>"), row=1, col=2)
    fig.add_vline(x=0, line=dict(color="#888", width=1), row=1, col=2)
    fig.update_layout(template=TEMPLATE, height=max(320, 22 * len(names) + 120), barmode="relative",
                      margin=dict(l=80, r=10, t=70, b=40),
                      title=title(f"Paired test per ROI: {CONTRAST_LABELS[contrast]} (shares at the test's FDR; "
                                  "median Δr with its interval over test samples)", run_id, simulated),
                      legend=dict(orientation="h", y=1.0, x=0, yanchor="bottom"))
    fig.update_yaxes(autorange="reversed")
    fig.update_xaxes(title_text=f"share of voxels ({words[-1]} ← → {words[1]})", tickformat=".0%", row=1, col=1,
                     gridcolor="#eee", zeroline=True)
    fig.update_xaxes(title_text="median Δr", row=1, col=2, gridcolor="#eee")
    return fig


def make_roi_partition_figure(roi_names: list[str], parts: dict[str, np.ndarray], counts: np.ndarray, *,
                              run_id: str, simulated: bool) -> go.Figure:
    """Per ROI, the mean unique-on, unique-off and shared test R^2 of the joint model (stacked bars).

    Parameters
    ----------
    parts : dict of "unique_on", "unique_off", "shared" -> float array of shape (n_rois,)
        Means over the ROI's voxels of each part, negative estimates counted as 0 (a stacked bar cannot show
        a negative share; the voxel values keep their sign).
    counts : int array of shape (n_rois,)
        Voxels averaged per ROI (in the hover).
    """
    colours = {"unique_on": rgba_hex(ADDS_RGBA[1]), "unique_off": rgba_hex(ADDS_RGBA[2]), "shared": "#9a9a9a"}
    labels = {"unique_on": "unique on", "unique_off": "unique off", "shared": "shared"}
    bars = [go.Bar(y=roi_names, x=np.asarray(parts[k], dtype=np.float64), orientation="h", name=labels[k],
                   marker_color=colours[k], customdata=np.asarray(counts, dtype=np.int64),
                   hovertemplate=f"%{{y}}: {labels[k]} %{{x:.4f}} (mean test R², %{{customdata}} voxels)<extra></extra>")
            for k in ("unique_on", "shared", "unique_off")]
    return go.Figure(data=bars, layout=dict(
        template=TEMPLATE, height=max(300, 22 * len(roi_names) + 110), barmode="stack",
        margin=dict(l=70, r=10, t=70, b=40),
        title=title("What the joint on+off model explains per ROI (mean test R², voxels with joint R² > 0; "
                    "negative parts as 0)", run_id, simulated),
        xaxis=dict(title="mean test R²", gridcolor="#eee"), yaxis=dict(autorange="reversed"),
        legend=dict(orientation="h", y=1.0, x=0, yanchor="bottom")))


def roi_partition_figure(data: DashboardData) -> go.Figure:
    """:func:`make_roi_partition_figure` of a run, or a sentence where it has no joint stage or no ROIs."""
    if not data.joint:
        return empty_figure("No joint on+off model: this run has no joint stage (rerun precompute.py).")
    if not (data.has_geometry and data.roi_names):
        return empty_figure("No ROI summary of the joint model: this run's dataset has no ROI labels.")
    use = np.isfinite(data.joint["r2_joint"]) & (data.joint["r2_joint"] > 0)
    n_rois = len(data.roi_names)
    cnt = np.bincount(data.roi[use], minlength=n_rois)
    parts = {}
    for k in ("unique_on", "unique_off", "shared"):
        tot = np.bincount(data.roi[use], weights=np.maximum(data.joint[k][use], 0.0), minlength=n_rois)
        parts[k] = np.where(cnt > 0, tot / np.maximum(cnt, 1), 0.0)
    keep = [i for i, n in enumerate(data.roi_names) if n not in ("", "other")]
    return make_roi_partition_figure([data.roi_names[i] for i in keep], {k: v[keep] for k, v in parts.items()},
                                     cnt[keep], run_id=data.run_id, simulated=data.simulated)


def bin_counts_figure(data: DashboardData, state: FilterState) -> go.Figure:
    """:func:`make_bin_counts_figure` of a run under a filter state's significance rule and bin set."""
    scheme = data.bin_scheme
    counts = {m: np.array([(data.state_bins(m, state) == b).sum() for b in scheme.filter_codes]) for m in PAIR}
    return make_bin_counts_figure(counts, run_id=data.run_id, simulated=data.simulated, scheme=scheme,
                                  significant=state.bin_set == "significant")


def roi_contrast_figure(data: DashboardData, contrast: str) -> go.Figure:
    """:func:`make_roi_contrast_figure` of a run's contrast, or a sentence where the run has none."""
    meta = data.contrast_meta.get(contrast)
    if meta is None:
        return empty_figure("No paired on-vs-off test: this run has no contrasts stage (rerun precompute.py).")
    if not meta.get("rois"):
        return empty_figure("No ROI summary of the paired test: this run's dataset has no ROI labels.")
    return make_roi_contrast_figure(meta["rois"], contrast, overall=meta.get("all"), run_id=data.run_id,
                                    simulated=data.simulated)


# ---------------------------------------------------------------------------------------------- the panel
def summary_figures(data: DashboardData) -> dict[str, go.Figure]:
    """The summary's figures by graph id (bin counts, ROI means, ROI RDMs, agreement, neighbourhood change as a
    histogram and as a map); a sentence where the run lacks what one needs."""
    out = {}
    out[ids.BIN_COUNTS] = bin_counts_figure(data, data.default_filters())
    if data.has_geometry and data.roi_names:
        n_rois = len(data.roi_names)
        means = {}
        for m in PAIR:
            ok = data.valid[m]
            tot = np.bincount(data.roi[ok], weights=data.r[m][ok], minlength=n_rois)
            cnt = np.bincount(data.roi[ok], minlength=n_rois)
            with np.errstate(invalid="ignore", divide="ignore"):
                means[m] = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
        out[ids.ROI_MEANS] = make_roi_means_figure(data.roi_names, means, np.bincount(data.roi, minlength=n_rois),
                                                   run_id=data.run_id, simulated=data.simulated)
    else:
        out[ids.ROI_MEANS] = empty_figure("No ROIs: this run's dataset has no cortex mapping.")
    if len(data.roi_rdm) == 2 and data.roi_names:
        out[ids.ROI_RDM] = make_roi_rdm_figure(data.roi_rdm, data.roi_names, data.roi_counts, run_id=data.run_id,
                                               simulated=data.simulated)
        out[ids.AGREEMENT] = make_agreement_figure(data.roi_rdm, data.agreement, run_id=data.run_id,
                                                   simulated=data.simulated)
    else:
        out[ids.ROI_RDM] = empty_figure("No ROI RDMs: the RSA stage had no ROI labels or too few voxels.")
        out[ids.AGREEMENT] = empty_figure("No RDM agreement: needs both conditions' RDMs.")
    out[ids.ROI_CONTRAST] = roi_contrast_figure(data, data.default_filters().contrast)
    out[ids.ROI_PARTITION] = roi_partition_figure(data)
    different_sets = ("the RSA stage embedded different voxel sets per condition (rsa.voxels = 'significant').")
    if data.jaccard is not None:
        out[ids.JACCARD] = make_jaccard_figure(data.jaccard[1], run_id=data.run_id, simulated=data.simulated)
    else:
        out[ids.JACCARD] = empty_figure(f"No neighbourhood change: {different_sets}")
    if data.jaccard_map is not None:
        out[ids.JACCARD_MAP] = make_jaccard_map_figure(data.jaccard_map, run_id=data.run_id,
                                                       simulated=data.simulated)
    elif data.jaccard is not None:
        out[ids.JACCARD_MAP] = empty_figure("No neighbourhood-change map: this run's dataset has no flatmap "
                                            "positions (no cortex mapping).")
    else:
        out[ids.JACCARD_MAP] = empty_figure(f"No neighbourhood-change map: {different_sets}")
    return out


def _summary_text(data: DashboardData) -> html.Div:
    s = data.results.summary
    parts = []
    for m in PAIR:
        c = s.get("conditions", {}).get(m)
        if c:
            med = c.get("median_r_significant")
            parts.append(f"{CONDITION_LABELS[m]}: {c['n_significant']:,} significant voxels"
                         + (f", median r {med:.3f}" if med is not None else ""))
    truth = s.get("truth", {})
    if "dominant_recovery" in truth:
        parts.append(f"planted dominant feature set recovered in {truth['dominant_recovery']:.0%} of signal voxels")
    if "null_fpr_p01" in truth:
        parts.append(f"false-positive rate on null voxels {truth['null_fpr_p01']:.2%}")
    return html.Div([html.P(p) for p in parts], className="summary-text")


def summary_panel(data: DashboardData, state: FilterState) -> html.Div:
    """The summary section: the run's numbers, the r scatter and every summary figure."""
    figs = summary_figures(data)
    return html.Div([html.H2("Summary"), html.Div([
        _summary_text(data),
        html.Div([r_scatter_panel(data, state), graph(ids.BIN_COUNTS, figs[ids.BIN_COUNTS])], className="grid2"),
        html.Div([graph(ids.ROI_MEANS, figs[ids.ROI_MEANS]), graph(ids.JACCARD, figs[ids.JACCARD])],
                 className="grid2"),
        html.Div([graph(ids.ROI_CONTRAST, figs[ids.ROI_CONTRAST]), graph(ids.ROI_PARTITION, figs[ids.ROI_PARTITION])],
                 className="grid2"),
        graph(ids.JACCARD_MAP, figs[ids.JACCARD_MAP], className="jaccard-map"),
        html.Div([graph(ids.ROI_RDM, figs[ids.ROI_RDM]), graph(ids.AGREEMENT, figs[ids.AGREEMENT])],
                 className="grid2"),
    ])], className="summary")


def graphs(data: DashboardData) -> list[str]:
    """Ids of the summary graphs that selections patch (the neighbourhood map, when the run has one)."""
    return [ids.JACCARD_MAP] if data.jaccard_map is not None else []


# ---------------------------------------------------------------------------------------------- the map's clicks
def voxel_from_jaccard_click(data: DashboardData, click: dict | None) -> int | None:
    """Voxel clicked on the neighbourhood-change map: (``curveNumber``, ``pointNumber``) of a ROI trace mapped
    through :class:`~dashboard.data.JaccardMapView` (clicks on the highlight trace select nothing)."""
    point = first_point(click)
    if point is None or data.jaccard_map is None:
        return None
    c, n = point.get("curveNumber", 0), point.get("pointNumber", point.get("pointIndex"))
    if not isinstance(c, int) or not isinstance(n, int):
        return None
    return data.jaccard_map.voxel_of(c, n)


def highlight_patches(data: DashboardData, voxel: int | None, out: dict[str, Patch]) -> None:
    """Move the map's "selected voxel" trace (after the ROI traces) to ``voxel``, into ``out``."""
    jm = data.jaccard_map
    if jm is None:
        return
    pos = -1 if voxel is None else int(jm.position[int(voxel)])
    out.setdefault(ids.JACCARD_MAP, Patch())["data"][jm.highlight_trace].update(
        x=[int(jm.coords[pos, 0])] if pos >= 0 else [], y=[int(jm.coords[pos, 1])] if pos >= 0 else [])


def register(app, data: DashboardData) -> None:
    """The ROI summary of the paired test follows the contrast control."""
    @app.callback(Output(ids.BIN_COUNTS, "figure"), Input(ids.RULE, "value"), Input(ids.BIN_SET, "value"),
                  prevent_initial_call=True)
    def on_bins(rule, bin_set):
        state = FilterState(rule=rule if rule in data.rules else data.default_rule,
                            bin_set="all" if bin_set == "all" else "significant")
        return bin_counts_figure(data, state)

    @app.callback(Output(ids.ROI_CONTRAST, "figure"), Input(ids.CONTRAST, "value"), prevent_initial_call=True)
    def on_contrast(contrast):
        return roi_contrast_figure(data, contrast if contrast in data.contrasts else data.default_filters().contrast)
