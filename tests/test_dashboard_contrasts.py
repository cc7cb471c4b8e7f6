"""The dashboard's view of the paired on-vs-off test and of the bins: colouring and filtering by a contrast's
outcome, all-voxel bins, the legend's critical r, the inspector's contrast rows, the ROI summary and the filter
layer's route.

References come from the results table (core/outputs/export.py's CSV columns), the stored stage meta and scipy,
never from the functions under test.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import plotly.io.json as pj
import pytest
from scipy.stats import t as t_dist

from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from core.vocabulary import CEILING_EDGES, CEILING_LABELS, CEILING_RGBA, OUTCOME_RGBA, PAIR
from dashboard import ids
from dashboard.app import create_app
from dashboard.data import FilterState
from dashboard.filters import bin_floor_note, filter_patches, legend_items, outcome_labels
from dashboard.flatmaps import VEIL_RGBA
from dashboard.inspector import contrast_rows, inspector_children
from dashboard.summary_plots import bin_counts_figure, roi_contrast_figure
from dashboard.umap_view import UMAP_CODE


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    # 400 test samples: enough power that the on - off test finds voxels of every outcome.
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=600, n_test=400, k=8, seed=5,
                                 flatmap_height=96)
    return create_app(open_results(out))


@pytest.fixture(scope="module")
def data(app):
    return app.attnbrain_data


@pytest.fixture(scope="module")
def table(data):
    return data.results.table


def _ops(patch) -> list[dict]:
    return json.loads(pj.to_json_plotly(patch.to_plotly_json()))["operations"]


def _decode(spec, dtype):
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(dtype).newbyteorder("<"))


def _text(children) -> str:
    if children is None:
        return ""
    if isinstance(children, (str, int, float)):
        return str(children)
    if isinstance(children, (list, tuple)):
        return " ".join(_text(c) for c in children)
    return _text(getattr(children, "children", None))


def _reference_bins(data, table, m, significant=True):
    """Bin codes from the table: significant under p (or every finite r), -2 below the first edge."""
    r = table[f"r_{m}"].to_numpy()
    use = (table[f"p_{m}"].to_numpy() <= data.level) if significant else np.isfinite(r)
    edges = np.asarray(data.bin_scheme.edges)
    return np.where(use & np.isfinite(r), np.where(r < edges[0], -2, np.searchsorted(edges, r, side="right") - 1), -1)


def test_the_synthetic_run_has_every_outcome(table):
    # The tests below would pass vacuously without voxels of each outcome.
    for o in (-1, 0, 1):
        assert (table["outcome_on_off"] == o).sum() >= 3, o


@pytest.mark.parametrize("outcomes", [(-1, 0, 1), (1,), (-1, 1)])
def test_colouring_by_contrast_codes_and_filters_by_outcome(data, table, outcomes):
    state = FilterState(rule="p", colour="contrast", contrast="on_off", outcomes=outcomes)
    patches, message = filter_patches(data, state)
    outcome = table["outcome_on_off"].to_numpy()
    for m in PAIR:
        bins = _reference_bins(data, table, m)
        shown = (bins != -1) & np.isin(outcome, outcomes)
        expected = np.where(shown, UMAP_CODE["outcome0"] + outcome + 1, UMAP_CODE["faint"])
        voxels, _ = data.results.umap(m)
        op = _ops(patches[ids.umap_graph(m)])[0]
        np.testing.assert_array_equal(_decode(op["params"]["value"], "u1"), expected[voxels])
        assert f"{int(shown.sum()):,} voxels shown with attention {m}" in message
    assert "coloured by on - off" in message


def test_colouring_by_ceiling_shows_reliable_ceilings_only_in_their_step(app, data, table):
    from PIL import Image
    state = FilterState(rule="p", colour="ceiling", bin_set="all")
    patches, message = filter_patches(data, state)
    client = app.server.test_client()
    lookup = np.asarray(data.flatmap.lookup)
    for m in PAIR:
        x = table[f"r_norm_{m}"].to_numpy()            # NaN where the ceiling is unreliable
        reliable = np.isfinite(x)
        assert 10 <= reliable.sum() < x.size            # both kinds present, or the test proves nothing
        step = np.clip(np.searchsorted(CEILING_EDGES, np.nan_to_num(x), side="right") - 1, 0, len(CEILING_EDGES) - 1)
        shown = reliable & np.isfinite(table[f"r_{m}"].to_numpy())
        expected = np.where(shown, UMAP_CODE["ceiling0"] + step, UMAP_CODE["faint"])
        voxels, _ = data.results.umap(m)
        op = _ops(patches[ids.umap_graph(m)])[0]
        np.testing.assert_array_equal(_decode(op["params"]["value"], "u1"), expected[voxels])
        layer = np.asarray(Image.open(io.BytesIO(client.get(data.flatmap_layer_url(m, state)).data)).convert("RGBA"))
        rows, cols = np.nonzero(lookup >= 0)
        vox = lookup[rows, cols]
        hit = shown[vox]
        assert hit.any() and (layer[rows, cols][hit] == CEILING_RGBA[step[vox][hit]]).all()
        assert f"{int(shown.sum()):,} voxels shown with attention {m}" in message
    text = _text(legend_items(data, state))
    assert all(lab in text for lab in CEILING_LABELS) and "ceiling_min_ev" in text


def test_the_flatmap_layer_paints_every_shown_voxel_in_its_outcome_colour(app, data, table):
    state = FilterState(rule="p", colour="contrast", contrast="on_off", outcomes=(-1, 1))
    client = app.server.test_client()
    from PIL import Image
    outcome = table["outcome_on_off"].to_numpy()
    lookup = np.asarray(data.flatmap.lookup)
    for m in PAIR:
        resp = client.get(data.flatmap_layer_url(m, state))
        assert resp.status_code == 200
        layer = np.asarray(Image.open(io.BytesIO(resp.data)).convert("RGBA"))
        bins = _reference_bins(data, table, m)
        stored = np.asarray(data.results.array("stats", "bin", m))
        shown = (bins != -1) & np.isin(outcome, (-1, 1))
        rows, cols = np.nonzero(lookup >= 0)
        vox = lookup[rows, cols]
        pix = layer[rows, cols]
        for o in (-1, 1):
            hit = shown[vox] & (outcome[vox] == o)
            assert hit.any()
            assert (pix[hit] == OUTCOME_RGBA[o]).all()
        veiled = ~shown[vox] & (stored[vox] != -1)
        assert (pix[veiled] == VEIL_RGBA).all()
        assert (pix[~shown[vox] & (stored[vox] == -1)][:, 3] == 0).all()
    assert client.get(data.flatmap_layer_url("on", state).replace("contrast=on_off", "contrast=on_on")) \
        .status_code == 400


def test_all_voxel_bins_hold_every_finite_r_and_the_counts_follow(data, table):
    state = FilterState(bin_set="all")
    for m in PAIR:
        np.testing.assert_array_equal(data.state_bins(m, state), _reference_bins(data, table, m, significant=False))
    fig = bin_counts_figure(data, state)
    for trace, m in zip(fig.data, PAIR):
        ref = _reference_bins(data, table, m, significant=False)
        assert list(trace.y) == [int((ref == c).sum()) for c in data.bin_scheme.filter_codes]
    assert "All voxels" in fig.layout.title.text and fig.data[0].x[0] == "r<0"
    sig = bin_counts_figure(data, FilterState(rule="p"))
    assert list(sig.data[0].y) == [int((_reference_bins(data, table, PAIR[0]) == c).sum())
                                   for c in data.bin_scheme.filter_codes]


def test_the_legend_gives_the_critical_r_of_the_t_test(data, table):
    # Independent reference: bisection on scipy's two-sided t-test p of a correlation with n - 2 df.
    n, level = data.n_test, data.level

    def p(r):
        df = n - 2
        return 2 * t_dist.sf(r * np.sqrt(df / (1 - r * r)), df)
    lo, hi = 0.0, 0.99
    for _ in range(80):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if p(mid) <= level else (mid, hi)
    note = bin_floor_note(data, "p")
    assert f"needs r ≥ {hi:.3f}" in note and f"With {n} test samples" in note
    edges = data.bin_scheme.edges
    empty = [lab for lab, top in zip(data.bin_scheme.labels, edges[1:]) if top <= hi]
    assert empty, "a test length where the lowest bin cannot fill"
    assert f"{', '.join(empty)} cannot be filled" in note
    smallest = min(table.loc[(table["p_on"] <= level) & (table["r_on"] > 0), "r_on"])
    assert f"on {smallest:.3f}" in note
    assert "significant voxels" in _text(legend_items(data, FilterState()))
    text = _text(legend_items(data, FilterState(bin_set="all")))
    assert "all voxels" in text and "needs r" not in text
    text = _text(legend_items(data, FilterState(colour="contrast", contrast="uniform_off")))
    assert all(w in text for w in outcome_labels("uniform_off").values()) and "uniform - off" in text


def test_the_inspector_shows_each_contrast_and_the_normalised_r(data, table):
    meta = data.results.stage("contrasts").meta
    for o in (-1, 1):
        v = int(np.flatnonzero(table["outcome_on_off"].to_numpy() == o)[0])
        rows = contrast_rows(data, v).children[1].children
        assert [r.children[0].children for r in rows] == ["on - off", "on - uniform", "uniform - off"]
        cells = [c.children for c in rows[0].children[1:]]
        row = table.iloc[v]
        assert cells[0] == f"{row['delta_on_off']:.3f} [{row['delta_lo_on_off']:.3f}, {row['delta_hi_on_off']:.3f}]"
        assert cells[3] == outcome_labels("on_off")[o]
        assert float(cells[2]) == pytest.approx(row["q_delta_on_off"], abs=5e-5)
    title = contrast_rows(data, 0).title
    assert f"blocks of {meta['block_length']} samples" in title and f"{meta['n_boot']} resamples" in title
    text = _text(inspector_children(data, 0))
    assert "r / ceiling" in text


def test_the_roi_summary_draws_the_stage_summaries(data):
    for c in data.contrasts:
        rois = data.results.stage("contrasts").meta["contrasts"][c]["rois"]
        fig = roi_contrast_figure(data, c)
        helped, hurt, median = fig.data
        names = list(helped.y)
        assert names[0] == "all voxels"
        for i, name in enumerate(names[1:], start=1):
            s = rois[name]
            assert helped.x[i] == pytest.approx(s["share_helped"]) and hurt.x[i] == pytest.approx(-s["share_hurt"])
            assert median.x[i] == pytest.approx(s["median_delta"])
            if "median_delta_ci" in s:
                assert median.x[i] + median.error_x.array[i] == pytest.approx(s["median_delta_ci"][1])
                assert median.x[i] - median.error_x.arrayminus[i] == pytest.approx(s["median_delta_ci"][0])
        assert helped.name == outcome_labels(c)[1] and hurt.name == outcome_labels(c)[-1]


def test_contrast_controls_answer_over_http(app, data):
    from bench.dashboard import callback_request, post_callback
    client = app.server.test_client()
    body = callback_request(app, f"{ids.ROI_CONTRAST}.figure", {f"{ids.CONTRAST}.value": "uniform_off"},
                            [f"{ids.CONTRAST}.value"])
    out, _, _ = post_callback(client, body)
    assert "uniform - off" in out["response"][ids.ROI_CONTRAST]["figure"]["layout"]["title"]["text"]
    body = callback_request(app, f"{ids.OUTCOMES}.options", {f"{ids.CONTRAST}.value": "on_uniform"},
                            [f"{ids.CONTRAST}.value"])
    out, _, _ = post_callback(client, body)
    assert [o["label"] for o in out["response"][ids.OUTCOMES]["options"]] == \
        ["on better", "uniform better", "no detectable difference"]
    filters = {f"{ids.RULE}.value": "p", f"{ids.BINS}.value": [-2, 0, 1, 2, 3], f"{ids.ROIS}.value": [],
               f"{ids.HEMIS}.value": ["L", "R"], f"{ids.THRESHOLD}.value": 0, f"{ids.NS_MODE}.value": "faint",
               f"{ids.COLOUR}.value": "contrast", f"{ids.CONTRAST}.value": "on_off", f"{ids.OUTCOMES}.value": [1],
               f"{ids.BIN_SET}.value": "all"}
    body = callback_request(app, f"{ids.FILTER_MSG}.children", filters, [f"{ids.COLOUR}.value"])
    out, _, _ = post_callback(client, body)
    resp = out["response"]
    assert "all voxels with a defined r, coloured by on - off" in resp[ids.FILTER_MSG]["children"]
    assert "on better" in json.dumps(resp[ids.LEGEND]["children"])
    body = callback_request(app, f"{ids.BIN_COUNTS}.figure", {f"{ids.RULE}.value": "q", f"{ids.BIN_SET}.value": "all"},
                            [f"{ids.BIN_SET}.value"])
    out, _, _ = post_callback(client, body)
    assert out["response"][ids.BIN_COUNTS]["figure"]["layout"]["title"]["text"].startswith("All voxels")
