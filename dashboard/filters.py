"""The filters: significance rule, bins, ROIs, hemispheres, |r| and how filtered-out voxels look; the legend
of the colours they produce; and the callback that recolours every view when they change.

A filter change patches the uint8 colour arrays (and the flatmaps' filter layer) only, never coordinates.
"""
from __future__ import annotations

from dash import Input, Output, Patch, dcc, html

from core.vocabulary import CONDITION_LABELS, NEGATIVE_CODE, NEGATIVE_RGBA, NS_RGBA, PAIR, rgba_css, rgba_hex

from . import flatmaps, ids, r_scatter, umap_view
from .data import DashboardData, FilterState
from .plotting import HIGHLIGHT_COLOUR, SET_COLOUR, figure_outputs, figure_values

__all__ = ["CONTROLS", "control_deps", "rule_label", "filter_controls", "filter_message", "legend", "graphs",
           "filter_patches", "register"]

#: The filter controls, keyed by the :meth:`FilterState.from_controls` argument each one gives.
CONTROLS = {"rule": ids.RULE, "bins": ids.BINS, "rois": ids.ROIS, "hemis": ids.HEMIS, "threshold": ids.THRESHOLD,
            "ns": ids.NS_MODE}
_HEMIS = {"L": "left", "R": "right"}


def control_deps(kind=Input, **kw) -> dict:
    """The controls' values as callback dependencies (``Input``, ``State`` or ``Output``, made with ``kw``),
    keyed as :data:`CONTROLS`."""
    return {key: kind(cid, "value", **kw) for key, cid in CONTROLS.items()}


def rule_label(data: DashboardData, rule: str, *, study: bool = False) -> str:
    """A significance rule at the run's level, e.g. ``FDR q ≤ 0.01`` (``study``: the control's longer label,
    which names the study's rule)."""
    level = f"{data.level:g}"
    p = f"p ≤ {level} uncorrected (the study)" if study else f"p ≤ {level} (uncorrected)"
    return {"p": p, "q": f"FDR q ≤ {level}", "perm": f"block-permutation FDR q ≤ {level}"}.get(rule, rule)


def filter_controls(data: DashboardData) -> list:
    """The filter controls, set to the run's default filters."""
    state = data.default_filters()
    scheme = data.bin_scheme
    bins = [{"label": lab, "value": code} for code, lab in zip(scheme.codes, scheme.labels)] + \
        [{"label": scheme.negative_label, "value": NEGATIVE_CODE}]
    rois = [{"label": n, "value": n} for n in data.roi_names]
    return [
        html.Div([html.Label("Significance"),
                  dcc.RadioItems(id=ids.RULE, options=[{"label": rule_label(data, r, study=True), "value": r}
                                                       for r in data.rules],
                                 value=state.rule, className="radio")], className="control"),
        html.Div([html.Label("Bins"),
                  dcc.Checklist(id=ids.BINS, options=bins, value=list(state.bins), inline=True,
                                className="check")], className="control"),
        html.Div([html.Label("ROIs"),
                  dcc.Dropdown(id=ids.ROIS, options=rois, value=list(state.rois), multi=True, placeholder="all ROIs",
                               disabled=not data.has_geometry)], className="control wide"),
        html.Div([html.Label("Hemisphere"),
                  dcc.Checklist(id=ids.HEMIS, options=[{"label": _HEMIS[h], "value": h} for h in state.hemis],
                                value=list(state.hemis), inline=True, className="check")], className="control"),
        html.Div([html.Label("|r| ≥"),
                  dcc.Slider(id=ids.THRESHOLD, min=0, max=0.6, step=0.01, value=state.threshold,
                             marks={v: f"{v:g}" for v in (0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6)},
                             tooltip={"placement": "bottom"})], className="control wide"),
        html.Div([html.Label("Not shown voxels"),
                  dcc.RadioItems(id=ids.NS_MODE, options=[{"label": v, "value": v} for v in ("faint", "hidden")],
                                 value=state.ns, inline=True, className="radio")], className="control"),
    ]


def filter_message() -> html.Div:
    """Where the filter callback says how many voxels pass."""
    return html.Div(id=ids.FILTER_MSG, className="filter-msg")


def legend(data: DashboardData) -> html.Div:
    """The colour legend: the run's bins, significant negative r, filtered out, the selection markers."""
    def item(colour, label, ring=False):
        style = {"borderColor": colour} if ring else {"background": colour}
        return html.Span([html.Span(className="swatch ring" if ring else "swatch", style=style), label],
                         className="legend-item")
    scheme = data.bin_scheme
    return html.Div([html.Span("r bins:", className="legend-title")]
                    + [item(c, lab) for c, lab in zip(scheme.hex, scheme.labels)]
                    + [item(rgba_hex(NEGATIVE_RGBA), scheme.negative_label),
                       item(rgba_css(NS_RGBA), "n.s. / filtered out"),
                       item(HIGHLIGHT_COLOUR, "selected voxel"), item(SET_COLOUR, "selected set", ring=True)],
                    className="legend")


def graphs(data: DashboardData) -> list[str]:
    """Graphs a filter change recolours: the UMAPs, the flatmaps and the r scatter."""
    return umap_view.graphs(data) + flatmaps.graphs(data) + [ids.R_SCATTER]


def filter_patches(data: DashboardData, state: FilterState) -> tuple[dict[str, Patch], str]:
    """Patches that recolour every view for a filter state: colour arrays (uint8), the UMAP point sizes
    when hidden points must not be clickable, and the flatmap layer images; never coordinates.

    Returns
    -------
    patches : dict of graph id -> Patch
    message : str
        How many voxels pass the filters per condition.
    """
    out: dict[str, Patch] = {}
    visible = {m: data.visible(m, state) for m in PAIR}
    umap_view.recolour_patches(data, state, visible, out)
    r_scatter.recolour_patches(data, state, visible, out)
    flatmaps.recolour_patches(data, state, out)
    message = f"{rule_label(data, state.rule)}: " + " · ".join(
        f"{int(visible[m].sum()):,} voxels shown with {CONDITION_LABELS[m]}" for m in PAIR)
    return out, message


def register(app, data: DashboardData) -> None:
    """Every view recolours when a filter changes."""
    recoloured = graphs(data)

    @app.callback(output=dict(message=Output(ids.FILTER_MSG, "children"), figures=figure_outputs(recoloured)),
                  inputs=dict(filters=control_deps(Input)), prevent_initial_call=True)
    def on_filters(filters):
        patches, message = filter_patches(data, FilterState.from_controls(**filters))
        return dict(message=message, figures=figure_values(recoloured, patches))
