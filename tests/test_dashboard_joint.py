"""The dashboard's view of the joint on+off model: colouring and filtering by what attention adds, the
inspector's partition rows, the ROI partition summary, scenes and the CSV columns.

References come from the results table (core/outputs/export.py's CSV columns) and the stored stage meta, never
from the functions under test.
"""
from __future__ import annotations

import base64
import io
import json

import numpy as np
import plotly.io.json as pj
import pytest

from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from core.vocabulary import ADDS_CODES, ADDS_RGBA, PAIR
from dashboard import ids
from dashboard.app import create_app
from dashboard.data import FilterState
from dashboard.filters import filter_patches, legend_items
from dashboard.inspector import inspector_children, partition_rows
from dashboard.summary_plots import roi_partition_figure
from dashboard.umap_view import UMAP_CODE


@pytest.fixture(scope="module")
def app(tmp_path_factory):
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


def _reference_adds(data, table):
    level = data.results.stage("joint").meta["test"]["level"]
    on = (table["q_unique_on"] <= level) & (table["unique_on"] > 0)
    off = (table["q_unique_off"] <= level) & (table["unique_off"] > 0)
    return np.where(np.isfinite(table["r2_joint"]), on.astype(int) + 2 * off.astype(int), -1)


def test_the_synthetic_run_has_several_kinds_of_voxel(data, table):
    codes = _reference_adds(data, table)
    # Without voxels of more than one kind the tests below would pass vacuously.
    assert (codes == 0).sum() >= 10 and ((codes == 1) | (codes == 2) | (codes == 3)).sum() >= 10


@pytest.mark.parametrize("adds", [(0, 1, 2, 3), (1, 3)])
def test_colouring_by_what_attention_adds(app, data, table, adds):
    from PIL import Image
    state = FilterState(bin_set="all", colour="adds", adds=adds)
    patches, message = filter_patches(data, state)
    codes = _reference_adds(data, table)
    lookup = np.asarray(data.flatmap.lookup)
    client = app.server.test_client()
    for m in PAIR:
        shown = np.isfinite(table[f"r_{m}"].to_numpy()) & np.isin(codes, adds)
        expected = np.where(shown, UMAP_CODE["adds0"] + codes, UMAP_CODE["faint"])
        voxels, _ = data.results.umap(m)
        op = _ops(patches[ids.umap_graph(m)])[0]
        np.testing.assert_array_equal(_decode(op["params"]["value"], "u1"), expected[voxels])
        layer = np.asarray(Image.open(io.BytesIO(client.get(data.flatmap_layer_url(m, state)).data)).convert("RGBA"))
        rows, cols = np.nonzero(lookup >= 0)
        vox = lookup[rows, cols]
        hit = shown[vox]
        assert hit.any() and (layer[rows, cols][hit] == ADDS_RGBA[codes[vox][hit]]).all()
        assert f"{int(shown.sum()):,} voxels shown with attention {m}" in message
    assert "what attention adds" in message
    text = _text(legend_items(data, state))
    assert all(lab in text for lab in ADDS_CODES.values()) and "conservative" in text


def test_the_inspector_shows_the_partition(data, table):
    v = int(np.flatnonzero(_reference_adds(data, table) > 0)[0])
    rows = partition_rows(data, v).children[1].children
    cells = {r.children[0].children: [c.children for c in r.children[1:]] for r in rows}
    row = table.iloc[v]
    assert cells["unique on (joint − off)"][0] == f"{row['unique_on']:.4f}"
    assert float(cells["unique on (joint − off)"][2]) == pytest.approx(row["q_unique_on"], abs=5e-5)
    assert cells["shared (on + off − joint)"][0] == f"{row['shared']:.4f}"
    assert cells["test R², joint / on / off"][0] == f"{row['r2_joint']:.4f} / {row['r2_on']:.4f} / {row['r2_off']:.4f}"
    assert "joint on+off model" in _text(inspector_children(data, v))


def test_the_roi_partition_averages_the_clipped_parts(data, table):
    fig = roi_partition_figure(data)
    use = table["r2_joint"] > 0
    by = {k: t for k, t in zip(("unique_on", "shared", "unique_off"), fig.data)}
    for k, trace in by.items():
        for name, value in zip(trace.y, trace.x):
            sel = use & (table["roi"] == name)
            expected = float(np.maximum(table.loc[sel, k], 0).mean()) if sel.any() else 0.0
            assert value == pytest.approx(expected, abs=1e-6), (k, name)
    assert fig.layout.barmode == "stack"


def test_scenes_and_links_keep_the_adds_filter(data):
    from dashboard.presenting import scene_kwargs
    from dashboard.scenefile import default_scene, validate_scene
    from dashboard.scenelink import scene_from_url, scene_to_url
    s = default_scene()
    s["filters"].update(colour="adds", adds=[3, 1])
    s = validate_scene(s, **scene_kwargs(data))
    assert s["filters"]["adds"] == [1, 3]
    assert scene_from_url(scene_to_url(s), **scene_kwargs(data)) == (s, "")
    from core._validation import InputError
    bad = default_scene()
    bad["filters"]["adds"] = [4]
    with pytest.raises(InputError, match="filters.adds"):
        validate_scene(bad, **scene_kwargs(data))
    state = FilterState(colour="adds", adds=(1, 3))
    from urllib.parse import parse_qsl
    assert FilterState.from_query(dict(parse_qsl(state.to_query()))) == state
