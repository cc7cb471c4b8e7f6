"""The pycortex WebGL viewer: its panel (a same-origin iframe loaded on demand), the picks it posts back and the
clientside bridge (assets/attnbrain.js) that tells it the condition, the view and the selected voxel.
"""
from __future__ import annotations

from dash import ClientsideFunction, Input, Output, dcc, html

from core.vocabulary import CONDITION_LABELS, PAIR

from . import ids
from .data import DashboardData

__all__ = ["VIEWS", "viewer_panel", "stores", "voxel_from_pick", "register"]

#: The viewer's surfaces, as its bridge names them.
VIEWS = ("flat", "inflated")


def viewer_panel(data: DashboardData) -> html.Div:
    """The viewer section: a load button, the condition and view switches, the status line and the iframe; or
    why this run has no viewer."""
    if data.viewer_dir is None:
        return html.Div([html.H2("3-D brain viewer"), html.P(data.viewer_reason, className="notice")],
                        className="viewer-panel")
    return html.Div([
        html.Div([
            html.H2("3-D brain viewer (pycortex)"),
            html.Button("load viewer", id=ids.VIEWER_LOAD, className="load", n_clicks=0,
                        title="the WebGL viewer takes a while to load; it then follows your selection"),
            dcc.RadioItems(id=ids.VIEWER_COND, options=[{"label": CONDITION_LABELS.get(m, m), "value": m}
                                                        for m in data.conditions],
                           value=PAIR[0], inline=True, className="radio"),
            dcc.RadioItems(id=ids.VIEWER_VIEW, options=[{"label": v, "value": v} for v in VIEWS],
                           value=VIEWS[0], inline=True, className="radio"),
            html.Span("viewer not loaded", id=ids.VIEWER_STATUS, className="viewer-status"),
        ], className="viewer-bar"),
        html.Iframe(id=ids.VIEWER_FRAME, className="viewer", title="pycortex 3-D viewer"),
    ], className="viewer-panel")


def stores() -> list:
    """The store the bridge fills with picks, and the sink of its clientside callback."""
    return [dcc.Store(id=ids.VIEWER_PICK), dcc.Store(id=ids.VIEWER_SINK)]


def voxel_from_pick(data: DashboardData, pick: dict | None) -> int | None:
    """Voxel of a pick message from the 3-D viewer (``{"voxel": row, ...}``)."""
    if not isinstance(pick, dict):
        return None
    v = pick.get("voxel")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        return None
    v = int(v)
    return v if 0 <= v < data.n_voxels else None


def register(app, data: DashboardData) -> None:
    """Loading the viewer, and the bridge that keeps it on the selected condition, view and voxel."""
    if data.viewer_dir is None:
        return

    @app.callback(output=dict(src=Output(ids.VIEWER_FRAME, "src")), inputs=dict(_n=Input(ids.VIEWER_LOAD, "n_clicks")),
                  prevent_initial_call=True)
    def on_load_viewer(_n):
        return dict(src=data.viewer_url)

    app.clientside_callback(ClientsideFunction("attnbrain", "viewerSync"), Output(ids.VIEWER_SINK, "data"),
                            [Input(ids.VIEWER_COND, "value"), Input(ids.VIEWER_VIEW, "value"),
                             Input(ids.SELECTED, "data")])
