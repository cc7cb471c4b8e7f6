"""The viewer's postMessage bridge in headless Chromium (software WebGL), as the dashboard uses it: the
static viewer in an iframe of a same-origin page that records every message.

The viewer takes ~40-70 s to load here, so it is loaded once for the module; the tests run in file order
and each leaves the viewer flat, on the first dataset, with keys going to the viewer.
"""
from __future__ import annotations

import io
import time
import types

import numpy as np
import pytest
from PIL import Image
from scipy.spatial import cKDTree

from browser import ConsoleLog, launch_chromium, require_chromium, save_screenshot, serve_directory
from core.vocabulary import DEFAULT_BINS
from test_flatmap import pycortex_cache_dir  # noqa: F401 (a fixture)
from test_viewer import patch_subset, picked_rows, read_lookup

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# Console errors that are expected and harmless. None so far: pycortex's shader-compile messages are
# warnings, and the Leap Motion websocket error is gone because make_viewer drops that script.
KNOWN_HARMLESS: tuple[str, ...] = ()

PARENT = """<!doctype html>
<html><head><meta charset="utf-8"><link rel="icon" href="data:,"><title>bridge test</title></head>
<body style="margin:0">
<iframe id="viewer" src="viewer/index.html" style="width:640px;height:400px;border:0;display:block"></iframe>
<script>
window.msgs = [];
window.addEventListener("message", function (e) {
  if (e.origin === window.location.origin) window.msgs.push(e.data);
});
window.send = function (m) {
  document.getElementById("viewer").contentWindow.postMessage(m, window.location.origin);
};
</script>
</body></html>
"""
DATASETS = ("off", "on: >=0.3")


@pytest.fixture(scope="session", autouse=True)
def _chromium():
    """Autouse at session scope (defined here, it still only applies to this module), so it runs before
    the session's geometry fixture and the viewer build: skip (fail under CI=true) cheaply."""
    require_chromium()


@pytest.fixture(scope="module")
def session(s1_geometry, pycortex_cache_dir, tmp_path_factory):
    from core.cortex.viewer import make_viewer
    sub = s1_geometry.subset(patch_subset(s1_geometry))
    rng = np.random.default_rng(11)
    datasets = {DATASETS[0]: DEFAULT_BINS.to_rgba(rng.integers(-1, 4, sub.n_voxels).astype(np.int8)),
                DATASETS[1]: DEFAULT_BINS.to_rgba(np.full(sub.n_voxels, 3, np.int8))}
    root = tmp_path_factory.mktemp("site")
    folder = make_viewer(sub, datasets, root / "viewer", title="bridge test", cache_dir=pycortex_cache_dir)
    (root / "parent.html").write_text(PARENT)
    meta, arrays = read_lookup(folder)
    with serve_directory(root) as base, launch_chromium() as browser:
        page = browser.new_page(viewport={"width": 640, "height": 400})
        console = ConsoleLog(page)
        t0 = time.perf_counter()
        page.goto(base + "/parent.html")
        page.wait_for_function("window.msgs.some(m => m.type === 'attnbrain:ready' || "
                               "m.type === 'attnbrain:error')", timeout=300_000)
        print(f"viewer ready after {time.perf_counter() - t0:.0f} s")
        yield types.SimpleNamespace(page=page, frame=page.frames[1], console=console, geometry=sub, meta=meta,
                                    arrays=arrays)


def messages(s, since=0):
    return s.page.evaluate("window.msgs")[since:]


def request(s, msg, timeout=120_000):
    """Send a request to the viewer and return its ack."""
    n = s.page.evaluate("window.msgs.length")
    s.page.evaluate("m => send(m)", msg)
    s.page.wait_for_function(
        "([n, t]) => window.msgs.slice(n).some(m => m.type === 'attnbrain:ack' && m.request === t)",
        arg=[n, msg["type"]], timeout=timeout)
    return next(m for m in messages(s, n) if m["type"] == "attnbrain:ack" and m["request"] == msg["type"])


def canvas_png(s) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(s.page.locator("#viewer").screenshot())).convert("RGB"))


def marker_state(s) -> dict:
    """The pick marker as the viewer holds it: hemisphere, subject vertex, and its position on screen."""
    return s.frame.evaluate("""() => {
        const v = viewer, picker = v.surfs[0].surf.picker, b = attnbrainBridge;
        return picker.axes.map(ax => {
            const ctm = picker.revIndex[ax.hemi][ax.idx];
            const vertex = b.arrays.ctm_to_vertex[(ax.hemi === "right" ? b.meta.n_vertices[0] : 0) + ctm];
            ax.group.updateMatrixWorld(true);
            const p = new THREE.Vector3().setFromMatrixPosition(ax.group.matrixWorld).project(v.camera);
            const r = v.canvas[0].getBoundingClientRect();
            return {hemi: ax.hemi, vertex: vertex,
                    x: r.left + (p.x + 1) / 2 * r.width, y: r.top + (1 - p.y) / 2 * r.height};
        });
    }""")


def mid_thickness(subject, hemi):
    import cortex
    name = ("lh", "rh")[hemi]
    return (cortex.db.get_surf(subject, "pia", name)[0] + cortex.db.get_surf(subject, "wm", name)[0]) / 2


def test_ready_lists_datasets(session):
    ready = [m for m in messages(session) if m["type"] == "attnbrain:ready"]
    assert len(ready) == 1
    assert ready[0]["datasets"] == list(DATASETS) and ready[0]["active"] == DATASETS[0]
    assert ready[0]["n_voxels"] == session.geometry.n_voxels
    assert not [m for m in messages(session) if m["type"] == "attnbrain:error"]
    save_screenshot(session.page, "viewer_ready.png")


def test_mark_then_click_posts_the_voxel(session):
    s, g, a = session, session.geometry, session.arrays
    # A target row whose marker vertex the picker maps back to it, with every vertex within ~1 mm mapping
    # there too, so a click that lands on a neighbouring vertex still means this voxel.
    mid = mid_thickness(g.subject, 0)
    rows = picked_rows(g, 0, np.arange(len(mid)))
    cand = np.flatnonzero((a["mark_hemi"] == 0) & (rows[a["mark_vertex"]] == np.arange(g.n_voxels)))
    verts = a["mark_vertex"][cand]
    dist, nb = cKDTree(mid).query(mid[verts], k=40)
    other = rows[nb] != cand[:, None]
    safe = np.where(other.any(1), np.where(other, dist, np.inf).min(1), dist[:, -1])
    target = int(cand[np.argmax(safe)])
    assert safe.max() > 1.0

    ack = request(s, {"type": "attnbrain:setView", "view": "flat"})
    assert ack["ok"] and ack["state"]["view"] == "flat"
    n = len(messages(s))
    ack = request(s, {"type": "attnbrain:mark", "voxel": target})
    assert ack["ok"] and ack["hemi"] == "left" and ack["vertex"] == int(a["mark_vertex"][target])
    assert ack["state"]["marked"] == {"voxel": target, "hemi": "left", "vertex": ack["vertex"]}
    assert not [m for m in messages(s, n) if m["type"] == "attnbrain:pick"]   # a mark is not echoed as a pick
    marker = marker_state(s)
    assert len(marker) == 1 and marker[0]["hemi"] == "left" and marker[0]["vertex"] == ack["vertex"]
    # Independently of the bridge: that vertex's mid-thickness point lies in the target voxel.
    assert picked_rows(g, 0, np.array([marker[0]["vertex"]]))[0] == target
    save_screenshot(s.page, "viewer_marked.png")

    # A real click where the marker is drawn goes through pycortex's own picking path.
    n = len(messages(s))
    s.page.mouse.click(marker[0]["x"], marker[0]["y"])
    s.page.wait_for_function("n => window.msgs.slice(n).some(m => m.type === 'attnbrain:pick')", arg=n,
                             timeout=120_000)
    pick = next(m for m in messages(s, n) if m["type"] == "attnbrain:pick")
    save_screenshot(s.page, "viewer_picked.png")
    assert pick["voxel"] == target and pick["hemi"] == "left"
    # The posted vertex is where the click was (pycortex picks the vertex nearest the clicked fragment)...
    assert np.linalg.norm(mid[pick["vertex"]] - mid[ack["vertex"]]) < 3.0
    # ...and the posted voxel and ijk are those Python derives from that vertex on its own.
    assert picked_rows(g, 0, np.array([pick["vertex"]]))[0] == pick["voxel"]
    import cortex
    affine = np.asarray(cortex.db.get_xfm(g.subject, g.transform, "coord").xfm)
    xyz = mid[pick["vertex"]] @ affine[:3, :3].T + affine[:3, 3]
    # The viewer rounds the compressed surface's coordinates (MG2 keeps ~1e-3 mm): same voxel.
    np.testing.assert_array_equal(pick["ijk"], np.floor(xyz + 0.5).astype(int))
    np.testing.assert_array_equal(g.ijk[pick["voxel"]], pick["ijk"])


def test_set_dataset_switches_and_keeps_the_marker(session):
    s, a = session, session.arrays
    row = int(np.flatnonzero(a["mark_hemi"] == 0)[0])
    assert request(s, {"type": "attnbrain:mark", "voxel": row})["ok"]
    before = canvas_png(s)
    n = len(messages(s))
    ack = request(s, {"type": "attnbrain:setDataset", "name": DATASETS[1]})
    assert ack["ok"] and ack["state"]["active"] == DATASETS[1]
    assert s.frame.evaluate("viewer.active.name") == DATASETS[1]
    after = canvas_png(s)
    save_screenshot(s.page, "viewer_dataset_on.png")
    # The second dataset paints the whole patch yellow: a visible share of the canvas changes.
    changed = np.any(np.abs(after.astype(int) - before) > 30, axis=-1).mean()
    assert changed > 0.005
    # pycortex re-runs the last pick after a switch; the bridge neither posts it nor lets it move the mark.
    assert not [m for m in messages(s, n) if m["type"] == "attnbrain:pick"]
    assert [m["vertex"] for m in marker_state(s)] == [int(a["mark_vertex"][row])]
    bad = request(s, {"type": "attnbrain:setDataset", "name": "nope"})
    assert not bad["ok"] and "available: off, on: >=0.3" in bad["error"]
    assert request(s, {"type": "attnbrain:setDataset", "name": DATASETS[0]})["state"]["active"] == DATASETS[0]


@pytest.mark.parametrize("msg, error", [
    ({"type": "attnbrain:mark", "voxel": -1}, "integer row"),
    ({"type": "attnbrain:mark", "voxel": 2.5}, "integer row"),
    ({"type": "attnbrain:mark", "voxel": 10 ** 6}, "integer row"),
    ({"type": "attnbrain:setView", "view": "sideways"}, "expected flat, inflated or fiducial"),
    ({"type": "attnbrain:setKeys", "mode": "both"}, "mode must be"),
    ({"type": "attnbrain:teleport"}, "unknown message type"),
])
def test_bad_requests_are_refused_with_a_reason(session, msg, error):
    ack = request(session, msg)
    assert not ack["ok"] and error in ack["error"]
    assert ack["request"] == msg["type"] and ack["params"] == msg


def test_keys_go_to_the_parent_on_request_and_blur_returns_focus(session):
    s = session
    help_shown = "$('#helpmenu').is(':visible')"   # pycortex's 'h' shortcut toggles its help panel
    assert not s.frame.evaluate(help_shown)
    assert request(s, {"type": "attnbrain:setKeys", "mode": "parent"})["state"]["keys"] == "parent"
    s.page.evaluate("document.getElementById('viewer').focus()")
    assert s.frame.evaluate("document.hasFocus()")
    n = len(messages(s))
    s.page.keyboard.press("h")
    s.page.wait_for_function("n => window.msgs.slice(n).some(m => m.type === 'attnbrain:key')", arg=n)
    key = next(m for m in messages(s, n) if m["type"] == "attnbrain:key")
    assert key["key"] == "h" and key["code"] == "KeyH" and not key["shiftKey"]
    time.sleep(0.3)
    assert not s.frame.evaluate(help_shown)   # swallowed: pycortex never saw it

    # Back to the viewer's own shortcuts: the same key now reaches pycortex (so the bridge stopped it).
    assert request(s, {"type": "attnbrain:setKeys", "mode": "viewer"})["ok"]
    s.page.evaluate("document.getElementById('viewer').focus()")
    n = len(messages(s))
    s.page.keyboard.press("h")
    s.frame.wait_for_function(help_shown, timeout=30_000)
    s.page.keyboard.press("h")
    s.frame.wait_for_function("!" + help_shown, timeout=30_000)
    assert not [m for m in messages(s, n) if m["type"] == "attnbrain:key"]

    ack = request(s, {"type": "attnbrain:blur"})
    assert ack["ok"]
    assert not s.frame.evaluate("document.hasFocus()")
    assert s.page.evaluate("document.hasFocus()")


def test_set_view_overrides_a_running_animation(session):
    s = session
    assert request(s, {"type": "attnbrain:setView", "view": "flat"})["state"]["view"] == "flat"
    # A slow inflate (the 'i' shortcut starts the same animation, over 2 s).
    s.frame.evaluate("viewer.animate([{state: 'mix', idx: 30, value: 0.5}])")
    s.frame.wait_for_function("viewer.setMix() < 1", timeout=60_000)
    ack = request(s, {"type": "attnbrain:setView", "view": "flat"})
    assert ack["ok"] and ack["state"]["view"] == "flat"
    time.sleep(0.5)
    assert s.frame.evaluate("viewer.setMix()") == 1   # the animation did not pull it back


def test_no_console_errors(session):
    # Runs last: everything the page logged while the tests above drove it.
    assert session.console.errors(ignore=KNOWN_HARMLESS) == []
