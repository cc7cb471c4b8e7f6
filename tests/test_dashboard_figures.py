"""Figure builders, colour codes and the run data of the dashboard, checked against brute-force references.

Runs on a small synthetic results folder (core.testing.synthetic); no browser, no server.
"""
from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from core._validation import InputError
from core.outputs.reader import open_results
from core.testing.synthetic import SYNTHETIC_ROI_NAMES, make_synthetic_results
from core.vocabulary import ADDS_RGBA, BIN_COLOURS_RGBA, CEILING_RGBA, NEGATIVE_RGBA, NS_RGBA, OUTCOME_RGBA, rgba_css, rgba_hex
from dashboard.data import DashboardData, FilterState, jaccard_map_view
from dashboard.flatmaps import VEIL_RGBA, flatmap_filter_layer, make_flatmap_figure
from dashboard.inspector import make_series_figure
from dashboard.plotting import provenance, quantise_coords, quantise_xy, typed_array
from dashboard.r_scatter import R_CODE, R_COLOURS, make_r_scatter_figure, r_scatter_codes
from dashboard.summary_plots import (
    JACCARD_COLORSCALE, make_agreement_figure, make_bin_counts_figure, make_jaccard_figure, make_jaccard_map_figure,
    make_roi_means_figure, make_roi_rdm_figure,
)
from dashboard.umap_view import (
    EYE_DISTANCE, FIT_RADIUS, UMAP_CODE, UMAP_COLOURS, make_umap_figure, opening_camera, projected_cover, scene_fit,
    umap_colour_codes,
)


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    # n_test = 120 puts significant voxels into several bins (r >= ~0.23 is significant at p <= 0.01).
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=600, n_test=120, k=8, seed=3,
                                 flatmap_height=96)
    return open_results(out)


@pytest.fixture(scope="module")
def data(results):
    return DashboardData(results)


def _decode(spec, dtype):
    """Decode a plotly typed-array spec the way plotly.js does (base64, little-endian)."""
    assert set(spec) == {"dtype", "bdata"}
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(dtype).newbyteorder("<"))


# ---------------------------------------------------------------------------------------------- encodings
def test_quantise_coords_error_is_half_a_step_and_keeps_shape(rng):
    coords = rng.normal(0, [3.0, 1.0, 0.2], (500, 3))
    q = quantise_coords(coords)
    assert q.dtype == np.uint16 and q.shape == (500, 3)
    lo = coords.min(0)
    span = (coords.max(0) - lo).max()
    back = q.astype(np.float64) / 65535 * span + lo
    # Rounding to the nearest of 65536 levels: at most half a level off (plus float64 rounding noise).
    assert np.abs(back - coords).max() <= span / 65535 / 2 + 1e-12
    # One scale for all axes: the narrow z axis must not be stretched to the full 0..65535 range.
    assert q[:, 2].max() < 0.2 * 65535
    assert q[:, 0].max() == 65535 or q[:, 1].max() == 65535
    with pytest.raises(ValueError, match="shape"):
        quantise_coords(coords[:, :2])


def test_typed_array_round_trips_and_rejects_int64(rng):
    for dtype in (np.uint8, np.uint16, np.int16, np.float32):
        arr = (rng.random(37) * 100).astype(dtype)
        spec = typed_array(arr)
        assert spec["dtype"] == np.dtype(dtype).str[1:]
        np.testing.assert_array_equal(_decode(spec, dtype), arr)
    with pytest.raises(TypeError, match="int64"):
        typed_array(np.arange(3, dtype=np.int64))


def test_umap_colour_codes_match_the_palette_voxel_by_voxel(rng):
    bins = rng.integers(-2, 4, 400).astype(np.int8)
    visible = rng.random(400) < 0.6
    for ns in ("faint", "hidden"):
        codes = umap_colour_codes(bins, visible, ns)
        for b, v, c in zip(bins, visible, codes):
            if v and b >= 0:
                expected = rgba_hex(BIN_COLOURS_RGBA[b])
            elif v and b == -2:
                expected = rgba_hex(NEGATIVE_RGBA)
            else:
                expected = rgba_css(NS_RGBA) if ns == "faint" else "rgba(0,0,0,0)"
            assert UMAP_COLOURS[c] == expected
    assert UMAP_CODE["bin0"] + 3 == UMAP_CODE["outcome0"] - 1
    # Coloured by a contrast, shown voxels take their outcome's colour whatever their bin; the others as before.
    outcome = rng.integers(-1, 2, 400).astype(np.int8)
    codes = umap_colour_codes(bins, visible, "faint", outcome)
    for b, v, o, c in zip(bins, visible, outcome, codes):
        expected = rgba_hex(OUTCOME_RGBA[int(o)]) if v and b != -1 else rgba_css(NS_RGBA)
        assert UMAP_COLOURS[c] == expected
    assert UMAP_CODE["outcome0"] + 3 == UMAP_CODE["ceiling0"]
    # Coloured by r / noise ceiling: shown voxels with a reliable ceiling take their step's colour.
    ceiling = rng.integers(-1, 5, 400).astype(np.int8)
    codes = umap_colour_codes(bins, visible, "hidden", ceiling=ceiling)
    for b, v, k, c in zip(bins, visible, ceiling, codes):
        expected = rgba_hex(CEILING_RGBA[k]) if v and b != -1 and k >= 0 else "rgba(0,0,0,0)"
        assert UMAP_COLOURS[c] == expected
    assert UMAP_CODE["ceiling0"] + len(CEILING_RGBA) == UMAP_CODE["adds0"]
    # Coloured by what attention adds: the same path with its own first code.
    adds = rng.integers(-1, 4, 400).astype(np.int8)
    codes = umap_colour_codes(bins, visible, "hidden", ceiling=adds, first=UMAP_CODE["adds0"])
    for b, v, k, c in zip(bins, visible, adds, codes):
        assert UMAP_COLOURS[c] == (rgba_hex(ADDS_RGBA[k]) if v and b != -1 and k >= 0 else "rgba(0,0,0,0)")
    assert UMAP_CODE["adds0"] + len(ADDS_RGBA) == len(UMAP_COLOURS)


def test_r_scatter_codes_brute_force(rng):
    off, on = rng.random(300) < 0.5, rng.random(300) < 0.4
    codes = r_scatter_codes(off, on, "hidden")
    for a, b, c in zip(off, on, codes):
        want = "both" if a and b else "off" if a else "on" if b else "hidden"
        assert c == R_CODE[want]
    assert len(R_COLOURS) == len(R_CODE)
    assert (r_scatter_codes(off, on, "faint")[~off & ~on] == R_CODE["faint"]).all()


def test_flatmap_filter_layer_brute_force(rng):
    n = 50
    lookup = rng.integers(-1, n, (12, 17)).astype(np.int32)
    base = rng.integers(-2, 4, n)
    now = np.where(rng.random(n) < 0.3, rng.integers(-2, 4, n), base)
    visible = (now != -1) & (rng.random(n) < 0.7)
    layer = flatmap_filter_layer(lookup, base, now, visible)
    colour = np.vstack([NEGATIVE_RGBA, NS_RGBA, BIN_COLOURS_RGBA])           # row = bin code + 2
    for r in range(lookup.shape[0]):
        for c in range(lookup.shape[1]):
            v = lookup[r, c]
            if v < 0:
                want = np.zeros(4)
            elif not visible[v] and base[v] != -1:
                want = VEIL_RGBA
            elif visible[v] and now[v] != base[v]:
                want = colour[now[v] + 2]
            else:
                want = np.zeros(4)
            np.testing.assert_array_equal(layer[r, c], want)


def test_filter_state_query_round_trip_and_rejects_bad_values():
    from urllib.parse import parse_qsl
    state = FilterState(rule="q", bins=(-2, 1, 3), rois=("FFA", "V1"), hemis=("R",), threshold=0.15, ns="hidden")
    assert FilterState.from_query(dict(parse_qsl(state.to_query()))) == state
    assert FilterState.from_controls("q", [3, 1, -2], ["V1", "FFA"], ["R"], 0.15, "hidden") == state
    for bad in ({"bins": "7"}, {"hemis": "X"}, {"ns": "gone"}, {"thr": "nan"}):
        with pytest.raises(ValueError):
            FilterState.from_query(bad)


# ---------------------------------------------------------------------------------------------- run data
def test_bins_under_the_run_rule_equal_the_stored_bins_and_q_bins_follow_a_reference(data, results):
    edges = np.asarray(results.config["stats"]["bin_edges"])
    level = results.config["stats"]["level"]
    for m in ("off", "on"):
        np.testing.assert_array_equal(data.bins(m, "p"), results.table[f"bin_{m}"].to_numpy())
        # Reference: significant under FDR, then the bin by counting edges at or below r.
        r, q = results.table[f"r_{m}"].to_numpy(), results.table[f"q_{m}"].to_numpy()
        ref = np.full(r.size, -1)
        for v in range(r.size):
            if q[v] <= level:
                k = int((edges <= r[v]).sum()) - 1
                ref[v] = -2 if k < 0 else k
        np.testing.assert_array_equal(data.bins(m, "q"), ref)
    assert (data.bins("on", "q") != -1).sum() <= (data.bins("on", "p") != -1).sum()
    assert len({*data.bins("on", "p").tolist()} & {0, 1, 2, 3}) >= 2, "fixture should span several bins"


@pytest.mark.parametrize("state", [
    FilterState(),
    FilterState(rule="q", bins=(2, 3), threshold=0.3),
    FilterState(rois=("V1", "FFA"), hemis=("L",)),
    FilterState(bins=(-2,), ns="hidden"),
])
def test_visible_matches_a_pandas_query(data, results, state):
    t = results.table
    for m in ("off", "on"):
        b = data.bins(m, state.rule)
        keep = (b != -1) & t[f"r_{m}"].abs().ge(state.threshold).to_numpy() & np.isin(b, state.bins)
        if state.rois:
            keep &= t["roi"].isin(state.rois).to_numpy()
        keep &= t["hemi"].isin(state.hemis).to_numpy()
        np.testing.assert_array_equal(data.visible(m, state), keep)


def test_run_data_indices_agree_with_the_table(data, results, rng):
    t = results.table
    for v in rng.choice(len(t), 25, replace=False):
        assert data.voxel_at_ijk(int(t.i[v]), int(t.j[v]), int(t.k[v])) == v
    assert data.voxel_at_ijk(-5, 0, 0) == -1
    for m in ("off", "on"):
        voxels, coords = results.umap(m)
        view = data.umap[m]
        np.testing.assert_array_equal(view.voxels, voxels)
        assert (view.position[voxels] == np.arange(voxels.size)).all()
        assert (np.delete(view.position, voxels) == -1).all()
    fm = data.flatmap
    lookup = np.asarray(fm.lookup)
    for v in rng.choice(len(t), 25, replace=False):
        rows, cols = np.nonzero(lookup == v)
        if rows.size:
            np.testing.assert_allclose(fm.centre[v], [cols.mean(), rows.mean()], rtol=0, atol=1e-4)
            r, c = rows[0], cols[0]
            assert fm.voxel_at(c, fm.height - 1 - r) == v
        else:
            assert np.isnan(fm.centre[v]).all()
    assert fm.voxel_at(-3, 0) == -1


def test_run_without_cortex_assets_says_why(tmp_path):
    out = make_synthetic_results(tmp_path, n_voxels=300, n_test=40, k=5, with_assets=False, with_thumbnails=False)
    d = DashboardData(open_results(out))
    assert d.flatmap is None and d.viewer_dir is None
    assert "the cortex stage of this run was not run" in d.flatmap_reason
    assert d.thumbs is None


def test_run_without_both_conditions_is_an_input_error(results):
    class OneCondition:
        def __getattr__(self, name):
            return getattr(results, name)
        conditions = ["on"]
    with pytest.raises(InputError, match="compares attention off and on"):
        DashboardData(OneCondition())


# ---------------------------------------------------------------------------------------------- figures
def test_umap_figure_sends_typed_arrays_and_carries_provenance(data):
    import plotly.io.json as pj
    view = data.umap["off"]
    codes = umap_colour_codes(data.bins("off", "p"), data.visible("off", FilterState()))[view.voxels]
    fig = make_umap_figure(view.coords, codes, condition="off", run_id="run-x", simulated=True,
                           highlight=view.coords[:1])
    sent = json.loads(pj.to_json_plotly(fig))
    trace = sent["data"][0]
    for axis, col in zip("xyz", range(3)):
        np.testing.assert_array_equal(_decode(trace[axis], "u2"), view.coords[:, col])
    np.testing.assert_array_equal(_decode(trace["marker"]["color"], "u1"), codes)
    assert [t["name"] for t in sent["data"][1:]] == ["selected voxel", "selected set"]
    for axis, col in zip("xyz", range(3)):
        np.testing.assert_array_equal(_decode(sent["data"][1][axis], "u2"), view.coords[:1, col])
    assert sent["data"][2]["x"] == []
    title = sent["layout"]["title"]["text"]
    assert "attention off" in title and "run run-x" in title and "SIMULATED" in title
    assert sent["layout"]["scene"]["xaxis"]["visible"] is False
    # Colour scale: code c sits in the middle of its band and gets exactly UMAP_COLOURS[c].
    scale, lo, hi = trace["marker"]["colorscale"], trace["marker"]["cmin"], trace["marker"]["cmax"]
    for c, colour in enumerate(UMAP_COLOURS):
        f = (c - lo) / (hi - lo)
        band = [s for (a, s), (b, _) in zip(scale[::2], scale[1::2]) if a <= f <= b]
        assert band == [colour]
    # uint16 xyz + uint8 colour, base64: about 7 * 4/3 bytes per point plus a fixed overhead.
    assert len(json.dumps(trace)) < view.voxels.size * 7 * 4 / 3 + 2000
    with pytest.raises(ValueError, match="colour codes"):
        make_umap_figure(view.coords, codes[:-1], condition="off", run_id="r", simulated=False)


def test_umap_scene_is_fitted_to_its_cloud(rng):
    # A cloud with a far outlier: the box holds every point, one scale on every axis, the bulk sized to the fit.
    coords = np.vstack([rng.normal(0, [3.0, 1.0, 0.5], (400, 3)) * 1000 + 30000, [[64000, 30000, 30000]]])
    fit = scene_fit(coords)
    lo, hi = np.array(fit["ranges"]).T
    assert (coords >= lo).all() and (coords <= hi).all()
    aspect = np.array([fit["aspectratio"][a] for a in "xyz"])
    # plotly maps each range onto its aspect ratio in scene units: the same units per data unit on every axis.
    np.testing.assert_allclose(aspect / (hi - lo), fit["scale"])
    scene = (coords - fit["centre"]) * fit["scale"]
    assert np.quantile(np.linalg.norm(scene, axis=1), 0.95) == pytest.approx(FIT_RADIUS, rel=1e-6)
    # The camera: at the fitted distance, from a side where the cloud covers most of the view.
    cam = opening_camera([coords])
    eye = np.array([cam["eye"][a] for a in "xyz"])
    assert np.linalg.norm(eye) == pytest.approx(EYE_DISTANCE, rel=1e-3)
    assert projected_cover(scene, eye) > 0.6
    assert scene_fit(np.zeros((0, 3))) is None
    flat = scene_fit(np.column_stack([np.arange(50.0), np.arange(50.0), np.zeros(50)]))
    assert np.diff(flat["ranges"][2])[0] > 0                       # a flat axis still has a range


def test_umap_figure_carries_its_fit(data):
    view = data.umap["on"]
    fig = make_umap_figure(view.coords, np.zeros(view.voxels.size, np.uint8), condition="on", run_id="r",
                           simulated=False)
    fit = scene_fit(view.coords)
    scene = fig.layout.scene
    assert scene.aspectmode == "manual" and scene.dragmode == "orbit"
    for axis, rng_ in zip((scene.xaxis, scene.yaxis, scene.zaxis), fit["ranges"]):
        assert tuple(axis.range) == tuple(rng_) and axis.autorange is False
    assert {a: getattr(scene.aspectratio, a) for a in "xyz"} == fit["aspectratio"]
    # An empty cloud (the offline bundle's template) keeps plotly's automatic ranges.
    empty = make_umap_figure(np.zeros((0, 3), np.uint16), np.zeros(0, np.uint8), condition="on", run_id="r",
                             simulated=False)
    assert empty.layout.scene.aspectmode == "data" and empty.layout.scene.xaxis.range is None


def test_flatmap_figure_maps_pixels_to_figure_coordinates(data):
    fm = data.flatmap
    fig = make_flatmap_figure(condition="on", image_url="/img.png", layer_url="/layer.png", width=fm.width,
                              height=fm.height, rois=fm.rois, run_id="r1", simulated=False, highlight=(10.0, 20.0))
    img = fig.layout.images[0]
    # Pixel (column c, row r) has its centre at x = c, y = H - 1 - r: the image spans half a pixel beyond.
    assert (img.x, img.y, img.sizex, img.sizey) == (-0.5, fm.height - 0.5, fm.width, fm.height)
    assert (img.xanchor, img.yanchor, img.xref, img.yref) == ("left", "top", "x", "y")
    assert fig.layout.images[1].source == "/layer.png"
    assert tuple(fig.layout.xaxis.range) == (-0.5, fm.width - 0.5)
    assert tuple(fig.layout.yaxis.range) == (-0.5, fm.height - 0.5)
    assert fig.data[1].x == (10.0,) and fig.data[1].y == (fm.height - 1 - 20.0,)
    anchors = fig.data[0]
    assert len(anchors.x) == len(fm.rois)
    np.testing.assert_allclose(anchors.y, [fm.height - 1 - r["label"][1] for r in fm.rois], atol=1e-3)
    assert "attention on" in fig.layout.title.text and "run r1" in fig.layout.title.text
    assert "SIMULATED" not in fig.layout.title.text


def test_r_scatter_figure(data):
    codes = r_scatter_codes(data.visible("off", FilterState()), data.visible("on", FilterState()))
    fig = make_r_scatter_figure(data.r["off"], data.r["on"], codes, run_id="r", simulated=True)
    np.testing.assert_array_equal(fig.data[0].x, data.r["off"].astype(np.float32))
    np.testing.assert_array_equal(fig.data[0].y, data.r["on"].astype(np.float32))
    np.testing.assert_array_equal(fig.data[0].marker.color, codes)
    diag = fig.layout.shapes[0]
    assert (diag.x0, diag.x1) == (diag.y0, diag.y1)
    assert diag.x0 <= data.r["off"].min() and diag.x1 >= data.r["on"].max()
    assert {t.name for t in fig.data[3:]} == {"both", "on only", "off only", "n.s. / filtered out"}
    assert fig.layout.dragmode == "lasso"


def test_summary_figures_show_the_numbers_they_are_given(data, results, rng):
    counts = {m: np.array([(results.table[f"bin_{m}"] == b).sum() for b in (-2, 0, 1, 2, 3)]) for m in ("off", "on")}
    fig = make_bin_counts_figure(counts, run_id="r", simulated=True)
    assert [list(t.y) for t in fig.data] == [counts["off"].tolist(), counts["on"].tolist()]
    assert fig.data[0].marker.pattern.shape == "/" and fig.data[1].marker.pattern.shape == ""

    t = results.table
    means = {m: t.groupby("roi")[f"r_{m}"].mean().reindex(SYNTHETIC_ROI_NAMES).to_numpy() for m in ("off", "on")}
    n = t.groupby("roi").size().reindex(SYNTHETIC_ROI_NAMES).to_numpy()
    fig = make_roi_means_figure(SYNTHETIC_ROI_NAMES, means, n, run_id="r", simulated=True)
    np.testing.assert_allclose(fig.data[1].x, means["on"], rtol=1e-12)
    assert list(fig.data[1].y) == SYNTHETIC_ROI_NAMES

    rdms = {m: np.asarray(results.stage("rsa").arrays[f"roi_rdm_{m}"]) for m in ("off", "on")}
    counts_roi = np.asarray(results.stage("rsa").arrays["roi_counts"]).copy()
    counts_roi[2] = 0                                       # an empty ROI must be left out
    fig = make_roi_rdm_figure(rdms, SYNTHETIC_ROI_NAMES, counts_roi, run_id="r", simulated=True)
    keep = np.flatnonzero(counts_roi > 0)
    np.testing.assert_allclose(np.asarray(fig.data[0].z, float), rdms["off"][np.ix_(keep, keep)], equal_nan=True)
    assert SYNTHETIC_ROI_NAMES[2] not in fig.data[1].x
    assert fig.data[0].coloraxis == fig.data[1].coloraxis == "coloraxis"

    agreement = results.stage("rsa").meta["agreement"]
    fig = make_agreement_figure(rdms, agreement, run_id="r", simulated=True)
    iu = np.triu_indices(len(SYNTHETIC_ROI_NAMES))
    ok = np.isfinite(rdms["off"][iu]) & np.isfinite(rdms["on"][iu])
    np.testing.assert_allclose(fig.data[0].x, rdms["off"][iu][ok])
    assert f"Pearson {agreement['pearson']:.3f}" in fig.layout.annotations[0].text

    jac = np.asarray(results.stage("rsa").arrays["knn_jaccard"])
    fig = make_jaccard_figure(jac, run_id="r", simulated=True)
    np.testing.assert_array_equal(fig.data[0].y, np.histogram(jac, bins=20, range=(0, 1))[0])
    assert f"median {np.median(jac):.2f}" in fig.layout.annotations[0].text


def test_quantise_xy_keeps_the_aspect_and_drops_non_finite_rows(rng):
    xy = rng.normal(0, [40.0, 10.0], (300, 2))
    xy[7] = np.nan
    q = quantise_xy(xy)
    assert q.dtype == np.uint16 and q.shape == (300, 2) and tuple(q[7]) == (0, 0)
    ok = np.isfinite(xy).all(1)
    lo = xy[ok].min(0)
    span = (xy[ok].max(0) - lo).max()
    back = q[ok].astype(np.float64) / 65535 * span + lo
    assert np.abs(back - xy[ok]).max() <= span / 65535 / 2 + 1e-12
    assert q[ok, 0].max() == 65535 and q[ok, 1].max() < 0.5 * 65535          # one scale: y is not stretched
    with pytest.raises(ValueError, match="shape"):
        quantise_xy(xy[:, :1])


def _sent_jaccard_map(fig):
    """The ROI traces of a neighbourhood-change map as the browser receives them: (names, per-trace arrays)."""
    import plotly.io.json as pj
    sent = json.loads(pj.to_json_plotly(fig))
    groups = [t for t in sent["data"] if t.get("name") != "selected voxel"]
    arrays = [dict(x=_decode(t["x"], "u2"), y=_decode(t["y"], "u2"), colour=_decode(t["marker"]["color"], "f4"),
                   voxel=_decode(t["customdata"], "i4")) for t in groups]
    return sent, groups, arrays


def test_jaccard_map_colours_each_voxel_by_its_stored_jaccard(data, results):
    rsa = results.stage("rsa").arrays
    ds = results.stage("dataset").arrays
    emb = np.asarray(rsa["voxels_on"])
    np.testing.assert_array_equal(emb, np.asarray(rsa["voxels_off"]))        # the union rule: one voxel set
    jac = dict(zip(emb.tolist(), np.asarray(rsa["knn_jaccard"], dtype=np.float32).tolist()))
    view = data.jaccard_map
    fig = make_jaccard_map_figure(view, run_id="run-j", simulated=True)
    sent, groups, arrays = _sent_jaccard_map(fig)
    # Every embedded voxel exactly once, nothing else.
    voxels = np.concatenate([a["voxel"] for a in arrays])
    np.testing.assert_array_equal(np.sort(voxels), np.sort(emb))
    flat = np.asarray(ds["flat_xy"], dtype=np.float64)
    lo, span = flat.min(0), (flat.max(0) - flat.min(0)).max()
    roi_names = results.stage("dataset").meta["roi_names"]
    for t, a in zip(groups, arrays):
        # The colour of each point is that voxel's stored Jaccard value (float32, exact) ...
        np.testing.assert_array_equal(a["colour"], [jac[v] for v in a["voxel"].tolist()])
        # ... it sits at the voxel's flat position (within half a quantisation step) ...
        back = np.column_stack([a["x"], a["y"]]) / 65535 * span + lo
        np.testing.assert_allclose(back, flat[a["voxel"]], atol=span / 65535 / 2 + 1e-4)
        # ... and its trace (hence its hover) names the voxel's ROI.
        assert {roi_names[r] for r in np.asarray(ds["roi"])[a["voxel"]]} == {t["name"]}
        assert f"ROI {t['name']}" in t["hovertemplate"]
        assert "voxel %{customdata}" in t["hovertemplate"] and "Jaccard %{marker.color:.2f}" in t["hovertemplate"]
        assert t["marker"]["coloraxis"] == "coloraxis"
    # One colour axis for all ROI traces: 0..1 on a perceptually uniform sequential scale, with a colourbar.
    axis = fig.layout.coloraxis
    assert (axis.cmin, axis.cmax) == (0.0, 1.0) and axis.colorbar.title.text == "Jaccard"
    assert list(axis.colorbar.tickvals)[::4] == [0, 1]
    assert axis.colorbar.ticktext[0].startswith("0 all changed") and axis.colorbar.ticktext[-1] == "1 same"
    import plotly.colors as pc
    scale = pc.get_colorscale(JACCARD_COLORSCALE)
    assert [c for _, c in axis.colorscale] == [c for _, c in scale]
    # Sequential: lightness rises monotonically from 0 (all neighbours changed) to 1 (same neighbours).
    rgb = np.array([pc.unlabel_rgb(pc.convert_colors_to_same_type([c], "rgb")[0][0]) for _, c in scale]) / 255
    lum = rgb @ [0.2126, 0.7152, 0.0722]
    assert np.all(np.diff(lum) > 0)
    # The selected-voxel trace comes after the ROI traces and is empty until something is selected.
    assert sent["data"][view.highlight_trace]["name"] == "selected voxel"
    assert sent["data"][view.highlight_trace]["x"] == []
    title = fig.layout.title.text
    assert "run run-j" in title and "SIMULATED" in title and f"median {np.median(rsa['knn_jaccard']):.2f}" in title
    assert fig.layout.yaxis.scaleanchor == "x"
    # Payload: uint16 x/y + float32 colour + int32 voxel id, base64: ~16 bytes per point plus a fixed overhead.
    assert sum(len(json.dumps(t)) for t in groups) < emb.size * 12 * 4 / 3 + 1500 * len(groups)


def test_jaccard_map_highlight_and_labels(data, results):
    view = data.jaccard_map
    v = int(view.voxels[len(view.voxels) // 3])
    fig = make_jaccard_map_figure(view, run_id="r", simulated=False, highlight=v)
    hl = fig.data[view.highlight_trace]
    assert (hl.x, hl.y) == ((int(view.coords[view.position[v], 0]),), (int(view.coords[view.position[v], 1]),))
    assert "SIMULATED" not in fig.layout.title.text
    # ROI labels (one per ROI and hemisphere, "other" left out) sit at the median position of the ROI's voxels.
    names = results.stage("dataset").meta["roi_names"]
    roi = np.asarray(results.stage("dataset").arrays["roi"])
    hemi = np.asarray(results.stage("dataset").arrays["hemi"])
    q = quantise_xy(np.asarray(results.stage("dataset").arrays["flat_xy"]))
    got = {a.text: (a.x, a.y) for a in fig.layout.annotations}
    expected = {f"{n} {h}": tuple(np.median(q[(roi == g) & (hemi == i)].astype(float), axis=0))
                for g, n in enumerate(names) if n != "other" for i, h in enumerate("LR")
                if ((roi == g) & (hemi == i)).any()}
    assert got.keys() == expected.keys() and len(got) > 0
    for k in got:
        np.testing.assert_allclose(got[k], expected[k])


def test_jaccard_map_view_groups_by_roi_and_drops_non_finite():
    flat = np.array([[0, 0], [1, 0], [2, 0], [np.nan, 0], [4, 1], [5, 1]], dtype=np.float32)
    roi = np.array([2, 1, 2, 1, 0, 1])
    view = jaccard_map_view(np.array([5, 0, 1, 2, 3, 4]), np.array([0.5, 0.1, np.nan, 0.2, 0.9, 1.0]), flat, roi,
                            ["other", "V1", "V2"])
    # Voxel 1 (NaN Jaccard) and voxel 3 (no flat position) are left off; the rest by ROI, then voxel id.
    assert view.names == ["other", "V1", "V2"]
    np.testing.assert_array_equal(view.voxels, [4, 5, 0, 2])
    np.testing.assert_array_equal(view.values, np.float32([1.0, 0.5, 0.1, 0.2]))
    np.testing.assert_array_equal(view.starts, [0, 1, 2, 4])
    assert [view.voxel_of(g, n) for g, n in ((0, 0), (1, 0), (2, 0), (2, 1))] == [4, 5, 0, 2]
    assert view.voxel_of(2, 2) is None and view.voxel_of(3, 0) is None and view.voxel_of(0, -1) is None
    np.testing.assert_array_equal(view.position, [2, -1, 3, -1, 0, 1])
    assert view.highlight_trace == 3
    with pytest.raises(ValueError, match="Jaccard"):
        jaccard_map_view(np.arange(3), np.zeros(2), flat, roi, ["other", "V1", "V2"])


def test_series_figure_keeps_the_correlation_it_reports(results):
    from scipy.stats import pearsonr
    v = int(np.argmax(results.table["r_on"]))
    measured = results.measured(v)
    pred = {m: results.predicted(m, v) for m in ("off", "on")}
    r = {m: float(results.table[f"r_{m}"][v]) for m in ("off", "on")}
    fig = make_series_figure(measured, pred, r, voxel=v, run_id="r", simulated=True)
    # Drawn z-scored (float32): mean 0, SD 1, and an exact affine image of the measured series.
    y = np.asarray(fig.data[0].y, dtype=np.float64)
    assert abs(y.mean()) < 1e-5 and abs(y.std() - 1) < 1e-5
    np.testing.assert_allclose(y * measured.std() + measured.mean(), measured, rtol=1e-5, atol=1e-5)
    for trace, m in zip(fig.data[1:], ("off", "on")):
        # z-scoring is affine, so each drawn series has the test r of the stored one: float32 series,
        # agreement to ~1e-5 (scipy's pearsonr is the independent reference).
        assert abs(pearsonr(trace.y, fig.data[0].y)[0] - r[m]) < 1e-4
        assert f"r = {r[m]:.3f}" in trace.name


def test_provenance_names_run_condition_and_simulation():
    assert provenance("abc", True, "on") == "attention on · run abc · SIMULATED data"
    assert provenance("abc", False) == "run abc"


def test_the_page_takes_its_bins_from_the_run(tmp_path):
    """A run with its own bin edges: the legend, the bin filter, the bin counts, the inspector's and table's bin
    labels and the page's vocabulary all name those bins; the study's labels appear nowhere."""
    import plotly.io.json as pj

    from dashboard import ids
    from dashboard.app import create_app, page_vocabulary
    edges = (0.0, 0.2, 0.4, 0.6)
    out = make_synthetic_results(tmp_path, n_voxels=300, n_test=120, k=6, seed=3, flatmap_height=64,
                                 bin_edges=edges)
    results = open_results(out)
    assert tuple(results.config["stats"]["bin_edges"]) == edges
    app = create_app(results)
    data = app.attnbrain_data
    labels = ["0-0.2", "0.2-0.4", "0.4-0.6", ">=0.6"]
    assert list(data.bin_scheme.labels) == labels
    # The stored bins follow the edges: r in [0.2, 0.4) is bin 1, and so on.
    for m in ("off", "on"):
        t = results.table
        sig = t[f"bin_{m}"].to_numpy() != -1
        r = t[f"r_{m}"].to_numpy()[sig]
        expected = np.where(r < 0, -2, np.searchsorted(np.asarray(edges), r, side="right") - 1)
        np.testing.assert_array_equal(t[f"bin_{m}"].to_numpy()[sig], expected)
    # The page as the browser receives it.
    resp = app.server.test_client().get("/_dash-layout")
    assert resp.status_code == 200
    text = resp.data.decode()
    assert "0-0.1" not in text and "0.1-0.2" not in text and ">=0.3" not in text
    tree = json.loads(text)
    from bench.dashboard import _find as find
    options = find(tree, ids.BINS)["props"]["options"]
    assert [o["label"] for o in options] == labels + [data.bin_scheme.negative_label]
    legend = next(n for n in tree["props"]["children"] if isinstance(n, dict)
                  and n.get("props", {}).get("className") == "legend")
    legend_text = json.dumps(legend, ensure_ascii=False)
    assert all(f'"{lab}"' in legend_text for lab in labels)
    counts = find(tree, ids.BIN_COUNTS)["props"]["figure"]["data"][0]["x"]
    assert list(counts) == [data.bin_scheme.negative_label] + labels
    vocabulary = json.loads(find(tree, ids.VOCABULARY)["props"]["data-vocabulary"])
    assert vocabulary == json.loads(json.dumps(page_vocabulary(data)))
    assert vocabulary["bins"]["labels"] == labels and vocabulary["bins"]["edges"] == list(edges)
    # The table and the inspector label each voxel by the run's bins.
    from dashboard.inspector import inspector_children
    from dashboard.voxel_table import table_markdown, table_rows
    rows = table_rows(data, None)
    assert {r["bin_on"] for r in rows} <= {*labels, data.bin_scheme.negative_label, "n.s."}
    assert {r["bin_on"] for r in rows} & set(labels) and "0-0.1" not in table_markdown(rows)
    v = rows[0]["voxel"]
    assert data.bin_scheme.label(int(data.stored_bins["on"][v])) in json.dumps(
        json.loads(pj.to_json_plotly(inspector_children(data, v))), ensure_ascii=False)


def test_inference_warnings_of_the_run_are_shown(tmp_path):
    """The stats stage's warnings (summary.json ``stats.warnings``) appear above the views, one line each;
    a run without warnings shows no notice."""
    from dashboard import ids
    from dashboard.app import create_app
    from dashboard.run_info import inference_warnings
    out = make_synthetic_results(tmp_path, n_voxels=300, n_test=40, k=6, seed=5, flatmap_height=64)
    results = open_results(out)
    assert inference_warnings(create_app(results).attnbrain_data) is None
    text = "on: the t-test assumes independent samples; median effective N 141 of 600 (implied rate 0.22 at 0.01)"
    summary = dict(results.summary, stats={"warnings": [text]})
    (results.run_dir / "summary.json").write_text(json.dumps(summary))
    app = create_app(open_results(out))
    tree = json.loads(app.server.test_client().get("/_dash-layout").data.decode())
    from bench.dashboard import _find as find
    notice = find(tree, ids.INFERENCE_WARNING)
    assert notice is not None and text in json.dumps(notice, ensure_ascii=False)


def test_permutation_rule_is_the_runs_fdr_of_the_permutation_p(tmp_path):
    """Rule "perm" in the dashboard marks what the stats stage marks: BH q of the block-permutation p <= level,
    not the uncorrected permutation p (planted: voxels with p_perm <= level whose q_perm is above it)."""
    from core.stats import fdr_bh
    from dashboard.data import DashboardData
    out = make_synthetic_results(tmp_path, n_voxels=300, n_test=40, k=6, seed=6, flatmap_height=64)
    data = DashboardData(open_results(out))
    rng = np.random.default_rng(0)
    for m in data.conditions:
        p_perm = np.where(rng.random(data.n_voxels) < 0.2, 1e-4, rng.uniform(0.002, 1, data.n_voxels))
        data.p_perm[m], data.q_perm[m] = p_perm, fdr_bh(p_perm)
    data.rules.append("perm")
    for m in ("off", "on"):
        sig = data.bins(m, "perm") != -1
        expected = (data.q_perm[m] <= data.level) & data.valid[m] & (data.r[m] > 0)
        assert ((data.p_perm[m] <= data.level) & ~(data.q_perm[m] <= data.level)).any()   # the two rules differ
        np.testing.assert_array_equal(sig & (data.r[m] > 0), expected)
