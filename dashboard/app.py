"""The Dash app factory and the ``python -m dashboard`` command line.

``create_app(results)`` builds the app for one opened run; ``main()`` opens a results folder read-only and
serves it, on 127.0.0.1:8050 by default (waitress, or Flask's debug server with ``--debug``).
"""
from __future__ import annotations

import argparse
import ipaddress
import sys
from pathlib import Path

__all__ = ["ASSETS_FOLDER", "create_app", "parse_args", "is_loopback", "serve_workers", "main"]

#: The app's CSS and clientside JS (Dash serves and injects every file in it).
ASSETS_FOLDER = Path(__file__).resolve().parent.parent / "assets"


def create_app(results):
    """Build the dashboard for one run.

    Parameters
    ----------
    results : core.outputs.Results
        An opened run (``core.outputs.open_results``); the app only reads it.

    Returns
    -------
    dash.Dash
        Layout, callbacks and the extra Flask routes (viewer, stimulus PNGs, flatmaps, downloads) registered;
        ``app.server`` is the Flask app to serve, ``app.attnbrain_data`` the run's
        :class:`~dashboard.figures.DashboardData`.
    """
    from dash import Dash

    from .callbacks import register_callbacks
    from .exports import register_export_callbacks, register_export_routes
    from .figures import DashboardData
    from .layout import make_layout
    from .server import register_routes

    data = DashboardData(results)
    app = Dash(__name__, assets_folder=str(ASSETS_FOLDER), title=f"attnbrain · {data.run_id}",
               update_title=None, serve_locally=True, suppress_callback_exceptions=False)
    app.layout = make_layout(data)
    register_callbacks(app, data)
    register_routes(app.server, data)
    register_export_routes(app.server, data)
    register_export_callbacks(app, data)
    app.attnbrain_data = data
    return app


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m dashboard",
                                description="Serve the attention off | on dashboard for a results folder.")
    p.add_argument("--results", required=True, type=Path, help="results folder written by precompute.py --out")
    p.add_argument("--run", default=None, help="run id inside the folder (default: the newest finished run)")
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
    from core._validation import InputError
    from core.outputs.reader import open_results

    args = parse_args(argv)
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
        serve(app.server, host=args.host, port=args.port, threads=args.threads or 8)
    return 0
