"""What every figure of the dashboard shares: the template, the highlight colours, provenance titles, the
typed-array and quantised encodings of big arrays, the named traces that callbacks patch, and ``dcc.Graph``
with its camera-button config.

Figures carry their big arrays as numpy (plotly sends them as base64 typed arrays): coordinates are quantised
to uint16 and colours are uint8 codes into a discrete colour scale, so a filter change re-sends one byte per
voxel and a selection only touches small highlight traces.
"""
from __future__ import annotations

import base64

import numpy as np
import plotly.graph_objects as go
from dash import Output, dcc, no_update

from core.vocabulary import CONDITION_LABELS, CONDITIONS

__all__ = [
    "HIGHLIGHT_COLOUR", "SET_COLOUR", "CONDITION_COLOURS", "TEMPLATE", "HIGHLIGHT_TRACE", "SET_TRACE",
    "FIGURE_TRACES", "FIGURE_FORMATS", "PNG_SCALE", "trace_index",
    "discrete_colorscale", "typed_array", "quantise_coords", "quantise_xy", "provenance", "title", "empty_figure",
    "figure_config", "graph", "figure_outputs", "figure_values", "first_point", "selection_polygon",
]

#: The selected voxel (a magenta diamond/ring) and the selected set (black rings) in every view.
HIGHLIGHT_COLOUR = "#e6007e"
SET_COLOUR = "#111111"
#: Lines and bars of one condition (Okabe-Ito sky blue, reddish purple, grey): none is a bin colour.
CONDITION_COLOURS = dict(zip(CONDITIONS, ("#56b4e9", "#cc79a7", "#999999")))
_FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12, color="#222")
TEMPLATE = go.layout.Template(layout=dict(font=_FONT, paper_bgcolor="white", plot_bgcolor="white"))

#: The one-point trace of the selected voxel and the trace of the selected set, in every view.
HIGHLIGHT_TRACE = "selected voxel"
SET_TRACE = "selected set"
#: The traces of each figure kind, in drawing order. Builders draw them in this order under these names and
#: callbacks find them with :func:`trace_index`, so a patch says which trace it moves by name.
FIGURE_TRACES: dict[str, tuple[str, ...]] = {
    "umap": ("voxels", HIGHLIGHT_TRACE, SET_TRACE),
    "flatmap": ("ROIs", HIGHLIGHT_TRACE, SET_TRACE),
    "r_scatter": ("voxels", HIGHLIGHT_TRACE, SET_TRACE),
}


def trace_index(kind: str, name: str) -> int:
    """Position of trace ``name`` in figures of ``kind`` (a key of :data:`FIGURE_TRACES`)."""
    try:
        return FIGURE_TRACES[kind].index(name)
    except (KeyError, ValueError):
        raise KeyError(f"no trace {name!r} in {kind!r} figures; they have {FIGURE_TRACES.get(kind)}") from None


def discrete_colorscale(colours: list[str]) -> list[list]:
    """Colour scale where integer code i (with ``cmin=-0.5, cmax=len-0.5``) gets exactly ``colours[i]``."""
    n = len(colours)
    scale = []
    for i, c in enumerate(colours):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def typed_array(arr: np.ndarray) -> dict[str, str]:
    """A numpy array as plotly.js's base64 typed-array spec ``{"dtype", "bdata"}``.

    ``go.Figure`` does this itself; ``dash.Patch`` values are sent as plain JSON, so patches of big arrays
    use this to stay one byte per uint8 code instead of a JSON list.

    Parameters
    ----------
    arr : 1-D array of uint8, int8, uint16, int16, uint32, int32, float32 or float64
    """
    arr = np.ascontiguousarray(arr)
    kinds = {"u1": "u1", "i1": "i1", "u2": "u2", "i2": "i2", "u4": "u4", "i4": "i4", "f4": "f4", "f8": "f8"}
    key = arr.dtype.str[1:]
    if key not in kinds:
        raise TypeError(f"plotly typed arrays hold (u)int8/16/32 or float32/64, not {arr.dtype}")
    # plotly.js reads typed arrays in the platform's (little-endian) byte order.
    return {"dtype": kinds[key], "bdata": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes()
                                                           ).decode("ascii")}


def quantise_coords(coords: np.ndarray) -> np.ndarray:
    """UMAP coordinates to uint16 on one common scale (so the layout's shape is kept).

    Parameters
    ----------
    coords : array of shape (n, 3)

    Returns
    -------
    q : uint16 array of shape (n, 3)
        ``round((coords - min) / max_range * 65535)``, per-axis minimum, the largest axis range for all
        axes; the error is at most half a step, ``max_range / 131070``.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"expected UMAP coordinates of shape (n, 3), found {c.shape}")
    return _quantise(c)


def quantise_xy(xy: np.ndarray) -> np.ndarray:
    """Flat-surface positions (n, 2) to uint16 on one common scale, as :func:`quantise_coords` does in 3-D.

    Non-finite rows stay out of the scale and come back as 0 (callers drop them).
    """
    c = np.asarray(xy, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"expected flat positions of shape (n, 2), found {c.shape}")
    ok = np.isfinite(c).all(1)
    out = np.zeros(c.shape, np.uint16)
    out[ok] = _quantise(c[ok])
    return out


def _quantise(c: np.ndarray) -> np.ndarray:
    if c.shape[0] == 0:
        return np.zeros(c.shape, np.uint16)
    lo = c.min(0)
    span = float((c.max(0) - lo).max()) or 1.0
    return np.round((c - lo) / span * 65535).astype(np.uint16)


def provenance(run_id: str, simulated: bool, condition: str | None = None) -> str:
    """The provenance suffix every figure title carries: condition, run id and the simulated label."""
    parts = []
    if condition:
        parts.append(CONDITION_LABELS.get(condition, condition))
    parts.append(f"run {run_id}")
    if simulated:
        parts.append("SIMULATED data")
    return " · ".join(parts)


def title(text: str, run_id: str, simulated: bool, condition: str | None = None) -> dict:
    """A figure title: ``text`` over its :func:`provenance` line."""
    return dict(text=f"{text}<br><sup>{provenance(run_id, simulated, condition)}</sup>", x=0.01, xanchor="left",
                font=dict(size=13))


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank figure carrying a sentence (used where a view has no data)."""
    fig = go.Figure(layout=dict(template=TEMPLATE, height=height, xaxis=dict(visible=False),
                                yaxis=dict(visible=False), margin=dict(l=10, r=10, t=10, b=10)))
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=13, color="#555"))
    return fig


# ---------------------------------------------------------------------------------------------- graphs
FIGURE_FORMATS = ("png", "svg")
#: PNG scale of the camera button: a 600 px wide figure saves at 2,400 px (300 dpi over 8 inches).
PNG_SCALE = 4


def figure_config(graph_id: str, fmt: str = "png", *, three_d: bool = False) -> dict:
    """The ``dcc.Graph`` config: no plotly logo, the camera button saving ``graph_id.<fmt>``.

    3-D scenes (WebGL) have no vector form: they always save PNG, at half the 2-D scale (a WebGL canvas at 4x
    can exceed the browser's size limit).
    """
    if fmt not in FIGURE_FORMATS:
        raise ValueError(f"expected one of {FIGURE_FORMATS}, found {fmt!r}")
    if three_d:
        fmt = "png"
    options = {"format": fmt, "filename": graph_id}
    if fmt == "png":
        options["scale"] = PNG_SCALE // 2 if three_d else PNG_SCALE
    return {"displaylogo": False, "toImageButtonOptions": options}


def graph(graph_id: str, figure, *, three_d: bool = False, **kw) -> dcc.Graph:
    """A ``dcc.Graph`` of ``figure`` with the :func:`figure_config` its kind takes."""
    return dcc.Graph(id=graph_id, figure=figure, config=figure_config(graph_id, three_d=three_d), **kw)


def figure_outputs(graphs: list[str]) -> dict[str, Output]:
    """The ``figure`` outputs of ``graphs``, keyed by graph id (several callbacks patch the same figures)."""
    return {g: Output(g, "figure", allow_duplicate=True) for g in graphs}


def figure_values(graphs: list[str], patches: dict) -> dict:
    """The values of :func:`figure_outputs`: each graph's patch, or no update."""
    return {g: patches.get(g, no_update) for g in graphs}


def first_point(click: dict | None) -> dict | None:
    """The first point of a plotly ``clickData`` (None when there is none)."""
    if not isinstance(click, dict):
        return None
    points = click.get("points") or []
    return points[0] if points and isinstance(points[0], dict) else None


def selection_polygon(selection: dict | None) -> np.ndarray | None:
    """Outline of a lasso (``lassoPoints``) or box (``range``) selection as an (n, 2) polygon."""
    if not isinstance(selection, dict):
        return None
    lasso = selection.get("lassoPoints")
    if isinstance(lasso, dict) and lasso.get("x") and lasso.get("y"):
        poly = np.column_stack([np.asarray(lasso["x"], float), np.asarray(lasso["y"], float)])
        return poly if len(poly) >= 3 else None
    box = selection.get("range")
    if isinstance(box, dict) and box.get("x") and box.get("y"):
        (x0, x1), (y0, y1) = sorted(map(float, box["x"])), sorted(map(float, box["y"]))
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    return None
