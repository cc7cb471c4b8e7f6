"""The dashboard on a results folder written by ``precompute.py`` itself (not synthetic arrays).

One tiny simulated run (3,000 voxels of pycortex's S1, stages up to UMAP) is computed once for the module; the
app is built on it with ``open_results`` + ``create_app`` and its initial figures and callbacks are checked
against the stage arrays on disk: the figures must hold exactly the run's voxels and values. Marked slow (the
run takes about a minute on 2 cores, plus ~35 s for the S1 geometry when no cache is around).
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core.outputs.reader import open_results
from core.vocabulary import PAIR
from dashboard import ids
from dashboard.plotting import quantise_coords, quantise_xy
from dashboard.umap_view import UMAP_CODE
from test_pipeline import TINY, _seed_cortex_cache  # the tiny run of the pipeline tests and its cache seeding

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory, s1_geometry, cortex_cache_dir):
    """``precompute.py --stages umap`` on the tiny config; the session's S1 geometry cache is copied in first
    so the run skips the pycortex ROI parse."""
    root = tmp_path_factory.mktemp("real-run")
    cfg = root / "tiny.toml"
    cfg.write_text(TINY % 0)
    out = root / "results"
    _seed_cortex_cache(out, cortex_cache_dir)
    proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out", str(out),
                           "--device", "cpu", "--quiet", "--stages", "umap"], capture_output=True, text=True,
                          cwd=ROOT, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return open_results(out)


@pytest.fixture(scope="module")
def app(results):
    from dashboard.app import create_app
    return create_app(results)


@pytest.fixture(scope="module")
def layout(app) -> dict:
    """The initial page as the browser receives it (``/_dash-layout``)."""
    resp = app.server.test_client().get("/_dash-layout")
    assert resp.status_code == 200
    return json.loads(resp.data)


def _find(node, component_id):
    from bench.dashboard import _find as find
    hit = find(node, component_id)
    assert hit is not None, f"no component {component_id} in the layout"
    return hit


def _figure(layout, graph_id) -> dict:
    return _find(layout, graph_id)["props"]["figure"]


def _decode(spec, dtype=None) -> np.ndarray:
    """A plotly typed-array spec as plotly.js decodes it (``dtype`` given: it must be the one sent); plain
    lists pass through."""
    if isinstance(spec, dict):
        assert dtype is None or spec["dtype"] == dtype, (spec["dtype"], dtype)
        return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(spec["dtype"]).newbyteorder("<"))
    return np.asarray(spec)


def _text(node) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return " ".join(_text(c) for c in node)
    if isinstance(node, dict):
        return _text(node.get("props", {}).get("children", ""))
    return "" if node is None else str(node)


def _stage(results, name) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in results.stage(name).arrays.items()}


def test_the_run_is_a_real_precompute_run(results):
    assert results.simulated and results.n_voxels == 3000
    for stage in ("dataset", "encoding", "stats", "rsa", "umap"):
        assert results.has_stage(stage), stage
    assert not results.has_stage("cortex")          # stages up to UMAP: no flatmaps, no viewer


def test_umap_figures_hold_exactly_the_embedded_voxels(results, layout):
    rsa = _stage(results, "rsa")
    stats = _stage(results, "stats")
    for m in PAIR:
        voxels, coords = results.umap(m)
        # The UMAP stage embedded exactly the RSA stage's voxels of this condition ...
        np.testing.assert_array_equal(voxels, rsa[f"voxels_{m}"])
        trace = _figure(layout, ids.umap_graph(m))["data"][0]
        q = quantise_coords(coords)
        # ... and the page's figure has one point per embedded voxel, at its (quantised) UMAP position ...
        for axis, col in zip("xyz", range(3)):
            got = _decode(trace[axis], "u2")
            assert got.size == rsa[f"voxels_{m}"].size
            np.testing.assert_array_equal(got, q[:, col])
        # ... coloured by the bins the stats stage stored (the run's rule is the page's default rule).
        b = stats[f"bin_{m}"][voxels]
        expected = np.where(b == -1, UMAP_CODE["faint"],
                            np.where(b == -2, UMAP_CODE["negative"], b + UMAP_CODE["bin0"]))
        np.testing.assert_array_equal(_decode(trace["marker"]["color"], "u1"), expected)


def test_r_scatter_and_bin_counts_are_the_stats_arrays(results, layout):
    stats = _stage(results, "stats")
    trace = _figure(layout, ids.R_SCATTER)["data"][0]
    np.testing.assert_array_equal(_decode(trace["x"], "f4"), stats["r_off"].astype(np.float32))
    np.testing.assert_array_equal(_decode(trace["y"], "f4"), stats["r_on"].astype(np.float32))
    bars = _figure(layout, ids.BIN_COUNTS)["data"]
    for bar, m in zip(bars, PAIR):
        counts = [int((stats[f"bin_{m}"] == b).sum()) for b in (-2, 0, 1, 2, 3)]
        assert _decode(bar["y"]).tolist() == counts
        # The same numbers precompute wrote to summary.json.
        assert counts[1:] == list(results.summary["conditions"][m]["bins"].values())


def test_neighbourhood_map_holds_every_embedded_voxel_with_its_jaccard(results, layout):
    rsa = _stage(results, "rsa")
    ds = _stage(results, "dataset")
    np.testing.assert_array_equal(rsa["voxels_on"], rsa["voxels_off"])       # the union rule
    stored = dict(zip(rsa["voxels_on"].tolist(), rsa["knn_jaccard"].astype(np.float32).tolist()))
    fig = _figure(layout, ids.JACCARD_MAP)
    groups = [t for t in fig["data"] if t.get("name") != "selected voxel"]
    voxels = np.concatenate([_decode(t["customdata"], "i4") for t in groups])
    np.testing.assert_array_equal(np.sort(voxels), rsa["voxels_on"])
    q = quantise_xy(ds["flat_xy"])
    names = results.stage("dataset").meta["roi_names"]
    for t in groups:
        v = _decode(t["customdata"], "i4")
        np.testing.assert_array_equal(_decode(t["marker"]["color"], "f4"), [stored[i] for i in v.tolist()])
        np.testing.assert_array_equal(_decode(t["x"], "u2"), q[v, 0])
        np.testing.assert_array_equal(_decode(t["y"], "u2"), q[v, 1])
        assert {names[r] for r in ds["roi"][v]} == {t["name"]}


def test_selection_and_inspector_show_the_stored_values(app, results):
    from bench.dashboard import callback_request, post_callback
    from dashboard.inspector import _fmt
    client = app.server.test_client()
    stats = _stage(results, "stats")
    voxels, _ = results.umap("on")
    # The embedded voxel with the largest r_on: a UMAP click on its point selects it ...
    n = int(np.argmax(stats["r_on"][voxels]))
    v = int(voxels[n])
    click = {"points": [{"curveNumber": 0, "pointNumber": n}]}
    body = callback_request(app, f"{ids.SELECTED}.data", {f"{ids.umap_graph('on')}.clickData": click},
                            [f"{ids.umap_graph('on')}.clickData"])
    out, nbytes, _ = post_callback(client, body)
    assert out["response"][ids.SELECTED]["data"] == v
    assert nbytes < 2000
    # ... the r scatter's highlight moves to its stored (r_off, r_on) ...
    patch = out["response"][ids.R_SCATTER]["figure"]["operations"][0]["params"]["value"]
    assert patch["x"] == [pytest.approx(stats["r_off"][v], abs=1e-4)]
    assert patch["y"] == [pytest.approx(stats["r_on"][v], abs=1e-4)]
    # ... and the inspector shows its stored r, p, q and bin in both conditions.
    body = callback_request(app, f"{ids.INSPECTOR}.children", {f"{ids.SELECTED}.data": v}, [f"{ids.SELECTED}.data"])
    out, _, _ = post_callback(client, body)
    children = out["response"][ids.INSPECTOR]["children"]
    assert _text(children[0]) == f"Voxel {v}"
    table = next(c for c in children if c.get("type") == "Table")
    rows = {_text(r["props"]["children"][0]): [_text(c) for c in r["props"]["children"][1:]]
            for r in table["props"]["children"][1]["props"]["children"]}
    conds = list(results.conditions)
    assert rows["r"] == [_fmt(float(stats[f"r_{m}"][v])) for m in conds]
    assert rows["p"] == [_fmt(float(stats[f"p_{m}"][v]), 4) for m in conds]
    assert rows["q (FDR)"] == [_fmt(float(stats[f"q_{m}"][v]), 4) for m in conds]
    assert rows["bin"] == [app.attnbrain_data.bin_scheme.label(int(stats[f"bin_{m}"][v])) for m in conds]
    assert stats["bin_on"][v] != -1                  # the strongest embedded voxel is significant
    # Its measured vs predicted series are the encoding stage's test arrays (z-scored for drawing).
    series = next(c for c in children if c.get("props", {}).get("id") == ids.SERIES)["props"]["figure"]["data"]
    measured = results.measured(v)
    y = _decode(series[0]["y"], "f4").astype(np.float64)
    np.testing.assert_allclose(y, (measured - measured.mean()) / measured.std(), atol=1e-5)
