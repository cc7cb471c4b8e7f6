"""Scenes in the dashboard without a browser: applying a scene, restoring one from a URL, editing and saving
the list, then the registered callbacks through Dash's HTTP endpoint.

Expected coordinates come from the stored UMAP arrays (``results.umap``), expected files from reading them
back with :func:`dashboard.scenefile.load_scenes`.
"""
from __future__ import annotations

import base64
import json

import numpy as np
import plotly.io.json as pj
import pytest

from dashboard.scenefile import default_scene, load_scenes, scenes_path, validate_scene
from dashboard.scenelink import scene_to_url
from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from dashboard import ids
from dashboard.app import create_app
from dashboard.filters import CONTROLS
from dashboard.presenting import (
    _caption, _caption_text, apply_scene, current_scene, edit_scenes, initial_scenes, persist_scenes,
    scene_from_page_url, scene_kwargs, scene_options, url_token,
)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    out = make_synthetic_results(tmp_path_factory.mktemp("res"), n_voxels=300, n_test=30, k=6, seed=8,
                                 flatmap_height=64)
    return create_app(open_results(out))


@pytest.fixture(scope="module")
def data(app):
    return app.attnbrain_data


@pytest.fixture
def clean_scenes(data):
    path = scenes_path(data.results.run_dir)
    yield path
    if path.exists():
        path.unlink()
        path.parent.rmdir()


def _scene(data, **changes):
    s = default_scene(rule=data.default_rule, title="t1", note="n1")
    s["filters"].update(rule="q", bins=[2, 3], rois=data.roi_names[:2], hemis=["R"], threshold=0.2, ns_mode="hidden",
                        colour="contrast", contrast="on_uniform", outcomes=[-1, 1], bin_set="all")
    s.update(selected=11, selected_set=[4, 40, 120], conditions=["off"],
             cameras={m: {"eye": {"x": 0.5, "y": 1.5, "z": 2.0}, "center": {"x": 0, "y": 0, "z": 0},
                          "up": {"x": 0, "y": 0, "z": 1}} for m in ("off", "on")})
    s.update(changes)
    return validate_scene(s, **scene_kwargs(data))


def _ops(patch) -> list[dict]:
    return json.loads(pj.to_json_plotly(patch.to_plotly_json()))["operations"]


def _decode(spec, dtype):
    return np.frombuffer(base64.b64decode(spec["bdata"]), dtype=np.dtype(dtype).newbyteorder("<"))


# ---------------------------------------------------------------------------------------------- pure functions
def test_apply_scene_sets_controls_and_moves_highlight_and_set_in_one_patch(data):
    scene = _scene(data)
    a = apply_scene(data, scene)
    assert a["filters"] == {"rule": "q", "bins": [2, 3], "rois": sorted(data.roi_names[:2]), "hemis": ["R"],
                            "threshold": 0.2, "ns": "hidden", "colour": "contrast", "contrast": "on_uniform",
                            "outcomes": [-1, 1], "bin_set": "all", "adds": [0, 1, 2, 3]}
    assert a["selected"] == 11 and a["hash"] == "#voxel=11" and a["selected_set"] == [4, 40, 120]
    assert a["set_message"] == "3 voxels in the selected set" and a["shown"] == ["off"]
    assert a["viewer"] == {"condition": "off", "view": "flat"} and a["caption"] == ("t1", "n1")
    assert a["cameras"] == scene["cameras"]
    for m in ("off", "on"):
        voxels, coords = data.results.umap(m)
        row = {int(v): i for i, v in enumerate(voxels)}
        ops = _ops(a["patches"][ids.umap_graph(m)])
        assert [op["location"] for op in ops] == [["data", 1], ["data", 2]]
        hl = ops[0]["params"]["value"]
        if 11 in row:
            quant = data.umap[m].coords[row[11]]
            assert [hl["x"][0], hl["y"][0], hl["z"][0]] == [int(c) for c in quant]
        emb = [v for v in (4, 40, 120) if v in row]
        set_x = _decode(ops[1]["params"]["value"]["x"], data.umap[m].coords.dtype)
        assert set_x.tolist() == [int(data.umap[m].coords[row[v], 0]) for v in emb]
    none = apply_scene(data, _scene(data, selected=None, selected_set=[]))
    assert none["hash"] == "" and none["set_message"] == "no set selected"
    hl = _ops(none["patches"][ids.R_SCATTER])[0]["params"]["value"]
    assert hl == {"x": [], "y": []}


def test_page_url_restores_a_scene_and_keeps_voxel_links(data):
    scene = _scene(data)
    got, notice = scene_from_page_url(data, scene_to_url(scene), "#voxel=11")
    assert got == scene and notice == ""
    # The hash (a voxel link followed after the scene was written) selects its voxel in the scene.
    got, notice = scene_from_page_url(data, scene_to_url(scene), "#voxel=12")
    assert got["selected"] == 12 and notice == ""
    assert scene_from_page_url(data, "", "#voxel=5") == (None, "")
    got, notice = scene_from_page_url(data, "", f"#voxel={data.n_voxels}")
    assert got is None and f"names no voxel of this run (rows 0-{data.n_voxels - 1})" in notice
    got, notice = scene_from_page_url(data, "?scene=%%%", f"#voxel={data.n_voxels + 5}")
    assert got == default_scene(rule=data.default_rule)
    assert "unreadable" in notice and "Also, the link's" in notice and "\n" not in notice


def test_current_scene_from_controls_and_the_url_it_writes(data):
    cams = {m: {"eye": {"x": 0.5, "y": 1.5, "z": 2.0}, "center": {"x": 0, "y": 0, "z": 0},
                "up": {"x": 0, "y": 0, "z": 1}, "projection": {"type": "perspective"}} for m in ("off", "on")}
    scene = current_scene(data, title=" t1 ", note="n1", shown=["off"],
                          filters={"rule": "q", "bins": [3, 2], "rois": data.roi_names[:2], "hemis": ["R"],
                                   "threshold": 0.2, "ns": "hidden", "colour": "contrast", "contrast": "on_uniform",
                            "outcomes": [-1, 1], "bin_set": "all", "adds": [0, 1, 2, 3]}, selected=11,
                          selected_set=[120, 4, 40], cameras=cams, viewer=None)
    assert scene == _scene(data)
    assert url_token(data, scene) == scene_to_url(scene)
    untouched = current_scene(data, filters=dict.fromkeys(CONTROLS))
    assert untouched == default_scene(rule=data.default_rule) and url_token(data, untouched) == ""
    assert _caption_text(json.loads(pj.to_json_plotly(_caption("A title", "a note")))) == ("A title", "a note")
    assert _caption_text(json.loads(pj.to_json_plotly(_caption("", "")))) == ("", "")


def test_edit_scenes():
    a, b, c = ({"title": t} for t in "abc")
    assert edit_scenes([a, b], "save", None, c) == ([a, b, c], 2)
    assert edit_scenes([a, b, c], "up", 1) == ([b, a, c], 0)
    assert edit_scenes([a, b, c], "down", 1) == ([a, c, b], 2)
    assert edit_scenes([a, b, c], "down", 2) == ([a, b, c], 2)
    assert edit_scenes([a, b, c], "up", 0) == ([a, b, c], 0)
    assert edit_scenes([a, b, c], "delete", 1) == ([a, c], None)
    assert edit_scenes([a], "delete", 5) == ([a], 5)
    assert scene_options([default_scene(title="x"), default_scene()]) == [
        {"label": "1. x", "value": 0}, {"label": "2. untitled scene", "value": 1}]


def test_persist_writes_only_the_scenes_file_or_says_why_not(data, clean_scenes, monkeypatch):
    run_dir = data.results.run_dir
    before = {p for p in run_dir.parent.rglob("*")}
    scenes = [_scene(data)]
    assert persist_scenes(data, scenes) == "1 scene(s) saved to scenes/scenes.json"
    assert {p for p in run_dir.parent.rglob("*")} - before == {clean_scenes, clean_scenes.parent}
    assert load_scenes(run_dir, **scene_kwargs(data), run_id=data.run_id) == (scenes, None)
    assert initial_scenes(data) == (scenes, "")
    monkeypatch.setattr("dashboard.presenting.scenes_writable", lambda _d: False)
    assert persist_scenes(data, scenes * 2).startswith("read-only results folder: 2 scene(s) kept in this page only")
    assert initial_scenes(data)[1] == "read-only results folder: new scenes are kept in this page only"
    assert load_scenes(run_dir, **scene_kwargs(data))[0] == scenes
    clean_scenes.write_text("{broken")
    got, message = initial_scenes(data)
    assert got == [] and message.startswith(f"saved scenes not loaded: {clean_scenes}: not valid JSON")


# ---------------------------------------------------------------------------------------------- over HTTP
def _request(app, trigger_input: str, values: dict, changed: list[str]) -> dict:
    """Body for the callback that has ``trigger_input`` among its inputs."""
    from dash._utils import split_callback_id
    key = next(k for k, cb in app.callback_map.items()
               if any(f"{d['id']}.{d['property']}" == trigger_input for d in cb["inputs"])
               and "clientside_function" not in cb and (trigger_input != f"{ids.URL}.pathname" or
                                                        "filter-rule.value" in k))
    cb = app.callback_map[key]

    def entry(dep):
        return {"id": dep["id"], "property": dep["property"], "value": values.get(f"{dep['id']}.{dep['property']}")}
    return {"output": key, "outputs": split_callback_id(key), "inputs": [entry(d) for d in cb["inputs"]],
            "state": [entry(d) for d in cb["state"]], "changedPropIds": changed}


def _post(client, body) -> dict:
    resp = client.post("/_dash-update-component", json=body)
    assert resp.status_code == 200, resp.data[:500]
    return json.loads(resp.data)["response"]


def test_callbacks_over_http(app, data, clean_scenes):
    client = app.server.test_client()
    scene = _scene(data)
    # Page load with ?scene=...: the scene's filters, selection, set, cameras, columns and caption come back.
    body = _request(app, f"{ids.URL}.pathname", {f"{ids.URL}.pathname": "/", f"{ids.URL}.search": scene_to_url(scene),
                                                 f"{ids.URL}.hash": "#voxel=11"}, [f"{ids.URL}.pathname"])
    r = _post(client, body)
    assert r[ids.RULE]["value"] == "q" and r[ids.THRESHOLD]["value"] == 0.2 and r[ids.SELECTED]["data"] == 11
    assert r[ids.SELECTED_SET]["data"] == [4, 40, 120] and r[ids.SHOWN]["value"] == ["off"]
    assert r[ids.SCENE_CAMERAS]["data"]["on"] == scene["cameras"]["on"]
    assert r[ids.URL_NOTICE]["hidden"] is True and r[ids.SCENE_READY]["data"] is True
    assert r[ids.umap_graph("on")]["figure"]["__dash_patch_update"]
    # A corrupted URL: default view and the notice.
    body = _request(app, f"{ids.URL}.pathname", {f"{ids.URL}.pathname": "/", f"{ids.URL}.search": "?scene=x!"},
                    [f"{ids.URL}.pathname"])
    r = _post(client, body)
    assert r[ids.URL_NOTICE]["hidden"] is False and "unreadable" in r[ids.URL_NOTICE]["children"]
    assert r[ids.RULE]["value"] == data.default_rule and r[ids.SELECTED]["data"] is None
    # Keys in presentation mode: scene-goto applies scene 1 of the list and marks it current.
    scenes = [_scene(data, title="first"), _scene(data, title="second", selected=3)]
    body = _request(app, f"{ids.SCENE_GOTO}.data", {f"{ids.SCENE_GOTO}.data": {"index": 1, "n": 1},
                                                    f"{ids.SCENES}.data": scenes}, [f"{ids.SCENE_GOTO}.data"])
    r = _post(client, body)
    assert r[ids.SELECTED]["data"] == 3 and r[ids.SCENE_PICK]["value"] == 1
    assert r[ids.SCENE_CAPTION]["children"][0]["props"]["children"] == "second"
    # The URL mirror: the current controls as a ?scene= token.
    values = {f"{ids.RULE}.value": "q", f"{ids.BINS}.value": [2, 3], f"{ids.ROIS}.value": data.roi_names[:2],
              f"{ids.HEMIS}.value": ["R"], f"{ids.THRESHOLD}.value": 0.2, f"{ids.NS_MODE}.value": "hidden",
              f"{ids.COLOUR}.value": "contrast", f"{ids.CONTRAST}.value": "on_uniform",
              f"{ids.OUTCOMES}.value": [1, -1], f"{ids.BIN_SET}.value": "all", f"{ids.SELECTED}.data": 11,
              f"{ids.SELECTED_SET}.data": [4, 40, 120],
              f"{ids.CAMERA_STATE}.data": scene["cameras"], f"{ids.SHOWN}.value": ["off"],
              f"{ids.SCENE_READY}.data": True,
              f"{ids.SCENE_CAPTION}.children": json.loads(pj.to_json_plotly(_caption("t1", "n1")))}
    r = _post(client, _request(app, f"{ids.SCENE_READY}.data", values, [f"{ids.SCENE_READY}.data"]))
    assert r[ids.URL_TOKEN]["data"] == scene_to_url(scene)
    # Save: the scene of the controls is appended and written to scenes/scenes.json.
    values.update({f"{ids.SCENE_SAVE}.n_clicks": 1, f"{ids.SCENES}.data": [], f"{ids.SCENE_TITLE}.value": "t1",
                   f"{ids.SCENE_NOTE}.value": "n1"})
    r = _post(client, _request(app, f"{ids.SCENE_SAVE}.n_clicks", values, [f"{ids.SCENE_SAVE}.n_clicks"]))
    assert r[ids.SCENES]["data"] == [scene] and r[ids.SCENE_PICK]["value"] == 0
    assert r[ids.SCENE_MSG]["children"] == "1 scene(s) saved to scenes/scenes.json"
    assert load_scenes(data.results.run_dir, **scene_kwargs(data))[0] == [scene]
    # Import: a bad file is refused with its one line; nothing changes on disk.
    before = clean_scenes.read_bytes()
    bad = "data:application/json;base64," + base64.b64encode(b'{"version": 1, "run_id": "x", "n_voxels": 3, '
                                                             b'"scenes": []}').decode()
    values.update({f"{ids.SCENE_UPLOAD}.contents": bad, f"{ids.SCENE_UPLOAD}.filename": "talk.json",
                   f"{ids.SCENES}.data": [scene]})
    r = _post(client, _request(app, f"{ids.SCENE_UPLOAD}.contents", values, [f"{ids.SCENE_UPLOAD}.contents"]))
    assert r[ids.SCENE_MSG]["children"].startswith("import failed: talk.json, field 'n_voxels': scenes of run 'x' "
                                                   "with 3 voxels")
    assert clean_scenes.read_bytes() == before
    # Export: the list as a scenes file.
    r = _post(client, _request(app, f"{ids.SCENE_EXPORT}.n_clicks", {f"{ids.SCENE_EXPORT}.n_clicks": 1,
                                                                     f"{ids.SCENES}.data": [scene]},
                               [f"{ids.SCENE_EXPORT}.n_clicks"]))
    exported = json.loads(r[ids.SCENE_DOWNLOAD]["data"]["content"])
    assert exported == {"version": 1, "run_id": data.run_id, "n_voxels": data.n_voxels, "scenes": [scene]}
