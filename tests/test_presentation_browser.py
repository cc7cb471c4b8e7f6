"""Scenes, presentation mode and shareable URLs in headless Chromium (software WebGL).

One small synthetic run with three saved scenes and one served dashboard for the module; the tests run in
file order: presentation mode hides the controls, the keyboard steps through the scenes (filters, cameras,
selection, columns and caption read back from the page), the URL of the view opens the same view in a fresh
browser context, and a corrupted URL shows the notice. A screenshot of presentation mode goes to
test-artifacts/. Marked slow: about a minute on 2 idle cores.
"""
from __future__ import annotations


import pytest

from browser import ConsoleLog, launch_chromium, require_chromium, save_screenshot, serve_wsgi
from dashboard.scenefile import default_scene, save_scenes, validate_scene
from dashboard.scenelink import scene_to_url
from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from dashboard import ids
from dashboard.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.slow]

WAIT_MS = 120_000


def _cam(x, y, z):
    return {"eye": {"x": x, "y": y, "z": z}, "center": {"x": 0.0, "y": 0.0, "z": 0.0},
            "up": {"x": 0.0, "y": 0.0, "z": 1.0}}


def _scenes(n_voxels: int, roi_names: list[str]) -> list[dict]:
    a = default_scene(title="Object ROIs, FDR", note="attention on shifts FFA")
    a["filters"].update(rule="q", bins=[1, 2, 3], ns_mode="hidden")
    a.update(selected=7, selected_set=[3, 9, 12], cameras={"off": _cam(2.0, 0.4, 0.6), "on": _cam(2.0, 0.4, 0.6)})
    b = default_scene(title="Early visual, |r| >= 0.1", note="only attention on")
    b["filters"].update(threshold=0.1, rois=roi_names[:1], hemis=["L"])
    b.update(selected=21, conditions=["on"], cameras={"off": _cam(0.3, 2.1, 0.4), "on": _cam(0.3, 2.1, 0.4)})
    c = default_scene(title="Back to everything")
    return [validate_scene(s, n_voxels=n_voxels, roi_names=roi_names, rules=["p", "q"]) for s in (a, b, c)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    require_chromium()
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=300, n_test=40, k=6, seed=11,
                                 flatmap_height=96)
    results = open_results(out)
    scenes = _scenes(results.n_voxels, results.roi_names)
    save_scenes(results.run_dir, scenes, run_id=results.run_id, n_voxels=results.n_voxels)
    app = create_app(results)
    with serve_wsgi(app.server) as url:
        yield url, app.attnbrain_data, scenes


@pytest.fixture(scope="module")
def browser(served):
    with launch_chromium() as b:
        yield b


def _open(browser, url: str):
    pg = browser.new_context(viewport={"width": 1400, "height": 950}).new_page()
    pg.console_log = ConsoleLog(pg)
    pg.set_default_timeout(WAIT_MS)
    pg.goto(url)
    _wait(pg, "document.querySelectorAll('#umap-off canvas').length > 0 && "
              "document.querySelectorAll('#umap-on canvas').length > 0 && !!(window.attnbrain && "
              "window.attnbrain.defaultCameras.off && window.attnbrain.defaultCameras.on)")
    return pg


@pytest.fixture(scope="module")
def page(browser, served):
    pg = _open(browser, served[0] + "/")
    yield pg


def _wait(page, expression: str, arg=None):
    """Wait until ``expression`` is truthy; on a timeout, fail with what the page shows."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    try:
        return page.wait_for_function(expression, arg=arg, polling=200, timeout=WAIT_MS)
    except PlaywrightTimeout:
        state = page.evaluate("() => { const A = window.attnbrain || {}; return {url: location.href, "
                              "animating: A.animating, target: A.lastCameraTarget, urlWrites: A.urlWrites, "
                              "pending: A.pendingCameras, sceneCurrent: A.sceneCurrent}; }")
        try:
            state["view"] = _view(page)
        except Exception as exc:  # the page may not have its graphs yet
            state["view"] = repr(exc)
        pytest.fail(f"timed out waiting for {expression[:200]!r} (arg {arg!r}); page state: {state}")


def _view(page) -> dict:
    """What the page shows: filter controls, selection, caption, columns, both cameras' eyes."""
    return page.evaluate("""() => {
      const checked = id => Array.from(document.querySelectorAll('#' + id + ' input:checked')).map(i => i.value);
      const eye = m => { const gd = document.querySelector('#umap-' + m + ' .js-plotly-plot');
                         const e = gd._fullLayout.scene.camera.eye; return [e.x, e.y, e.z]; };
      const h3 = document.querySelector('#inspector h3');
      return {rule: checked('filter-rule')[0], bins: checked('filter-bins').map(Number).sort((a, b) => a - b),
              ns: checked('filter-ns')[0], hemis: checked('filter-hemis'),
              voxel: h3 ? h3.textContent : null, caption: document.getElementById('scene-caption').innerText,
              offHidden: document.getElementById('col-off').hidden, eyeOff: eye('off'), eyeOn: eye('on'),
              search: window.location.search, hash: window.location.hash};
    }""")


def _close(a, b, tol=1e-3):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


def _wait_scene(page, scene: dict):
    eye = [scene["cameras"]["on"]["eye"][a] for a in "xyz"]
    _wait(page, """([voxel, eye, title]) => {
      const h3 = document.querySelector('#inspector h3');
      const gd = document.querySelector('#umap-on .js-plotly-plot'), e = gd._fullLayout.scene.camera.eye;
      return h3 && h3.textContent === 'Voxel ' + voxel && !window.attnbrain.animating &&
             Math.abs(e.x - eye[0]) < 1e-3 && Math.abs(e.y - eye[1]) < 1e-3 && Math.abs(e.z - eye[2]) < 1e-3 &&
             document.getElementById('scene-caption').innerText.includes(title);
    }""", [scene["selected"], eye, scene["title"]])


# ---------------------------------------------------------------------------------------------- tests
def test_presentation_mode_hides_the_controls(page, served):
    _wait(page, f"document.querySelectorAll('#{ids.SCENE_PICK} input').length === 3")
    assert page.locator(".controls").is_visible() and page.locator(".scene-panel").is_visible()
    page.locator("body").click(position={"x": 5, "y": 5})
    page.keyboard.press("p")
    _wait(page, "document.getElementById('app-root').classList.contains('presenting')")
    for hidden in (".controls", ".scene-panel", ".search-box", ".lower", ".footer"):
        assert not page.locator(hidden).first.is_visible(), hidden
    assert page.locator(f"#{ids.umap_graph('on')}").is_visible()
    font = page.evaluate("parseFloat(getComputedStyle(document.getElementById('app-root')).fontSize)")
    assert font >= 18


def test_arrow_keys_step_through_the_scenes(page, served):
    _, data, scenes = served
    page.keyboard.press("ArrowRight")                 # no current scene yet: the first one
    _wait_scene(page, scenes[0])
    v = _view(page)
    assert v["rule"] == "q" and v["bins"] == [1, 2, 3] and v["ns"] == "hidden"
    assert _close(v["eyeOff"], [2.0, 0.4, 0.6]) and "Object ROIs, FDR" in v["caption"]
    assert "attention on shifts FFA" in v["caption"] and not v["offHidden"]
    # The selected set reached both UMAPs (trace 2 holds its embedded voxels).
    n_set = sum(1 for s in scenes[0]["selected_set"] if data.umap["on"].position[s] >= 0)
    _wait(page, f"document.querySelector('#umap-on .js-plotly-plot')._fullData[2].x.length === {n_set}")
    # Presentation sizes survive the selection patch: a large highlight marker, large figure fonts.
    _wait(page, "document.querySelector('#umap-on .js-plotly-plot').data[1].marker.size === 16 && "
                "document.querySelector('#umap-on .js-plotly-plot')._fullLayout.font.size === 18")
    save_screenshot(page, "presentation-mode.png")

    page.keyboard.press("ArrowRight")
    _wait_scene(page, scenes[1])
    v = _view(page)
    assert v["rule"] == "p" and v["bins"] == [-2, 0, 1, 2, 3] and v["hemis"] == ["L"] and v["offHidden"]
    assert _close(v["eyeOn"], [0.3, 2.1, 0.4])
    page.keyboard.press("PageUp")
    _wait_scene(page, scenes[0])
    page.keyboard.press("2")
    _wait_scene(page, scenes[1])


def test_the_url_restores_the_view_in_a_fresh_context(page, served, browser):
    _, data, scenes = served
    # The URL follows the view (replaceState): it ends up holding scene 2's token and its voxel.
    expected = scene_to_url(scenes[1])
    _wait(page, "(want) => window.location.search === want", expected)
    url = page.url
    assert url.endswith(expected + ids.voxel_href(21))
    page.keyboard.press("Escape")
    _wait(page, "!document.getElementById('app-root').classList.contains('presenting')")
    assert page.locator(".controls").is_visible()

    fresh = _open(browser, url)
    try:
        _wait(fresh, "document.querySelector('#inspector h3') && "
                     "document.querySelector('#inspector h3').textContent === 'Voxel 21'")
        _wait(fresh, """() => { const e = document.querySelector('#umap-on .js-plotly-plot')._fullLayout.scene
                                 .camera.eye; return Math.abs(e.y - 2.1) < 1e-3 && !window.attnbrain.animating; }""")
        v = _view(fresh)
        assert v["rule"] == "p" and v["hemis"] == ["L"] and v["offHidden"] and _close(v["eyeOn"], [0.3, 2.1, 0.4])
        assert fresh.locator(f"#{ids.URL_NOTICE}").is_hidden()
        assert fresh.console_log.errors() == []
    finally:
        fresh.context.close()


def test_a_corrupted_url_shows_the_notice_and_the_default_view(served, browser):
    base, data, _ = served
    pg = _open(browser, base + "/?scene=not-a-scene!!#voxel=99999")
    try:
        notice = pg.locator(f"#{ids.URL_NOTICE}")
        notice.wait_for(state="visible")
        text = notice.inner_text()
        assert "could not be" in text and "unreadable" in text and "names no voxel" in text
        v = _view(pg)
        assert v["rule"] == data.default_rule and v["bins"] == [-2, 0, 1, 2, 3] and not v["offHidden"]
        assert pg.locator("#inspector").inner_text().startswith("Click a voxel")
    finally:
        pg.context.close()


def test_keys_reach_the_page_after_a_click_in_the_viewer(page, served):
    """The viewer iframe takes keyboard focus when clicked: `p` pressed there still enters presentation mode,
    the page then takes focus back, and after another click on the viewer the next key still steps on."""
    scenes = served[2]
    frame_js = f"document.getElementById('{ids.VIEWER_FRAME}')"
    page.click(f"#{ids.VIEWER_LOAD}")
    _wait(page, "window.attnbrain.viewer.ready === true")
    viewer = page.frame_locator(f"#{ids.VIEWER_FRAME}").locator("body")
    viewer.click(position={"x": 3, "y": 3})
    _wait(page, f"document.activeElement === {frame_js}")
    page.keyboard.press("p")                          # typed into the viewer
    _wait(page, "document.getElementById('app-root').classList.contains('presenting')")
    _wait(page, f"window.attnbrain.focusReturns >= 1 && document.activeElement !== {frame_js}")
    assert page.locator(f"#{ids.VIEWER_FRAME}").is_visible()
    viewer.click(position={"x": 3, "y": 3})
    _wait(page, f"window.attnbrain.focusReturns >= 2 && document.activeElement !== {frame_js}")
    page.keyboard.press("ArrowRight")                 # from scene 2 (index 1) to scene 3
    _wait(page, "(t) => document.getElementById('scene-caption').innerText.includes(t)", scenes[2]["title"])
    page.keyboard.press("Escape")
    _wait(page, "!document.getElementById('app-root').classList.contains('presenting')")


def test_no_console_errors(page):
    assert page.console_log.errors() == []
