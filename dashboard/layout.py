"""The dashboard's component tree: header, filters, the off | on columns, inspector, viewer, summary, table.

:func:`make_layout` builds every figure once from :class:`~dashboard.figures.DashboardData` with the default
filters; afterwards callbacks only patch colour arrays and highlight traces.
"""
from __future__ import annotations

import numpy as np
from dash import dcc, html

from core.vocabulary import DEFAULT_BINS, NEGATIVE_RGBA, NS_RGBA, rgba_css, rgba_hex

from . import ids
from .callbacks import inspector_children
from .exports import downloads_panel, figure_config
from .presenting import scene_notices, scene_panel, scene_stores
from .figures import (
    HIGHLIGHT_COLOUR, SET_COLOUR, DashboardData, empty_figure, make_agreement_figure, make_bin_counts_figure,
    make_flatmap_figure, make_jaccard_figure, make_jaccard_map_figure, make_r_scatter_figure, make_roi_means_figure, make_roi_rdm_figure,
    make_umap_figure, r_scatter_codes, umap_colour_codes,
)

__all__ = ["make_layout", "summary_figures", "GRAPH_CONFIG"]

#: dcc.Graph config shared by every figure: no plotly logo, PNG export (publication scale) named after the view;
#: the Downloads panel switches the 2-D figures to SVG (see :func:`dashboard.exports.figure_config`).
GRAPH_CONFIG = figure_config("figure")


def _graph(graph_id: str, figure, **kw) -> dcc.Graph:
    three_d = graph_id in {ids.umap_graph(m) for m in ids.PAIR}
    return dcc.Graph(id=graph_id, figure=figure, config=figure_config(graph_id, three_d=three_d), **kw)


def _legend() -> html.Div:
    def item(colour, label, ring=False):
        style = {"borderColor": colour} if ring else {"background": colour}
        return html.Span([html.Span(className="swatch ring" if ring else "swatch", style=style), label],
                         className="legend-item")
    return html.Div([html.Span("r bins:", className="legend-title")]
                    + [item(c, lab) for c, lab in zip(DEFAULT_BINS.hex, DEFAULT_BINS.labels)]
                    + [item(rgba_hex(NEGATIVE_RGBA), "significant r < 0"),
                       item(rgba_css(NS_RGBA), "n.s. / filtered out"), item(HIGHLIGHT_COLOUR, "selected voxel"),
                       item(SET_COLOUR, "selected set", ring=True)],
                    className="legend")


def _controls(data: DashboardData) -> html.Div:
    rule_labels = {"p": f"p ≤ {data.level:g} uncorrected (the study)", "q": f"FDR q ≤ {data.level:g}",
                   "perm": f"permutation p ≤ {data.level:g}"}
    bins = [{"label": lab, "value": i} for i, lab in enumerate(DEFAULT_BINS.labels)] + [{"label": "r < 0", "value": -2}]
    rois = [{"label": n, "value": n} for n in data.roi_names]
    return html.Div([
        html.Div([html.Label("Significance"),
                  dcc.RadioItems(id=ids.RULE, options=[{"label": rule_labels[r], "value": r} for r in data.rules],
                                 value=data.default_rule, className="radio")], className="control"),
        html.Div([html.Label("Bins"),
                  dcc.Checklist(id=ids.BINS, options=bins, value=[-2, 0, 1, 2, 3], inline=True,
                                className="check")], className="control"),
        html.Div([html.Label("ROIs"),
                  dcc.Dropdown(id=ids.ROIS, options=rois, value=[], multi=True, placeholder="all ROIs",
                               disabled=not data.has_geometry)], className="control wide"),
        html.Div([html.Label("Hemisphere"),
                  dcc.Checklist(id=ids.HEMIS, options=[{"label": "left", "value": "L"},
                                                       {"label": "right", "value": "R"}],
                                value=["L", "R"], inline=True, className="check")], className="control"),
        html.Div([html.Label("|r| ≥"),
                  dcc.Slider(id=ids.THRESHOLD, min=0, max=0.6, step=0.01, value=0,
                             marks={v: f"{v:g}" for v in (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)},
                             tooltip={"placement": "bottom"})], className="control wide"),
        html.Div([html.Label("Not shown voxels"),
                  dcc.RadioItems(id=ids.NS_MODE, options=[{"label": "faint", "value": "faint"},
                                                          {"label": "hidden", "value": "hidden"}],
                                 value="faint", inline=True, className="radio")], className="control"),
        html.Div([html.Label("3-D cameras"),
                  dcc.Checklist(id=ids.CAMERA_LINK, options=[{"label": "linked", "value": "linked"}],
                                value=["linked"], inline=True, className="check")], className="control"),
        html.Div([html.Label("Columns"),
                  dcc.Checklist(id=ids.SHOWN, options=[{"label": f"attention {m}", "value": m} for m in ids.PAIR],
                                value=list(ids.PAIR), inline=True, className="check")], className="control"),
        html.Div(id=ids.FILTER_MSG, className="filter-msg"),
    ], className="controls")


def _condition_column(data: DashboardData, m: str, umap_figure, flat_figure) -> html.Div:
    children = [html.H2(f"attention {m}", className=f"cond-title cond-{m}")]
    children.append(_graph(ids.umap_graph(m), umap_figure, className="umap"))
    if data.umap_reason.get(m):
        children.append(html.P(data.umap_reason[m], className="notice"))
    if flat_figure is not None:
        children.append(_graph(ids.flat_graph(m), flat_figure, className="flatmap"))
    return html.Div(children, id=ids.cond_col(m), className="cond-col")


def summary_figures(data: DashboardData) -> dict[str, object]:
    """The summary tab's figures (bin counts, ROI means, ROI RDMs, agreement, neighbourhood change as a
    histogram and as a map)."""
    out = {}
    counts = {m: np.array([(data.stored_bins[m] == b).sum() for b in (-2, 0, 1, 2, 3)]) for m in ids.PAIR}
    out[ids.BIN_COUNTS] = make_bin_counts_figure(counts, run_id=data.run_id, simulated=data.simulated)
    if data.has_geometry and data.roi_names:
        n_rois = len(data.roi_names)
        means = {}
        for m in ids.PAIR:
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
    if data.jaccard is not None:
        out[ids.JACCARD] = make_jaccard_figure(data.jaccard[1], run_id=data.run_id, simulated=data.simulated)
    else:
        out[ids.JACCARD] = empty_figure("No neighbourhood change: the RSA stage embedded different voxel sets "
                                        "per condition (rsa.voxels = 'significant').")
    if data.jaccard_map is not None:
        out[ids.JACCARD_MAP] = make_jaccard_map_figure(data.jaccard_map, run_id=data.run_id,
                                                       simulated=data.simulated)
    elif data.jaccard is not None:
        out[ids.JACCARD_MAP] = empty_figure("No neighbourhood-change map: this run's dataset has no flatmap "
                                            "positions (no cortex mapping).")
    else:
        out[ids.JACCARD_MAP] = empty_figure("No neighbourhood-change map: the RSA stage embedded different voxel "
                                            "sets per condition (rsa.voxels = 'significant').")
    return out


def _summary_text(data: DashboardData) -> html.Div:
    s = data.results.summary
    parts = []
    for m in ids.PAIR:
        c = s.get("conditions", {}).get(m)
        if c:
            med = c.get("median_r_significant")
            parts.append(f"attention {m}: {c['n_significant']:,} significant voxels"
                         + (f", median r {med:.3f}" if med is not None else ""))
    truth = s.get("truth", {})
    if "dominant_recovery" in truth:
        parts.append(f"planted dominant feature set recovered in {truth['dominant_recovery']:.0%} of signal voxels")
    if "null_fpr_p01" in truth:
        parts.append(f"false-positive rate on null voxels {truth['null_fpr_p01']:.2%}")
    return html.Div([html.P(p) for p in parts], className="summary-text")


def _viewer_panel(data: DashboardData) -> html.Div:
    if data.viewer_dir is None:
        return html.Div([html.H2("3-D brain viewer"), html.P(data.viewer_reason, className="notice")],
                        className="viewer-panel")
    conds = [m for m in data.conditions]
    return html.Div([
        html.Div([
            html.H2("3-D brain viewer (pycortex)"),
            html.Button("load viewer", id=ids.VIEWER_LOAD, className="load", n_clicks=0,
                        title="the WebGL viewer takes a while to load; it then follows your selection"),
            dcc.RadioItems(id=ids.VIEWER_COND, options=[{"label": f"attention {m}", "value": m} for m in conds],
                           value="off", inline=True, className="radio"),
            dcc.RadioItems(id=ids.VIEWER_VIEW, options=[{"label": "flat", "value": "flat"},
                                                        {"label": "inflated", "value": "inflated"}],
                           value="flat", inline=True, className="radio"),
            html.Span("viewer not loaded", id=ids.VIEWER_STATUS, className="viewer-status"),
        ], className="viewer-bar"),
        html.Iframe(id=ids.VIEWER_FRAME, className="viewer", title="pycortex 3-D viewer"),
    ], className="viewer-panel")


def _footer(data: DashboardData) -> html.Footer:
    s = data.results.summary
    versions = ", ".join(f"{k} {v}" for k, v in s.get("versions", {}).items())
    others = [r["run_id"] for r in data.results.runs if r["run_id"] != data.run_id]
    lines = [f"run {data.run_id} · preset {s.get('preset', '?')} · {data.n_voxels:,} voxels · "
             f"{data.n_test} test samples · computed on {s.get('device', '?')}"
             + (" · SIMULATED data (planted truth)" if data.simulated else ""),
             f"results folder {data.results.out}"]
    if versions:
        lines.append(f"versions: {versions}")
    if others:
        lines.append("other runs here (open with --run): " + ", ".join(others))
    return html.Footer([html.P(t) for t in lines], className="footer")


def make_layout(data: DashboardData) -> html.Div:
    """The whole page for one run."""
    state = data.default_filters()
    visible = {m: data.visible(m, state) for m in ids.PAIR}
    umap_figs, flat_figs = {}, {}
    for m in ids.PAIR:
        if m in data.umap:
            view = data.umap[m]
            codes = umap_colour_codes(data.bins(m, state.rule), visible[m], state.ns)[view.voxels]
            umap_figs[m] = make_umap_figure(view.coords, codes, condition=m, run_id=data.run_id,
                                            simulated=data.simulated)
        else:
            umap_figs[m] = empty_figure(data.umap_reason[m], height=430)
        if data.flatmap is not None:
            fm = data.flatmap
            flat_figs[m] = make_flatmap_figure(
                condition=m, image_url=data.flatmap_url(m), layer_url=data.flatmap_layer_url(m, state),
                width=fm.width, height=fm.height, rois=fm.rois, run_id=data.run_id, simulated=data.simulated)
        else:
            flat_figs[m] = None
    r_fig = make_r_scatter_figure(data.r["off"], data.r["on"], r_scatter_codes(visible["off"], visible["on"]),
                                  run_id=data.run_id, simulated=data.simulated)
    summary = summary_figures(data)

    header = html.Div([
        html.H1(["attnbrain ", html.Span("attention off | on", className="sub")]),
        html.Span(f"run {data.run_id}", className="run"),
        html.Span("SIMULATED data", className="badge") if data.simulated else None,
        html.Div([dcc.Input(id=ids.SEARCH, type="text", placeholder="voxel id or i,j,k", debounce=False,
                            n_submit=0, className="search"),
                  html.Button("find", id=ids.SEARCH_GO, n_clicks=0),
                  html.Span(id=ids.SEARCH_MSG, className="search-msg")], className="search-box"),
    ], id=ids.HEADER, className="header")

    columns = [_condition_column(data, m, umap_figs[m], flat_figs[m]) for m in ids.PAIR]
    notices = [html.P(data.flatmap_reason, className="notice")] if data.flatmap is None else []
    stores = [dcc.Location(id=ids.URL, refresh=False), dcc.Store(id=ids.SELECTED),
              dcc.Store(id=ids.SELECTED_SET, data=[]), dcc.Store(id=ids.R_SCATTER_SET), dcc.Store(id=ids.VIEWER_PICK),
              dcc.Store(id=ids.VIEWER_SINK), dcc.Store(id=ids.CAMERA_SINK)]
    if data.flatmap is not None:
        stores += [dcc.Store(id=ids.flat_click(m)) for m in ids.PAIR]
        stores += [dcc.Store(id=ids.flat_set(m)) for m in ids.PAIR]
    summary_tab = html.Div([
        _summary_text(data),
        html.Div([_graph(ids.R_SCATTER, r_fig), _graph(ids.BIN_COUNTS, summary[ids.BIN_COUNTS])], className="grid2"),
        html.Div([_graph(ids.ROI_MEANS, summary[ids.ROI_MEANS]), _graph(ids.JACCARD, summary[ids.JACCARD])],
                 className="grid2"),
        _graph(ids.JACCARD_MAP, summary[ids.JACCARD_MAP], className="jaccard-map"),
        html.Div([_graph(ids.ROI_RDM, summary[ids.ROI_RDM]), _graph(ids.AGREEMENT, summary[ids.AGREEMENT])],
                 className="grid2"),
    ])
    table_tab = html.Div([
        html.Div([html.Span("no set selected", id=ids.SET_MSG),
                  html.Button("clear set", id=ids.CLEAR_SET, n_clicks=0)], className="set-bar"),
        html.P("Draw a lasso or box on the r scatter or a flatmap to select a set; without a set the table lists "
               "the voxels whose r changes most between attention off and on. Click a voxel id to inspect it.",
               className="hint"),
        dcc.Markdown(id=ids.TABLE, className="table-scroll voxels"),
    ])
    # The summary and table sit side by side (not in tabs): the r scatter and the table take part in
    # selection, so they stay mounted.
    return html.Div([
        header,
        *scene_notices(),
        _controls(data),
        scene_panel(data),
        _legend(),
        *notices,
        html.Div([html.Div(columns, className="cond-cols"),
                  html.Div(inspector_children(data, None), id=ids.INSPECTOR, className="inspector")],
                 className="main"),
        _viewer_panel(data),
        downloads_panel(data),
        html.Div([html.Div([html.H2("Summary"), summary_tab], className="summary"),
                  html.Div([html.H2("Voxels"), table_tab], className="table-panel")], className="lower"),
        _footer(data),
        *stores,
        *scene_stores(),
    ], id=ids.APP, className="app")

