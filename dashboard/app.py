"""The Dash app factory and the ``python -m dashboard`` command line.

``create_app(results)`` builds the app for one opened run; ``main()`` opens a results folder read-only and
serves it, on 127.0.0.1:8050 by default (waitress, or Flask's debug server with ``--debug``).
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

__all__ = ["ASSETS_FOLDER", "create_app", "make_layout", "page_vocabulary", "parse_args", "is_loopback",
           "serve_workers", "main"]

#: The app's CSS and clientside JS (Dash serves and injects every file in it).
ASSETS_FOLDER = Path(__file__).resolve().parent.parent / "assets"


def create_app(results, mount: str = "", study_runs: list[tuple[str, str]] | None = None):
    """Build the dashboard for one run.

    Parameters
    ----------
    results : core.outputs.Results
        An opened run (``core.outputs.open_results``); the app only reads it.
    mount : str
        The path the app is served under by a WSGI dispatcher (``/run/<run_id>`` in a study's dashboard, which
        strips it before the app sees a request); "" when it is the whole site.
    study_runs : list of (label, path), optional
        In a study's dashboard: every run of the study, for the run switcher at the top of the page.

    Returns
    -------
    dash.Dash
        Layout, callbacks and the extra Flask routes (viewer, stimulus PNGs, flatmaps, downloads) registered;
        ``app.server`` is the Flask app to serve, ``app.attnbrain_data`` the run's
        :class:`~dashboard.data.DashboardData`.
    """
    from dash import Dash

    from . import (downloads, filters, flatmaps, inspector, presenting, r_scatter, selection, server,
                   summary_plots, umap_view, viewer_bridge, voxel_table)
    from .data import DashboardData

    data = DashboardData(results, mount=mount)
    data.study_runs = list(study_runs or [])
    prefix = {"requests_pathname_prefix": f"{data.mount}/", "routes_pathname_prefix": "/"} if data.mount else {}
    app = Dash(__name__, assets_folder=str(ASSETS_FOLDER), title=f"attnbrain · {data.run_id}",
               update_title=None, serve_locally=True, suppress_callback_exceptions=False, **prefix)
    app.layout = make_layout(data)
    for feature in (selection, filters, umap_view, flatmaps, r_scatter, inspector, voxel_table, viewer_bridge,
                    presenting, downloads, summary_plots):
        feature.register(app, data)
    server.register_routes(app.server, data)
    downloads.register_routes(app.server, data)
    app.attnbrain_data = data
    return app


def page_vocabulary(data) -> dict:
    """What the clientside JS names, so it never retypes it: the conditions, their graph and store ids, the
    names of the highlight traces, and the run's bin scheme (:meth:`core.vocabulary.BinScheme.to_json`)."""
    from core.vocabulary import PAIR

    from . import ids
    from .plotting import HIGHLIGHT_TRACE, SET_TRACE
    return {"pair": list(PAIR),
            "graphs": {"umap": {m: ids.umap_graph(m) for m in PAIR}, "flat": {m: ids.flat_graph(m) for m in PAIR},
                       "flat_click": {m: ids.flat_click(m) for m in PAIR}},
            "traces": {"highlight": HIGHLIGHT_TRACE, "set": SET_TRACE},
            "ids": {"app": ids.APP, "present": ids.PRESENT, "camera_state": ids.CAMERA_STATE,
                    "scene_goto": ids.SCENE_GOTO, "viewer_frame": ids.VIEWER_FRAME,
                    "viewer_status": ids.VIEWER_STATUS, "viewer_pick": ids.VIEWER_PICK},
            "bins": data.bin_scheme.to_json()}


def make_layout(data):
    """The whole page for one run: every feature's piece, each built once from the default filters (callbacks
    then only patch colour arrays and highlight traces)."""
    import json

    from dash import html

    from core.vocabulary import CONDITION_LABELS, PAIR

    from . import (downloads, filters, flatmaps, ids, inspector, presenting, r_scatter, run_info, selection,
                   summary_plots, umap_view, viewer_bridge, voxel_table)

    state = data.default_filters()
    columns = [html.Div([html.H2(CONDITION_LABELS[m], className=f"cond-title cond-{m}"),
                         *umap_view.umap_panel(data, m, state), *flatmaps.flatmap_panel(data, m, state)],
                        id=ids.cond_col(m), className="cond-col") for m in PAIR]
    notices = [html.P(data.flatmap_reason, className="notice")] if data.flatmap is None else []
    notices += [w for w in [run_info.inference_warnings(data)] if w is not None]
    controls = html.Div([*filters.filter_controls(data), umap_view.camera_link_control(),
                         presenting.columns_control(), filters.filter_message()], className="controls")
    # The summary and table sit side by side (not in tabs): the r scatter and the table take part in
    # selection, so they stay mounted.
    study = getattr(data, "study_runs", [])
    switcher = [html.Nav(["Study: ", html.A("group view", href="/"), " · runs: "]
                         + [x for label, href in study for x in (
                             html.B(label) if href.rstrip("/") == data.mount else html.A(label, href=href), " ")],
                         id="study-runs", className="study-runs")] if study else []
    return html.Div([
        *switcher,
        run_info.header(data, selection.search_box()),
        *presenting.scene_notices(),
        controls,
        presenting.scene_panel(data),
        filters.legend(data),
        *notices,
        html.Div([html.Div(columns, className="cond-cols"), inspector.inspector_panel(data)], className="main"),
        viewer_bridge.viewer_panel(data),
        downloads.downloads_panel(data),
        html.Div([summary_plots.summary_panel(data, state), voxel_table.table_panel(data)], className="lower"),
        run_info.footer(data),
        *selection.stores(), *r_scatter.stores(), *viewer_bridge.stores(), *umap_view.stores(),
        *flatmaps.stores(data), *presenting.scene_stores(),
        html.Div(id=ids.VOCABULARY, hidden=True, **{"data-vocabulary": json.dumps(page_vocabulary(data))}),
    ], id=ids.APP, className="app")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dashboard",
                                description="Serve the attention off | on dashboard for a results folder.")
    p.add_argument("--results", required=True, type=Path, help="results folder written by precompute.py --out")
    p.add_argument("--run", default=None, help="run id inside the folder (default: the newest finished run)")
    p.add_argument("--study", action="store_true",
                   help="serve the folder's newest study: its group view at / and each run under /run/<run_id>/")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: only this machine can connect)")
    p.add_argument("--port", default=8050, type=int, help="port (default 8050)")
    p.add_argument("--workers", default=1, type=int,
                   help="worker processes (default 1: one process, 8 threads, waitress). N > 1 serves with gunicorn: "
                   "the run is opened once and the workers are forked from it, sharing its memory-mapped arrays")
    p.add_argument("--threads", default=None, type=int,
                   help="threads per process (default 8 with one process, 4 per worker with --workers N)")
    p.add_argument("--debug", action="store_true", help="Flask debug server with Dash dev tools (never on a "
                   "network: the debugger runs code)")
    args = p.parse_args(argv)
    if args.workers < 1 or (args.threads is not None and args.threads < 1):
        p.error("--workers and --threads must be at least 1")
    return args


def serve_workers(wsgi_app, *, host: str, port: int, workers: int, threads: int) -> None:
    """Serve ``wsgi_app`` with gunicorn: ``workers`` processes forked from this one, ``threads`` each.

    The app (and the run's memory-mapped arrays) is built before the fork, so workers share those pages
    with the parent instead of each reading the results again. Blocks until the server stops.
    """
    from gunicorn.app.base import BaseApplication

    bind = f"[{host.strip('[]')}]:{port}" if ":" in host else f"{host}:{port}"
    options = {"bind": bind, "workers": workers, "threads": threads, "worker_class": "gthread",
               "preload_app": True, "timeout": 120, "graceful_timeout": 10, "keepalive": 5,
               "accesslog": None, "errorlog": "-", "loglevel": "warning", "proc_name": "attnbrain-dashboard"}

    class _Server(BaseApplication):
        def load_config(self):
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self):
            return wsgi_app

    _Server().run()


def is_loopback(host: str) -> bool:
    """True for addresses only this machine can reach (localhost, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def main(argv=None) -> int:
    """``python -m dashboard --results DIR [--run RUN_ID] [--host H] [--port P] [--debug]``."""
    from core.outputs.reader import open_results

    from core._validation import InputError

    args = parse_args(argv)
    if args.study:
        # dashboard.study_app builds on this module; its entry point is dashboard/__main__'s for --study.
        print("error: --study is served by python -m dashboard (dashboard.study_app.main)", file=sys.stderr)
        return 2
    try:
        results = open_results(args.results, args.run)
        app = create_app(results)
    except InputError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        # A results file damaged in a way open_results does not check (e.g. inside the cortex assets).
        print(f"error: {args.results}: the results cannot be shown ({type(exc).__name__}: "
              f"{' '.join(str(exc).split())[:300]}); rerun precompute.py --out on this folder", file=sys.stderr)
        return 2
    if args.debug and args.workers > 1:
        print("error: --debug runs Flask's single-process debug server; drop --workers or --debug", file=sys.stderr)
        return 2
    if not is_loopback(args.host):
        print(f"warning: serving on {args.host}:{args.port} lets other machines on the network read these "
              "results; use --host 127.0.0.1 unless that is intended", file=sys.stderr)
        if args.debug:
            print("error: --debug on a non-loopback address would expose the debugger (remote code "
                  "execution); drop --debug or bind 127.0.0.1", file=sys.stderr)
            return 2
    url_host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"attnbrain dashboard for run {results.run_id} ({results.out}) on http://{url_host}:{args.port}/"
          + (f" ({args.workers} worker processes)" if args.workers > 1 else ""), flush=True)
    if args.debug:
        app.run(host=args.host, port=args.port, debug=True)
    elif args.workers > 1:
        serve_workers(app.server, host=args.host, port=args.port, workers=args.workers, threads=args.threads or 4)
    else:
        from waitress import serve
        # poll() rather than select(): select cannot watch a descriptor numbered 1024 or above.
        serve(app.server, host=args.host, port=args.port, threads=args.threads or 8, asyncore_use_poll=True)
    return 0
