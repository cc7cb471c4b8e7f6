"""The flatmap of each condition: the precomputed image with a filter layer over it, clicks and lassos on it,
and the patches that move its highlight, set and layer.
"""
from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from dash import ClientsideFunction, Input, Output, Patch, dcc
from matplotlib.path import Path as MplPath

from core.vocabulary import DEFAULT_BINS, NS_CODE, PAIR, BinScheme

from . import ids
from .data import DashboardData, FilterState
from .plotting import (FIGURE_TRACES, HIGHLIGHT_COLOUR, HIGHLIGHT_TRACE, SET_COLOUR, SET_TRACE, TEMPLATE, graph,
                       selection_polygon, title, trace_index, typed_array)

__all__ = [
    "VEIL_RGBA", "flatmap_filter_layer", "state_layer", "make_flatmap_figure", "flatmap_panel", "stores", "graphs",
    "voxel_from_flat_click", "set_from_flat_selection", "flat_xy", "highlight_patches", "set_patches",
    "recolour_patches", "register",
]

#: Filtered-out voxels are painted over with this (the base image keeps the run's own colours).
VEIL_RGBA = np.array([150, 150, 150, 235], dtype=np.uint8)
_TRACE = "flatmap"


def flatmap_filter_layer(lookup: np.ndarray, base_bins: np.ndarray, bins: np.ndarray,
                         visible: np.ndarray, scheme: BinScheme = DEFAULT_BINS,
                         colours: np.ndarray | None = None) -> np.ndarray:
    """The RGBA layer drawn over a precomputed flatmap image so it shows the current filters.

    The image colours voxels by the run's own bins; this layer paints (a) voxels coloured there but hidden
    now with an opaque grey veil and (b) voxels visible now in a different bin (another significance rule
    or bin set) in their current bin colour, or, with ``colours``, every visible voxel in its colour there
    (a contrast's outcome). Everything else stays transparent.

    Parameters
    ----------
    lookup : int array of shape (height, width)
        Voxel under each pixel, -1 where none.
    base_bins : int array of shape (n_voxels,)
        Bin codes the image was drawn with.
    bins : int array of shape (n_voxels,)
        Bin codes under the current significance rule.
    visible : bool array of shape (n_voxels,)
        Voxels passing the current filters.
    scheme : BinScheme
        The run's bins (their colours).
    colours : uint8 array of shape (n_voxels, 4), optional
        Colour of every voxel in place of its bin's.

    Returns
    -------
    uint8 array of shape (height, width, 4)
    """
    lk = np.asarray(lookup)
    layer = np.zeros(lk.shape + (4,), dtype=np.uint8)
    base = np.asarray(base_bins, dtype=np.int16)
    now = np.asarray(bins, dtype=np.int16)
    vis = np.asarray(visible, dtype=bool)
    # Per-voxel decision first (n_voxels), then one gather over the pixels.
    paint = np.zeros((base.size + 1, 4), dtype=np.uint8)                    # last row: pixels with no voxel
    veil = ~vis & (base != NS_CODE)
    paint[:-1][veil] = VEIL_RGBA
    if colours is None:
        recolour = vis & (now != base)
        paint[:-1][recolour] = scheme.to_rgba(now[recolour])
    else:
        paint[:-1][vis] = np.asarray(colours, dtype=np.uint8)[vis]
    idx = np.where(lk >= 0, lk, base.size)
    layer[...] = paint[idx]
    return layer


def state_layer(data: DashboardData, condition: str, state: FilterState) -> np.ndarray:
    """:func:`flatmap_filter_layer` of a condition's flatmap under a filter state."""
    recoloured = data.outcome(state) is not None or state.colour in ("ceiling", "adds")
    colours = data.voxel_rgba(condition, state) if recoloured else None
    return flatmap_filter_layer(data.flatmap.lookup, data.stored_bins[condition], data.state_bins(condition, state),
                                data.visible(condition, state), data.bin_scheme, colours)


def make_flatmap_figure(*, condition: str, image_url: str, layer_url: str | None, width: int, height: int,
                        rois: list[dict], run_id: str, simulated: bool, highlight: tuple[float, float] | None = None,
                        fig_height: int = 300) -> go.Figure:
    """The precomputed flatmap of one condition as a clickable, lasso-able figure.

    Figure coordinates are image pixels with y upwards: ``x = column``, ``y = height - 1 - row`` (pixel
    centres at integers), so a click converts to a pixel of the lookup by rounding.

    Parameters
    ----------
    condition, run_id, simulated :
        Provenance for the title.
    image_url : str
        URL of the flatmap PNG (layout image 0).
    layer_url : str or None
        URL of the filter layer PNG drawn over it (layout image 1; see :func:`flatmap_filter_layer`).
    width, height : int
        Image size in pixels.
    rois : list of dict
        ``flatmap_rois.json`` entries; their label anchors form the "ROIs" trace (hover names, and the
        selectable trace plotly's lasso needs).
    highlight : (column, row) or None
        Pixel of the selected voxel (trace "selected voxel").

    Returns
    -------
    go.Figure
        Traces named as ``FIGURE_TRACES["flatmap"]``: ROI anchors, selected voxel, selected set.
    """
    images = [dict(source=image_url, xref="x", yref="y", x=-0.5, y=height - 0.5, sizex=width, sizey=height,
                   xanchor="left", yanchor="top", sizing="stretch", layer="below")]
    if layer_url:
        # plotly.js keys layout images by (xref, x, sizex, yref, y, sizey): two images with equal keys are
        # drawn as one, so the layer sits a billionth of a pixel to the right of the base image.
        images.append(dict(images[0], source=layer_url, x=-0.5 + 1e-9))
    if rois:
        ax = np.array([r["label"][0] for r in rois], dtype=np.float32)
        ay = (height - 1) - np.array([r["label"][1] for r in rois], dtype=np.float32)
        names = [f"{r['name']} ({r.get('hemi', '')})" for r in rois]
    else:                                   # corners: plotly only offers lasso/box with a selectable trace
        ax = np.array([0, width - 1], dtype=np.float32)
        ay = np.array([0, height - 1], dtype=np.float32)
        names = ["", ""]
    hx, hy = ([], []) if highlight is None else ([float(highlight[0])], [float(height - 1 - highlight[1])])
    traces = {
        "ROIs": go.Scatter(x=ax, y=ay, mode="markers", hovertext=names, hoverinfo="text", showlegend=False,
                           marker=dict(size=10, color="rgba(0,0,0,0)"), name="ROIs"),
        HIGHLIGHT_TRACE: go.Scatter(x=hx, y=hy, mode="markers", hoverinfo="skip", showlegend=False,
                                     name=HIGHLIGHT_TRACE, marker=dict(size=15, symbol="circle-open",
                                                                        color=HIGHLIGHT_COLOUR, line=dict(width=3))),
        # SVG, not WebGL: sets drawn by hand are small, and every WebGL context costs the page a lot where
        # WebGL is emulated in software.
        SET_TRACE: go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False,
                                   name=SET_TRACE, marker=dict(size=6, symbol="circle-open", color=SET_COLOUR)),
    }
    layout = dict(template=TEMPLATE, height=fig_height, margin=dict(l=0, r=0, t=48, b=0), uirevision="flat",
                  title=title("Flatmap (click a voxel; lasso/box selects a set)", run_id, simulated, condition),
                  images=images, dragmode="zoom", hovermode="closest",
                  xaxis=dict(visible=False, range=[-0.5, width - 0.5], constrain="domain"),
                  yaxis=dict(visible=False, range=[-0.5, height - 0.5], scaleanchor="x", constrain="domain"),
                  newselection=dict(line=dict(color=SET_COLOUR, dash="dot")))
    return go.Figure(data=[traces[name] for name in FIGURE_TRACES[_TRACE]], layout=layout)


def flatmap_panel(data: DashboardData, condition: str, state: FilterState) -> list:
    """The flatmap part of a condition's column (nothing when the run has no flatmaps)."""
    fm = data.flatmap
    if fm is None:
        return []
    fig = make_flatmap_figure(condition=condition, image_url=data.flatmap_url(condition),
                              layer_url=data.flatmap_layer_url(condition, state), width=fm.width, height=fm.height,
                              rois=fm.rois, run_id=data.run_id, simulated=data.simulated)
    return [graph(ids.flat_graph(condition), fig, className="flatmap")]


def stores(data: DashboardData) -> list:
    """Stores the clientside JS fills with flatmap clicks and selection outlines."""
    if data.flatmap is None:
        return []
    return [dcc.Store(id=ids.flat_click(m)) for m in PAIR] + [dcc.Store(id=ids.flat_set(m)) for m in PAIR]


def graphs(data: DashboardData) -> list[str]:
    """Ids of the flatmap graphs (none when the run has no flatmaps)."""
    return [ids.flat_graph(m) for m in PAIR] if data.flatmap is not None else []


# ---------------------------------------------------------------------------------------------- clicks, sets
def voxel_from_flat_click(data: DashboardData, click: dict | None) -> int | None:
    """Voxel under a flatmap click (``{"x", "y"}`` in figure coordinates, from the clientside JS)."""
    if data.flatmap is None or not isinstance(click, dict):
        return None
    try:
        x, y = float(click["x"]), float(click["y"])
    except (KeyError, TypeError, ValueError):
        return None
    if not (np.isfinite(x) and np.isfinite(y)):
        return None
    v = data.flatmap.voxel_at(x, y)
    return v if 0 <= v < data.n_voxels else None


def set_from_flat_selection(data: DashboardData, condition: str, selection: dict | None,
                            state: FilterState) -> np.ndarray | None:
    """Voxels owning a flatmap pixel inside a lasso/box on the condition's flatmap.

    With n.s. voxels hidden, only voxels passing the filters in that condition count.

    Returns
    -------
    voxels : sorted int64 array, or None
        None when ``selection`` is not a dict (nothing happened: keep the current set); an empty array for a
        selection without an outline (the user cleared it with a double click).
    """
    if not isinstance(selection, dict) or data.flatmap is None:
        return None
    poly = selection_polygon(selection)
    if poly is None:
        return np.zeros(0, dtype=np.int64)
    fm = data.flatmap
    # Only the pixels of the outline's bounding box are tested.
    x0, x1 = int(max(0, np.floor(poly[:, 0].min()))), int(min(fm.width - 1, np.ceil(poly[:, 0].max())))
    y0, y1 = int(max(0, np.floor(poly[:, 1].min()))), int(min(fm.height - 1, np.ceil(poly[:, 1].max())))
    if x1 < x0 or y1 < y0:
        return np.zeros(0, dtype=np.int64)
    xs, ys = np.meshgrid(np.arange(x0, x1 + 1), np.arange(y0, y1 + 1))
    inside = MplPath(poly).contains_points(np.column_stack([xs.ravel(), ys.ravel()])).reshape(xs.shape)
    rows = fm.height - 1 - ys
    vox = np.asarray(fm.lookup[rows[inside], xs[inside]], dtype=np.int64)
    vox = np.unique(vox[vox >= 0])
    if state.ns == "hidden":
        vox = vox[data.visible(condition, state)[vox]]
    return vox


# ---------------------------------------------------------------------------------------------- patches
def flat_xy(data: DashboardData, voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Figure coordinates of voxels on the flatmap (pixel centre of their pixels); voxels without pixels
    are dropped."""
    c = data.flatmap.centre[np.asarray(voxels, dtype=np.int64)]
    ok = np.isfinite(c[:, 0])
    return c[ok, 0].astype(np.float32), (data.flatmap.height - 1 - c[ok, 1]).astype(np.float32)


def highlight_patches(data: DashboardData, voxel: int | None, out: dict[str, Patch]) -> None:
    """Move both flatmaps' "selected voxel" trace to ``voxel`` (emptied when it owns no pixel), into ``out``."""
    if data.flatmap is None:
        return
    fx, fy = flat_xy(data, np.array([voxel])) if voxel is not None else (np.zeros(0), np.zeros(0))
    k = trace_index(_TRACE, HIGHLIGHT_TRACE)
    for g in graphs(data):
        out.setdefault(g, Patch())["data"][k].update(x=[round(float(a), 2) for a in fx],
                                                      y=[round(float(b), 2) for b in fy])


def set_patches(data: DashboardData, voxels: np.ndarray, out: dict[str, Patch]) -> None:
    """Draw a voxel set into both flatmaps' "selected set" trace (typed arrays), into ``out``."""
    if data.flatmap is None:
        return
    fx, fy = flat_xy(data, voxels)
    k = trace_index(_TRACE, SET_TRACE)
    for g in graphs(data):
        out.setdefault(g, Patch())["data"][k].update(x=typed_array(fx), y=typed_array(fy))


def recolour_patches(data: DashboardData, state: FilterState, out: dict[str, Patch]) -> None:
    """Point both flatmaps' filter layer (layout image 1) at the layer of ``state``, into ``out``."""
    if data.flatmap is None:
        return
    for m in PAIR:
        out.setdefault(ids.flat_graph(m), Patch())["layout"]["images"][1]["source"] = data.flatmap_layer_url(m, state)


def register(app, data: DashboardData) -> None:
    """Selection outlines of the flatmaps (clientside: a lasso's points are stripped before they are posted)."""
    if data.flatmap is None:
        return
    for m in PAIR:
        app.clientside_callback(ClientsideFunction("attnbrain", "selectionOutline"),
                                Output(ids.flat_set(m), "data"), Input(ids.flat_graph(m), "selectedData"),
                                prevent_initial_call=True)
