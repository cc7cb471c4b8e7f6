"""core.vocabulary: the bin scheme's codes, labels and colours (the study's by default), its checks at config
load, and a run's own ``stats.bin_edges`` reaching summary.json, the flatmap legend, the CSV export's
documentation, the scenes and the offline bundle."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from pathlib import Path

import matplotlib
import numpy as np
import pytest

from core._validation import InputError
from core.config import PRESETS, config_to_dict, make_config
from core.vocabulary import (BIN_COLOURS_RGBA, DEFAULT_BINS, NEGATIVE_CODE, NEGATIVE_RGBA, NS_CODE, NS_RGBA,
                             BinScheme, rgba_css, rgba_hex)

ROOT = Path(__file__).resolve().parents[1]
CUSTOM = (0.0, 0.2, 0.4, 0.6)
CUSTOM_LABELS = ["0-0.2", "0.2-0.4", "0.4-0.6", ">=0.6"]

# The colour scale as the dashboard, the flatmaps and the viewer have always drawn it: the default scheme
# must give exactly these values, or every stored image and viewer dataset would change.
STUDY_LABELS = ("0-0.1", "0.1-0.2", "0.2-0.3", ">=0.3")
STUDY_HEX = ["#3b528b", "#21918c", "#5ec962", "#fde725"]
STUDY_NEGATIVE_HEX = "#d55e00"
STUDY_NS_CSS = "rgba(160,160,160,0.235)"
STUDY_TABLE = np.array([[213, 94, 0, 255], [160, 160, 160, 60], [59, 82, 139, 255], [33, 145, 140, 255],
                        [94, 201, 98, 255], [253, 231, 37, 255]], dtype=np.uint8)   # row = code + 2


# ------------------------------------------------------------------------------------------ the default scheme
def test_default_scheme_is_the_study_scale():
    scheme = BinScheme((0, 0.1, 0.2, 0.3))
    assert scheme == DEFAULT_BINS and scheme.edges == (0.0, 0.1, 0.2, 0.3)
    assert scheme.labels == STUDY_LABELS
    assert scheme.hex == STUDY_HEX
    assert rgba_hex(NEGATIVE_RGBA) == STUDY_NEGATIVE_HEX and rgba_css(NS_RGBA) == STUDY_NS_CSS
    assert scheme.codes == (0, 1, 2, 3) and scheme.filter_codes == (NEGATIVE_CODE, 0, 1, 2, 3)
    codes = np.random.default_rng(0).integers(-2, 4, 5000)
    for dtype in (np.int8, np.int16, np.int64):
        rgba = scheme.to_rgba(codes.astype(dtype))
        assert rgba.dtype == np.uint8 and rgba.tobytes() == STUDY_TABLE[codes + 2].tobytes()
    doc = scheme.to_json()
    assert doc["labels"] == list(STUDY_LABELS) and doc["colours"] == STUDY_HEX
    assert doc["negative"] == {"code": -2, "label": "significant r<0", "colour": STUDY_NEGATIVE_HEX}
    assert doc["ns"] == {"code": -1, "label": "n.s.", "colour": STUDY_NS_CSS}
    json.dumps(doc)   # plain JSON for the page


def test_label_of_every_code():
    assert [DEFAULT_BINS.label(c) for c in (-2, -1, 0, 3)] == ["significant r<0", "n.s.", "0-0.1", ">=0.3"]
    custom = BinScheme((0.05, 0.2, 0.4, 0.6))
    assert custom.label(NEGATIVE_CODE) == "significant r<0.05" and custom.label(NS_CODE) == "n.s."
    assert list(custom.labels) == ["0.05-0.2", "0.2-0.4", "0.4-0.6", ">=0.6"]
    # Colours belong to the bin's rank, not its edges: every four-bin scheme draws with the same four.
    assert custom.hex == DEFAULT_BINS.hex


def test_bin_colours_are_viridis_samples():
    ref = np.array([matplotlib.colormaps["viridis"](p) for p in (0.25, 0.5, 0.75, 1.0)]) * 255
    # 8-bit rounding of matplotlib's float colours: at most half a unit off.
    np.testing.assert_allclose(BIN_COLOURS_RGBA.astype(float), ref, atol=0.5 + 1e-9)
    assert DEFAULT_BINS.hex == ["#%02x%02x%02x" % tuple(c[:3]) for c in BIN_COLOURS_RGBA]


def test_colour_order_survives_colour_blindness():
    from skimage.color import rgb2lab
    lab = rgb2lab(BIN_COLOURS_RGBA[None, :, :3] / 255.0)[0]
    # Lightness is what every kind of colour vision keeps: it must rise with the bin, by a step a projector
    # cannot wash out (CIELAB L* difference of ~2 is just noticeable; demand 15).
    assert np.all(np.diff(lab[:, 0]) > 15)
    neg = rgb2lab(NEGATIVE_RGBA[None, None, :3] / 255.0)[0, 0]
    for c in lab:
        dl, da, db = np.abs(neg - c)
        # Red-green dichromats keep L* and b*, blue-yellow ones L* and a*: the negative colour must differ
        # from every bin along an axis each of them keeps (30 units of a*/b* is a clearly different hue).
        assert dl > 10 or db > 30
        assert dl > 10 or da > 30
    assert NS_RGBA[3] < 128   # n.s. must stay faint


def test_to_rgba_maps_every_code():
    codes = np.array([-2, -1, 0, 1, 2, 3, 3, -1], dtype=np.int8)
    rgba = DEFAULT_BINS.to_rgba(codes)
    assert rgba.dtype == np.uint8 and rgba.shape == (8, 4)
    expected = [NEGATIVE_RGBA, NS_RGBA, *BIN_COLOURS_RGBA, BIN_COLOURS_RGBA[3], NS_RGBA]
    np.testing.assert_array_equal(rgba, np.array(expected))


@pytest.mark.parametrize("bad, match", [
    (np.array([0, 4]), r"codes in -2\.\.3.*first: 4 at index 1"),
    (np.array([-3]), r"codes in -2\.\.3"),
    (np.array([0.0, 1.0]), "integer bin codes"),
    (np.zeros((2, 2), dtype=np.int8), "1-D array"),
])
def test_to_rgba_rejects_bad_codes(bad, match):
    with pytest.raises(InputError, match=match):
        DEFAULT_BINS.to_rgba(bad)


# ------------------------------------------------------------------------------------------ checks and config
@pytest.mark.parametrize("edges, match", [
    ((0.0, 0.1, 0.2, 0.3, 0.4), "expected 4 lower bin edges"),
    ((0.0, 0.1, 0.2), "expected 4 lower bin edges"),
    ((0.0, 0.2, 0.1, 0.3), r"strictly increasing bin edges, found \[0.0, 0.2, 0.1, 0.3\]"),
    ((0.0, 0.1, 0.1, 0.3), "strictly increasing"),
    ((0.0, 0.1, float("nan"), 0.3), "strictly increasing"),
    ((-0.1, 0.1, 0.2, 0.3), r"in \[0, 1\)"),
    ((0.0, 0.1, 0.2, 1.0), r"in \[0, 1\)"),
    (("a", 0.1, 0.2, 0.3), "expected 4 numbers"),
])
def test_bad_edges_are_one_input_error_naming_the_field(edges, match):
    with pytest.raises(InputError, match=match) as exc:
        BinScheme(edges)
    assert exc.value.field == "stats.bin_edges" and "\n" not in str(exc.value)
    if any(isinstance(e, str) for e in edges):
        match = "expected float, found str"     # the config's type check comes first
    with pytest.raises(InputError, match=match) as exc:
        make_config("demo", {"stats": {"bin_edges": list(edges)}})
    assert str(exc.value).startswith("'stats.bin_edges': ")


def test_from_config():
    cfg = make_config("demo", {"stats": {"bin_edges": list(CUSTOM)}})
    assert BinScheme.from_config(cfg).edges == CUSTOM
    assert BinScheme.from_config(config_to_dict(cfg)) == BinScheme(CUSTOM)    # run.json's dict form
    assert BinScheme.from_config(PRESETS["paper"]) == DEFAULT_BINS
    assert BinScheme.from_config(None) is DEFAULT_BINS
    assert BinScheme.from_config({"stats": {}}) is DEFAULT_BINS
    with pytest.raises(InputError, match="strictly increasing"):
        BinScheme.from_config({"stats": {"bin_edges": [0.3, 0.2, 0.1, 0.0]}})


@pytest.mark.parametrize("edges, expect", [
    ("[0.0, 0.1, 0.2, 0.3, 0.4]", "'stats.bin_edges': expected 4 lower bin edges"),
    ("[0.0, 0.2, 0.1, 0.3]", "'stats.bin_edges': expected strictly increasing bin edges"),
])
def test_precompute_refuses_bad_edges_before_any_stage(tmp_path, edges, expect):
    """The real command: one ``error:`` line, exit status 2, and no results folder created."""
    cfg = tmp_path / "study.toml"
    cfg.write_text(f"preset = \"demo\"\n[stats]\nbin_edges = {edges}\n")
    out = tmp_path / "results"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out", str(out),
                           "--quiet", "--device", "cpu"], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2, proc.stderr
    assert len(lines) == 1 and lines[0].startswith(f"error: {cfg}: ") and expect in lines[0], proc.stderr
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["study.toml"]


# ------------------------------------------------------------------------------------------ a run's own edges
def test_viewer_dataset_names_follow_the_scheme(monkeypatch, tmp_path):
    """The cortex stage names the viewer's per-bin datasets by the run's labels (pycortex stood in for)."""
    import contextlib

    from core.cortex import assets, flatmap, viewer
    seen = {}
    monkeypatch.setattr(flatmap, "make_flatmaps",
                        lambda g, bins, out, *, cache_dir, scheme: seen.update(scheme=scheme))
    monkeypatch.setattr(viewer, "viewer_surfaces_in_background", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(viewer, "make_viewer", lambda g, datasets, out, **kw: seen.update(datasets=datasets))
    rng = np.random.default_rng(1)
    bins = {m: rng.integers(-2, 4, 50).astype(np.int8) for m in ("off", "on", "uniform")}
    scheme = BinScheme(CUSTOM)
    assets._cortex_assets(types.SimpleNamespace(subject="S1"), bins, tmp_path, "t", tmp_path / "pc", scheme)
    assert seen["scheme"] is scheme
    assert list(seen["datasets"]) == ["off", "on", "uniform"] + [f"{m}: r {lab}" for m in ("off", "on")
                                                                 for lab in CUSTOM_LABELS]
    only, in_bin = seen["datasets"]["on: r 0.2-0.4"], bins["on"] == 1
    assert in_bin.any() and (only[in_bin] == BIN_COLOURS_RGBA[1]).all() and (only[~in_bin] == 0).all()


@pytest.fixture(scope="module")
def custom_run(tmp_path_factory):
    from core.outputs.reader import open_results
    from core.testing.synthetic import make_synthetic_results
    out = make_synthetic_results(tmp_path_factory.mktemp("custom"), n_voxels=300, n_test=40, k=5, seed=4,
                                 flatmap_height=48, bin_edges=CUSTOM)
    return open_results(out)


def test_custom_edges_reach_the_stats_and_summary(custom_run):
    res = custom_run
    assert res.config["stats"]["bin_edges"] == list(CUSTOM)
    st = res.stage("stats").arrays
    for m in res.conditions:
        r, sig, neg, bins = (np.asarray(st[f"{k}_{m}"]) for k in ("r", "significant", "significant_negative", "bin"))
        # Reference binning by counting the custom edges at or below r, over every voxel passing the rule
        # (significant: r > 0; significant_negative: r < 0).
        k = (np.asarray(CUSTOM)[None, :] <= r[:, None]).sum(1) - 1
        np.testing.assert_array_equal(bins, np.where(sig | neg, np.where(k < 0, -2, k), -1))
        counts = res.summary["conditions"][m]["bins"]
        assert list(counts) == CUSTOM_LABELS
        assert [counts[lab] for lab in CUSTOM_LABELS] == [int((bins == c).sum()) for c in range(4)]
    assert sum(res.summary["conditions"]["on"]["bins"].values()) > 0
    meta = json.loads((res.asset_dir("cortex") / "flatmap_meta.json").read_text())
    assert meta["palette"]["labels"] == CUSTOM_LABELS and meta["palette"]["hex"] == DEFAULT_BINS.hex


def test_custom_edges_reach_the_csv_export(custom_run):
    import io

    import pandas as pd

    from core.outputs import export
    doc = export.table_columns(custom_run)["bin_{m}"]
    assert doc == ("correlation-bin code: -2 significant r<0, -1 n.s., 0 0-0.2, 1 0.2-0.4, 2 0.4-0.6, 3 >=0.6")
    assert export.table_columns(custom_run.config) == export.table_columns(BinScheme(CUSTOM))
    assert "0 0-0.1, 1 0.1-0.2, 2 0.2-0.3, 3 >=0.3" in export.TABLE_COLUMNS["bin_{m}"]
    assert list(export.table_columns(custom_run)) == list(export.TABLE_COLUMNS)
    back = pd.read_csv(io.StringIO(export.table_csv(custom_run)))
    labels = {-2: "significant r<0", -1: "n.s.", 0: "0-0.2", 1: "0.2-0.4", 2: "0.4-0.6", 3: ">=0.6"}
    for m in custom_run.conditions:
        bins = np.asarray(custom_run.stage("stats").arrays[f"bin_{m}"])
        assert np.array_equal(back[f"bin_{m}"], bins)
        assert list(back[f"bin_label_{m}"]) == [labels[b] for b in bins]
    assert "0-0.1" not in set(back[[f"bin_label_{m}" for m in custom_run.conditions]].to_numpy().ravel())


def test_custom_edges_reach_the_scenes_and_the_bundle(custom_run, tmp_path):
    from dashboard import scenefile as S
    from dashboard.bundle import main as bundle_main
    context = S.scene_context(custom_run)
    assert context["bin_codes"] == [-2, 0, 1, 2, 3]
    scene = S.default_scene(title="custom bins", bin_codes=context["bin_codes"])
    scene["filters"]["bins"] = [3, -2]
    scenes_file = tmp_path / "talk.json"
    scenes_file.write_text(S.export_scenes([scene], run_id=custom_run.run_id, n_voxels=custom_run.n_voxels))
    assert S.load_scenes(scenes_file, **context)[0][0]["filters"]["bins"] == [-2, 3]
    out = tmp_path / "talk"
    argv = ["--results", str(custom_run.out), "--scenes", str(scenes_file), "--out", str(out)]
    assert bundle_main(argv) == 0
    doc = json.loads((out / "data" / "bundle.json").read_text())
    assert doc["colours"]["bin_labels"] == CUSTOM_LABELS and doc["colours"]["bins"] == DEFAULT_BINS.hex
    assert doc["colours"]["negative"] == rgba_hex(NEGATIVE_RGBA) and doc["colours"]["ns"] == rgba_css(NS_RGBA)
    assert doc["bin_scheme"] == BinScheme(CUSTOM).to_json()


def test_scenes_check_bins_against_the_run(custom_run):
    from dashboard import scenefile as S
    context = S.scene_context(custom_run)
    scene = S.default_scene()
    scene["filters"]["bins"] = [0, 4]
    with pytest.raises(InputError, match="filters.bins': expected bin codes among -2, 0, 1, 2, 3"):
        S.validate_scene(scene, **{k: v for k, v in context.items() if k != "run_id"})
    # A run whose scheme had fewer codes would refuse the code it lacks.
    with pytest.raises(InputError, match="found 3"):
        S.validate_scene({"version": 1, "filters": {"bins": [3]}}, n_voxels=10, roi_names=[], rules=["p"],
                         bin_codes=[-2, 0, 1, 2])
