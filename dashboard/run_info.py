"""What run the page shows: the header (run id, the simulated badge, room for the search box) and the footer
(preset, size, device, results folder, versions, the other runs of the folder).
"""
from __future__ import annotations

from dash import html

from . import ids
from .data import DashboardData

__all__ = ["header", "footer", "inference_warnings"]


def header(data: DashboardData, *extra) -> html.Div:
    """The page header; ``extra`` components (the search box) go at its end."""
    return html.Div([
        html.H1(["attnbrain ", html.Span("attention off | on", className="sub")]),
        html.Span(f"run {data.run_id}", className="run"),
        html.Span("SIMULATED data", className="badge") if data.simulated else None,
        *extra,
    ], id=ids.HEADER, className="header")


def inference_warnings(data: DashboardData) -> html.Div | None:
    """The stats stage's warnings about the run's significance rule (e.g. a t-test made anti-conservative by
    autocorrelated series, with its effective sample size), shown above the views; None without warnings."""
    warnings = (data.results.summary.get("stats") or {}).get("warnings") or []
    if not warnings:
        return None
    return html.Div([html.B("Inference warning: "), *[html.P(w) for w in warnings]],
                    id=ids.INFERENCE_WARNING, className="notice inference-warning")


def footer(data: DashboardData) -> html.Footer:
    """The page footer: the run's provenance."""
    s = data.results.summary
    versions = ", ".join(f"{k} {v}" for k, v in s.get("versions", {}).items())
    others = [r["run_id"] for r in data.results.runs if r["run_id"] != data.run_id]
    lines = [f"run {data.run_id} · preset {s.get('preset', '?')} · {data.n_voxels:,} voxels · "
             f"{data.n_test} test samples · computed on {s.get('device', '?')}"
             + (" · SIMULATED data (planted truth)" if data.simulated else ""),
             f"results folder {data.results.out}"]
    if versions:
        lines.append(f"versions: {versions}")
    if others:
        lines.append("other runs here (open with --run): " + ", ".join(others))
    return html.Footer([html.P(t) for t in lines], className="footer")
