"""The 3-D UMAP of each condition: its colour codes, the figure fitted to its point cloud, clicks on it, the
patches that move its highlight, set and colours, and the linked cameras.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
import plotly.graph_objects as go
from dash import ClientsideFunction, Input, Output, Patch, dcc, html

from core.vocabulary import (ADDS_RGBA, BIN_COLOURS_RGBA, CEILING_RGBA, N_BINS, NEGATIVE_CODE, NEGATIVE_RGBA, NS_CODE, NS_RGBA,
                             OUTCOME_RGBA, PAIR, rgba_css, rgba_hex)

from . import ids
from .data import DashboardData, FilterState
from .plotting import (FIGURE_TRACES, HIGHLIGHT_COLOUR, HIGHLIGHT_TRACE, SET_COLOUR, SET_TRACE, TEMPLATE,
                       discrete_colorscale, empty_figure, first_point, graph, title, trace_index, typed_array)

__all__ = [
    "UMAP_CODE", "UMAP_COLOURS", "FOV", "FIT_RADIUS", "EYE_DISTANCE", "umap_colour_codes", "state_colour_codes",
    "umap_marker_size",
    "scene_fit", "projected_cover", "opening_camera", "shared_camera", "make_umap_figure", "umap_figure",
    "umap_panel", "camera_link_control", "stores", "graphs", "voxel_from_umap_click", "highlight_patches",
    "set_patches", "recolour_patches", "register",
]

#: uint8 colour codes of the UMAP points: 0 hidden, 1 faint (n.s. or filtered out), 2 significant negative r,
#: 3.. the correlation bins of the run's ``BinScheme`` in order, then a contrast's outcomes (hurts, no detectable
#: difference, helps: ``outcome0 + outcome + 1``) when the points are coloured by contrast, then the steps of
#: r / noise ceiling (``ceiling0 + step``) when they are coloured by it, then what attention adds
#: (``adds0 + code``, :data:`core.vocabulary.ADDS_CODES`).
UMAP_CODE = {"hidden": 0, "faint": 1, "negative": 2, "bin0": 3, "outcome0": 3 + N_BINS, "ceiling0": 6 + N_BINS,
             "adds0": 6 + N_BINS + len(CEILING_RGBA)}
UMAP_COLOURS = ["rgba(0,0,0,0)", rgba_css(NS_RGBA), rgba_hex(NEGATIVE_RGBA), *(rgba_hex(c) for c in BIN_COLOURS_RGBA),
                *(rgba_hex(OUTCOME_RGBA[o]) for o in (-1, 0, 1)), *(rgba_hex(c) for c in CEILING_RGBA),
                *(rgba_hex(c) for c in ADDS_RGBA)]

#: plotly.js's vertical field of view of 3-D scenes (gl-plot3d's default, pi / 4).
FOV = math.pi / 4
#: Radius, in scene units, that every panel's point cloud is scaled to (see :func:`scene_fit`).
FIT_RADIUS = 1.0
#: Camera distance at which a sphere of :data:`FIT_RADIUS` round the scene centre just fills the panel's height:
#: the same for every panel, so a camera copied from one linked panel fills the other too.
EYE_DISTANCE = FIT_RADIUS / math.sin(FOV / 2)
# The fit follows the bulk of the cloud: the farthest 5 % of points may leave the panel at some angles rather
# than shrink the cloud at every angle.
_FIT_QUANTILE = 0.95
# The opening view is chosen among these camera elevations (degrees; views that still look 3-D) all round.
_ELEVATIONS = (20, 35, 50, 65)
_AZIMUTH_STEP = 15
# ... and so that it stays filled turned this far round (degrees) either way.
_TURNS = (-30, 0, 30)
# A UMAP panel's usual width over its scene's height (two columns side by side, a fixed figure height).
_VIEW_ASPECT = 1.25
# Points per cloud that choosing the opening view looks at (its cost stays small at any run size).
_VIEW_SAMPLE = 4000
_TRACE = "umap"


def umap_colour_codes(bins: np.ndarray, visible: np.ndarray, ns: str = "faint",
                      outcome: np.ndarray | None = None, ceiling: np.ndarray | None = None,
                      first: int = UMAP_CODE["ceiling0"]) -> np.ndarray:
    """uint8 colour code per voxel (see :data:`UMAP_CODE`).

    Parameters
    ----------
    bins : int array of shape (n,)
        Bin codes (``core.vocabulary``: the positive bins, ``NS_CODE``, ``NEGATIVE_CODE``) under the current
        significance rule.
    visible : bool array of shape (n,)
        Voxels that pass the filters (and are significant).
    ns : {"faint", "hidden"}
        Code of every other voxel.
    outcome : int array of shape (n,), optional
        A contrast's outcome codes (-1, 0, +1): visible voxels take their outcome's code instead of their bin's.
    ceiling : int array of shape (n,), optional
        Steps of r / noise ceiling (``DashboardData.ceiling_bins``) or what attention adds
        (``DashboardData.adds_codes``): visible voxels take code ``first + step`` (a voxel at -1 is not shown).
    first : int
        Code of step 0: ``UMAP_CODE["ceiling0"]`` or ``UMAP_CODE["adds0"]``.
    """
    b = np.asarray(bins, dtype=np.int16)
    codes = np.full(b.shape, UMAP_CODE["faint"] if ns == "faint" else UMAP_CODE["hidden"], dtype=np.uint8)
    vis = np.asarray(visible, dtype=bool) & (b != NS_CODE)
    if ceiling is not None:
        vis &= np.asarray(ceiling) >= 0
        codes[vis] = (np.asarray(ceiling, dtype=np.int16)[vis] + first).astype(np.uint8)
        return codes
    if outcome is not None:
        codes[vis] = (np.asarray(outcome, dtype=np.int16)[vis] + 1 + UMAP_CODE["outcome0"]).astype(np.uint8)
        return codes
    codes[vis & (b == NEGATIVE_CODE)] = UMAP_CODE["negative"]
    pos = vis & (b >= 0)
    codes[pos] = (b[pos] + UMAP_CODE["bin0"]).astype(np.uint8)
    return codes


def state_colour_codes(data: DashboardData, condition: str, state: FilterState,
                       visible: np.ndarray | None = None) -> np.ndarray:
    """:func:`umap_colour_codes` of every voxel of a condition under a filter state."""
    vis = data.visible(condition, state) if visible is None else visible
    if state.colour in ("ceiling", "adds"):
        steps = data.ceiling_bins(condition) if state.colour == "ceiling" else data.adds_codes()
        return umap_colour_codes(data.state_bins(condition, state), vis, state.ns, ceiling=steps,
                                 first=UMAP_CODE[f"{state.colour}0"])
    return umap_colour_codes(data.state_bins(condition, state), vis, state.ns, data.outcome(state))


def umap_marker_size(n_points: int) -> int:
    """Marker size of the UMAP points: smaller as the cloud gets denser (an integer, so a per-point size
    array that hides points travels as uint8)."""
    return 4 if n_points < 5000 else 3 if n_points < 30000 else 2


# ---------------------------------------------------------------------------------------------- fitting
def scene_fit(coords: np.ndarray) -> dict[str, Any] | None:
    """Axis ranges and aspect ratio that fit a point cloud to its panel, whichever way the scene is turned.

    The scene is centred on the middle of the cloud's robust extent and scaled alike on all axes (the shape is
    kept) so that the sphere holding :data:`_FIT_QUANTILE` of the points has radius :data:`FIT_RADIUS` in scene
    units; the ranges still hold every point (plotly hides points outside them). With the camera at
    :data:`EYE_DISTANCE`, that sphere fills the panel's height whichever way the scene is turned.

    Parameters
    ----------
    coords : array of shape (n, 3)

    Returns
    -------
    dict or None
        ``ranges`` ([lo, hi] per axis), ``aspectratio`` ({"x", "y", "z"}), ``centre`` (3 floats) and ``scale``
        (scene units per data unit); None for an empty cloud.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] == 0:
        return None
    tail = (1 - _FIT_QUANTILE) / 2
    lo, hi = np.quantile(c, [tail, 1 - tail], axis=0)
    centre = (lo + hi) / 2
    radius = float(np.quantile(np.linalg.norm(c - centre, axis=1), _FIT_QUANTILE))
    half = np.abs(c - centre).max(0)
    radius = radius or float(half.max()) or 1.0
    # A flat or single-point axis still needs a range of some width.
    half = np.maximum(half * 1.01, 0.05 * radius)
    scale = FIT_RADIUS / radius
    # plotly maps each axis range onto its aspect ratio in scene units: one scale for every axis keeps the shape.
    return {"ranges": [[float(centre[i] - half[i]), float(centre[i] + half[i])] for i in range(3)],
            "aspectratio": {a: float(v) for a, v in zip("xyz", 2 * half * scale)},
            "centre": [float(v) for v in centre], "scale": scale}


def projected_cover(points: np.ndarray, direction: np.ndarray, aspect: float = 1.0) -> float:
    """How much of a view a cloud covers, seen from :data:`EYE_DISTANCE` along ``direction``.

    Parameters
    ----------
    points : array of shape (n, 3)
        Scene coordinates (:func:`scene_fit`'s ``(coords - centre) * scale``).
    direction : array of shape (3,)
        From the scene centre towards the camera; the camera's up is +z.
    aspect : float
        The view's width over its height.

    Returns
    -------
    float
        The larger of the shares of the view's width and height that the cloud spans (perspective,
        :data:`FOV` high), the parts off the view left out.
    """
    d = np.asarray(direction, dtype=np.float64)
    d = d / np.linalg.norm(d)
    right = np.cross(-d, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    up = np.cross(right, -d)
    rel = np.asarray(points, dtype=np.float64) - d * EYE_DISTANCE
    depth = np.maximum(rel @ -d, 1e-9) * math.tan(FOV / 2)
    if not rel.size:
        return 0.0
    x = np.clip(rel @ right / depth, -aspect, aspect)
    y = np.clip(rel @ up / depth, -1, 1)
    return float(max(np.ptp(x) / aspect, np.ptp(y)) / 2)


def opening_camera(clouds: list[np.ndarray]) -> dict:
    """The camera every UMAP panel opens with: at :data:`EYE_DISTANCE`, from the direction (among a few
    elevations all round) where the worst-covered of ``clouds`` covers its panel most, also turned a little
    either way (as a drag turns it).

    Parameters
    ----------
    clouds : list of arrays of shape (n, 3)
        Each panel's points in data units (uint16 quantised coordinates); empty ones are ignored.
    """
    scene = []
    for c in clouds:
        fit = scene_fit(c)
        if fit is not None:
            c = np.asarray(c, dtype=np.float64)[:: max(1, len(c) // _VIEW_SAMPLE)]
            scene.append((c - fit["centre"]) * fit["scale"])

    def direction(el, az):
        return np.array([math.cos(el) * math.cos(az), math.cos(el) * math.sin(az), math.sin(el)])
    best, best_cover = np.array([1.4, 1.4, 1.0]), -1.0
    for el in np.radians(_ELEVATIONS):
        for az in np.radians(np.arange(45, 405, _AZIMUTH_STEP)):
            cover = min((projected_cover(p, direction(el, az + turn), _VIEW_ASPECT) for p in scene
                         for turn in np.radians(_TURNS)), default=0.0)
            if cover > best_cover + 1e-9:
                best, best_cover = direction(el, az), cover
    eye = best * EYE_DISTANCE
    return dict(eye=dict(zip("xyz", (round(float(v), 4) for v in eye))), center=dict(x=0, y=0, z=0),
                up=dict(x=0, y=0, z=1))


# ---------------------------------------------------------------------------------------------- figure
def _points3d(coords: np.ndarray | None) -> dict[str, Any]:
    if coords is None or len(coords) == 0:
        return dict(x=[], y=[], z=[])
    c = np.asarray(coords)
    return dict(x=c[:, 0], y=c[:, 1], z=c[:, 2])


def make_umap_figure(coords: np.ndarray, codes: np.ndarray, *, condition: str, run_id: str, simulated: bool,
                     highlight: np.ndarray | None = None, set_coords: np.ndarray | None = None,
                     camera: dict | None = None, height: int = 430) -> go.Figure:
    """3-D UMAP scatter of one condition, coloured by correlation bin and fitted to its panel.

    Parameters
    ----------
    coords : uint16 array of shape (n_emb, 3)
        Quantised coordinates (trace "voxels", point i = embedded voxel i).
    codes : uint8 array of shape (n_emb,)
        Colour codes (:func:`umap_colour_codes` restricted to the embedded voxels).
    condition, run_id, simulated :
        Provenance for the title.
    highlight : array of shape (1, 3) or None
        Coordinates of the selected voxel (trace "selected voxel").
    set_coords : array of shape (n_set, 3) or None
        Coordinates of the selected set (trace "selected set").
    camera : dict or None
        The opening camera; None: :func:`opening_camera` of this cloud alone.

    Returns
    -------
    go.Figure
        Traces named as ``FIGURE_TRACES["umap"]``: voxels, selected voxel, selected set. Axes hidden (UMAP axes
        carry no meaning); ranges and aspect from :func:`scene_fit` (an empty cloud keeps plotly's automatic
        ones and camera).
    """
    coords = np.asarray(coords)
    codes = np.asarray(codes, dtype=np.uint8)
    if coords.shape[0] != codes.shape[0]:
        raise ValueError(f"{coords.shape[0]} points but {codes.shape[0]} colour codes")
    size = umap_marker_size(coords.shape[0])
    traces = {
        "voxels": go.Scatter3d(
            mode="markers", hoverinfo="none", showlegend=False, name="voxels", **_points3d(coords),
            marker=dict(size=size, color=codes, colorscale=discrete_colorscale(UMAP_COLOURS), cmin=-0.5,
                        cmax=len(UMAP_COLOURS) - 0.5, showscale=False, line=dict(width=0))),
        HIGHLIGHT_TRACE: go.Scatter3d(mode="markers", hoverinfo="skip", showlegend=False, name=HIGHLIGHT_TRACE,
                                       **_points3d(highlight),
                                       marker=dict(size=7, color=HIGHLIGHT_COLOUR, symbol="diamond",
                                                   line=dict(color="black", width=1))),
        SET_TRACE: go.Scatter3d(mode="markers", hoverinfo="skip", showlegend=False, name=SET_TRACE,
                                     **_points3d(set_coords),
                                     marker=dict(size=4, color=SET_COLOUR, symbol="circle-open")),
    }
    fit = scene_fit(coords)
    axes = [dict(visible=False, showspikes=False) for _ in range(3)]
    scene = dict(aspectmode="data", dragmode="orbit", camera=dict(eye=dict(x=1.4, y=1.4, z=1.0)))
    if fit is not None:
        for axis, rng in zip(axes, fit["ranges"]):
            axis.update(range=rng, autorange=False)
        scene.update(aspectmode="manual", aspectratio=fit["aspectratio"],
                     camera=camera if camera is not None else opening_camera([coords]))
    scene.update(xaxis=axes[0], yaxis=axes[1], zaxis=axes[2])
    layout = dict(template=TEMPLATE, height=height, margin=dict(l=0, r=0, t=48, b=0), uirevision="umap",
                  title=title("UMAP of the voxel RDM (predicted responses)", run_id, simulated, condition),
                  scene=scene)
    return go.Figure(data=[traces[name] for name in FIGURE_TRACES[_TRACE]], layout=layout)


def umap_figure(data: DashboardData, condition: str, state: FilterState) -> go.Figure:
    """The condition's UMAP as the page opens with it (or the sentence saying why there is none)."""
    if condition not in data.umap:
        return empty_figure(data.umap_reason[condition], height=430)
    view = data.umap[condition]
    codes = state_colour_codes(data, condition, state)
    return make_umap_figure(view.coords, codes[view.voxels], condition=condition, run_id=data.run_id,
                            simulated=data.simulated, camera=shared_camera(data))


@lru_cache(maxsize=8)
def shared_camera(data: DashboardData) -> dict:
    """The opening camera of both UMAP panels (:func:`opening_camera` of both clouds): the panels open
    looking the same way, as linked panels keep them."""
    return opening_camera([view.coords for view in data.umap.values()])


def umap_panel(data: DashboardData, condition: str, state: FilterState) -> list:
    """The UMAP part of a condition's column: the graph, and the reason when there is no embedding."""
    children = [graph(ids.umap_graph(condition), umap_figure(data, condition, state), three_d=True,
                      className="umap")]
    if data.umap_reason.get(condition):
        children.append(html.P(data.umap_reason[condition], className="notice"))
    return children


def camera_link_control() -> html.Div:
    """The switch that links the two UMAP cameras."""
    return html.Div([html.Label("3-D cameras"),
                     dcc.Checklist(id=ids.CAMERA_LINK, options=[{"label": "linked", "value": "linked"}],
                                   value=["linked"], inline=True, className="check")], className="control")


def stores() -> list:
    """The store the camera link writes to (its clientside callback needs an output)."""
    return [dcc.Store(id=ids.CAMERA_SINK)]


def graphs(data: DashboardData) -> list[str]:
    """Ids of the UMAP graphs that callbacks patch (conditions with an embedding)."""
    return [ids.umap_graph(m) for m in data.umap]


# ---------------------------------------------------------------------------------------------- clicks, patches
def voxel_from_umap_click(data: DashboardData, condition: str, click: dict | None) -> int | None:
    """Voxel clicked in a UMAP: ``pointNumber`` of the "voxels" trace mapped through the embedded-voxel index.

    numpy ``customdata`` never reaches ``clickData`` (plotly.py#5119), so the id is looked up here.
    Clicks on the highlight or set traces select nothing.
    """
    point = first_point(click)
    if point is None or point.get("curveNumber", 0) != trace_index(_TRACE, "voxels") or condition not in data.umap:
        return None
    n = point.get("pointNumber")
    voxels = data.umap[condition].voxels
    if isinstance(n, int) and 0 <= n < voxels.size:
        return int(voxels[n])
    return None


def highlight_patches(data: DashboardData, voxel: int | None, out: dict[str, Patch]) -> None:
    """Move every UMAP's "selected voxel" trace to ``voxel`` (emptied where it is not embedded), into ``out``."""
    k = trace_index(_TRACE, HIGHLIGHT_TRACE)
    for m, view in data.umap.items():
        p = out.setdefault(ids.umap_graph(m), Patch())
        pos = -1 if voxel is None else int(view.position[int(voxel)])
        if pos >= 0:
            x, y, z = (int(c) for c in view.coords[pos])
            p["data"][k].update(x=[x], y=[y], z=[z])
        else:
            p["data"][k].update(x=[], y=[], z=[])


def set_patches(data: DashboardData, voxels: np.ndarray, out: dict[str, Patch]) -> None:
    """Draw the embedded voxels of a set into every UMAP's "selected set" trace (typed arrays), into ``out``."""
    k = trace_index(_TRACE, SET_TRACE)
    for m, view in data.umap.items():
        pos = view.position[voxels]
        c = view.coords[pos[pos >= 0]]
        p = out.setdefault(ids.umap_graph(m), Patch())
        p["data"][k].update(x=typed_array(c[:, 0]), y=typed_array(c[:, 1]), z=typed_array(c[:, 2]))


def recolour_patches(data: DashboardData, state: FilterState, visible: dict[str, np.ndarray],
                     out: dict[str, Patch]) -> None:
    """Recolour every UMAP for a filter state (uint8 codes and, with hidden voxels, point sizes), into ``out``."""
    k = trace_index(_TRACE, "voxels")
    for m, view in data.umap.items():
        codes = state_colour_codes(data, m, state, visible[m])[view.voxels]
        p = out.setdefault(ids.umap_graph(m), Patch())
        p["data"][k]["marker"]["color"] = typed_array(codes)
        # A transparent WebGL point can still be picked: hidden points also get size 0, which takes them
        # out of plotly's pick buffer, so a click never selects a voxel the user cannot see.
        size = umap_marker_size(view.voxels.size)
        p["data"][k]["marker"]["size"] = (typed_array(np.where(codes == UMAP_CODE["hidden"], 0, size)
                                                       .astype(np.uint8)) if state.ns == "hidden" else size)


# ---------------------------------------------------------------------------------------------- registration
def register(app, data: DashboardData) -> None:
    """The camera link (clientside, assets/attnbrain.js): one panel's camera is copied to the other while
    linked; each panel keeps its own fitted ranges, so both stay filled."""
    app.clientside_callback(ClientsideFunction("attnbrain", "syncCamera"), Output(ids.CAMERA_SINK, "data"),
                            [Input(ids.umap_graph(m), "relayoutData") for m in PAIR]
                            + [Input(ids.CAMERA_LINK, "value")], prevent_initial_call=True)

