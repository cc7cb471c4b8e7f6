"""The dashboard in headless Chromium (software WebGL): what only a browser can show.

One small synthetic run (a few hundred voxels, the minimal stand-in viewer) and one page load for the
module; the tests run in file order on that page: load, UMAP click, flatmap click, viewer bridge, filters,
camera link, set selection, and finally the console. Screenshots go to test-artifacts/. Marked slow: about
a minute on 2 idle cores (software WebGL), several on a busy machine.
"""
from __future__ import annotations

import json
import time

import numpy as np
import pytest

from browser import ConsoleLog, launch_chromium, require_chromium, save_screenshot, serve_wsgi
from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from core.vocabulary import PAIR
from dashboard import ids
from dashboard.app import create_app
from dashboard.data import FilterState
from dashboard.r_scatter import set_from_r_selection
from dashboard.umap_view import UMAP_CODE, state_colour_codes, umap_colour_codes

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Console messages that are expected and harmless; none so far.
KNOWN_HARMLESS: tuple[str, ...] = ()
WAIT_MS = 120_000   # generous: software WebGL on a busy 2-core machine

# Screen position of trace-0 point i of a 3-D scatter: plotly's own projection (model, view, projection
# matrices of the scene camera, column-major) applied to the point scaled like the scene does.
PROJECT = """([graphId, i]) => {
  const gd = document.querySelector('#' + graphId + ' .js-plotly-plot');
  const scene = gd._fullLayout.scene._scene, ds = scene.dataScale, t = gd._fullData[0];
  const cp = scene.glplot.cameraParams;
  const mul = (M, p) => [0, 1, 2, 3].map(r => M[r] * p[0] + M[4 + r] * p[1] + M[8 + r] * p[2] + M[12 + r] * p[3]);
  const p = mul(cp.projection, mul(cp.view, mul(cp.model, [t.x[i] * ds[0], t.y[i] * ds[1], t.z[i] * ds[2], 1])));
  const box = scene.glplot.canvas.getBoundingClientRect();
  return {x: box.left + (p[0] / p[3] + 1) / 2 * box.width, y: box.top + (1 - p[1] / p[3]) / 2 * box.height,
          depth: p[2] / p[3]};
}"""
# Page position of 2-D data coordinates of a cartesian graph.
DATA_TO_PAGE = """([graphId, x, y]) => {
  const gd = document.querySelector('#' + graphId + ' .js-plotly-plot');
  const fl = gd._fullLayout, box = gd.getBoundingClientRect();
  return {x: box.left + fl.xaxis._offset + fl.xaxis.d2p(x), y: box.top + fl.yaxis._offset + fl.yaxis.d2p(y)};
}"""
TRACE = """([graphId, i, key]) => {
  const gd = document.querySelector('#' + graphId + ' .js-plotly-plot');
  const v = key.split('.').reduce((o, k) => o[k], gd._fullData[i]);
  return v === undefined || v === null ? null : Array.from(v);
}"""


@pytest.fixture(scope="module")
def app_data(tmp_path_factory):
    require_chromium()
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=400, n_test=60, k=6, seed=11,
                                 flatmap_height=128)
    app = create_app(open_results(out))
    return app, app.attnbrain_data


@pytest.fixture(scope="module")
def base_url(app_data):
    with serve_wsgi(app_data[0].server) as url:
        yield url


@pytest.fixture(scope="module")
def page(base_url):
    with launch_chromium() as browser:
        pg = browser.new_page(viewport={"width": 1500, "height": 1000})
        pg.console_log = ConsoleLog(pg)
        pg.set_default_timeout(WAIT_MS)
        pg.goto(base_url + "/")
        _wait(pg, "document.querySelectorAll('#umap-off canvas').length > 0 && "
                             "document.querySelectorAll('#umap-on canvas').length > 0 && "
                             "!!(window.attnbrain && window.dash_clientside.attnbrain)")
        yield pg


@pytest.fixture(scope="module")
def data(app_data):
    return app_data[1]


def _wait(page, expression: str, arg=None):
    """Wait until ``expression`` is truthy, polling on a timer (animation frames are rare while software
    WebGL renders)."""
    return page.wait_for_function(expression, arg=arg, polling=200, timeout=WAIT_MS)


def _wait_inspector(page, voxel: int):
    _wait(page, f"document.querySelector('#{ids.INSPECTOR} h3') && "
                           f"document.querySelector('#{ids.INSPECTOR} h3').textContent === 'Voxel {voxel}'")


def _highlight(page, graph_id: str) -> list:
    keys = ("x", "y", "z") if graph_id.startswith("umap") else ("x", "y")
    return [page.evaluate(TRACE, [graph_id, 1, k]) for k in keys]


# ---------------------------------------------------------------------------------------------- tests
def test_page_loads_with_both_conditions(page, data):
    for m in PAIR:
        title = page.evaluate(f"document.querySelector('#umap-{m} .js-plotly-plot').layout.title.text")
        assert f"attention {m}" in title and data.run_id in title and "SIMULATED" in title
        n = page.evaluate(f"document.querySelector('#umap-{m} .js-plotly-plot')._fullData[0].x.length")
        assert n == data.umap[m].voxels.size
        src = page.evaluate(f"document.querySelector('#flat-{m} .js-plotly-plot').layout.images[0].source")
        assert src == data.flatmap_url(m)
    # The flatmap PNG really reached the page (the SVG image element loaded it).
    _wait(page, "document.querySelectorAll('#flat-on image').length >= 2")
    assert page.locator(f"#{ids.INSPECTOR}").inner_text().startswith("Click a voxel")
    assert page.locator("#voxel-table a").count() > 0
    # The clientside JS names the conditions and the run's bins from the page's vocabulary.
    assert page.evaluate("window.attnbrain.vocabulary.pair") == list(PAIR)
    assert page.evaluate("window.attnbrain.bins") == data.bin_scheme.to_json()
    save_screenshot(page, "dashboard-load.png")


def test_click_in_the_off_umap_selects_the_voxel_everywhere(page, data):
    page.evaluate("""() => { window.hovered = null; window.clicked = null;
        const gd = document.querySelector('#umap-off .js-plotly-plot');
        gd.on('plotly_hover', e => {
          window.hovered = e.points[0].curveNumber === 0 ? e.points[0].pointNumber : null; });
        gd.on('plotly_click', e => { window.clicked = e.points[0].pointNumber; }); }""")
    # Aim at the point nearest the viewer (least likely to be hidden behind another); the test then takes
    # whichever point plotly reports under the cursor.
    n_emb = data.umap["off"].voxels.size
    positions = [page.evaluate(PROJECT, ["umap-off", i]) for i in range(0, n_emb, max(1, n_emb // 60))]
    target = min(positions, key=lambda p: p["depth"])
    page.mouse.move(target["x"], target["y"])
    _wait(page, "window.hovered !== null")
    point = page.evaluate("window.hovered")
    # gl3d reports a click when its render loop picks the point while the button is down: hold it until then.
    page.mouse.down()
    _wait(page, "window.clicked !== null")
    page.mouse.up()
    assert page.evaluate("window.clicked") == point
    voxel = int(data.umap["off"].voxels[point])
    _wait_inspector(page, voxel)
    pos_on = int(data.umap["on"].position[voxel])
    assert pos_on >= 0, "the synthetic run embeds the same voxels in both conditions"
    _wait(page, f"""document.querySelector('#umap-on .js-plotly-plot')._fullData[1].x.length === 1""")
    assert _highlight(page, "umap-on") == [[int(c)] for c in data.umap["on"].coords[pos_on]]
    assert _highlight(page, "umap-off") == [[int(c)] for c in data.umap["off"].coords[point]]
    rx, ry = _highlight(page, "r-scatter")
    assert rx[0] == pytest.approx(data.r["off"][voxel], abs=1e-4)
    assert ry[0] == pytest.approx(data.r["on"][voxel], abs=1e-4)
    assert "attention off" in page.locator(f"#{ids.INSPECTOR}").inner_text()
    save_screenshot(page, "dashboard-umap-click.png")


def test_flatmap_click_selects_the_voxel_under_it(page, data):
    lookup = np.asarray(data.flatmap.lookup)
    current = page.locator(f"#{ids.INSPECTOR} h3").inner_text()
    # A voxel owning a 3x3 block of pixels, clicked in the block's centre: robust to sub-pixel rounding.
    block = (lookup[:-2, :-2] == lookup[1:-1, 1:-1]) & (lookup[2:, 2:] == lookup[1:-1, 1:-1]) & \
        (lookup[:-2, 2:] == lookup[1:-1, 1:-1]) & (lookup[2:, :-2] == lookup[1:-1, 1:-1]) & (lookup[1:-1, 1:-1] >= 0)
    rows, cols = np.nonzero(block)
    choice = [(r + 1, c + 1) for r, c in zip(rows, cols) if f"Voxel {lookup[r + 1, c + 1]}" != current]
    r, c = choice[len(choice) // 2]
    voxel = int(lookup[r, c])
    pos = page.evaluate(DATA_TO_PAGE, ["flat-on", float(c), float(data.flatmap.height - 1 - r)])
    page.mouse.click(pos["x"], pos["y"])
    _wait_inspector(page, voxel)
    fx, fy = _highlight(page, "flat-off")
    assert fx[0] == pytest.approx(data.flatmap.centre[voxel, 0], abs=0.01)
    assert fy[0] == pytest.approx(data.flatmap.height - 1 - data.flatmap.centre[voxel, 1], abs=0.01)


def test_viewer_bridge_selects_and_marks(page, data):
    selected = int(page.locator(f"#{ids.INSPECTOR} h3").inner_text().split()[1])
    page.click(f"#{ids.VIEWER_LOAD}")
    _wait(page, "window.attnbrain.viewer.ready === true")
    frame = page.frame_locator(f"#{ids.VIEWER_FRAME}")
    # On ready the app tells the viewer its condition and the current selection.
    _wait(page, f"""document.getElementById('{ids.VIEWER_FRAME}').contentWindow.attnbrainViewer
                               .marked === {selected}""")
    assert frame.locator("#dataset").inner_text() == "off"
    # A pick in the viewer selects that voxel in the app, which marks it back.
    vdata = json.loads((data.viewer_dir / "data.json").read_text())
    xy = np.column_stack([vdata["x"], vdata["y"]])
    target = next(v for v in np.argsort(-np.asarray(data.r["on"])) if int(v) != selected)
    box = frame.locator("#cortex").bounding_box()
    frame.locator("#cortex").click(position={"x": xy[target, 0] / vdata["width"] * box["width"],
                                             "y": xy[target, 1] / vdata["height"] * box["height"]})
    # The viewer picks the voxel nearest the click (ties to the lowest row), as the reference here does.
    click_xy = xy[target]
    picked = int(np.argmin(((xy - click_xy) ** 2).sum(1)))
    _wait_inspector(page, picked)
    _wait(page, f"""document.getElementById('{ids.VIEWER_FRAME}').contentWindow.attnbrainViewer
                               .marked === {picked}""")
    _wait(page, f"document.getElementById('{ids.VIEWER_STATUS}').textContent.includes('{picked}')")
    # The condition switch changes the viewer's dataset.
    page.locator(f"#{ids.VIEWER_COND} label", has_text="attention on").click()
    _wait(page, f"""document.getElementById('{ids.VIEWER_FRAME}').contentWindow.attnbrainViewer
                               .dataset === 'on'""")
    save_screenshot(page, "dashboard-viewer.png")


def test_filter_change_recolours(page, data):
    before = page.evaluate(TRACE, ["umap-off", 0, "marker.color"])
    page.locator(f"#{ids.NS_MODE} label", has_text="hidden").click()
    state = FilterState(rule=data.default_rule, ns="hidden")
    expected = umap_colour_codes(data.bins("off", state.rule), data.visible("off", state), "hidden")[
        data.umap["off"].voxels].tolist()
    assert expected != before
    _wait(page, f"""JSON.stringify(Array.from(document.querySelector('#umap-off .js-plotly-plot')
                              ._fullData[0].marker.color)) === '{json.dumps(expected, separators=(",", ":"))}'""")
    # Hidden points cannot be picked: after hovering a visible point (the picker runs), a hidden one yields
    # no hover of itself.
    codes = np.asarray(expected)
    hidden, shown = np.flatnonzero(codes == 0), np.flatnonzero(codes > 0)
    assert hidden.size and shown.size
    page.evaluate("window.hovered = null")
    pos = page.evaluate(PROJECT, ["umap-off", int(shown[0])])
    page.mouse.move(pos["x"], pos["y"])
    _wait(page, "window.hovered !== null")
    page.evaluate("window.hovered = null")
    pos = page.evaluate(PROJECT, ["umap-off", int(hidden[0])])
    page.mouse.move(pos["x"], pos["y"])
    time.sleep(3.0)
    assert page.evaluate("window.hovered") != int(hidden[0])
    page.mouse.move(5, 5)
    src = page.evaluate("document.querySelector('#flat-off .js-plotly-plot').layout.images[1].source")
    assert "ns=hidden" in src
    # The flatmap filter layer loads (the browser fetches the new image).
    status = page.evaluate(f"fetch('{src}').then(r => r.status)")
    assert status == 200
    assert "voxels shown with attention off" in page.locator(f"#{ids.FILTER_MSG}").inner_text()
    save_screenshot(page, "dashboard-filtered.png")


def test_colouring_by_contrast_and_binning_all_voxels(page, data):
    def wait_colours(state):
        expected = state_colour_codes(data, "on", state)[data.umap["on"].voxels].tolist()
        _wait(page, f"""JSON.stringify(Array.from(document.querySelector('#umap-on .js-plotly-plot')
                              ._fullData[0].marker.color)) === '{json.dumps(expected, separators=(",", ":"))}'""")
        return expected
    page.locator(f"#{ids.COLOUR} label", has_text="contrast outcome").click()
    state = FilterState(rule=data.default_rule, ns="hidden", colour="contrast")
    codes = wait_colours(state)
    assert set(codes) - {0} and min(set(codes) - {0}) >= UMAP_CODE["outcome0"]      # outcome colours only
    _wait(page, f"document.querySelector('#{ids.LEGEND}').innerText.includes('on better')")
    src = page.evaluate("document.querySelector('#flat-on .js-plotly-plot').layout.images[1].source")
    assert "colour=contrast" in src and page.evaluate(f"fetch('{src}').then(r => r.status)") == 200
    _wait(page, f"document.querySelector('#{ids.ROI_CONTRAST} .js-plotly-plot') && document.querySelector("
                f"'#{ids.ROI_CONTRAST} .js-plotly-plot').layout.title.text.includes('on - off')")
    save_screenshot(page, "dashboard-contrast.png")
    page.locator(f"#{ids.COLOUR} label", has_text="what attention adds").click()
    codes = wait_colours(FilterState(rule=data.default_rule, ns="hidden", colour="adds"))
    assert set(codes) - {0} and min(set(codes) - {0}) >= UMAP_CODE["adds0"]
    _wait(page, f"document.querySelector('#{ids.LEGEND}').innerText.includes('shared only')")
    page.locator(f"#{ids.COLOUR} label", has_text="r bins").click()
    page.locator(f"#{ids.BIN_SET} label", has_text="all voxels").click()
    wait_colours(FilterState(rule=data.default_rule, ns="hidden", bin_set="all"))
    _wait(page, f"document.querySelector('#{ids.LEGEND}').innerText.includes('all voxels')")
    _wait(page, f"document.querySelector('#{ids.BIN_COUNTS} .js-plotly-plot').layout.title.text"
                ".startsWith('All voxels')")
    page.locator(f"#{ids.BIN_SET} label", has_text="significant voxels").click()
    wait_colours(FilterState(rule=data.default_rule, ns="hidden"))
    assert "needs r ≥" in page.locator(f"#{ids.LEGEND}").inner_text()


def test_cameras_follow_each_other_while_linked(page):
    eye = {"x": 0.4, "y": -1.9, "z": 0.7}
    page.evaluate("""(eye) => Plotly.relayout(document.querySelector('#umap-off .js-plotly-plot'),
        {'scene.camera': {eye: eye, center: {x: 0, y: 0, z: 0}, up: {x: 0, y: 0, z: 1}}})""", eye)
    _wait(page, """(eye) => {
        const c = document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene.camera.eye;
        return Math.abs(c.x - eye.x) < 1e-6 && Math.abs(c.y - eye.y) < 1e-6 && Math.abs(c.z - eye.z) < 1e-6; }""",
          eye)
    # Live: dragging the on scatter turns the off one while the mouse moves.
    box = page.locator("#umap-on .js-plotly-plot").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 + 40
    page.mouse.move(cx, cy)
    page.mouse.down()
    for k in range(1, 6):
        page.mouse.move(cx + 25 * k, cy + 5 * k)
        time.sleep(0.05)
    page.mouse.up()
    _wait(page, """() => {
        const a = document.querySelector('#umap-off .js-plotly-plot')._fullLayout.scene.camera.eye;
        const b = document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene.camera.eye;
        return Math.abs(b.x - 0.4) > 1e-3 && Math.abs(a.x - b.x) < 1e-6 && Math.abs(a.y - b.y) < 1e-6; }""")
    # Unlinked: the other camera stays where it is.
    page.locator(f"#{ids.CAMERA_LINK} label", has_text="linked").click()
    _wait(page, "window.attnbrain.cameraLinked === false")
    on_eye = page.evaluate("document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene.camera.eye")
    page.evaluate("""() => Plotly.relayout(document.querySelector('#umap-off .js-plotly-plot'),
        {'scene.camera.eye': {x: 2.0, y: 0.1, z: 0.2}})""")
    time.sleep(1.0)
    assert page.evaluate("document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene.camera.eye") == on_eye
    page.locator(f"#{ids.CAMERA_LINK} label", has_text="linked").click()


def test_lasso_on_the_r_scatter_highlights_the_set_in_both_umaps(page, data):
    page.locator(f"#{ids.R_SCATTER}").scroll_into_view_if_needed()
    corners = [(0.15, 0.15), (0.7, 0.15), (0.7, 0.7), (0.15, 0.7)]
    pts = [page.evaluate(DATA_TO_PAGE, [ids.R_SCATTER, x, y]) for x, y in corners]
    page.mouse.move(pts[0]["x"], pts[0]["y"])
    page.mouse.down()
    for p in pts[1:] + pts[:1]:
        page.mouse.move(p["x"], p["y"], steps=6)
    page.mouse.up()
    _wait(page, f"document.getElementById('{ids.SET_MSG}').textContent.includes('voxels in the selected')")
    outline = page.evaluate("window.attnbrain.lastOutline")
    # The server's set for the outline the browser drew (filters: n.s. hidden, from the previous test).
    expected = set_from_r_selection(data, outline, FilterState(rule=data.default_rule, ns="hidden"))
    assert expected.size > 5
    assert f"{expected.size:,} voxels in the selected set" in page.locator(f"#{ids.SET_MSG}").inner_text()
    for m in PAIR:
        n_in = int((data.umap[m].position[expected] >= 0).sum())
        _wait(page, f"""document.querySelector('#umap-{m} .js-plotly-plot')._fullData[2].x.length
                                   === {n_in}""")
    assert page.locator("#voxel-table a").count() == min(expected.size, 200)
    page.locator("#umap-off").scroll_into_view_if_needed()
    save_screenshot(page, "dashboard-set.png")


def test_neighbourhood_map_hovers_and_selects_its_voxels(page, data):
    view = data.jaccard_map
    page.locator(f"#{ids.JACCARD_MAP}").scroll_into_view_if_needed()
    _wait(page, f"document.querySelectorAll('#{ids.JACCARD_MAP} canvas').length > 0")
    # Aim at the most isolated point, so the point under the cursor is unambiguous.
    xy = view.coords.astype(np.float64)
    d2 = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    i = int(np.argmax(d2.min(1)))
    v = int(view.voxels[i])
    current = page.locator(f"#{ids.INSPECTOR} h3").inner_text()
    assert current != f"Voxel {v}"
    pos = page.evaluate(DATA_TO_PAGE, [ids.JACCARD_MAP, float(xy[i, 0]), float(xy[i, 1])])
    page.mouse.move(pos["x"], pos["y"])
    _wait(page, f"document.querySelector('#{ids.JACCARD_MAP} .hoverlayer .hovertext') !== null")
    hover = page.locator(f"#{ids.JACCARD_MAP} .hoverlayer .hovertext").text_content()   # SVG: no inner_text
    roi = data.roi_names[data.roi[v]]
    assert f"voxel {v}" in hover and f"ROI {roi}" in hover and f"Jaccard {float(view.values[i]):.2f}" in hover
    page.mouse.click(pos["x"], pos["y"])
    _wait_inspector(page, v)
    # The map's own highlight ring moves there, and so do the other views'.
    k = view.highlight_trace
    _wait(page, f"document.querySelector('#{ids.JACCARD_MAP} .js-plotly-plot')._fullData[{k}].x.length === 1")
    assert [page.evaluate(TRACE, [ids.JACCARD_MAP, k, a]) for a in "xy"] == [[int(c)] for c in view.coords[i]]
    rx, _ = _highlight(page, "r-scatter")
    assert rx[0] == pytest.approx(data.r["off"][v], abs=1e-4)
    save_screenshot(page, "dashboard-jaccard-map.png")


def test_no_console_errors(page):
    assert page.console_log.errors(KNOWN_HARMLESS) == []
