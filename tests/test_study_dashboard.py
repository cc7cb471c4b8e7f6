"""A study's dashboard (dashboard.study_app): the group view at / and each run's dashboard under /run/<run_id>/,
on a tiny study run here (2 simulated subjects x layer3, pool). Callbacks through Dash's own HTTP endpoint, and
one browser test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

from core.testing.studies import tiny_study  # noqa: E402

_STUDY = tiny_study(layers=("layer3", "pool"))


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("study_dash")
    (root / "study.toml").write_text(_STUDY)
    out = root / "out"
    proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "study", str(root / "study.toml"), "--out",
                           str(out), "--workers", "2", "--stages", "contrasts,umap,thumbnails"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    from dashboard.study_app import create_study_site, latest_study
    summary = latest_study(out)
    site, index = create_study_site(out, summary)
    return {"out": out, "summary": summary, "site": site, "index": index}


def _array(value) -> np.ndarray:
    """A figure array as plotly's JSON sends it: a list, or a typed array (``dtype``, ``bdata``, ``shape``)."""
    if isinstance(value, dict) and "bdata" in value:
        import base64
        arr = np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"])
        shape = value.get("shape")
        if isinstance(shape, str):
            shape = [int(n) for n in shape.split(",")]
        return arr.reshape(shape) if shape else arr
    return np.asarray(value, dtype=float)


def _client(site):
    from werkzeug.test import Client
    return Client(site)


def _callback(client, output: str, inputs: list[tuple[str, str, object]]):
    """One Dash callback through its HTTP endpoint, as the page calls it; the response's outputs."""
    body = {"output": output, "outputs": {"id": output.split(".")[0], "property": output.split(".")[1]},
            "inputs": [{"id": i, "property": p, "value": v} for i, p, v in inputs],
            "changedPropIds": [f"{inputs[0][0]}.{inputs[0][1]}"], "state": []}
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code in (200, 204), resp.get_data(as_text=True)[:500]
    return json.loads(resp.get_data(as_text=True))["response"] if resp.status_code == 200 else None


def test_the_run_selector_links_to_the_chosen_run(study):
    from dashboard.study_app import run_for_selection
    client = _client(study["site"])
    runs = {(r["subject"], r["layer"]): r["run_id"] for r in study["summary"]["runs"]}
    out = _callback(client, "study-open.href", [("study-subject", "value", "sim-2"), ("study-layer", "value", "pool"),
                                                ("study-weights", "value", "auto")])
    assert out["study-open"]["href"] == f"/run/{runs[('sim-2', 'pool')]}/"
    assert run_for_selection(study["summary"], "sim-9", "pool", "auto") is None


def test_a_heatmap_cell_of_one_subject_opens_its_run(study):
    client = _client(study["site"])
    fig = _callback(client, "study-heatmap.figure", [("study-heat-metric", "value", "share_on_better"),
                                                     ("study-heat-subject", "value", "sim-1"),
                                                     ("study-weights", "value", "auto")])["study-heatmap"]["figure"]
    heat = fig["data"][0]
    assert heat["x"] == ["layer3", "pool"]
    run = heat["customdata"][0][1]
    assert run == next(r["run_id"] for r in study["summary"]["runs"] if (r["subject"], r["layer"]) == ("sim-1",
                                                                                                       "pool"))
    go = _callback(client, "study-go.href", [("study-heatmap", "clickData", {"points": [{"customdata": run}]})])
    assert go["study-go"]["href"] == f"/run/{run}/"
    # layer3 is before attention: r_on = r_off exactly there, so its delta cells are 0.
    delta = _callback(client, "study-heatmap.figure", [("study-heat-metric", "value", "median_delta_r"),
                                                       ("study-heat-subject", "value", "median over subjects"),
                                                       ("study-weights", "value", "auto")])
    z = _array(delta["study-heatmap"]["figure"]["data"][0]["z"])
    assert np.all(z[:, 0] == 0)


def test_each_run_is_served_under_its_own_path(study):
    client = _client(study["site"])
    r = study["summary"]["runs"][3]
    page = client.get(f"/run/{r['run_id']}/")
    html = page.get_data(as_text=True).replace("\\u002f", "/").replace(" ", "")
    assert page.status_code == 200 and f'"requests_pathname_prefix":"/run/{r["run_id"]}/"' in html
    layout = client.get(f"/run/{r['run_id']}/_dash-layout")
    text = layout.get_data(as_text=True).replace("\\u002f", "/")        # Dash escapes "/" in JSON strings
    assert layout.status_code == 200 and "umap-on" in text
    # The run switcher: every other run of the study linked by its path, this one named, and the group view.
    for other in study["summary"]["runs"]:
        assert other["label"] in text
        if other["run_id"] != r["run_id"]:
            assert f'/run/{other["run_id"]}/' in text
    # The run's own routes answer at the mounted path the page uses.
    from core.outputs.reader import open_results
    from dashboard.data import DashboardData
    data = DashboardData(open_results(study["out"], run_id=r["run_id"]), mount=f"/run/{r['run_id']}")
    thumb = client.get(data.pixel_url("overlay", 0))
    assert thumb.status_code == 200 and thumb.headers["Content-Type"] == "image/png"
    assert client.get("/run/not-a-run/").status_code == 404


def test_the_study_page_in_a_browser_opens_a_run(study):
    from browser import ConsoleLog, launch_chromium, serve_wsgi
    with serve_wsgi(study["site"]) as base, launch_chromium() as browser:
        page = browser.new_page()
        log = ConsoleLog(page)
        page.goto(base + "/", wait_until="commit", timeout=60_000)
        page.wait_for_selector("#study-profile .main-svg", timeout=60_000)
        page.wait_for_function("document.querySelector('#study-open').getAttribute('href').startsWith('/run/')",
                               timeout=60_000)
        href = page.get_attribute("#study-open", "href")
        page.click("#study-open")
        page.wait_for_url(base + href, timeout=60_000)
        page.wait_for_selector("#umap-on", timeout=120_000)
        assert not log.errors(ignore=("favicon",)), log.errors()


def test_a_folder_without_a_study_is_one_clear_error(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "dashboard", "--results", str(tmp_path), "--study"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "no study summary (study-<id>.json)" in lines[0]
