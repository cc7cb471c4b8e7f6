"""Selecting a voxel and a voxel set from any view: which voxel or set an event names, the patches that show
the selection in every view, the search box, and the two callbacks.

A selection only patches small traces ("selected voxel", "selected set") of each view; the big coordinate
arrays are sent once, with the page.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
from dash import Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core.vocabulary import PAIR

from . import flatmaps, ids, r_scatter, summary_plots, umap_view, viewer_bridge
from .data import DashboardData, FilterState
from .filters import control_deps
from .plotting import figure_outputs, figure_values

__all__ = [
    "voxel_from_hash", "parse_voxel_query", "resolve_selection", "highlight_graphs", "set_graphs",
    "highlight_patches", "set_patches", "set_message", "resolve_set", "search_box", "stores", "register",
]

_IJK_RE = re.compile(r"^\s*(-?\d+)\s*[, ;]\s*(-?\d+)\s*[, ;]\s*(-?\d+)\s*$")
_ID_RE = re.compile(r"^\s*#?\s*(\d+)\s*$")
_HASH_RE = re.compile(r"^#?voxel=(\d+)$")
#: "file 1234" / "column 1234": a voxel by its column in the response file (the file's numbering).
_FILE_RE = re.compile(r"^\s*(?:file|column|col)\s*#?\s*(\d+)\s*$", re.IGNORECASE)


# ---------------------------------------------------------------------------------------------- events -> voxel
def voxel_from_hash(data: DashboardData, url_hash: str | None) -> int | None:
    """Voxel named by the page URL's hash ``#voxel=<row>`` (see ``ids.URL``), None if none or out of range."""
    m = _HASH_RE.match(url_hash or "")
    if m is None:
        return None
    v = int(m.group(1))
    return v if v < data.n_voxels else None


def parse_voxel_query(data: DashboardData, text: str | None) -> tuple[int | None, str]:
    """A search box entry -> (voxel or None, message). Accepts a voxel id, ``file N`` (the voxel in column N of
    the response file: the file's numbering where voxels were left out) or ``i,j,k`` NIfTI indices."""
    if not text or not str(text).strip():
        return None, ""
    text = str(text)
    m = _ID_RE.match(text)
    if m:
        v = int(m.group(1))
        if v < data.n_voxels:
            return v, f"voxel {v}"
        return None, f"no voxel {v}: ids run from 0 to {data.n_voxels - 1}"
    m = _FILE_RE.match(text)
    if m:
        col = int(m.group(1))
        if data.file_voxel is None:
            return (col, f"voxel {col} (column {col} of the response file)") if col < data.n_voxels else \
                (None, f"no column {col}: the response file has {data.n_voxels}")
        pos = int(np.searchsorted(data.file_voxel, col))
        if pos < data.file_voxel.size and data.file_voxel[pos] == col:
            return pos, f"voxel {pos} (column {col} of the response file)"
        return None, (f"column {col} of the response file is not in this run: it is NaN in every test sample (left "
                      "out), or beyond the file's voxels")
    m = _IJK_RE.match(text)
    if m:
        if not data.has_volume:
            return None, ("this run's voxels have no place in a volume (no pycortex subject), so i,j,k cannot be "
                          "looked up; enter a voxel id")
        i, j, k = (int(g) for g in m.groups())
        v = data.voxel_at_ijk(i, j, k)
        if v < 0:
            return None, f"no voxel at i,j,k = {i},{j},{k} in this run's mask"
        return v, f"voxel {v} at i,j,k = {i},{j},{k}"
    return None, (f"expected a voxel id (0-{data.n_voxels - 1}), file N (its column in the response file) or i,j,k "
                  f"(e.g. 40,52,18); found {text.strip()!r}")


def resolve_selection(data: DashboardData, trigger: Any, value: Any, search: str | None = None
                      ) -> tuple[int | None, str | None]:
    """Which voxel an input event selects.

    Parameters
    ----------
    data : DashboardData
    trigger : str
        Id of the component that fired (``ctx.triggered_id``).
    value : any
        Its new property value.
    search : str or None
        The search box text (for the search triggers).

    Returns
    -------
    voxel : int or None
        None = the event selects nothing (keep the current selection).
    message : str or None
        New text for the search feedback line (None = leave it).
    """
    if trigger == ids.URL:
        return voxel_from_hash(data, value), None
    for m in PAIR:
        if trigger == ids.umap_graph(m):
            return umap_view.voxel_from_umap_click(data, m, value), None
        if trigger == ids.flat_click(m):
            v = flatmaps.voxel_from_flat_click(data, value)
            return v, (None if v is not None else "no voxel under that point of the flatmap")
    if trigger == ids.R_SCATTER:
        return r_scatter.voxel_from_r_click(data, value), None
    if trigger == ids.JACCARD_MAP:
        return summary_plots.voxel_from_jaccard_click(data, value), None
    if trigger == ids.VIEWER_PICK:
        return viewer_bridge.voxel_from_pick(data, value), None
    if trigger in (ids.SEARCH, ids.SEARCH_GO):
        return parse_voxel_query(data, search)
    return None, None


def resolve_set(data: DashboardData, trigger: Any, value: Any, state: FilterState) -> np.ndarray | None:
    """The voxel set an event selects (None = keep the current set; empty array = clear it)."""
    if trigger == ids.CLEAR_SET:
        return np.zeros(0, dtype=np.int64)
    if trigger == ids.R_SCATTER_SET:
        return r_scatter.set_from_r_selection(data, value, state)
    for m in PAIR:
        if trigger == ids.flat_set(m):
            return flatmaps.set_from_flat_selection(data, m, value, state)
    return None


# ---------------------------------------------------------------------------------------------- patches
def highlight_graphs(data: DashboardData) -> list[str]:
    """Graphs that show the selected voxel: the UMAPs, the flatmaps, the r scatter, the neighbourhood map."""
    return umap_view.graphs(data) + flatmaps.graphs(data) + [ids.R_SCATTER] + summary_plots.graphs(data)


def set_graphs(data: DashboardData) -> list[str]:
    """Graphs that show the selected set: the UMAPs, the flatmaps and the r scatter."""
    return umap_view.graphs(data) + flatmaps.graphs(data) + [ids.R_SCATTER]


def highlight_patches(data: DashboardData, voxel: int | None, into: dict[str, Patch] | None = None
                      ) -> dict[str, Patch]:
    """Patches that move the one-point "selected voxel" trace of every view to ``voxel``.

    Returns
    -------
    dict of graph id -> Patch
        One entry per graph of :func:`highlight_graphs`. A voxel missing from a view (not embedded, no flatmap
        pixel) empties that view's trace. With ``into``, its patches are extended (one patch per graph can then
        move the highlight and the set together) and returned.
    """
    out: dict[str, Patch] = {} if into is None else into
    v = None if voxel is None else int(voxel)
    umap_view.highlight_patches(data, v, out)
    flatmaps.highlight_patches(data, v, out)
    r_scatter.highlight_patches(data, v, out)
    summary_plots.highlight_patches(data, v, out)
    return out


def set_patches(data: DashboardData, voxels: np.ndarray, into: dict[str, Patch] | None = None) -> dict[str, Patch]:
    """Patches that draw a voxel set into the "selected set" trace of every view of :func:`set_graphs` (typed
    arrays: sets can be large); with ``into``, its patches are extended (see :func:`highlight_patches`)."""
    voxels = np.asarray(voxels, dtype=np.int64)
    out: dict[str, Patch] = {} if into is None else into
    umap_view.set_patches(data, voxels, out)
    flatmaps.set_patches(data, voxels, out)
    r_scatter.set_patches(data, voxels, out)
    return out


def set_message(voxels) -> str:
    """The set bar's text for a set of voxels."""
    return f"{len(voxels):,} voxels in the selected set" if len(voxels) else "no set selected"


# ---------------------------------------------------------------------------------------------- layout
def search_box() -> html.Div:
    """The header's search box (voxel id or i,j,k) and its feedback line."""
    return html.Div([dcc.Input(id=ids.SEARCH, type="text", placeholder="voxel id or i,j,k", debounce=False,
                               n_submit=0, className="search"),
                     html.Button("find", id=ids.SEARCH_GO, n_clicks=0),
                     html.Span(id=ids.SEARCH_MSG, className="search-msg")], className="search-box")


def stores() -> list:
    """The page URL (its hash is the selected voxel) and the stores of the selected voxel and set."""
    return [dcc.Location(id=ids.URL, refresh=False), dcc.Store(id=ids.SELECTED),
            dcc.Store(id=ids.SELECTED_SET, data=[])]


# ---------------------------------------------------------------------------------------------- registration
def _select_events(data: DashboardData) -> dict[str, Input]:
    """Every event that can select a voxel, keyed by the id of the component that fires it."""
    events = {ids.umap_graph(m): Input(ids.umap_graph(m), "clickData") for m in data.umap}
    if data.flatmap is not None:
        events.update({ids.flat_click(m): Input(ids.flat_click(m), "data") for m in PAIR})
    if data.jaccard_map is not None:
        events[ids.JACCARD_MAP] = Input(ids.JACCARD_MAP, "clickData")
    events.update({ids.R_SCATTER: Input(ids.R_SCATTER, "clickData"), ids.SEARCH: Input(ids.SEARCH, "n_submit"),
                   ids.SEARCH_GO: Input(ids.SEARCH_GO, "n_clicks"), ids.VIEWER_PICK: Input(ids.VIEWER_PICK, "data"),
                   ids.URL: Input(ids.URL, "hash")})
    return events


def _set_events(data: DashboardData) -> dict[str, Input]:
    """Every event that can select a voxel set, keyed by the id of the component that fires it."""
    events = {ids.R_SCATTER_SET: Input(ids.R_SCATTER_SET, "data"), ids.CLEAR_SET: Input(ids.CLEAR_SET, "n_clicks")}
    if data.flatmap is not None:
        events.update({ids.flat_set(m): Input(ids.flat_set(m), "data") for m in PAIR})
    return events


def register(app, data: DashboardData) -> None:
    """The selection callbacks: a voxel from any view, and a voxel set from a lasso, box or the clear button."""
    shown = highlight_graphs(data)

    # Runs at page load too, so a URL with #voxel=<row> opens with that voxel selected. The URL hash is an
    # input and an output: every selection is written there (links to the same voxel work again, and the
    # browser's back button steps through selections); Dash does not re-trigger a callback by its own output.
    @app.callback(output=dict(voxel=Output(ids.SELECTED, "data"), message=Output(ids.SEARCH_MSG, "children"),
                              figures=figure_outputs(shown), hash=Output(ids.URL, "hash")),
                  inputs=dict(events=_select_events(data)), state=dict(search=State(ids.SEARCH, "value")),
                  prevent_initial_call="initial_duplicate")
    def on_select(events, search):
        trigger = ctx.triggered_id
        if trigger is None:                               # page load
            trigger = ids.URL
        voxel, message = resolve_selection(data, trigger, events[trigger], search)
        if voxel is None and message is None:
            raise PreventUpdate
        if voxel is None:
            return dict(voxel=no_update, message=message, figures=figure_values(shown, {}), hash=no_update)
        return dict(voxel=voxel, message=message if message is not None else "",
                    figures=figure_values(shown, highlight_patches(data, voxel)), hash=ids.voxel_href(voxel))

    drawn = set_graphs(data)

    @app.callback(output=dict(voxels=Output(ids.SELECTED_SET, "data"), message=Output(ids.SET_MSG, "children"),
                              figures=figure_outputs(drawn)),
                  inputs=dict(events=_set_events(data)), state=dict(filters=control_deps(State)),
                  prevent_initial_call=True)
    def on_set(events, filters):
        trigger = ctx.triggered_id
        voxels = resolve_set(data, trigger, events.get(trigger), FilterState.from_controls(**filters))
        if voxels is None:
            raise PreventUpdate
        return dict(voxels=voxels.tolist(), message=set_message(voxels),
                    figures=figure_values(drawn, set_patches(data, voxels)))
