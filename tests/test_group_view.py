"""The group view's figures (dashboard.group_view) from a group table built here, checked cell by cell."""
import numpy as np
import pandas as pd
import pytest

from core.study.group import GROUP_COLUMNS
from dashboard.group_view import layer_order, layer_profile_figure, roi_layer_heatmap, run_from_heatmap_click


@pytest.fixture
def table():
    rng = np.random.default_rng(0)
    rows = []
    for s in ("S01", "S02", "S03"):
        for lay in ("pool", "layer2", "layer4"):            # out of network order on purpose
            for roi in ("all", "V1", "FFA"):
                on, off = rng.uniform(0, 0.4, 2)
                rows.append({"subject": s, "layer": lay, "weights": "auto", "run_id": f"run-{s}-{lay}", "roi": roi,
                             "n_voxels": 100, "share_sig_on": rng.uniform(), "share_sig_off": rng.uniform(),
                             "median_r_on": on, "median_r_off": off if lay != "layer2" else on,
                             "median_delta_r": on - off if lay != "layer2" else 0.0,
                             "share_on_better": rng.uniform(), "share_off_better": rng.uniform(),
                             "shared_layer": lay == "layer2"})
    return pd.DataFrame(rows, columns=list(GROUP_COLUMNS))


def test_layers_are_in_network_order():
    assert layer_order(["pool", "layer2", "mine", "layer4"]) == ["layer2", "layer4", "pool", "mine"]


def test_the_layer_profile_plots_the_median_over_subjects_and_a_dot_per_subject(table):
    fig = layer_profile_figure(table, roi="V1")
    assert list(fig.layout.xaxis.ticktext) == ["layer2", "layer4", "pool"]
    lines = [t for t in fig.data if t.mode == "lines+markers"]
    dots = [t for t in fig.data if t.mode == "markers"]
    v1 = table[table["roi"] == "V1"]
    for trace, col in zip(lines, ("median_r_on", "median_r_off")):
        np.testing.assert_allclose(trace.y, [v1[v1["layer"] == lay][col].median() for lay in ("layer2", "layer4",
                                                                                               "pool")])
    assert all(len(d.y) == 9 for d in dots)                  # 3 subjects x 3 layers per condition
    assert set(dots[0].customdata) == set(v1["run_id"])
    # The trunk's layer is shaded as the negative control.
    (shape,) = fig.layout.shapes
    assert shape.x0 == -0.5 and shape.x1 == 0.5
    assert "negative control" in fig.layout.annotations[0].text


def test_the_heatmap_cells_are_medians_and_a_subjects_cells_open_its_runs(table):
    fig = roi_layer_heatmap(table, "median_delta_r")
    (heat,) = fig.data
    assert list(heat.x) == ["layer2", "layer4", "pool"] and list(heat.y) == ["all", "FFA", "V1"]
    for i, roi in enumerate(heat.y):
        for j, lay in enumerate(heat.x):
            cell = table[(table["roi"] == roi) & (table["layer"] == lay)]["median_delta_r"]
            assert heat.z[i][j] == pytest.approx(np.median(cell))
    assert heat.zmid == 0 and all(v == "" for row in heat.customdata for v in row)
    assert np.all(np.asarray(heat.z)[:, 0] == 0)             # the negative-control layer
    one = roi_layer_heatmap(table, "share_on_better", subject="S02").data[0]
    assert one.customdata[1][2] == "run-S02-pool"
    click = {"points": [{"customdata": one.customdata[1][2], "x": "pool", "y": "FFA"}]}
    assert run_from_heatmap_click(click) == "run-S02-pool"
    assert run_from_heatmap_click({"points": [{"customdata": ""}]}) is None and run_from_heatmap_click(None) is None
