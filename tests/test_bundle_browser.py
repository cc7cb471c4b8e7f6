"""Exports in headless Chromium: the offline bundle (built by the real command, served by a plain ``python -m
http.server``, played with the keyboard) and the dashboard's PNG/SVG switch of the figures' camera button.

One small synthetic run (400 voxels) with two scenes whose filters differ from the defaults, one bundle and
one browser for every check: the first scene's title and note, both UMAPs drawn with the colours the
dashboard computes for the scene's filters (``DashboardData.visible`` + ``umap_colour_codes``, the
independent reference), the flatmap filter layer and selected-voxel mark, ArrowRight to scene 2 (other rule,
hemisphere, hidden voxels, a camera), the copied viewer following the scenes, digit keys, and a clean
console. The format switch is checked on the dashboard of the same run, in the same browser. Screenshots go
to test-artifacts/. Marked slow: software WebGL.
"""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from browser import ConsoleLog, launch_chromium, require_chromium, save_screenshot, serve_wsgi
from dashboard import scenefile as S
from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from dashboard.data import DashboardData, FilterState
from dashboard.umap_view import UMAP_CODE, state_colour_codes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
WAIT_MS = 120_000   # software WebGL on a busy 2-core machine


def _scenes(results) -> list[dict]:
    table = results.table
    first = S.default_scene(title="Early visual cortex", note="V1 and V2, |r| >= 0.05, other voxels faint")
    first["filters"].update(rois=["V1", "V2"], bins=[0, 1, 2, 3], threshold=0.05)
    second = S.default_scene(title="Right FFA under FDR", note="q rule, right hemisphere, others hidden")
    ffa = table.index[(table.roi == "FFA") & (table.hemi == "R")]
    second["filters"].update(rule="q", hemis=["R"], ns_mode="hidden")
    second["selected"] = int(ffa[0])
    second["selected_set"] = [int(v) for v in ffa[1:6]]
    second["cameras"]["on"] = {"eye": {"x": 0.3, "y": 2.0, "z": 0.4}, "center": {"x": 0, "y": 0, "z": 0},
                               "up": {"x": 0, "y": 0, "z": 1}}
    second["viewer"] = {"condition": "on", "view": "flat"}
    third = S.default_scene(title="Where attention helps", note="on - off outcome, all voxels binned")
    third["filters"].update(colour="contrast", contrast="on_off", outcomes=[0, 1], bin_set="all")
    fourth = S.default_scene(title="Against the noise ceiling", note="r / ceiling, reliable ceilings only")
    fourth["filters"].update(colour="ceiling", bin_set="all")
    fifth = S.default_scene(title="What attention adds", note="joint on+off model, on adds or both")
    fifth["filters"].update(colour="adds", adds=[1, 3], bin_set="all")
    return [first, second, third, fourth, fifth]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    require_chromium()
    root = tmp_path_factory.mktemp("bundle")
    results_dir = make_synthetic_results(root / "results", n_voxels=400, n_test=20, k=6, seed=5, flatmap_height=96)
    results = open_results(results_dir)
    scenes = _scenes(results)
    scenes_file = root / "talk.json"
    scenes_file.write_text(S.export_scenes(scenes, run_id=results.run_id, n_voxels=results.n_voxels))
    out = root / "talk"
    proc = subprocess.run([sys.executable, "-m", "dashboard", "export-bundle", "--results", str(results_dir),
                           "--scenes", str(scenes_file), "--out", str(out)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert f"python -m http.server --directory {out} 8000" in proc.stdout
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory", str(out),
                               str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                urllib.request.urlopen(base + "/index.html", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield {"base": base, "out": out, "results": results, "scenes": scenes}
    finally:
        server.terminate()
        server.wait(timeout=10)


def _expected_codes(data: DashboardData, scene: dict, m: str) -> list[int]:
    f = scene["filters"]
    state = FilterState.from_controls(f["rule"], f["bins"], f["rois"], f["hemis"], f["threshold"], f["ns_mode"],
                                      f["colour"], f["contrast"], f["outcomes"], f["bin_set"], f["adds"])
    codes = state_colour_codes(data, m, state)
    return codes[data.umap[m].voxels].tolist()


PLOTTED = """(m) => {
  const gd = document.getElementById('umap-' + m);
  if (!gd || !gd._fullLayout || !gd.data) return null;
  return {colour: Array.from(gd.data[0].marker.color), n: gd.data[0].x.length,
          selected: gd.data[1].x.length, set: gd.data[2].x.length,
          eye: gd._fullLayout.scene.camera.eye, canvas: !!gd.querySelector('canvas')};
}"""


@pytest.fixture(scope="module")
def browser():
    with launch_chromium() as b:
        yield b


def test_bundle_plays_scenes(bundle, browser):
    data = DashboardData(bundle["results"])
    scenes = bundle["scenes"]
    doc = json.loads((bundle["out"] / "data" / "bundle.json").read_text())
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    console = ConsoleLog(page)
    page.goto(bundle["base"] + "/index.html")
    page.wait_for_function("window.attnbrainBundle && window.attnbrainBundle.ready", timeout=WAIT_MS)
    page.wait_for_function("document.querySelector('#umap-on canvas') !== null", timeout=WAIT_MS)

    # Scene 1: title, note, and the filters applied to both UMAPs exactly as the dashboard would.
    assert page.inner_text("#scene-title") == scenes[0]["title"]
    assert page.inner_text("#scene-note") == scenes[0]["note"]
    assert page.inner_text("#counter") == "1 / 5"
    for m in ("off", "on"):
        plotted = page.evaluate(PLOTTED, m)
        assert plotted["canvas"] and plotted["n"] == data.umap[m].voxels.size
        expected = _expected_codes(data, scenes[0], m)
        assert plotted["colour"] == expected
        # The filter does something: some embedded voxels are shown in a bin colour and some are not.
        assert 0 < sum(c >= 3 for c in expected) < sum(c >= 1 for c in expected)
        assert plotted["selected"] == 0
        layer = page.get_attribute(f"#flat-{m} img.layer", "src")
        assert layer == doc["flatmap"]["layers"][0][m]
    assert page.is_hidden("#flat-off .mark")
    save_screenshot(page, "bundle_scene1.png")

    # ArrowRight: scene 2 with its rule, hemisphere, hidden voxels, selection, set and camera.
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('scene-title').textContent === "
                           + json.dumps(scenes[1]["title"]), timeout=WAIT_MS)
    assert page.inner_text("#counter") == "2 / 5"
    for m in ("off", "on"):
        plotted = page.evaluate(PLOTTED, m)
        expected = _expected_codes(data, scenes[1], m)
        assert plotted["colour"] == expected
        assert 0 in expected, "ns_mode 'hidden' hides voxels"
        assert plotted["selected"] == int(data.umap[m].position[scenes[1]["selected"]] >= 0)
        assert plotted["set"] == int((data.umap[m].position[scenes[1]["selected_set"]] >= 0).sum())
        assert page.get_attribute(f"#flat-{m} img.layer", "src") == doc["flatmap"]["layers"][1][m]
        assert page.is_visible(f"#flat-{m} .mark")
    eye = page.evaluate(PLOTTED, "on")["eye"]
    assert eye == pytest.approx(scenes[1]["cameras"]["on"]["eye"])
    voxel = scenes[1]["selected"]
    caption = page.inner_text("#scene-voxel")
    assert f"voxel {voxel}" in caption and "FFA (R)" in caption
    assert f"r on {data.r['on'][voxel]:.3f}" in caption and f"r off {data.r['off'][voxel]:.3f}" in caption
    save_screenshot(page, "bundle_scene2.png")

    # The 3-D brain (the run's viewer, copied) follows the scene: its condition, view and voxel.
    page.click("#viewer-toggle")
    frame = page.wait_for_selector("#viewer").content_frame()
    frame.wait_for_function(f"window.attnbrainViewer && window.attnbrainViewer.ready && "
                            f"window.attnbrainViewer.dataset === 'on' && window.attnbrainViewer.marked === {voxel}",
                            timeout=WAIT_MS)

    # Digit keys jump, and the position survives in the URL hash.
    page.keyboard.press("1")
    page.wait_for_function("document.getElementById('counter').textContent === '1 / 5'", timeout=WAIT_MS)
    assert page.evaluate("window.location.hash") == "#scene=1"
    frame.wait_for_function("window.attnbrainViewer.dataset === 'off' && window.attnbrainViewer.marked === null",
                            timeout=WAIT_MS)

    # Scene 3: coloured by the on - off test's outcome, all voxels binned, "b better" filtered out.
    page.keyboard.press("3")
    page.wait_for_function("document.getElementById('counter').textContent === '3 / 5'", timeout=WAIT_MS)
    helps, none = (UMAP_CODE["outcome0"] + o + 1 for o in (1, 0))
    for m in ("off", "on"):
        plotted = page.evaluate(PLOTTED, m)
        expected = _expected_codes(data, scenes[2], m)
        assert plotted["colour"] == expected
        # Shown voxels take outcome codes only (no bin colour), and the filtered-out outcome is not drawn.
        assert none in expected and set(expected) <= {helps, none, UMAP_CODE["faint"]}
        assert page.get_attribute(f"#flat-{m} img.layer", "src") == doc["flatmap"]["layers"][2][m]
    assert "on - off" in page.inner_text("#legend") and "on better" in page.inner_text("#legend")
    assert "coloured by on - off" in page.inner_text("#scene-filters")
    save_screenshot(page, "bundle_scene3.png")

    # Scene 4: r / noise ceiling; voxels without a reliable ceiling are drawn as filtered out.
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('counter').textContent === '4 / 5'", timeout=WAIT_MS)
    for m in ("off", "on"):
        expected = _expected_codes(data, scenes[3], m)
        assert page.evaluate(PLOTTED, m)["colour"] == expected
        assert any(c >= UMAP_CODE["ceiling0"] for c in expected) and UMAP_CODE["faint"] in expected
        assert page.get_attribute(f"#flat-{m} img.layer", "src") == doc["flatmap"]["layers"][3][m]
    assert "noise ceiling" in page.inner_text("#legend")

    # Scene 5: what the joint model finds attention adds; only "on adds" and "both" drawn.
    page.keyboard.press("ArrowRight")
    page.wait_for_function("document.getElementById('counter').textContent === '5 / 5'", timeout=WAIT_MS)
    for m in ("off", "on"):
        expected = _expected_codes(data, scenes[4], m)
        assert page.evaluate(PLOTTED, m)["colour"] == expected
        assert set(expected) <= {UMAP_CODE["faint"], UMAP_CODE["adds0"] + 1, UMAP_CODE["adds0"] + 3}
        assert page.get_attribute(f"#flat-{m} img.layer", "src") == doc["flatmap"]["layers"][4][m]
    assert "what attention adds" in page.inner_text("#legend")
    assert console.errors() == []
    page.close()


def test_bundle_is_self_contained(bundle):
    """No file of the page refers to another host: everything is served from the bundle folder."""
    out = bundle["out"]
    for name in ("index.html", "bundle.js", "bundle.css", "data/bundle.json"):
        text = (out / name).read_text()
        assert "http://" not in text and "https://" not in text, name
    sizes = {p.relative_to(out).parts[0]: 0 for p in out.iterdir()}
    assert {"index.html", "bundle.js", "plotly.min.js", "data", "flatmaps", "viewer"} <= set(sizes)
    index = json.loads((out / "data" / "bundle.json").read_text())["arrays"]["index"]
    r_on = np.frombuffer((out / "data" / "arrays.bin").read_bytes(), dtype="<f8", count=index["r_on"]["length"],
                         offset=index["r_on"]["offset"])
    assert np.array_equal(r_on, np.asarray(bundle["results"].stage("stats").arrays["r_on"], dtype=np.float64),
                          equal_nan=True)


CONFIG = """(id) => {
  const gd = document.querySelector('#' + id + ' .js-plotly-plot');
  return gd && gd._context ? gd._context.toImageButtonOptions : null;
}"""


def test_dashboard_figure_format_switch(bundle, browser):
    """The Downloads section's switch makes the 2-D figures' camera button save SVG; 3-D UMAPs stay PNG."""
    from dashboard.app import create_app
    from dashboard.downloads import FIGURE_FORMAT
    from dashboard.plotting import PNG_SCALE
    app = create_app(bundle["results"])
    with serve_wsgi(app.server) as url:
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        console = ConsoleLog(page)
        page.goto(url + "/")
        page.wait_for_function("document.querySelector('#r-scatter .js-plotly-plot') && "
                               "document.querySelector('#umap-on canvas')", polling=200, timeout=WAIT_MS)
        assert page.evaluate(CONFIG, "r-scatter") == {"format": "png", "filename": "r-scatter", "scale": PNG_SCALE}
        page.click("#downloads summary")
        page.click(f"#{FIGURE_FORMAT} label:has-text('SVG')")
        for graph in ("r-scatter", "bin-counts", "flat-on"):
            page.wait_for_function(f"({CONFIG})('{graph}') && ({CONFIG})('{graph}').format === 'svg'",
                                   polling=200, timeout=WAIT_MS)
        assert page.evaluate(CONFIG, "umap-on")["format"] == "png"
        save_screenshot(page, "dashboard_downloads.png")
        assert console.errors() == []
        page.close()
