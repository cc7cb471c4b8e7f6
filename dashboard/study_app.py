"""A study's dashboard: the group view at ``/`` and every finished run's own dashboard under ``/run/<run_id>/``.

``create_study_site(out, summary)`` returns one WSGI application: the study page (a Dash app: the run selector,
the layer profile and the ROI x layer heat map of :mod:`dashboard.group_view`, from the study's group table) and,
through a dispatcher, each run's dashboard (:func:`dashboard.app.create_app` mounted at ``/run/<run_id>``, built on
its first request). A run's page is reached at its own path, so its URL (and every scene saved in its folder)
names the run; the selector and a click on a subject's heat-map cell go there.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

from dash import Dash, Input, Output, dcc, html

from core.study.group import group_table
from core.vocabulary import SHARED_LAYERS

from .app import ASSETS_FOLDER
from .group_view import HEATMAP_METRICS, PROFILE_METRICS, layer_order, layer_profile_figure, roi_layer_heatmap, \
    run_from_heatmap_click

__all__ = ["create_study_site", "study_app", "latest_study", "run_path", "run_for_selection", "main"]

SUBJECT, LAYER, WEIGHTS, OPEN = "study-subject", "study-layer", "study-weights", "study-open"
ROI, METRIC, PROFILE, HEAT_METRIC, HEAT_SUBJECT, HEATMAP, GO = ("study-roi", "study-metric", "study-profile",
                                                                 "study-heat-metric", "study-heat-subject",
                                                                 "study-heatmap", "study-go")


def run_path(run_id: str) -> str:
    return f"/run/{run_id}/"


def latest_study(out: str | Path) -> dict:
    """The newest ``study-<id>.json`` of a results folder, loaded (InputError if none)."""
    from core._validation import InputError
    files = sorted(Path(out).glob("study-*.json"), key=lambda p: p.stat().st_mtime)
    if not files:
        raise InputError("no study summary (study-<id>.json) in this folder; run precompute.py study on it first",
                         source=str(out))
    return json.loads(files[-1].read_text())


def run_for_selection(summary: dict, subject, layer, weights) -> str | None:
    """The finished run of a (subject, layer, weights) selection, or None."""
    for r in summary.get("runs", []):
        if r.get("state") == "done" and (r["subject"], r["layer"], r["weights"]) == (subject, layer, weights):
            return r["run_id"]
    return None


def study_app(out: str | Path, summary: dict) -> Dash:
    """The study page (see the module docstring)."""
    table = group_table(out, summary)
    done = [r for r in summary.get("runs", []) if r.get("state") == "done"]
    subjects = sorted({r["subject"] for r in done})
    layers = layer_order({r["layer"] for r in done})
    weights = sorted({r["weights"] for r in done})
    rois = ["all"] + sorted(set(table["roi"]) - {"all"}) if len(table) else ["all"]
    app = Dash(__name__, assets_folder=str(ASSETS_FOLDER), title=f"attnbrain study · {summary.get('study', '')}",
               update_title=None, serve_locally=True)

    def dropdown(cid, options, value, **kw):
        return dcc.Dropdown(id=cid, options=[{"label": o, "value": o} for o in options], value=value,
                            clearable=False, **kw)
    shared = [lay for lay in layers if lay in SHARED_LAYERS]
    note = (f"Layers {', '.join(shared)} come before attention acts: their on and off features are identical, so "
            "their differences are the study's negative control." if shared else "")
    states = {s: sum(r.get("state") == s for r in summary.get("runs", [])) for s in ("done", "bad input", "failed")}
    app.layout = html.Div([
        dcc.Location(id=GO, refresh=True),
        html.H2(f"Study {summary.get('study', '')}"),
        html.P(f"{len(summary.get('runs', []))} runs: " + ", ".join(f"{v} {k}" for k, v in states.items())
               + (". Simulated data." if any(r.get("simulated") for r in done) else "."), className="facts"),
        html.Div([html.Label("Open a run"), dropdown(SUBJECT, subjects, subjects[0] if subjects else None),
                  dropdown(LAYER, layers, layers[-1] if layers else None),
                  dropdown(WEIGHTS, weights, weights[0] if weights else None),
                  html.A("open", id=OPEN, href="#", className="download")], className="control wide"),
        html.Div([html.Label("ROI"), dropdown(ROI, rois, "all"), html.Label("metric"),
                  dcc.RadioItems(id=METRIC, options=[{"label": v[0], "value": k} for k, v in PROFILE_METRICS.items()],
                                 value="median_r", inline=True, className="radio")], className="control wide"),
        dcc.Graph(id=PROFILE, figure=layer_profile_figure(table, "all", "median_r")),
        html.P(note, className="notice") if note else None,
        html.Div([html.Label("heat map"),
                  dcc.RadioItems(id=HEAT_METRIC, options=[{"label": v, "value": k} for k, v in HEATMAP_METRICS.items()],
                                 value="median_delta_r", inline=True, className="radio"),
                  dropdown(HEAT_SUBJECT, ["median over subjects", *subjects], "median over subjects")],
                 className="control wide"),
        html.P("Pick one subject, then click a cell to open that run.", className="hint"),
        dcc.Graph(id=HEATMAP, figure=roi_layer_heatmap(table, "median_delta_r")),
    ], className="app")

    @app.callback(Output(OPEN, "href"), Input(SUBJECT, "value"), Input(LAYER, "value"), Input(WEIGHTS, "value"))
    def on_select(subject, layer, w):
        run = run_for_selection(summary, subject, layer, w)
        return run_path(run) if run else "#"

    @app.callback(Output(PROFILE, "figure"), Input(ROI, "value"), Input(METRIC, "value"), Input(WEIGHTS, "value"))
    def on_profile(roi, metric, w):
        return layer_profile_figure(table, roi or "all", metric or "median_r", w)

    @app.callback(Output(HEATMAP, "figure"), Input(HEAT_METRIC, "value"), Input(HEAT_SUBJECT, "value"),
                  Input(WEIGHTS, "value"))
    def on_heatmap(metric, subject, w):
        return roi_layer_heatmap(table, metric or "median_delta_r",
                                 None if subject in (None, "median over subjects") else subject, w)

    @app.callback(Output(GO, "href"), Input(HEATMAP, "clickData"), prevent_initial_call=True)
    def on_cell(click):
        from dash.exceptions import PreventUpdate
        run = run_from_heatmap_click(click)
        if run is None:
            raise PreventUpdate
        return run_path(run)

    app.attnbrain_table = table
    return app


class _LazyRun:
    """A run's dashboard, built on its first request (a study of many runs opens only those looked at)."""

    def __init__(self, out: Path, run_id: str, study_runs: list[tuple[str, str]]):
        self.out, self.run_id, self.study_runs = out, run_id, study_runs
        self._app = None
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if self._app is None:
            with self._lock:
                if self._app is None:
                    from core.outputs.reader import open_results

                    from .app import create_app
                    self._app = create_app(open_results(self.out, run_id=self.run_id),
                                           mount=run_path(self.run_id).rstrip("/"),
                                           study_runs=self.study_runs).server
        return self._app(environ, start_response)


def create_study_site(out: str | Path, summary: dict):
    """The study's whole site as one WSGI application (and the study page's Dash app)."""
    from werkzeug.middleware.dispatcher import DispatcherMiddleware
    out = Path(out)
    index = study_app(out, summary)
    done = [r for r in summary.get("runs", []) if r.get("state") == "done"]
    links = [(r["label"], run_path(r["run_id"])) for r in done]
    mounts = {run_path(r["run_id"]).rstrip("/"): _LazyRun(out, r["run_id"], links) for r in done}
    def index_only(environ, start_response):
        # The dispatcher hands every path no run is mounted at to the study page, whose Dash app would answer
        # any path with its page: a run that is not in the study gets a 404 instead.
        if environ.get("PATH_INFO", "").startswith("/run/"):
            body = b"no such finished run in this study"
            start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        return index.server(environ, start_response)
    return DispatcherMiddleware(index_only, mounts), index


def main(argv=None) -> int:
    """``python -m dashboard --results DIR --study``: the study site of the folder's newest study, on loopback by
    default (the options of :func:`dashboard.app.parse_args`)."""
    import sys

    from core._validation import InputError

    from .app import is_loopback, parse_args
    args = parse_args(argv)
    try:
        summary = latest_study(args.results)
        site, _ = create_study_site(args.results, summary)
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}:{args.port} lets other machines on the network read these "
              "results; use --host 127.0.0.1 unless that is intended", file=sys.stderr)
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"attnbrain study {summary.get('study')} ({args.results}) on http://{url_host}:{args.port}/", flush=True)
    from waitress import serve
    serve(site, host=args.host, port=args.port, threads=args.threads or 8, asyncore_use_poll=True)
    return 0
