"""Each 3-D UMAP cloud fills its panel in headless Chromium (software WebGL), as the page opens and after the
linked cameras turn together.

The extent of a cloud is read two ways: from plotly's own camera projection of every plotted point (clipped to
the scene's canvas), and from a screenshot of the panel (the bounding box of the pixels that are not the white
background inside the scene's canvas). Either must cover most of the panel's width or height. Screenshots go
to test-artifacts/. Marked slow: well under a minute on 2 idle cores.
"""
from __future__ import annotations

import io
import time

import numpy as np
import pytest

from browser import ConsoleLog, launch_chromium, require_chromium, save_screenshot, serve_wsgi
from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from core.vocabulary import PAIR
from dashboard import ids
from dashboard.app import create_app
from dashboard.umap_view import EYE_DISTANCE, scene_fit

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 120_000
#: The least share of the panel's width or height a cloud must cover.
MIN_COVER = 0.6

# Page extent of the points of trace 0 (the voxels) of a 3-D scatter through plotly's projection (model, view,
# projection matrices of the scene camera, column-major), clipped to the scene's canvas; with the panel's and
# the canvas's boxes.
EXTENT = """(graphId) => {
  const gd = document.querySelector('#' + graphId + ' .js-plotly-plot');
  const scene = gd._fullLayout.scene._scene, ds = scene.dataScale, t = gd._fullData[0];
  const cp = scene.glplot.cameraParams;
  const mul = (M, p) => [0, 1, 2, 3].map(r => M[r] * p[0] + M[4 + r] * p[1] + M[8 + r] * p[2] + M[12 + r] * p[3]);
  const canvas = scene.glplot.canvas.getBoundingClientRect(), panel = gd.getBoundingClientRect();
  let x0 = Infinity, x1 = -Infinity, y0 = Infinity, y1 = -Infinity, inside = 0;
  for (let i = 0; i < t.x.length; i++) {
    const p = mul(cp.projection, mul(cp.view, mul(cp.model, [t.x[i] * ds[0], t.y[i] * ds[1], t.z[i] * ds[2], 1])));
    if (p[3] <= 0) continue;
    const x = canvas.left + (p[0] / p[3] + 1) / 2 * canvas.width;
    const y = canvas.top + (1 - p[1] / p[3]) / 2 * canvas.height;
    if (x >= canvas.left && x <= canvas.right && y >= canvas.top && y <= canvas.bottom) inside += 1;
    const cx = Math.min(Math.max(x, canvas.left), canvas.right), cy = Math.min(Math.max(y, canvas.top), canvas.bottom);
    x0 = Math.min(x0, cx); x1 = Math.max(x1, cx); y0 = Math.min(y0, cy); y1 = Math.max(y1, cy);
  }
  const box = r => ({left: r.left, top: r.top, width: r.width, height: r.height});
  return {x0, x1, y0, y1, inside: inside / t.x.length, n: t.x.length, canvas: box(canvas), panel: box(panel),
          eye: gd._fullLayout.scene.camera.eye};
}"""


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    require_chromium()
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=600, n_test=60, k=8, seed=4,
                                 flatmap_height=96)
    return create_app(open_results(out))


@pytest.fixture(scope="module")
def app_data(app):
    return app.attnbrain_data


@pytest.fixture(scope="module")
def page(app):
    with serve_wsgi(app.server) as url, launch_chromium() as browser:
        pg = browser.new_page(viewport={"width": 1500, "height": 1000})
        pg.console_log = ConsoleLog(pg)
        pg.set_default_timeout(WAIT_MS)
        # The page's requests still open, for the message should the load event not come.
        pending: dict[str, float] = {}
        pg.on("request", lambda r: pending.__setitem__(r.url, time.time()))
        pg.on("requestfinished", lambda r: pending.pop(r.url, None))
        pg.on("requestfailed", lambda r: pending.pop(r.url, None))
        pg.goto(url + "/", wait_until="commit")
        try:
            pg.wait_for_load_state("load", timeout=WAIT_MS)
        except Exception as exc:
            raise AssertionError(f"the page did not finish loading; requests still open: {sorted(pending)}; "
                                 f"document.readyState {pg.evaluate('document.readyState')!r}") from exc
        pg.wait_for_function("document.querySelectorAll('#umap-off canvas').length > 0 && "
                             "document.querySelectorAll('#umap-on canvas').length > 0 && "
                             "!!(window.attnbrain && window.attnbrain.defaultCameras.off && "
                             "window.attnbrain.defaultCameras.on)", polling=200, timeout=WAIT_MS)
        yield pg


def _projected_cover(page, graph_id: str) -> dict:
    e = page.evaluate(EXTENT, graph_id)
    return {"width": (e["x1"] - e["x0"]) / e["panel"]["width"], "height": (e["y1"] - e["y0"]) / e["panel"]["height"],
            "inside": e["inside"], "extent": e}


def _pixel_cover(page, graph_id: str, extent: dict, name: str) -> dict:
    """Share of the panel's width and height spanned by drawn (non-white) pixels inside the scene's canvas."""
    from PIL import Image
    page.mouse.move(2, 2)                      # no modebar over the scene
    time.sleep(0.5)
    panel = page.locator(f"#{graph_id} .js-plotly-plot")
    shot = panel.screenshot()
    save_screenshot(panel, name)
    img = np.asarray(Image.open(io.BytesIO(shot)).convert("RGB")).astype(np.int16)
    p, c = extent["panel"], extent["canvas"]
    scale = img.shape[1] / p["width"]
    top, left = int(round((c["top"] - p["top"]) * scale)), int(round((c["left"] - p["left"]) * scale))
    crop = img[top:top + int(c["height"] * scale), left:left + int(c["width"] * scale)]
    drawn = (255 - crop).max(axis=2) > 6                                        # faint grey n.s. points count
    rows, cols = np.nonzero(drawn)
    if rows.size == 0:
        return {"width": 0.0, "height": 0.0}
    return {"width": float(cols.max() - cols.min() + 1) / (p["width"] * scale),
            "height": float(rows.max() - rows.min() + 1) / (p["height"] * scale)}


def _check(page, label: str) -> dict:
    out = {}
    for m in PAIR:
        g = ids.umap_graph(m)
        proj = _projected_cover(page, g)
        pix = _pixel_cover(page, g, proj["extent"], f"umap-fit-{label}-{m}.png")
        out[m] = {"projected": (round(proj["width"], 3), round(proj["height"], 3)),
                  "pixels": (round(pix["width"], 3), round(pix["height"], 3)), "inside": round(proj["inside"], 3)}
        assert max(proj["width"], proj["height"]) >= MIN_COVER, (label, m, out[m])
        assert max(pix["width"], pix["height"]) >= MIN_COVER, (label, m, out[m])
        # Filling is not cropping: nearly every point stays on the canvas.
        assert proj["inside"] >= 0.97, (label, m, out[m])
    print(f"\nUMAP cover ({label}): {out}")
    return out


def _cameras_equal(page) -> bool:
    return page.evaluate("""() => {
      const a = document.querySelector('#umap-off .js-plotly-plot')._fullLayout.scene.camera.eye;
      const b = document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene.camera.eye;
      return Math.abs(a.x - b.x) < 1e-6 && Math.abs(a.y - b.y) < 1e-6 && Math.abs(a.z - b.z) < 1e-6; }""")


def test_clouds_fill_their_panels_as_the_page_opens(page):
    _check(page, "load")


def test_clouds_still_fill_their_panels_after_a_linked_drag(page):
    before = page.evaluate("document.querySelector('#umap-off .js-plotly-plot')._fullLayout.scene.camera.eye")
    box = page.locator("#umap-off .js-plotly-plot").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 + 20
    page.mouse.move(cx, cy)
    page.mouse.down()
    for k in range(1, 7):                      # a modest turn (about 30 degrees)
        page.mouse.move(cx + 10 * k, cy)
        time.sleep(0.05)
    page.mouse.up()
    page.wait_for_function("""(before) => {
      const a = document.querySelector('#umap-off .js-plotly-plot')._fullLayout.scene.camera.eye;
      const b = document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene.camera.eye;
      return Math.abs(a.x - before.x) > 1e-3 && Math.abs(a.x - b.x) < 1e-6 && Math.abs(a.y - b.y) < 1e-6 &&
             Math.abs(a.z - b.z) < 1e-6; }""", arg=before, polling=200, timeout=WAIT_MS)
    _check(page, "dragged")


FIT = """(graphId) => {
  const s = document.querySelector('#' + graphId + ' .js-plotly-plot')._fullLayout.scene;
  return {x: s.xaxis.range, y: s.yaxis.range, z: s.zaxis.range,
          aspect: [s.aspectratio.x, s.aspectratio.y, s.aspectratio.z]};
}"""


@pytest.mark.parametrize("eye", [(0.0, 0.0, 1.0), (1.0, 0.0, 0.0), (0.0, -1.0, 0.3)], ids=["top", "side", "front"])
def test_a_copied_camera_keeps_each_panel_its_own_fit(page, app_data, eye):
    """A camera set on one panel (as a scene or a drag sets it) is copied to the other, which keeps its own ranges
    and aspect; from any side nearly every point stays on the canvas. (How much of the panel a cloud of a few
    separate blobs covers depends on the side it is seen from: printed, not asserted.)"""
    fitted = {m: page.evaluate(FIT, ids.umap_graph(m)) for m in PAIR}
    for m in PAIR:
        view = app_data.umap[m]
        fit = scene_fit(view.coords)
        np.testing.assert_allclose([fitted[m][a] for a in "xyz"], fit["ranges"], rtol=1e-9)
        np.testing.assert_allclose(fitted[m]["aspect"], [fit["aspectratio"][a] for a in "xyz"], rtol=1e-9)
    dist = page.evaluate("""() => { const e = document.querySelector('#umap-off .js-plotly-plot')
                                      ._fullLayout.scene.camera.eye; return Math.hypot(e.x, e.y, e.z); }""")
    assert dist == pytest.approx(EYE_DISTANCE, rel=1e-3)
    v = np.asarray(eye) / np.linalg.norm(eye) * dist
    up = {"x": 0, "y": 1, "z": 0} if eye[2] == 1.0 else {"x": 0, "y": 0, "z": 1}
    page.evaluate("""([eye, up]) => Plotly.relayout(document.querySelector('#umap-off .js-plotly-plot'),
        {'scene.camera': {eye: eye, center: {x: 0, y: 0, z: 0}, up: up}})""",
                  [{"x": float(v[0]), "y": float(v[1]), "z": float(v[2])}, up])
    page.wait_for_function("""(x) => {
      const b = document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene.camera.eye;
      return Math.abs(b.x - x) < 1e-6; }""", arg=float(v[0]), polling=200, timeout=WAIT_MS)
    time.sleep(0.5)
    assert _cameras_equal(page)
    covers = {}
    for m in PAIR:
        assert page.evaluate(FIT, ids.umap_graph(m)) == fitted[m]
        c = _projected_cover(page, ids.umap_graph(m))
        covers[m] = (round(c["width"], 3), round(c["height"], 3))
        assert c["inside"] >= 0.95, (m, c)
    print(f"\nUMAP cover (eye {eye}): {covers}")


def test_no_console_errors(page):
    assert page.console_log.errors() == []
