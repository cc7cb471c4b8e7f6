"""The dashboard's callbacks as plain functions, then the registered ones through Dash's HTTP endpoint.

Expected voxels, colours and sets come from independent computations (the results table, brute-force
point-in-polygon tests, the stored arrays), never from the functions under test.
"""
from __future__ import annotations

import base64
import json

import numpy as np
import plotly.io.json as pj
import pytest

from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from core.vocabulary import PAIR
from dashboard import ids
from dashboard.app import create_app
from dashboard.data import DashboardData, FilterState
from dashboard.filters import filter_patches
from dashboard.flatmaps import set_from_flat_selection, voxel_from_flat_click
from dashboard.inspector import inspector_children, neighbours, top_stimuli
from dashboard.r_scatter import set_from_r_selection, voxel_from_r_click
from dashboard.selection import (
    highlight_patches, parse_voxel_query, resolve_selection, resolve_set, set_patches, voxel_from_hash,
)
from dashboard.summary_plots import make_jaccard_map_figure, voxel_from_jaccard_click
from dashboard.umap_view import UMAP_CODE, voxel_from_umap_click
from dashboard.viewer_bridge import voxel_from_pick
from dashboard.voxel_table import MAX_TABLE_ROWS, table_markdown, table_rows


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=600, n_test=120, k=8, seed=5,
                                 flatmap_height=96)
    return create_app(open_results(out))


@pytest.fixture(scope="module")
def data(app) -> DashboardData:
    return app.attnbrain_data


@pytest.fixture(scope="module")
def table(data):
    return data.results.table


def _ops(patch) -> list[dict]:
    """A Patch as Dash sends it: its list of operations, JSON round-tripped."""
    return json.loads(pj.to_json_plotly(patch.to_plotly_json()))["operations"]


def _merged(patch) -> dict:
    (op,) = _ops(patch)
    assert op["operation"] == "Merge"
    return op["params"]["value"]


def _decode(spec, dtype):
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(dtype).newbyteorder("<"))


def _inside(poly, x, y) -> bool:
    """Ray-casting point-in-polygon (independent of matplotlib)."""
    inside = False
    n = len(poly)
    for a in range(n):
        (x0, y0), (x1, y1) = poly[a], poly[(a + 1) % n]
        if (y0 > y) != (y1 > y) and x < x0 + (y - y0) * (x1 - x0) / (y1 - y0):
            inside = not inside
    return inside


def _text(children) -> str:
    """All text in a tree of Dash components."""
    if children is None:
        return ""
    if isinstance(children, (str, int, float)):
        return str(children)
    if isinstance(children, (list, tuple)):
        return " ".join(_text(c) for c in children)
    return _text(getattr(children, "children", None))


def _find_all(children, predicate) -> list:
    """Components matching ``predicate``, in document order."""
    if isinstance(children, (list, tuple)):
        return [hit for child in children for hit in _find_all(child, predicate)]
    if children is None or isinstance(children, (str, int, float)):
        return []
    return ([children] if predicate(children) else []) + _find_all(getattr(children, "children", None), predicate)


# ---------------------------------------------------------------------------------------------- clicks
def test_umap_click_maps_point_number_through_the_embedded_index(data, rng):
    for m in PAIR:
        voxels, _ = data.results.umap(m)
        for n in rng.choice(voxels.size, 10, replace=False):
            click = {"points": [{"curveNumber": 0, "pointNumber": int(n)}]}
            assert voxel_from_umap_click(data, m, click) == voxels[n]
        assert voxel_from_umap_click(data, m, {"points": [{"curveNumber": 1, "pointNumber": 0}]}) is None
        assert voxel_from_umap_click(data, m, {"points": [{"curveNumber": 0, "pointNumber": voxels.size}]}) is None
        assert voxel_from_umap_click(data, m, None) is None


def test_r_scatter_click_and_viewer_pick(data):
    assert voxel_from_r_click(data, {"points": [{"curveNumber": 0, "pointNumber": 17}]}) == 17
    assert voxel_from_r_click(data, {"points": [{"curveNumber": 0, "pointIndex": 18}]}) == 18
    assert voxel_from_r_click(data, {"points": [{"curveNumber": 2, "pointNumber": 1}]}) is None
    assert voxel_from_pick(data, {"voxel": 42, "hemi": "L"}) == 42
    assert voxel_from_pick(data, {"voxel": 42.0}) == 42
    for bad in ({"voxel": True}, {"voxel": "3"}, {"voxel": 4.5}, {"voxel": data.n_voxels}, {"voxel": -1}, None, []):
        assert voxel_from_pick(data, bad) is None


def test_flatmap_click_finds_the_voxel_owning_the_pixel(data, rng):
    lookup = np.asarray(data.flatmap.lookup)
    h = lookup.shape[0]
    rows, cols = np.nonzero(lookup >= 0)
    for i in rng.choice(rows.size, 30, replace=False):
        r, c = rows[i], cols[i]
        # A click anywhere inside the pixel (within half a pixel of its centre) finds its voxel.
        dx, dy = rng.uniform(-0.45, 0.45, 2)
        assert voxel_from_flat_click(data, {"x": c + dx, "y": h - 1 - r + dy}) == lookup[r, c]
    empty_r, empty_c = np.argwhere(lookup < 0)[0]
    assert voxel_from_flat_click(data, {"x": float(empty_c), "y": float(h - 1 - empty_r)}) is None
    assert voxel_from_flat_click(data, {"x": -10, "y": 5}) is None
    assert voxel_from_flat_click(data, {"x": "nan", "y": 5}) is None
    assert voxel_from_flat_click(data, {"y": 5}) is None


def test_jaccard_map_click_selects_the_voxel_drawn_under_the_cursor(data, rng):
    view = data.jaccard_map
    # What the browser draws: trace g's point n carries voxel customdata[n] and colour marker.color[n].
    sent = json.loads(pj.to_json_plotly(make_jaccard_map_figure(view, run_id="r", simulated=True)))
    rsa = data.results.stage("rsa").arrays
    stored = dict(zip(np.asarray(rsa["voxels_on"]).tolist(), np.asarray(rsa["knn_jaccard"]).tolist()))
    for g in range(len(view.names)):
        drawn = _decode(sent["data"][g]["customdata"], "i4")
        colour = _decode(sent["data"][g]["marker"]["color"], "f4")
        for n in rng.choice(drawn.size, min(5, drawn.size), replace=False):
            v = voxel_from_jaccard_click(data, {"points": [{"curveNumber": g, "pointNumber": int(n)}]})
            assert v == drawn[n]
            assert colour[n] == np.float32(stored[v])       # the voxel clicked has the Jaccard shown there
            assert resolve_selection(data, ids.JACCARD_MAP,
                                     {"points": [{"curveNumber": g, "pointIndex": int(n)}]}) == (v, None)
    last = len(view.names) - 1
    n_last = int(view.starts[-1] - view.starts[-2])
    for bad in ({"points": [{"curveNumber": view.highlight_trace, "pointNumber": 0}]},   # the highlight ring
                {"points": [{"curveNumber": last, "pointNumber": n_last}]}, {"points": []}, None,
                {"points": [{"curveNumber": 0, "pointNumber": "3"}]}):
        assert voxel_from_jaccard_click(data, bad) is None


def test_search_accepts_ids_and_ijk(data, table):
    assert parse_voxel_query(data, "17") == (17, "voxel 17")
    assert parse_voxel_query(data, " #17 ")[0] == 17
    v = 123
    i, j, k = (int(table[c][v]) for c in "ijk")
    for text in (f"{i},{j},{k}", f"{i} {j} {k}", f"{i}; {j}; {k}"):
        assert parse_voxel_query(data, text)[0] == v
    voxel, msg = parse_voxel_query(data, str(data.n_voxels))
    assert voxel is None and f"0 to {data.n_voxels - 1}" in msg
    voxel, msg = parse_voxel_query(data, "999,999,999")
    assert voxel is None and "no voxel at i,j,k" in msg
    voxel, msg = parse_voxel_query(data, "FFA")
    assert voxel is None and "expected a voxel id" in msg
    assert parse_voxel_query(data, "  ") == (None, "")


def test_resolve_selection_dispatches_on_the_trigger(data):
    voxels, _ = data.results.umap("on")
    click = {"points": [{"curveNumber": 0, "pointNumber": 3}]}
    assert resolve_selection(data, ids.umap_graph("on"), click) == (voxels[3], None)
    assert resolve_selection(data, ids.R_SCATTER, click) == (3, None)
    assert resolve_selection(data, ids.VIEWER_PICK, {"voxel": 9}) == (9, None)
    assert resolve_selection(data, ids.SEARCH, 1, "12") == (12, "voxel 12")
    assert resolve_selection(data, ids.URL, ids.voxel_href(5)) == (5, None)
    assert resolve_selection(data, ids.URL, "") == (None, None)
    assert voxel_from_hash(data, "#voxel=7") == 7 and voxel_from_hash(data, "voxel=7") == 7
    for bad in ("#voxel=", "#voxel=-1", f"#voxel={data.n_voxels}", "#v=3", "#voxel=3&x", None):
        assert voxel_from_hash(data, bad) is None, bad
    assert resolve_selection(data, ids.flat_click("off"), {"x": -50, "y": -50}) == (
        None, "no voxel under that point of the flatmap")


# ---------------------------------------------------------------------------------------------- highlight
def test_highlight_moves_the_one_point_trace_of_every_view(data, table):
    both = np.intersect1d(data.results.umap("off")[0], data.results.umap("on")[0])
    v = int(both[len(both) // 2])
    patches = highlight_patches(data, v)
    assert set(patches) == {ids.umap_graph("off"), ids.umap_graph("on"), ids.flat_graph("off"),
                            ids.flat_graph("on"), ids.R_SCATTER, ids.JACCARD_MAP}
    for m in PAIR:
        voxels, coords = data.results.umap(m)
        (pos,) = np.flatnonzero(voxels == v)
        (op,) = _ops(patches[ids.umap_graph(m)])
        assert op["location"] == ["data", 1]
        got = np.array([op["params"]["value"][a][0] for a in "xyz"], dtype=float)
        # uint16 quantisation of the float coordinates: within half a step of the stored UMAP position.
        span = (coords.max(0) - coords.min(0)).max()
        np.testing.assert_allclose(got / 65535 * span + coords.min(0), coords[pos], atol=span / 65535 / 2 + 1e-6)
    rows, cols = np.nonzero(np.asarray(data.flatmap.lookup) == v)
    flat = _merged(patches[ids.flat_graph("on")])
    if rows.size:
        assert flat["x"] == [pytest.approx(cols.mean(), abs=0.01)]
        assert flat["y"] == [pytest.approx(data.flatmap.height - 1 - rows.mean(), abs=0.01)]
    r = _merged(patches[ids.R_SCATTER])
    assert r == {"x": [pytest.approx(table.r_off[v], abs=1e-4)], "y": [pytest.approx(table.r_on[v], abs=1e-4)]}
    # The neighbourhood map: only its one-point trace (after the ROI traces) moves, to the voxel's flat position.
    jm = data.jaccard_map
    (op,) = _ops(patches[ids.JACCARD_MAP])
    assert op["location"] == ["data", jm.highlight_trace]
    (pos,) = np.flatnonzero(jm.voxels == v)
    assert op["params"]["value"] == {"x": [int(jm.coords[pos, 0])], "y": [int(jm.coords[pos, 1])]}
    # Click budget: the whole highlight is a few hundred bytes, never the big traces.
    assert sum(len(json.dumps(_ops(p))) for p in patches.values()) < 2000


def test_highlight_empties_views_that_do_not_hold_the_voxel(data):
    not_embedded = np.setdiff1d(np.arange(data.n_voxels), data.results.umap("off")[0])
    v = int(not_embedded[0])
    patches = highlight_patches(data, v)
    assert _merged(patches[ids.umap_graph("off")]) == {"x": [], "y": [], "z": []}
    if data.jaccard_map.position[v] < 0:
        assert _merged(patches[ids.JACCARD_MAP]) == {"x": [], "y": []}
    empty = highlight_patches(data, None)
    assert _merged(empty[ids.R_SCATTER]) == {"x": [], "y": []}
    assert _merged(empty[ids.JACCARD_MAP]) == {"x": [], "y": []}


# ---------------------------------------------------------------------------------------------- filters
@pytest.mark.parametrize("state", [
    FilterState(ns="hidden"),
    FilterState(rule="q", threshold=0.3),
    FilterState(rois=("V1", "FFA"), hemis=("R",), bins=(1, 2, 3)),
])
def test_filters_recolour_by_colour_arrays_only(data, table, state):
    patches, message = filter_patches(data, state)
    for m in PAIR:
        voxels, _ = data.results.umap(m)
        op, size_op = _ops(patches[ids.umap_graph(m)])
        assert op["location"] == ["data", 0, "marker", "color"]
        assert size_op["location"] == ["data", 0, "marker", "size"]
        codes = _decode(op["params"]["value"], "u1")
        # Reference from the table: significant under the rule, in a shown bin, ROI, hemisphere, |r| >= thr.
        sig = table[f"{state.rule}_{m}"].to_numpy() <= data.level
        r = table[f"r_{m}"].to_numpy()
        edges = np.asarray(data.bin_scheme.edges)
        bins = np.where(sig, np.where(r < edges[0], -2, np.searchsorted(edges, r, side="right") - 1), -1)
        shown = sig & np.isin(bins, state.bins) & (np.abs(r) >= state.threshold) & table.hemi.isin(state.hemis)
        if state.rois:
            shown &= table.roi.isin(state.rois)
        expected = np.where(shown, np.where(bins == -2, UMAP_CODE["negative"], bins + UMAP_CODE["bin0"]),
                            UMAP_CODE["faint"] if state.ns == "faint" else UMAP_CODE["hidden"])
        np.testing.assert_array_equal(codes, expected[voxels])
        if state.ns == "hidden":        # hidden points are also size 0 (out of plotly's pick buffer)
            sizes = _decode(size_op["params"]["value"], "u1")
            np.testing.assert_array_equal(sizes == 0, expected[voxels] == UMAP_CODE["hidden"])
            assert set(sizes[sizes > 0].tolist()) == {4}
        else:
            assert size_op["params"]["value"] == 4
        assert f"{int(shown.sum()):,} voxels shown with attention {m}" in message
        (op,) = _ops(patches[ids.flat_graph(m)])
        assert op["location"] == ["layout", "images", 1, "source"]
        from urllib.parse import parse_qsl, urlsplit
        assert FilterState.from_query(dict(parse_qsl(urlsplit(op["params"]["value"]).query))) == state
    (op,) = _ops(patches[ids.R_SCATTER])
    assert op["location"] == ["data", 0, "marker", "color"]


# ---------------------------------------------------------------------------------------------- sets
def test_lasso_on_the_r_scatter_selects_the_points_inside(data, table):
    poly = [(0.15, 0.1), (0.6, 0.2), (0.55, 0.7), (0.2, 0.5)]
    sel = {"lassoPoints": {"x": [p[0] for p in poly], "y": [p[1] for p in poly]}}
    state = FilterState()
    got = set_from_r_selection(data, sel, state)
    expected = [v for v in range(data.n_voxels) if _inside(poly, table.r_off[v], table.r_on[v])]
    np.testing.assert_array_equal(got, expected)
    assert len(expected) > 20
    # Hidden points cannot be selected.
    hidden = set_from_r_selection(data, sel, FilterState(ns="hidden"))
    vis = data.visible("off", state) | data.visible("on", state)
    np.testing.assert_array_equal(hidden, [v for v in expected if vis[v]])
    box = set_from_r_selection(data, {"range": {"x": [0.5, 0.2], "y": [0.1, 0.6]}}, state)
    np.testing.assert_array_equal(box, np.flatnonzero((table.r_off.between(0.2, 0.5) & table.r_on.between(0.1, 0.6))
                                                      .to_numpy()))
    assert set_from_r_selection(data, {"n": 3}, state).size == 0        # deselect: clears the set
    assert set_from_r_selection(data, None, state) is None               # nothing happened: keep it


def test_lasso_on_a_flatmap_selects_the_voxels_of_the_pixels_inside(data):
    fm = data.flatmap
    lookup = np.asarray(fm.lookup)
    poly = [(5.0, 10.0), (fm.width * 0.4, 8.0), (fm.width * 0.35, fm.height * 0.8), (12.0, fm.height * 0.6)]
    sel = {"lassoPoints": {"x": [p[0] for p in poly], "y": [p[1] for p in poly]}}
    got = set_from_flat_selection(data, "off", sel, FilterState())
    expected = set()
    for r in range(fm.height):
        for c in range(fm.width):
            if lookup[r, c] >= 0 and _inside(poly, c, fm.height - 1 - r):
                expected.add(int(lookup[r, c]))
    np.testing.assert_array_equal(got, sorted(expected))
    hidden = set_from_flat_selection(data, "off", sel, FilterState(ns="hidden"))
    vis = data.visible("off", FilterState())
    np.testing.assert_array_equal(hidden, [v for v in sorted(expected) if vis[v]])
    assert resolve_set(data, ids.CLEAR_SET, 1, FilterState()).size == 0


def test_set_patches_draw_the_set_in_every_view(data):
    voxels = np.arange(0, data.n_voxels, 7)
    patches = set_patches(data, voxels)
    for m in PAIR:
        emb, _ = data.results.umap(m)
        value = _merged(patches[ids.umap_graph(m)])
        inside = np.isin(voxels, emb)
        assert _decode(value["x"], "u2").size == inside.sum()
        pos = data.umap[m].position[voxels[inside]]
        np.testing.assert_array_equal(_decode(value["z"], "u2"), data.umap[m].coords[pos, 2])
    r = _merged(patches[ids.R_SCATTER])
    np.testing.assert_array_equal(_decode(r["y"], "f4"), data.r["on"][voxels].astype(np.float32))
    flat = _merged(patches[ids.flat_graph("on")])
    assert _decode(flat["x"], "f4").size == np.isfinite(data.flatmap.centre[voxels, 0]).sum()


# ---------------------------------------------------------------------------------------------- inspector
def test_inspector_shows_the_voxel_its_series_stimuli_and_neighbours(data, table):
    emb = data.results.umap("on")[0]
    v = int(emb[0])
    children = inspector_children(data, v)
    text = _text(children)
    assert f"Voxel {v}" in text
    assert f"ROI {table.roi[v]}" in text and f"i,j,k {table.i[v]},{table.j[v]},{table.k[v]}" in text
    for m in ("off", "on", "uniform"):
        assert f"{table[f'r_{m}'][v]:.3f}" in text
    assert f"{table.r_on[v] - table.r_off[v]:.3f}" in text
    assert "SIMULATED" in text
    (graph,) = _find_all(children, lambda c: getattr(c, "id", None) == ids.SERIES)
    meas = data.results.measured(v).astype(np.float64)
    np.testing.assert_allclose(graph.figure.data[0].y, (meas - meas.mean()) / meas.std(), rtol=1e-4, atol=1e-5)
    imgs = _find_all(children, lambda c: type(c).__name__ == "Img")
    for m, row in zip(PAIR, (imgs[:5], imgs[5:10])):
        pred = data.results.predicted(m, v)
        ranked = np.argsort(-pred, kind="stable")[:5]
        assert [img.src for img in row] == [data.pixel_url("overlay", int(s)) for s in ranked]
    links = _find_all(children, lambda c: type(c).__name__ == "A" and "nbr" in getattr(c, "className", ""))
    voxels, idx, dist = data.results.knn("on")
    (pos,) = np.flatnonzero(voxels == v)
    on_links = [a.href for a in links if "attention-on" in a.title]
    assert on_links == [ids.voxel_href(int(voxels[j])) for j in idx[pos] if j != pos]
    assert f"{dist[pos][1]:.2f}" in _text(links)
    assert _text(inspector_children(data, None)).startswith("Click a voxel")


def test_top_stimuli_and_neighbours_helpers(data, rng):
    pred = rng.normal(size=50)
    np.testing.assert_array_equal(top_stimuli(pred, 4), np.argsort(-pred)[:4])
    not_embedded = np.setdiff1d(np.arange(data.n_voxels), data.results.umap("off")[0])[0]
    assert neighbours(data, "off", int(not_embedded)) == []


def test_table_rows(data, table):
    rows = table_rows(data, np.array([5, 50, 500]))
    delta = table.r_on - table.r_off
    assert [r["voxel"] for r in rows] == sorted([5, 50, 500], key=lambda v: -delta[v])
    assert rows[0]["roi"] == table.roi[rows[0]["voxel"]] and rows[0]["r_on"] == table.r_on[rows[0]["voxel"]]
    default = table_rows(data, None)
    sig = (table.bin_off != -1) | (table.bin_on != -1)
    top = delta[sig].abs().sort_values(ascending=False, kind="stable").index[:MAX_TABLE_ROWS]
    assert sorted(r["voxel"] for r in default) == sorted(top)
    md = table_markdown(rows).splitlines()
    assert len(md) == 2 + len(rows)
    for line, row in zip(md[2:], rows):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[0] == f"[{row['voxel']}]({ids.voxel_href(row['voxel'])})"
        assert cells[5] == f"{row['delta_r']:+.3f}"


# ---------------------------------------------------------------------------------------------- over HTTP
def test_registered_callbacks_answer_over_http(app, data):
    from bench.dashboard import callback_request, post_callback
    client = app.server.test_client()
    voxels, _ = data.results.umap("off")
    click = {"points": [{"curveNumber": 0, "pointNumber": 4}]}
    body = callback_request(app, f"{ids.SELECTED}.data", {f"{ids.umap_graph('off')}.clickData": click},
                            [f"{ids.umap_graph('off')}.clickData"])
    out, nbytes, _ = post_callback(client, body)
    resp = out["response"]
    assert resp[ids.SELECTED]["data"] == voxels[4]
    assert resp[ids.umap_graph("on")]["figure"]["__dash_patch_update"]
    assert nbytes < 2000
    body = callback_request(app, f"{ids.FILTER_MSG}.children",
                            {f"{ids.RULE}.value": "q", f"{ids.BINS}.value": [0, 1, 2, 3], f"{ids.ROIS}.value": [],
                             f"{ids.HEMIS}.value": ["L", "R"], f"{ids.THRESHOLD}.value": 0.2,
                             f"{ids.NS_MODE}.value": "faint"}, [f"{ids.RULE}.value"])
    out, _, _ = post_callback(client, body)
    assert "FDR q" in out["response"][ids.FILTER_MSG]["children"]
    # Page load with #voxel=<row> in the URL: the initial call (nothing changed yet) selects it.
    body = callback_request(app, f"{ids.SELECTED}.data", {f"{ids.URL}.hash": ids.voxel_href(12)}, [])
    out, _, _ = post_callback(client, body)
    assert out["response"][ids.SELECTED]["data"] == 12
    # A selection writes the URL hash, so the same link works again after another selection.
    body = callback_request(app, f"{ids.SELECTED}.data", {f"{ids.R_SCATTER}.clickData": click},
                            [f"{ids.R_SCATTER}.clickData"])
    out, _, _ = post_callback(client, body)
    assert out["response"][ids.URL]["hash"] == ids.voxel_href(4)
    # A click on the neighbourhood map selects the voxel of that point and moves every highlight there.
    jm = data.jaccard_map
    click = {"points": [{"curveNumber": 1, "pointNumber": 2}]}
    body = callback_request(app, f"{ids.SELECTED}.data", {f"{ids.JACCARD_MAP}.clickData": click},
                            [f"{ids.JACCARD_MAP}.clickData"])
    out, nbytes, _ = post_callback(client, body)
    v = int(jm.voxels[jm.starts[1] + 2])
    assert out["response"][ids.SELECTED]["data"] == v and out["response"][ids.URL]["hash"] == ids.voxel_href(v)
    assert out["response"][ids.JACCARD_MAP]["figure"]["__dash_patch_update"]
    assert nbytes < 2000
    # A click on nothing selects nothing: Dash answers "no update" (204).
    body = callback_request(app, f"{ids.SELECTED}.data", {f"{ids.R_SCATTER}.clickData": None},
                            [f"{ids.R_SCATTER}.clickData"])
    assert client.post("/_dash-update-component", json=body).status_code == 204
