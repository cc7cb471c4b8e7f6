"""The voxel table: the selected set, or the voxels whose r changes most between the conditions, as Markdown
whose voxel ids link to their selection; its pure functions, its panel and its callback.
"""
from __future__ import annotations

import numpy as np
from dash import Input, Output, dcc, html

from core.vocabulary import NS_CODE, PAIR

from . import ids
from .data import DashboardData

__all__ = ["MAX_TABLE_ROWS", "TABLE_COLUMNS", "table_rows", "table_markdown", "table_panel", "register"]

MAX_TABLE_ROWS = 200
_OFF, _ON = PAIR


def table_rows(data: DashboardData, voxels: np.ndarray | None) -> list[dict]:
    """Rows of the voxel table: the selected set, or (no set) the voxels with the largest |Δr| among those
    significant in either condition; at most :data:`MAX_TABLE_ROWS`, sorted by Δr descending."""
    if voxels is None or len(voxels) == 0:
        sig = (data.stored_bins[_OFF] != NS_CODE) | (data.stored_bins[_ON] != NS_CODE)
        cand = np.flatnonzero(sig)
        delta = np.abs(data.r[_ON][cand] - data.r[_OFF][cand])
        voxels = cand[np.argsort(-delta, kind="stable")[:MAX_TABLE_ROWS]]
    voxels = np.asarray(voxels, dtype=np.int64)
    delta = data.r[_ON][voxels] - data.r[_OFF][voxels]
    voxels = voxels[np.argsort(-delta, kind="stable")][:MAX_TABLE_ROWS]
    scheme = data.bin_scheme
    rows = []
    for v in voxels.tolist():
        row = {"voxel": v, "roi": "", "hemi": "",
               **{f"r_{m}": float(data.r[m][v]) for m in PAIR}, "delta_r": float(data.r[_ON][v] - data.r[_OFF][v]),
               **{f"bin_{m}": scheme.label(int(data.stored_bins[m][v])) for m in PAIR}}
        if data.has_geometry:
            row.update(roi=data.roi_names[data.roi[v]] if data.roi_names else str(data.roi[v]),
                       hemi={0: "L", 1: "R"}.get(int(data.hemi[v]), ""))
        rows.append(row)
    return rows


TABLE_COLUMNS = (("voxel", "voxel"), ("roi", "ROI"), ("hemi", "hemi"), *((f"r_{m}", f"r {m}") for m in PAIR),
                 ("delta_r", "Δr"), *((f"bin_{m}", f"bin {m}") for m in PAIR))


def table_markdown(rows: list[dict]) -> str:
    """The voxel table as Markdown (one component however many rows); voxel ids link to their selection."""
    def cell(key, value):
        if key == "voxel":
            return f"[{value}]({ids.voxel_href(value)})"
        return f"{value:+.3f}" if key == "delta_r" else f"{value:.3f}" if isinstance(value, float) else str(value)
    lines = ["| " + " | ".join(name for _, name in TABLE_COLUMNS) + " |",
             "|" + "|".join(":--" if k in ("voxel", "roi", "hemi") else "--:" for k, _ in TABLE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(cell(k, r[k]) for k, _ in TABLE_COLUMNS) + " |" for r in rows]
    return "\n".join(lines)


def table_panel(data: DashboardData) -> html.Div:
    """The "Voxels" section: the set bar (its size, a clear button), a hint and the table."""
    return html.Div([html.H2("Voxels"), html.Div([
        html.Div([html.Span("no set selected", id=ids.SET_MSG),
                  html.Button("clear set", id=ids.CLEAR_SET, n_clicks=0)], className="set-bar"),
        html.P("Draw a lasso or box on the r scatter or a flatmap to select a set; without a set the table lists "
               "the voxels whose r changes most between attention off and on. Click a voxel id to inspect it.",
               className="hint"),
        dcc.Markdown(id=ids.TABLE, className="table-scroll voxels"),
    ])], className="table-panel")


def register(app, data: DashboardData) -> None:
    """The table follows the selected set (at page load too: then it lists the largest changes)."""
    @app.callback(output=dict(table=Output(ids.TABLE, "children")),
                  inputs=dict(voxels=Input(ids.SELECTED_SET, "data")))
    def on_table(voxels):
        return dict(table=table_markdown(table_rows(data, np.asarray(voxels, dtype=np.int64) if voxels else None)))
