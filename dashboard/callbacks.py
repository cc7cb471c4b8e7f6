"""The dashboard's behaviour: pure functions from control values to outputs, and their registration.

Every server callback is a thin wrapper around a module-level function of (:class:`DashboardData`, plain
values) that the unit tests call directly. Selections and filters update figures with ``dash.Patch`` of
small traces or of the uint8 colour arrays only; the big coordinate arrays are sent once, with the page.
"""
from __future__ import annotations

import re
from typing import Any

import numpy as np
from dash import ClientsideFunction, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate
from matplotlib.path import Path as MplPath

from core.vocabulary import DEFAULT_BINS

from . import ids
from .figures import (
    UMAP_CODE, DashboardData, FilterState, make_series_figure, r_scatter_codes, typed_array, umap_colour_codes,
    umap_marker_size,
)

__all__ = [
    "voxel_from_umap_click", "voxel_from_r_click", "voxel_from_flat_click", "voxel_from_jaccard_click",
    "voxel_from_pick", "voxel_from_hash",
    "parse_voxel_query", "resolve_selection", "highlight_patches", "filter_patches", "set_from_r_selection",
    "set_from_flat_selection", "set_patches", "resolve_set", "inspector_children", "top_stimuli", "neighbours",
    "table_rows", "table_markdown", "register_callbacks", "MAX_TABLE_ROWS", "TABLE_COLUMNS",
]

MAX_TABLE_ROWS = 200
_IJK_RE = re.compile(r"^\s*(-?\d+)\s*[, ;]\s*(-?\d+)\s*[, ;]\s*(-?\d+)\s*$")
_ID_RE = re.compile(r"^\s*#?\s*(\d+)\s*$")
_HASH_RE = re.compile(r"^#?voxel=(\d+)$")


# ---------------------------------------------------------------------------------------------- clicks -> voxel
def voxel_from_umap_click(data: DashboardData, condition: str, click: dict | None) -> int | None:
    """Voxel clicked in a UMAP: ``pointNumber`` of trace 0 mapped through the embedded-voxel index.

    numpy ``customdata`` never reaches ``clickData`` (plotly.py#5119), so the id is looked up here.
    Clicks on the highlight or set traces (curves 1, 2) select nothing.
    """
    point = _first_point(click)
    if point is None or point.get("curveNumber", 0) != 0 or condition not in data.umap:
        return None
    n = point.get("pointNumber")
    voxels = data.umap[condition].voxels
    if isinstance(n, int) and 0 <= n < voxels.size:
        return int(voxels[n])
    return None


def voxel_from_r_click(data: DashboardData, click: dict | None) -> int | None:
    """Voxel clicked in the r_on vs r_off scatter (trace 0 point i is voxel i)."""
    point = _first_point(click)
    if point is None or point.get("curveNumber", 0) != 0:
        return None
    n = point.get("pointNumber", point.get("pointIndex"))
    return int(n) if isinstance(n, int) and 0 <= n < data.n_voxels else None


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


def voxel_from_jaccard_click(data: DashboardData, click: dict | None) -> int | None:
    """Voxel clicked on the neighbourhood-change map: (``curveNumber``, ``pointNumber``) of a ROI trace mapped
    through :class:`~dashboard.figures.JaccardMapView` (clicks on the highlight trace select nothing)."""
    point = _first_point(click)
    if point is None or data.jaccard_map is None:
        return None
    c, n = point.get("curveNumber", 0), point.get("pointNumber", point.get("pointIndex"))
    if not isinstance(c, int) or not isinstance(n, int):
        return None
    return data.jaccard_map.voxel_of(c, n)


def voxel_from_pick(data: DashboardData, pick: dict | None) -> int | None:
    """Voxel of a pick message from the 3-D viewer (``{"voxel": row, ...}``)."""
    if not isinstance(pick, dict):
        return None
    v = pick.get("voxel")
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not float(v).is_integer():
        return None
    v = int(v)
    return v if 0 <= v < data.n_voxels else None


def voxel_from_hash(data: DashboardData, url_hash: str | None) -> int | None:
    """Voxel named by the page URL's hash ``#voxel=<row>`` (see ``ids.URL``), None if none or out of range."""
    m = _HASH_RE.match(url_hash or "")
    if m is None:
        return None
    v = int(m.group(1))
    return v if v < data.n_voxels else None


def parse_voxel_query(data: DashboardData, text: str | None) -> tuple[int | None, str]:
    """A search box entry -> (voxel or None, message). Accepts a voxel id or ``i,j,k`` NIfTI indices."""
    if not text or not str(text).strip():
        return None, ""
    text = str(text)
    m = _ID_RE.match(text)
    if m:
        v = int(m.group(1))
        if v < data.n_voxels:
            return v, f"voxel {v}"
        return None, f"no voxel {v}: ids run from 0 to {data.n_voxels - 1}"
    m = _IJK_RE.match(text)
    if m:
        if not data.has_geometry:
            return None, "this run has no voxel geometry, so i,j,k cannot be looked up; enter a voxel id"
        i, j, k = (int(g) for g in m.groups())
        v = data.voxel_at_ijk(i, j, k)
        if v < 0:
            return None, f"no voxel at i,j,k = {i},{j},{k} in this run's mask"
        return v, f"voxel {v} at i,j,k = {i},{j},{k}"
    return None, f"expected a voxel id (0-{data.n_voxels - 1}) or i,j,k (e.g. 40,52,18); found {text.strip()!r}"


def _first_point(click: dict | None) -> dict | None:
    if not isinstance(click, dict):
        return None
    points = click.get("points") or []
    return points[0] if points and isinstance(points[0], dict) else None


def resolve_selection(data: DashboardData, trigger: Any, value: Any, search: str | None = None
                      ) -> tuple[int | None, str | None]:
    """Which voxel an input event selects.

    Parameters
    ----------
    data : DashboardData
    trigger : str
        Id of the component that fired (``ctx.triggered_id``).
    value : any
        Its new property value.
    search : str or None
        The search box text (for the search triggers).

    Returns
    -------
    voxel : int or None
        None = the event selects nothing (keep the current selection).
    message : str or None
        New text for the search feedback line (None = leave it).
    """
    if trigger == ids.URL:
        return voxel_from_hash(data, value), None
    for m in ids.PAIR:
        if trigger == ids.umap_graph(m):
            return voxel_from_umap_click(data, m, value), None
        if trigger == ids.flat_click(m):
            v = voxel_from_flat_click(data, value)
            return v, (None if v is not None else "no voxel under that point of the flatmap")
    if trigger == ids.R_SCATTER:
        return voxel_from_r_click(data, value), None
    if trigger == ids.JACCARD_MAP:
        return voxel_from_jaccard_click(data, value), None
    if trigger == ids.VIEWER_PICK:
        return voxel_from_pick(data, value), None
    if trigger in (ids.SEARCH, ids.SEARCH_GO):
        return parse_voxel_query(data, search)
    return None, None


# ---------------------------------------------------------------------------------------------- highlight
def _flat_xy(data: DashboardData, voxels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Figure coordinates of voxels on the flatmap (pixel centre of their pixels); voxels without pixels
    are dropped."""
    c = data.flatmap.centre[np.asarray(voxels, dtype=np.int64)]
    ok = np.isfinite(c[:, 0])
    return c[ok, 0].astype(np.float32), (data.flatmap.height - 1 - c[ok, 1]).astype(np.float32)


def highlight_patches(data: DashboardData, voxel: int | None, into: dict[str, Patch] | None = None
                      ) -> dict[str, Patch]:
    """Patches that move the one-point "selected voxel" trace of every view to ``voxel`` (trace 1, and
    ``JaccardMapView.highlight_trace`` on the neighbourhood-change map).

    Returns
    -------
    dict of graph id -> Patch
        One entry per UMAP (only conditions with an embedding), flatmap (when the run has them), the
        r scatter and the neighbourhood-change map (when the run has one). A voxel missing from a view (not
        embedded, no flatmap pixel) empties that view's trace. With ``into``, its patches are extended
        (one patch per graph can then move the highlight and the set together) and returned.
    """
    out: dict[str, Patch] = {} if into is None else into
    v = None if voxel is None else int(voxel)
    for m, view in data.umap.items():
        p = out.setdefault(ids.umap_graph(m), Patch())
        pos = -1 if v is None else int(view.position[v])
        if pos >= 0:
            x, y, z = (int(c) for c in view.coords[pos])
            p["data"][1].update(x=[x], y=[y], z=[z])
        else:
            p["data"][1].update(x=[], y=[], z=[])
    if data.flatmap is not None:
        fx, fy = _flat_xy(data, np.array([v])) if v is not None else (np.zeros(0), np.zeros(0))
        for m in ids.PAIR:
            p = out.setdefault(ids.flat_graph(m), Patch())
            p["data"][1].update(x=[round(float(a), 2) for a in fx], y=[round(float(b), 2) for b in fy])
    p = out.setdefault(ids.R_SCATTER, Patch())
    if v is None:
        p["data"][1].update(x=[], y=[])
    else:
        p["data"][1].update(x=[round(float(data.r["off"][v]), 4)], y=[round(float(data.r["on"][v]), 4)])
    jm = data.jaccard_map
    if jm is not None:
        pos = -1 if v is None else int(jm.position[v])
        p = out.setdefault(ids.JACCARD_MAP, Patch())
        p["data"][jm.highlight_trace].update(x=[int(jm.coords[pos, 0])] if pos >= 0 else [],
                                             y=[int(jm.coords[pos, 1])] if pos >= 0 else [])
    return out


# ---------------------------------------------------------------------------------------------- filters
def filter_patches(data: DashboardData, state: FilterState) -> tuple[dict[str, Patch], str]:
    """Patches that recolour every view for a filter state: colour arrays (uint8), the UMAP point sizes
    when hidden points must not be clickable, and the flatmap layer images; never coordinates.

    Returns
    -------
    patches : dict of graph id -> Patch
    message : str
        How many voxels pass the filters per condition.
    """
    out: dict[str, Patch] = {}
    visible = {m: data.visible(m, state) for m in ids.PAIR}
    for m, view in data.umap.items():
        codes = umap_colour_codes(data.bins(m, state.rule), visible[m], state.ns)[view.voxels]
        p = Patch()
        p["data"][0]["marker"]["color"] = typed_array(codes)
        # A transparent WebGL point can still be picked: hidden points also get size 0, which takes them
        # out of plotly's pick buffer, so a click never selects a voxel the user cannot see.
        size = umap_marker_size(view.voxels.size)
        p["data"][0]["marker"]["size"] = (typed_array(np.where(codes == UMAP_CODE["hidden"], 0, size).astype(np.uint8))
                                          if state.ns == "hidden" else size)
        out[ids.umap_graph(m)] = p
    p = Patch()
    p["data"][0]["marker"]["color"] = typed_array(r_scatter_codes(visible["off"], visible["on"], state.ns))
    out[ids.R_SCATTER] = p
    if data.flatmap is not None:
        for m in ids.PAIR:
            p = Patch()
            p["layout"]["images"][1]["source"] = data.flatmap_layer_url(m, state)
            out[ids.flat_graph(m)] = p
    rule = {"p": f"p ≤ {data.level:g} (uncorrected)", "q": f"FDR q ≤ {data.level:g}",
            "perm": f"permutation p ≤ {data.level:g}"}.get(state.rule, state.rule)
    message = f"{rule}: " + " · ".join(f"{int(visible[m].sum()):,} voxels shown with attention {m}"
                                        for m in ids.PAIR)
    return out, message


# ---------------------------------------------------------------------------------------------- set selection
def _polygon(selection: dict | None) -> np.ndarray | None:
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
    poly = _polygon(selection)
    if poly is None:
        return np.zeros(0, dtype=np.int64)
    pts = np.column_stack([data.r["off"], data.r["on"]])
    inside = MplPath(poly).contains_points(pts)
    codes = r_scatter_codes(data.visible("off", state), data.visible("on", state), state.ns)
    return np.flatnonzero(inside & (codes != 0)).astype(np.int64)


def set_from_flat_selection(data: DashboardData, condition: str, selection: dict | None,
                            state: FilterState) -> np.ndarray | None:
    """Voxels owning a flatmap pixel inside a lasso/box on the condition's flatmap.

    With n.s. voxels hidden, only voxels passing the filters in that condition count. Returns None / an
    empty array as :func:`set_from_r_selection` does.
    """
    if not isinstance(selection, dict) or data.flatmap is None:
        return None
    poly = _polygon(selection)
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


def set_patches(data: DashboardData, voxels: np.ndarray, into: dict[str, Patch] | None = None) -> dict[str, Patch]:
    """Patches that draw a voxel set into trace 2 of every view (typed arrays: sets can be large); with
    ``into``, its patches are extended (see :func:`highlight_patches`)."""
    voxels = np.asarray(voxels, dtype=np.int64)
    out: dict[str, Patch] = {} if into is None else into
    for m, view in data.umap.items():
        pos = view.position[voxels]
        c = view.coords[pos[pos >= 0]]
        p = out.setdefault(ids.umap_graph(m), Patch())
        p["data"][2].update(x=typed_array(c[:, 0]), y=typed_array(c[:, 1]), z=typed_array(c[:, 2]))
    if data.flatmap is not None:
        fx, fy = _flat_xy(data, voxels)
        for m in ids.PAIR:
            p = out.setdefault(ids.flat_graph(m), Patch())
            p["data"][2].update(x=typed_array(fx), y=typed_array(fy))
    p = out.setdefault(ids.R_SCATTER, Patch())
    p["data"][2].update(x=typed_array(data.r["off"][voxels].astype(np.float32)),
                        y=typed_array(data.r["on"][voxels].astype(np.float32)))
    return out


def resolve_set(data: DashboardData, trigger: Any, value: Any, state: FilterState) -> np.ndarray | None:
    """The voxel set an event selects (None = keep the current set; empty array = clear it)."""
    if trigger == ids.CLEAR_SET:
        return np.zeros(0, dtype=np.int64)
    if trigger == ids.R_SCATTER_SET:
        return set_from_r_selection(data, value, state)
    for m in ids.PAIR:
        if trigger == ids.flat_set(m):
            return set_from_flat_selection(data, m, value, state)
    return None


# ---------------------------------------------------------------------------------------------- inspector
def _fmt(value: float, digits: int = 3) -> str:
    if value is None or not np.isfinite(value):
        return "–"
    if value != 0 and abs(value) < 10 ** -digits:
        return f"{value:.1e}"
    return f"{value:.{digits}f}"


def _bin_label(code: int) -> str:
    if code == -1:
        return "n.s."
    if code == -2:
        return "r < 0 (sig.)"
    return DEFAULT_BINS.labels[code]


def top_stimuli(predicted: np.ndarray, n: int = 5) -> np.ndarray:
    """Indices of the ``n`` test stimuli with the highest predicted response, highest first."""
    pred = np.asarray(predicted, dtype=np.float64)
    n = min(n, pred.size)
    top = np.argpartition(-pred, n - 1)[:n] if n else np.zeros(0, dtype=np.int64)
    return top[np.argsort(-pred[top], kind="stable")]


def neighbours(data: DashboardData, condition: str, voxel: int) -> list[tuple[int, float]]:
    """The voxel's nearest neighbours in the condition's RDM: [(voxel, correlation distance)], self excluded."""
    if condition not in data.knn or condition not in data.umap:
        return []
    emb, idx, dist = data.knn[condition]
    pos = int(data.umap[condition].position[voxel]) if condition in data.umap else -1
    if pos < 0:
        return []
    return [(int(emb[j]), float(d)) for j, d in zip(idx[pos], dist[pos]) if int(j) != pos]


def inspector_children(data: DashboardData, voxel: int | None) -> list:
    """The voxel inspector's contents for ``voxel`` (None = the empty-state hint)."""
    if voxel is None:
        return [html.P("Click a voxel in any view (UMAPs, flatmaps, the 3-D viewer, the r scatter, the neighbourhood "
                       "map, the table) or search for one by id or i,j,k.", className="hint")]
    v = int(voxel)
    res = data.results
    conds = data.conditions
    head = [html.H3(f"Voxel {v}")]
    facts = []
    if data.has_geometry:
        i, j, k = (int(c) for c in data.ijk[v])
        facts += [f"i,j,k {i},{j},{k}", "left hemisphere" if data.hemi[v] == 0 else "right hemisphere",
                  f"ROI {data.roi_names[data.roi[v]] if data.roi_names else data.roi[v]}"]
    if data.simulated:
        facts.append("SIMULATED data")
    head.append(html.P(" · ".join(facts), className="facts"))

    rows = [("r", lambda m: _fmt(data.r[m][v])), ("p", lambda m: _fmt(data.p[m][v], 4)),
            ("q (FDR)", lambda m: _fmt(data.q[m][v], 4)),
            ("bin", lambda m: _bin_label(int(data.stored_bins[m][v])))]
    if data.alpha:
        rows.append(("ridge alpha", lambda m: f"{float(data.alpha[m][v]):.3g}" if m in data.alpha else "–"))
    if data.cv:
        rows.append(("CV score", lambda m: _fmt(float(data.cv[m][v])) if m in data.cv else "–"))
    if data.ceiling:
        rows.append(("noise ceiling", lambda m: _fmt(float(data.ceiling[m][v])) if m in data.ceiling else "–"))
    table = html.Table([
        html.Thead(html.Tr([html.Th("")] + [html.Th(f"attention {m}") for m in conds])),
        html.Tbody([html.Tr([html.Th(name)] + [html.Td(fn(m)) for m in conds]) for name, fn in rows]),
    ], className="stats")
    delta = data.r["on"][v] - data.r["off"][v]
    extra = [html.P([html.B("Δr (on − off) "), _fmt(delta)], className="delta")]
    if data.jaccard is not None:
        emb, jac = data.jaccard
        where = np.flatnonzero(emb == v)
        if where.size:
            extra.append(html.P(f"neighbourhood overlap on vs off (Jaccard): {float(jac[where[0]]):.2f}"))
    emb_state = [f"attention {m}: " + ("in the UMAP" if m in data.umap and data.umap[m].position[v] >= 0
                                       else "not embedded (not significant in either condition)")
                 for m in ids.PAIR]
    extra.append(html.P(" · ".join(emb_state), className="facts"))

    children = head + [table] + extra
    if res.has_stage("encoding"):
        predicted = {m: res.predicted(m, v) for m in conds}
        fig = make_series_figure(res.measured(v), predicted, {m: float(data.r[m][v]) for m in conds}, voxel=v,
                                 run_id=data.run_id, simulated=data.simulated)
        children.append(dcc.Graph(id=ids.SERIES, figure=fig, config={"displaylogo": False}))
        if data.overlays is not None:
            children.append(html.H4("Test images that drive its predicted response most (attention map overlaid)"))
            for m in ids.PAIR:
                top = top_stimuli(predicted[m], 5)
                children.append(html.Div([html.Span(f"attention {m}", className="rowlabel")] + [
                    html.A(html.Img(src=data.pixel_url("overlay", int(s)),
                                    title=f"test image {int(s)}: predicted response {predicted[m][s]:.3f} "
                                          f"(attention {m}); click for the plain image",
                                    className="stim"), href=data.pixel_url("thumb", int(s)), target="_blank")
                    for s in top], className="stimrow"))
    for m in ids.PAIR:
        nb = neighbours(data, m, v)
        if not nb:
            continue
        links = [html.A(
            f"{n}" + (f" {data.roi_names[data.roi[n]]}" if data.has_geometry and data.roi_names else "")
            + f" ({d:.2f})", href=ids.voxel_href(n), className="nbr",
            title=f"voxel {n}, correlation distance {d:.3f} in the attention-{m} RDM") for n, d in nb]
        children.append(html.Div([html.Span(f"nearest neighbours, attention {m} (1 − r):", className="rowlabel"),
                                  *links], className="nbrs"))
    return children


# ---------------------------------------------------------------------------------------------- table
def table_rows(data: DashboardData, voxels: np.ndarray | None) -> list[dict]:
    """Rows of the voxel table: the selected set, or (no set) the voxels with the largest |Δr| among those
    significant in either condition; at most :data:`MAX_TABLE_ROWS`, sorted by Δr descending."""
    if voxels is None or len(voxels) == 0:
        sig = (data.stored_bins["off"] != -1) | (data.stored_bins["on"] != -1)
        cand = np.flatnonzero(sig)
        delta = np.abs(data.r["on"][cand] - data.r["off"][cand])
        voxels = cand[np.argsort(-delta, kind="stable")[:MAX_TABLE_ROWS]]
    voxels = np.asarray(voxels, dtype=np.int64)
    delta = data.r["on"][voxels] - data.r["off"][voxels]
    voxels = voxels[np.argsort(-delta, kind="stable")][:MAX_TABLE_ROWS]
    rows = []
    for v in voxels.tolist():
        row = {"voxel": v, "roi": "", "hemi": "", "r_off": float(data.r["off"][v]), "r_on": float(data.r["on"][v]),
               "delta_r": float(data.r["on"][v] - data.r["off"][v]),
               "bin_off": _bin_label(int(data.stored_bins["off"][v])),
               "bin_on": _bin_label(int(data.stored_bins["on"][v]))}
        if data.has_geometry:
            row.update(roi=data.roi_names[data.roi[v]] if data.roi_names else str(data.roi[v]),
                       hemi="L" if data.hemi[v] == 0 else "R")
        rows.append(row)
    return rows


TABLE_COLUMNS = (("voxel", "voxel"), ("roi", "ROI"), ("hemi", "hemi"), ("r_off", "r off"), ("r_on", "r on"),
                 ("delta_r", "Δr"), ("bin_off", "bin off"), ("bin_on", "bin on"))


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


# ---------------------------------------------------------------------------------------------- registration
def _filter_inputs() -> list[Input]:
    return [Input(ids.RULE, "value"), Input(ids.BINS, "value"), Input(ids.ROIS, "value"), Input(ids.HEMIS, "value"),
            Input(ids.THRESHOLD, "value"), Input(ids.NS_MODE, "value")]


def _filter_states() -> list[State]:
    return [State(i.component_id, i.component_property) for i in _filter_inputs()]


def register_callbacks(app, data: DashboardData) -> None:
    """Register the server and clientside callbacks of the layout built by ``layout.make_layout(data)``."""
    patch_ids = [ids.umap_graph(m) for m in data.umap] + \
        ([ids.flat_graph(m) for m in ids.PAIR] if data.flatmap is not None else []) + [ids.R_SCATTER] + \
        ([ids.JACCARD_MAP] if data.jaccard_map is not None else [])
    figure_outputs = [Output(g, "figure", allow_duplicate=True) for g in patch_ids]
    select_outputs = [Output(ids.SELECTED, "data"), Output(ids.SEARCH_MSG, "children")] + figure_outputs

    def selection_result(voxel, message):
        if voxel is None and message is None:
            raise PreventUpdate
        if voxel is None:
            return [no_update, message] + [no_update] * len(patch_ids)
        patches = highlight_patches(data, voxel)
        return [voxel, message if message is not None else ""] + [patches.get(g, no_update) for g in patch_ids]

    select_inputs = [Input(ids.umap_graph(m), "clickData") for m in data.umap]
    if data.flatmap is not None:
        select_inputs += [Input(ids.flat_click(m), "data") for m in ids.PAIR]
    if data.jaccard_map is not None:
        select_inputs.append(Input(ids.JACCARD_MAP, "clickData"))
    select_inputs += [Input(ids.R_SCATTER, "clickData"), Input(ids.SEARCH, "n_submit"),
                      Input(ids.SEARCH_GO, "n_clicks"), Input(ids.VIEWER_PICK, "data"), Input(ids.URL, "hash")]

    # Runs at page load too, so a URL with #voxel=<row> opens with that voxel selected. The URL hash is an
    # input and an output: every selection is written there (links to the same voxel work again, and the
    # browser's back button steps through selections); Dash does not re-trigger a callback by its own output.
    @app.callback(select_outputs + [Output(ids.URL, "hash")], select_inputs + [State(ids.SEARCH, "value")],
                  prevent_initial_call="initial_duplicate")
    def on_select(*args):
        trigger = ctx.triggered_id
        if trigger is None:                               # page load
            trigger, value = ids.URL, args[-2]
        else:
            value = ctx.triggered[0]["value"]
        voxel, message = resolve_selection(data, trigger, value, args[-1])
        return selection_result(voxel, message) + [no_update if voxel is None else ids.voxel_href(voxel)]

    @app.callback([Output(ids.FILTER_MSG, "children")] + figure_outputs, _filter_inputs(),
                  prevent_initial_call=True)
    def on_filters(rule, bins, rois, hemis, threshold, ns):
        patches, message = filter_patches(data, FilterState.from_controls(rule, bins, rois, hemis, threshold, ns))
        return [message] + [patches.get(g, no_update) for g in patch_ids]

    set_inputs = [Input(ids.R_SCATTER_SET, "data"), Input(ids.CLEAR_SET, "n_clicks")]
    if data.flatmap is not None:
        set_inputs += [Input(ids.flat_set(m), "data") for m in ids.PAIR]

    @app.callback([Output(ids.SELECTED_SET, "data"), Output(ids.SET_MSG, "children")] + figure_outputs,
                  set_inputs + _filter_states(), prevent_initial_call=True)
    def on_set(*args):
        state = FilterState.from_controls(*args[-6:])
        value = ctx.triggered[0]["value"] if ctx.triggered else None
        voxels = resolve_set(data, ctx.triggered_id, value, state)
        if voxels is None:
            raise PreventUpdate
        patches = set_patches(data, voxels)
        message = f"{voxels.size:,} voxels in the selected set" if voxels.size else "no set selected"
        return [voxels.tolist(), message] + [patches.get(g, no_update) for g in patch_ids]

    @app.callback(Output(ids.INSPECTOR, "children"), Input(ids.SELECTED, "data"))
    def on_inspect(voxel):
        return inspector_children(data, voxel if isinstance(voxel, int) else None)

    @app.callback(Output(ids.TABLE, "children"), Input(ids.SELECTED_SET, "data"))
    def on_table(voxels):
        return table_markdown(table_rows(data, np.asarray(voxels, dtype=np.int64) if voxels else None))

    if data.viewer_dir is not None:
        @app.callback(Output(ids.VIEWER_FRAME, "src"), Input(ids.VIEWER_LOAD, "n_clicks"), prevent_initial_call=True)
        def on_load_viewer(_n):
            return data.viewer_url

    # Clientside: camera link, selection outlines (points stripped: a lasso over 80k points would otherwise
    # post every point to the server), and the viewer bridge. See assets/attnbrain.js.
    app.clientside_callback(ClientsideFunction("attnbrain", "syncCamera"), Output(ids.CAMERA_SINK, "data"),
                            [Input(ids.umap_graph(m), "relayoutData") for m in ids.PAIR]
                            + [Input(ids.CAMERA_LINK, "value")], prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction("attnbrain", "selectionOutline"), Output(ids.R_SCATTER_SET, "data"),
                            Input(ids.R_SCATTER, "selectedData"), prevent_initial_call=True)
    if data.flatmap is not None:
        for m in ids.PAIR:
            app.clientside_callback(ClientsideFunction("attnbrain", "selectionOutline"),
                                    Output(ids.flat_set(m), "data"), Input(ids.flat_graph(m), "selectedData"),
                                    prevent_initial_call=True)
    from .presenting import register_scene_callbacks
    register_scene_callbacks(app, data, patch_ids)
    if data.viewer_dir is not None:
        app.clientside_callback(ClientsideFunction("attnbrain", "viewerSync"), Output(ids.VIEWER_SINK, "data"),
                                [Input(ids.VIEWER_COND, "value"), Input(ids.VIEWER_VIEW, "value"),
                                 Input(ids.SELECTED, "data")])
