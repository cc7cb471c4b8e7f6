"""The r_on vs r_off scatter of every voxel: its colour codes, the figure, clicks and lassos on it, and the
patches that move its highlight, set and colours.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import ClientsideFunction, Input, Output, Patch, dcc
from matplotlib.path import Path as MplPath

from core.vocabulary import CONDITION_LABELS, NS_RGBA, PAIR, rgba_css

from . import ids
from .data import DashboardData, FilterState
from .plotting import (FIGURE_TRACES, HIGHLIGHT_COLOUR, HIGHLIGHT_TRACE, SET_COLOUR, SET_TRACE, TEMPLATE,
                       discrete_colorscale, first_point, graph, selection_polygon, title, trace_index, typed_array)

__all__ = [
    "R_CODE", "R_LABELS", "R_COLOURS", "r_scatter_codes", "make_r_scatter_figure", "r_scatter_panel", "stores",
    "voxel_from_r_click", "set_from_r_selection", "highlight_patches", "set_patches", "recolour_patches",
    "register",
]

_OFF, _ON = PAIR
#: uint8 codes of the r_on vs r_off scatter: which conditions a voxel passes the filters in.
R_CODE = {"hidden": 0, "faint": 1, _OFF: 2, _ON: 3, "both": 4}
R_LABELS = ["hidden", "n.s. / filtered out", f"{_OFF} only", f"{_ON} only", "both"]
# Okabe-Ito sky blue / reddish purple / black: none is a viridis bin colour or the negative vermillion.
R_COLOURS = ["rgba(0,0,0,0)", rgba_css(NS_RGBA), "#56b4e9", "#cc79a7", "#222222"]
_TRACE = "r_scatter"


def r_scatter_codes(visible_off: np.ndarray, visible_on: np.ndarray, ns: str = "faint") -> np.ndarray:
    """uint8 code per voxel of the r_on vs r_off scatter (see :data:`R_CODE`)."""
    off, on = np.asarray(visible_off, bool), np.asarray(visible_on, bool)
    codes = np.full(off.shape, R_CODE["faint"] if ns == "faint" else R_CODE["hidden"], dtype=np.uint8)
    codes[off & ~on] = R_CODE[_OFF]
    codes[on & ~off] = R_CODE[_ON]
    codes[on & off] = R_CODE["both"]
    return codes


def make_r_scatter_figure(r_off: np.ndarray, r_on: np.ndarray, codes: np.ndarray, *, run_id: str,
                          simulated: bool, height: int = 420) -> go.Figure:
    """r_on vs r_off of every voxel (WebGL), the y = x diagonal, and a legend of the colour codes.

    Parameters
    ----------
    r_off, r_on : arrays of shape (n_voxels,)
        Test correlations; point i of the "voxels" trace is voxel i.
    codes : uint8 array of shape (n_voxels,)
        :func:`r_scatter_codes`.

    Returns
    -------
    go.Figure
        Traces named as ``FIGURE_TRACES["r_scatter"]`` (voxels, selected voxel, selected set), then legend
        entries.
    """
    x = np.asarray(r_off, dtype=np.float32)
    y = np.asarray(r_on, dtype=np.float32)
    lo = float(min(x.min(initial=0), y.min(initial=0), -0.1))
    hi = float(max(x.max(initial=0), y.max(initial=0), 0.5))
    traces = {
        "voxels": go.Scattergl(x=x, y=y, mode="markers", hoverinfo="none", showlegend=False, name="voxels",
                               marker=dict(size=3, color=np.asarray(codes, dtype=np.uint8),
                                           colorscale=discrete_colorscale(R_COLOURS), cmin=-0.5,
                                           cmax=len(R_COLOURS) - 0.5, showscale=False)),
        HIGHLIGHT_TRACE: go.Scattergl(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False,
                                       name=HIGHLIGHT_TRACE, marker=dict(size=13, symbol="diamond",
                                                                          color=HIGHLIGHT_COLOUR,
                                                                          line=dict(color="black", width=1))),
        SET_TRACE: go.Scattergl(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False,
                                     name=SET_TRACE, marker=dict(size=6, symbol="circle-open", color=SET_COLOUR)),
    }
    legend = [go.Scattergl(x=[None], y=[None], mode="markers", name=R_LABELS[c], hoverinfo="skip",
                           marker=dict(size=8, color=R_COLOURS[c])) for c in (4, 3, 2, 1)]
    layout = dict(template=TEMPLATE, height=height, margin=dict(l=50, r=10, t=60, b=45), uirevision="rscatter",
                  title=title("Test r per voxel: attention on vs off (lasso/box selects a set)", run_id, simulated),
                  xaxis=dict(title=f"r, {CONDITION_LABELS[_OFF]}", range=[lo, hi], zeroline=True, gridcolor="#eee"),
                  yaxis=dict(title=f"r, {CONDITION_LABELS[_ON]}", range=[lo, hi], zeroline=True, gridcolor="#eee",
                             scaleanchor="x"),
                  shapes=[dict(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(color="#888", dash="dash"))],
                  dragmode="lasso", hovermode="closest",
                  legend=dict(orientation="h", y=-0.18, title="passes the filters in"))
    return go.Figure(data=[traces[name] for name in FIGURE_TRACES[_TRACE]] + legend, layout=layout)


def r_scatter_panel(data: DashboardData, state: FilterState) -> object:
    """The scatter's graph as the page opens with it."""
    codes = r_scatter_codes(data.visible(_OFF, state), data.visible(_ON, state), state.ns)
    return graph(ids.R_SCATTER, make_r_scatter_figure(data.r[_OFF], data.r[_ON], codes, run_id=data.run_id,
                                                      simulated=data.simulated))


def stores() -> list:
    """The store the clientside JS fills with the scatter's selection outline."""
    return [dcc.Store(id=ids.R_SCATTER_SET)]


# ---------------------------------------------------------------------------------------------- clicks, sets
def voxel_from_r_click(data: DashboardData, click: dict | None) -> int | None:
    """Voxel clicked in the r_on vs r_off scatter (point i of the "voxels" trace is voxel i)."""
    point = first_point(click)
    if point is None or point.get("curveNumber", 0) != trace_index(_TRACE, "voxels"):
        return None
    n = point.get("pointNumber", point.get("pointIndex"))
    return int(n) if isinstance(n, int) and 0 <= n < data.n_voxels else None


def set_from_r_selection(data: DashboardData, selection: dict | None, state: FilterState) -> np.ndarray | None:
    """Voxels inside a lasso/box drawn on the r_on vs r_off scatter (hidden points excluded).

    Returns
    -------
    voxels : sorted int64 array, or None
        None when ``selection`` is not a dict (nothing happened: keep the current set); an empty array for a
        selection without an outline (the user cleared it with a double click).
    """
    if not isinstance(selection, dict):
        return None
    poly = selection_polygon(selection)
    if poly is None:
        return np.zeros(0, dtype=np.int64)
    pts = np.column_stack([data.r[_OFF], data.r[_ON]])
    inside = MplPath(poly).contains_points(pts)
    codes = r_scatter_codes(data.visible(_OFF, state), data.visible(_ON, state), state.ns)
    return np.flatnonzero(inside & (codes != R_CODE["hidden"])).astype(np.int64)


# ---------------------------------------------------------------------------------------------- patches
def highlight_patches(data: DashboardData, voxel: int | None, out: dict[str, Patch]) -> None:
    """Move the scatter's "selected voxel" trace to ``voxel`` (empty for None), into ``out``."""
    p = out.setdefault(ids.R_SCATTER, Patch())["data"][trace_index(_TRACE, HIGHLIGHT_TRACE)]
    if voxel is None:
        p.update(x=[], y=[])
    else:
        v = int(voxel)
        p.update(x=[round(float(data.r[_OFF][v]), 4)], y=[round(float(data.r[_ON][v]), 4)])


def set_patches(data: DashboardData, voxels: np.ndarray, out: dict[str, Patch]) -> None:
    """Draw a voxel set into the scatter's "selected set" trace (typed arrays), into ``out``."""
    out.setdefault(ids.R_SCATTER, Patch())["data"][trace_index(_TRACE, SET_TRACE)].update(
        x=typed_array(data.r[_OFF][voxels].astype(np.float32)), y=typed_array(data.r[_ON][voxels].astype(np.float32)))


def recolour_patches(data: DashboardData, state: FilterState, visible: dict[str, np.ndarray],
                     out: dict[str, Patch]) -> None:
    """Recolour the scatter for a filter state (uint8 codes), into ``out``."""
    codes = r_scatter_codes(visible[_OFF], visible[_ON], state.ns)
    out.setdefault(ids.R_SCATTER, Patch())["data"][trace_index(_TRACE, "voxels")]["marker"]["color"] = \
        typed_array(codes)


def register(app, data: DashboardData) -> None:
    """The scatter's selection outline (clientside: a lasso over every voxel would otherwise post every point)."""
    app.clientside_callback(ClientsideFunction("attnbrain", "selectionOutline"), Output(ids.R_SCATTER_SET, "data"),
                            Input(ids.R_SCATTER, "selectedData"), prevent_initial_call=True)
