"""dashboard.scenefile: scene validation against a run, scenes files (atomic, one-line errors), URL tokens.

Expected normal forms and messages are written out here by hand; URL tokens are decoded independently
(base64url + zlib + JSON) to check what they hold.
"""
from __future__ import annotations

import base64
import json
import zlib

import pytest

from core._validation import InputError
from dashboard.scenefile import (
    default_scene,
    export_scenes,
    import_scenes,
    load_scenes,
    save_scenes,
    scenes_path,
    scenes_writable,
    validate_scene,
    validate_scenes_file,
)
from dashboard.scenelink import scene_from_url, scene_to_url

RUN = {"n_voxels": 50, "roi_names": ["V1", "FFA", "PPA"], "rules": ["p", "q"]}


def _cam(x, y, z):
    return {"eye": {"x": x, "y": y, "z": z}, "center": {"x": 0, "y": 0, "z": 0}, "up": {"x": 0, "y": 0, "z": 1}}


def _scene(**changes) -> dict:
    s = default_scene(title="FFA up close", note="on vs off")
    s["filters"].update(rule="q", bins=[3, 1], rois=["PPA", "FFA"], hemis=["R"], threshold=0.15, ns_mode="hidden")
    s.update(selected=7, selected_set=[9, 3, 3], cameras={"off": _cam(1, 2, 0.5), "on": None},
             viewer={"condition": "on", "view": "inflated"}, conditions=["on"])
    s.update(changes)
    return s


def _token_json(url: str) -> dict:
    token = url.split("scene=", 1)[1]
    return json.loads(zlib.decompress(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))))


# ---------------------------------------------------------------------------------------------- validation
def test_a_good_scene_is_normalised():
    s = validate_scene(_scene(), **RUN)
    assert s["filters"] == {"rule": "q", "bins": [1, 3], "rois": ["FFA", "PPA"], "hemis": ["R"], "threshold": 0.15,
                            "ns_mode": "hidden", "colour": "bins", "contrast": "on_off", "outcomes": [-1, 0, 1],
                            "bin_set": "significant", "adds": [0, 1, 2, 3]}
    assert s["selected_set"] == [3, 9] and s["selected"] == 7 and s["conditions"] == ["on"]
    assert s["cameras"]["off"]["eye"] == {"x": 1.0, "y": 2.0, "z": 0.5} and s["cameras"]["on"] is None
    assert list(s) == ["version", "title", "note", "conditions", "filters", "selected", "selected_set", "cameras",
                       "viewer"]
    # Only "version" is required: everything else takes the defaults.
    assert validate_scene({"version": 1}, **RUN) == default_scene()
    assert validate_scene(s, **RUN) == s                                 # idempotent


BAD_SCENES = [
    ("not-object", [1, 2], "f.json: expected a scene (a JSON object with version, title, note, conditions, filters, "
                           "selected, selected_set, cameras, viewer), found [1, 2]"),
    ("version", _scene(version=2), "f.json, field 'version': expected scene version 1, found 2; this tool reads "
                                   "version 1 scenes (re-save the scene with this dashboard)"),
    ("no-version", {"title": "x"}, "f.json, field 'version': missing; expected \"version\": 1 in every scene"),
    ("unknown-field", _scene(colour="red"), "f.json, field 'colour': unknown scene field 'colour'; expected only "
                                            "version, title, note, conditions, filters, selected, selected_set, "
                                            "cameras, viewer (remove it or check its spelling)"),
    ("rule", {"version": 1, "filters": {"rule": "perm"}},
     "f.json, field 'filters.rule': expected one of 'p', 'q' (the significance rules of this run), found 'perm'; "
     "use one of those"),
    ("bins", {"version": 1, "filters": {"bins": [0, 4]}},
     "f.json, field 'filters.bins': expected bin codes among -2, 0, 1, 2, 3, found 4; remove it or use one of those"),
    ("roi", {"version": 1, "filters": {"rois": ["FFA", "LOC"]}},
     "f.json, field 'filters.rois': unknown ROI 'LOC' (this run's ROIs: V1, FFA, PPA); remove it or use one of those"),
    ("hemis", {"version": 1, "filters": {"hemis": "L"}},
     "f.json, field 'filters.hemis': expected a list of hemispheres, found 'L'; write e.g. [\"L\", \"R\"]"),
    ("threshold", {"version": 1, "filters": {"threshold": 1.5}},
     "f.json, field 'filters.threshold': expected a number between 0 and 1 (minimum |r|), found 1.5; use e.g. 0.1"),
    ("threshold-bool", {"version": 1, "filters": {"threshold": True}},
     "f.json, field 'filters.threshold': expected a number between 0 and 1 (minimum |r|), found true; use e.g. 0.1"),
    ("ns", {"version": 1, "filters": {"ns_mode": "grey"}},
     "f.json, field 'filters.ns_mode': expected one of 'faint', 'hidden', found 'grey'; use one of those"),
    ("filter-typo", {"version": 1, "filters": {"treshold": 0.1}},
     "f.json, field 'filters.treshold': unknown filter 'treshold'; expected only rule, bins, rois, hemis, threshold, "
     "ns_mode, colour, contrast, outcomes, bin_set, adds (remove it or check its spelling)"),
    ("colour", {"version": 1, "filters": {"colour": "rainbow"}},
     "f.json, field 'filters.colour': expected one of 'bins', 'contrast', 'ceiling', 'adds', found 'rainbow'; use "
     "one of those"),
    ("contrast", {"version": 1, "filters": {"contrast": "off_on"}},
     "f.json, field 'filters.contrast': expected one of 'on_off', 'on_uniform', 'uniform_off', found 'off_on'; use "
     "one of those"),
    ("outcomes", {"version": 1, "filters": {"outcomes": [1, 2]}},
     "f.json, field 'filters.outcomes': expected outcome codes (-1 hurts, 0 no detectable difference, 1 helps) among "
     "-1, 0, 1, found 2; remove it or use one of those"),
    ("bin-set", {"version": 1, "filters": {"bin_set": "some"}},
     "f.json, field 'filters.bin_set': expected one of 'significant', 'all', found 'some'; use one of those"),
    ("voxel", {"version": 1, "selected": 50},
     "f.json, field 'selected': expected a voxel row from 0 to 49, found 50; this scene was made for another run "
     "or edited by hand: pick a voxel of this run"),
    ("voxel-str", {"version": 1, "selected": "7"},
     "f.json, field 'selected': expected a voxel row from 0 to 49, found '7'"),
    ("set", {"version": 1, "selected_set": [1, -1]}, "f.json, field 'selected_set[1]': expected a voxel row from 0 "
                                                     "to 49, found -1"),
    ("conditions", {"version": 1, "conditions": []}, "f.json, field 'conditions': expected at least one of 'off', "
                                                     "'on', found an empty list; add one"),
    ("conditions-unknown", {"version": 1, "conditions": ["uniform"]},
     "f.json, field 'conditions': expected conditions among 'off', 'on', found 'uniform'"),
    ("camera", {"version": 1, "cameras": {"off": {"eye": {"x": 1, "y": 2}, "center": {"x": 0, "y": 0, "z": 0},
                                                  "up": {"x": 0, "y": 0, "z": 1}}}},
     "f.json, field 'cameras.off.eye': expected {\"x\": number, \"y\": number, \"z\": number}, found "
     "{\"x\": 1, \"y\": 2}; use null for the default camera"),
    ("camera-up", {"version": 1, "cameras": {"on": {"eye": {"x": 1, "y": 2, "z": 0}, "center": {"x": 0, "y": 0, "z": 0},
                                                    "up": {"x": 0, "y": 0, "z": 0}}}},
     "f.json, field 'cameras.on.up': expected a non-zero up vector"),
    ("camera-cond", {"version": 1, "cameras": {"uniform": None}},
     "f.json, field 'cameras': unknown condition 'uniform'; expected only 'off' and 'on' (remove it)"),
    ("viewer", {"version": 1, "viewer": {"condition": "on", "view": "sphere"}},
     "f.json, field 'viewer.view': expected one of 'flat', 'inflated', found 'sphere'"),
    ("title", {"version": 1, "title": 3}, "f.json, field 'title': expected text, found 3; write it in double quotes"),
    ("note-long", {"version": 1, "note": "x" * 4001}, "f.json, field 'note': expected at most 4000 characters, "
                                                      "found 4001; shorten it"),
]


@pytest.mark.parametrize("obj,message", [c[1:] for c in BAD_SCENES], ids=[c[0] for c in BAD_SCENES])
def test_bad_scenes_give_one_readable_line(obj, message):
    with pytest.raises(InputError) as exc:
        validate_scene(obj, **RUN, source="f.json")
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_colouring_by_contrast_is_checked_against_the_run_and_survives_files_and_links():
    scene = {"version": 1, "filters": {"colour": "contrast", "contrast": "on_uniform", "outcomes": [1, -1],
                                       "bin_set": "all"}}
    s = validate_scene(scene, **RUN, contrasts=["on_off", "on_uniform"])
    assert (s["filters"]["colour"], s["filters"]["contrast"], s["filters"]["outcomes"], s["filters"]["bin_set"]) == \
        ("contrast", "on_uniform", [-1, 1], "all")
    assert scene_from_url(scene_to_url(s), **RUN, contrasts=["on_off", "on_uniform"]) == (s, "")
    with pytest.raises(InputError, match="this run did not test 'on_uniform'"):
        validate_scene(scene, **RUN, contrasts=["on_off"])
    with pytest.raises(InputError, match="no contrasts stage to colour by"):
        validate_scene(scene, **RUN, contrasts=[])
    # In a link, a colouring the run cannot show falls back to the default with a notice.
    got, notice = scene_from_url(scene_to_url(s), **RUN, contrasts=[])
    assert got["filters"]["colour"] == "bins" and "filters.colour" in notice
    # A scene saved before these filters existed still loads, with the default colouring.
    old = {"version": 1, "filters": {"rule": "q", "bins": [0], "rois": [], "hemis": ["L", "R"], "threshold": 0.0,
                                     "ns_mode": "faint"}}
    assert validate_scene(old, **RUN)["filters"]["colour"] == "bins"


def test_message_prefix_names_the_scene_in_a_file():
    with pytest.raises(InputError, match=r"^s\.json, field 'scenes\[1\]\.filters\.rule': expected one of"):
        validate_scenes_file({"version": 1, "run_id": "r", "scenes": [{"version": 1},
                                                                       {"version": 1, "filters": {"rule": "x"}}]},
                             **RUN, run_id="r", source="s.json")


# ---------------------------------------------------------------------------------------------- files
def test_save_then_load_round_trips_and_writes_only_the_scenes_file(tmp_path):
    run_dir = tmp_path / "abc123"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("{}")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    scenes = [validate_scene(_scene(), **RUN), validate_scene({"version": 1, "title": "two"}, **RUN)]
    path = save_scenes(run_dir, scenes, run_id="abc123", n_voxels=50)
    assert path == run_dir / "scenes" / "scenes.json" == scenes_path(run_dir)
    assert sorted(p.name for p in tmp_path.rglob("*")) == sorted(before + ["scenes", "scenes.json"])
    on_disk = json.loads(path.read_text())
    assert on_disk == {"version": 1, "run_id": "abc123", "n_voxels": 50, "scenes": scenes}
    assert load_scenes(run_dir, **RUN, run_id="abc123") == (scenes, None)
    assert load_scenes(path, **RUN, run_id="abc123") == (scenes, None)
    # Saving again replaces the file atomically: no temporary files are left beside it.
    save_scenes(run_dir, scenes[:1], run_id="abc123", n_voxels=50)
    assert [p.name for p in path.parent.iterdir()] == ["scenes.json"]
    assert load_scenes(run_dir, **RUN)[0] == scenes[:1]


def test_a_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path, monkeypatch):
    scenes = [validate_scene({"version": 1, "title": "kept"}, **RUN)]
    path = save_scenes(tmp_path, scenes, run_id="r", n_voxels=50)
    before = path.read_bytes()

    def broken_dump(*a, **k):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr("core._io.json.dump", broken_dump)
    with pytest.raises(OSError):
        save_scenes(tmp_path, scenes * 2, run_id="r", n_voxels=50)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["scenes.json"]


def test_no_scenes_file_means_no_scenes(tmp_path):
    assert load_scenes(tmp_path, **RUN) == ([], None)
    assert scenes_writable(tmp_path)


def test_read_only_run_folder_is_reported(tmp_path):
    import os
    tmp_path.chmod(0o500)
    try:
        if os.access(tmp_path, os.W_OK):
            pytest.skip("running as a user who can write anywhere (root)")
        assert not scenes_writable(tmp_path)
    finally:
        tmp_path.chmod(0o700)


@pytest.mark.parametrize("content,expect", [
    (b'{"version": 1, "run_id": "r", "scenes": [', "not valid JSON (Expecting value at line 1)"),
    (b"\xff\xfe\x00\x01", "not UTF-8 text"),
    (b"[]", "expected a scenes file (a JSON object with version, run_id, n_voxels, scenes), found []"),
    (b'{"version": 3, "run_id": "r", "scenes": []}', "field 'version': expected scenes file version 1, found 3"),
    (b'{"version": 1, "run_id": "r", "scenes": {}}', "field 'scenes': expected a list of scenes, found {}"),
    (b'{"version": 1, "run_id": "r", "scenes": [], "extra": 1}', "field 'extra': unknown field 'extra'"),
    (b'{"version": 1, "scenes": []}', "field 'run_id': expected the run id the scenes were made for, found null"),
])
def test_damaged_scenes_files_give_one_line(tmp_path, content, expect):
    path = tmp_path / "scenes" / "scenes.json"
    path.parent.mkdir()
    path.write_bytes(content)
    with pytest.raises(InputError) as exc:
        load_scenes(tmp_path, **RUN, run_id="r")
    text = str(exc.value)
    assert "\n" not in text and text.startswith(str(path)) and expect in text, text
    assert path.read_bytes() == content


def test_import_checks_the_run():
    scenes = [validate_scene(_scene(), **RUN)]
    text = export_scenes(scenes, run_id="other", n_voxels=50)
    got, warning = import_scenes(text, **RUN, run_id="mine")
    assert got == scenes and "made for run other, not mine" in warning
    assert import_scenes(text.encode(), **RUN, run_id="other") == (scenes, None)
    with pytest.raises(InputError, match="scenes of run 'other' with 50 voxels, but run 'mine' has 40"):
        import_scenes(text, **dict(RUN, n_voxels=40), run_id="mine")
    no_count = json.dumps({"version": 1, "run_id": "other", "scenes": []})
    with pytest.raises(InputError, match="no n_voxels to check"):
        import_scenes(no_count, **RUN, run_id="mine")
    # Every scene is checked against this run: an ROI it does not have is refused.
    with pytest.raises(InputError, match=r"field 'scenes\[0\]\.filters\.rois': unknown ROI 'PPA'"):
        import_scenes(text, **dict(RUN, roi_names=["V1", "FFA"]), run_id="other")


# ---------------------------------------------------------------------------------------------- URLs
def test_url_round_trip_and_what_the_token_holds():
    s = validate_scene(_scene(selected_set=list(range(0, 50, 2))), **RUN)
    url = scene_to_url(s)
    assert url.startswith("?scene=") and "=" not in url[len("?scene="):] and "+" not in url and "/" not in url
    raw = _token_json(url)
    assert raw["f"]["r"] == "q" and raw["s"] == 7 and raw["S"] == [0] + [2] * 24     # gaps between rows
    assert raw["k"]["off"] == [1, 2, 0.5, 0, 0, 0, 0, 0, 1] and raw["k"]["on"] is None
    for form in (url, url + "&other=1", "#" + url[1:], url.split("=", 1)[1], "?x=2&" + url[1:]):
        assert scene_from_url(form, **RUN) == (s, ""), form
    assert scene_from_url("", **RUN) == (None, "") and scene_from_url("?other=1", **RUN) == (None, "")


def test_stale_url_state_falls_back_field_by_field():
    s = validate_scene(_scene(), **RUN)
    small = dict(RUN, n_voxels=8, roi_names=["V1", "FFA"])
    got, notice = scene_from_url(scene_to_url(s), **small)
    assert got["selected"] == 7 and got["selected_set"] == [] and got["filters"]["rois"] == []
    assert got["filters"]["rule"] == "q" and got["cameras"] == s["cameras"] and got["title"] == s["title"]
    assert notice.startswith("The link's scene could not be fully used (2 field(s) reset to the defaults): ")
    assert "selected_set[1]: expected a voxel row from 0 to 7, found 9" in notice
    assert "filters.rois: unknown ROI 'PPA'" in notice and "\n" not in notice


@pytest.mark.parametrize("query,reason", [
    ("?scene=@@@", "it is not base64url text"),
    ("?scene=" + base64.urlsafe_b64encode(b"plain text").decode(), "it is not a compressed scene"),
    ("?scene=" + base64.urlsafe_b64encode(zlib.compress(b"{oops")).decode(), "it does not hold scene JSON"),
    ("?scene=" + base64.urlsafe_b64encode(zlib.compress(b"[1, 2]")).decode(), "it does not hold a scene object"),
])
def test_garbage_urls_give_the_default_view_and_a_notice(query, reason):
    default = default_scene(rule="q")
    got, notice = scene_from_url(query, **RUN, default=default)
    assert got == default and reason in notice and notice.endswith("showing the default view instead.")


def test_url_decoding_never_raises(rng):
    for n in range(300):
        junk = rng.integers(0, 256, int(rng.integers(0, 60)), dtype="u1").tobytes()
        payload = zlib.compress(junk) if n % 2 else junk
        query = "?scene=" + base64.urlsafe_b64encode(payload).decode().rstrip("=")
        scene, notice = scene_from_url(query, **RUN)
        assert scene is not None and notice
    # Well-formed JSON of the wrong shapes, field by field.
    for value in (None, 1, "x", [], {}, {"a": [1]}, [[]], True):
        short = {"v": 1, "f": {"r": value, "b": value, "o": value, "h": value, "x": value, "m": value},
                 "s": value, "S": value, "k": {"off": value, "on": value}, "w": value, "c": value, "t": value}
        query = "?scene=" + base64.urlsafe_b64encode(zlib.compress(json.dumps(short).encode())).decode()
        scene, _ = scene_from_url(query, **RUN)
        assert validate_scene(scene, **RUN) == scene
