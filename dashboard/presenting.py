"""Scenes, presentation mode and the shareable URL: the scene panel, its callbacks and their pure functions.

A scene (:mod:`dashboard.scenefile`) is the whole view: filters, selected voxel and set, both UMAP cameras, the
3-D viewer's condition and view, the conditions shown. Applying one sets those controls (the existing
callbacks then recolour the figures) and moves the highlight and set traces with one patch per graph; the
clientside JS animates the cameras. The current view is mirrored into the page URL (``?scene=<token>``,
written with ``history.replaceState``; the hash stays ``#voxel=<row>``), and a page opened with such a URL
restores it, every unusable field falling back to the default with a visible notice. Saving writes only
``RESULTS/<run_id>/scenes/scenes.json`` (atomically); a read-only results folder keeps scenes in the page.
"""
from __future__ import annotations

import base64
from typing import Any

import numpy as np
from dash import ClientsideFunction, Input, Output, Patch, State, ctx, dcc, html, no_update
from dash.exceptions import PreventUpdate

from core._validation import InputError
from dashboard.scenefile import (CONDITIONS, default_scene, export_scenes, import_scenes, load_scenes, save_scenes, scene_from_url, scene_to_url, scenes_writable, validate_scene)

from . import ids
from .callbacks import highlight_patches, set_patches, voxel_from_hash
from .figures import DashboardData

__all__ = [
    "scene_kwargs", "current_scene", "apply_scene", "scene_from_page_url", "url_token", "scene_options",
    "edit_scenes", "persist_scenes", "initial_scenes", "scene_panel", "scene_notices", "scene_stores",
    "register_scene_callbacks",
]

_FILTER_IDS = (ids.RULE, ids.BINS, ids.ROIS, ids.HEMIS, ids.THRESHOLD, ids.NS_MODE)
_FILTER_KEYS = ("rule", "bins", "rois", "hemis", "threshold", "ns_mode")


def scene_kwargs(data: DashboardData) -> dict:
    """What scenes are checked against: this run's voxel count, ROI names and significance rules."""
    return {"n_voxels": data.n_voxels, "roi_names": list(data.roi_names), "rules": list(data.rules)}


def _default(data: DashboardData) -> dict:
    return default_scene(rule=data.default_rule)


def current_scene(data: DashboardData, *, title: str = "", note: str = "", shown=None, filters=None,
                  selected=None, selected_set=None, cameras=None, viewer=None) -> dict:
    """The scene of the current control values (``filters``: the six filter control values in the order
    rule, bins, rois, hemis, threshold, ns; ``viewer``: (condition, view)). Values a control cannot hold
    (e.g. an untouched ``None``) take the defaults; the result is a valid scene."""
    scene = _default(data)
    scene["title"], scene["note"] = str(title or "").strip(), str(note or "").strip()
    if shown:
        scene["conditions"] = [m for m in CONDITIONS if m in shown]
    if filters is not None:
        for key, value in zip(_FILTER_KEYS, filters):
            if value is not None:
                scene["filters"][key] = value
    scene["selected"] = selected if isinstance(selected, int) and not isinstance(selected, bool) else None
    scene["selected_set"] = list(selected_set or [])
    if isinstance(cameras, dict):
        scene["cameras"] = {m: _plain_camera(cameras.get(m)) for m in CONDITIONS}
    if viewer is not None:
        scene["viewer"] = {"condition": viewer[0] or "off", "view": viewer[1] or "flat"}
    return validate_scene(scene, **scene_kwargs(data), source="current view")


def _plain_camera(cam):
    """A plotly camera with only eye/center/up (plotly adds ``projection``)."""
    if not isinstance(cam, dict) or not all(isinstance(cam.get(k), dict) for k in ("eye", "center", "up")):
        return None
    return {k: {a: float(cam[k].get(a, 0.0)) for a in "xyz"} for k in ("eye", "center", "up")}


def apply_scene(data: DashboardData, scene: dict) -> dict[str, Any]:
    """What applying a (valid) scene sets.

    Returns
    -------
    dict
        ``filters`` (six control values), ``selected`` (voxel or None), ``hash`` (``#voxel=<row>`` or ""),
        ``selected_set`` (list), ``set_message``, ``patches`` (graph id -> one Patch moving the highlight
        and the set traces), ``cameras`` (``{"off", "on"}``, None = the figure's default), ``viewer``
        (condition, view), ``shown`` (conditions) and ``caption`` (title, note).
    """
    f = scene["filters"]
    selected = scene["selected"]
    voxels = np.asarray(scene["selected_set"], dtype=np.int64)
    patches: dict[str, Patch] = {}
    highlight_patches(data, selected, into=patches)
    set_patches(data, voxels, into=patches)
    return {
        "filters": [f["rule"], list(f["bins"]), list(f["rois"]), list(f["hemis"]), f["threshold"], f["ns_mode"]],
        "selected": selected, "hash": ids.voxel_href(selected) if selected is not None else "",
        "selected_set": voxels.tolist(),
        "set_message": f"{voxels.size:,} voxels in the selected set" if voxels.size else "no set selected",
        "patches": patches, "cameras": dict(scene["cameras"]),
        "viewer": (scene["viewer"]["condition"], scene["viewer"]["view"]), "shown": list(scene["conditions"]),
        "caption": (scene["title"], scene["note"]),
    }


def scene_from_page_url(data: DashboardData, search: str | None, url_hash: str | None) -> tuple[dict | None, str]:
    """The scene a page URL asks for, and a notice ("" when all of it was used).

    ``?scene=<token>`` gives the scene (see :func:`dashboard.scenefile.scene_from_url`); a ``#voxel=<row>`` hash, the
    older and still supported link form, selects that voxel in it (or in the default scene). A hash
    naming no voxel of this run adds to the notice.
    """
    scene, notice = scene_from_url(search, **scene_kwargs(data), default=_default(data))
    if url_hash and url_hash not in ("#", ""):
        voxel = voxel_from_hash(data, url_hash)
        if voxel is None:
            extra = (f"the link's {url_hash[:40]!r} names no voxel of this run (rows 0-{data.n_voxels - 1}); "
                     "nothing selected.")
            notice = (notice + " Also, " + extra) if notice else "The link could not be fully used: " + extra
        elif scene is not None:
            scene["selected"] = voxel
    return scene, notice


def url_token(data: DashboardData, scene: dict) -> str:
    """The URL query for a scene: "" for the default view (a clean URL), else ``?scene=<token>``."""
    plain = dict(scene, title="", note="")
    return "" if plain == _default(data) and not scene["title"] and not scene["note"] else scene_to_url(scene)


def scene_options(scenes: list[dict]) -> list[dict]:
    """Options of the scene list: "N. title" (keys 1-9 jump to the first nine)."""
    return [{"label": f"{i + 1}. {s['title'] or 'untitled scene'}", "value": i} for i, s in enumerate(scenes)]


def edit_scenes(scenes: list[dict], action: str, index: int | None, new_scene: dict | None = None
                ) -> tuple[list[dict], int | None]:
    """One edit of the scene list: ``"save"`` (append ``new_scene``), ``"up"``, ``"down"``, ``"delete"``
    (the scene at ``index``). Returns the new list and the index of the scene to mark as current."""
    scenes = list(scenes)
    if action == "save":
        scenes.append(new_scene)
        return scenes, len(scenes) - 1
    if index is None or not 0 <= index < len(scenes):
        return scenes, index
    if action == "delete":
        del scenes[index]
        return scenes, None
    j = index - 1 if action == "up" else index + 1 if action == "down" else index
    if not 0 <= j < len(scenes):
        return scenes, index
    scenes[index], scenes[j] = scenes[j], scenes[index]
    return scenes, j


def persist_scenes(data: DashboardData, scenes: list[dict]) -> str:
    """Write the scenes to the run's ``scenes/scenes.json``; returns a message (never raises)."""
    run_dir = data.results.run_dir
    if not scenes_writable(run_dir):
        return (f"read-only results folder: {len(scenes)} scene(s) kept in this page only (export them to keep "
                "them)")
    try:
        path = save_scenes(run_dir, scenes, run_id=data.run_id, n_voxels=data.n_voxels)
    except OSError as exc:
        return f"scenes not saved ({exc.strerror or exc}); they are kept in this page only (export them to keep them)"
    return f"{len(scenes)} scene(s) saved to {path.parent.name}/{path.name}"


def initial_scenes(data: DashboardData) -> tuple[list[dict], str]:
    """The run's saved scenes and a message (a damaged file gives no scenes and its one-line error)."""
    try:
        scenes, warning = load_scenes(data.results.run_dir, **scene_kwargs(data), run_id=data.run_id)
    except InputError as exc:
        return [], f"saved scenes not loaded: {exc}"
    msg = warning or ""
    if not scenes_writable(data.results.run_dir):
        msg = (msg + " " if msg else "") + "read-only results folder: new scenes are kept in this page only"
    return scenes, msg


def _decode_upload(contents: str) -> bytes:
    """The bytes of a ``dcc.Upload`` data URL."""
    _, _, payload = contents.partition(",")
    return base64.b64decode(payload)


# ---------------------------------------------------------------------------------------------- layout
def scene_panel(data: DashboardData) -> html.Div:
    """The scene controls: save (title, note), the list, move/delete, export/import, presentation."""
    return html.Div([
        html.Div([html.Label("Scenes"),
                  dcc.Input(id=ids.SCENE_TITLE, type="text", placeholder="scene title", maxLength=200,
                            className="scene-title-input"),
                  dcc.Input(id=ids.SCENE_NOTE, type="text", placeholder="note (shown under the title when presenting)",
                            maxLength=4000, className="scene-note-input"),
                  html.Button("save scene", id=ids.SCENE_SAVE, n_clicks=0)], className="scene-save"),
        dcc.RadioItems(id=ids.SCENE_PICK, options=[], value=None, className="scene-list"),
        html.Div([html.Button("↑", id=ids.SCENE_UP, n_clicks=0, title="move the current scene up"),
                  html.Button("↓", id=ids.SCENE_DOWN, n_clicks=0, title="move the current scene down"),
                  html.Button("delete", id=ids.SCENE_DELETE, n_clicks=0, title="delete the current scene"),
                  html.Button("export", id=ids.SCENE_EXPORT, n_clicks=0, title="download the scenes as JSON"),
                  dcc.Download(id=ids.SCENE_DOWNLOAD),
                  dcc.Upload(html.Button("import", title="load scenes from an exported JSON file"),
                             id=ids.SCENE_UPLOAD, accept=".json,application/json", multiple=False),
                  html.Button("present (p)", id=ids.PRESENT, n_clicks=0, className="present",
                              title="presentation mode: ←/→ or PageUp/PageDown step through the scenes, 1-9 "
                                    "jump, f full screen, Esc leaves")],
                 className="scene-buttons"),
        html.Span(id=ids.SCENE_MSG, className="scene-msg"),
    ], className="scene-panel")


def scene_notices() -> list:
    """The URL notice (hidden while empty) and the presentation caption."""
    return [html.Div(id=ids.URL_NOTICE, className="notice url-notice", hidden=True),
            html.Div(id=ids.SCENE_CAPTION, className="scene-caption")]


def scene_stores() -> list:
    return [dcc.Store(id=ids.SCENES, data=[]), dcc.Store(id=ids.SCENE_GOTO), dcc.Store(id=ids.SCENE_CAMERAS),
            dcc.Store(id=ids.SCENE_READY), dcc.Store(id=ids.URL_TOKEN), dcc.Store(id=ids.CAMERA_STATE)]


def _caption(title: str, note: str) -> list:
    return [html.H2(title or "untitled scene", className="caption-title")] + (
        [html.P(note, className="caption-note")] if note else [])


# ---------------------------------------------------------------------------------------------- registration
def register_scene_callbacks(app, data: DashboardData, patch_ids: list[str]) -> None:
    """Register the scene, URL and presentation callbacks (``patch_ids``: the graphs whose highlight and set
    traces a scene moves, as in :func:`dashboard.callbacks.register_callbacks`)."""
    has_viewer = data.viewer_dir is not None
    dup = {"allow_duplicate": True}
    apply_outputs = ([Output(i, "value", **dup) for i in _FILTER_IDS]
                     + [Output(ids.SELECTED, "data", **dup), Output(ids.URL, "hash", **dup),
                        Output(ids.SELECTED_SET, "data", **dup), Output(ids.SET_MSG, "children", **dup),
                        Output(ids.SCENE_CAMERAS, "data"), Output(ids.SHOWN, "value"),
                        Output(ids.SCENE_CAPTION, "children"), Output(ids.URL_NOTICE, "children"),
                        Output(ids.URL_NOTICE, "hidden"), Output(ids.SCENE_READY, "data"),
                        Output(ids.SCENE_PICK, "value", **dup)]
                     + ([Output(ids.VIEWER_COND, "value"), Output(ids.VIEWER_VIEW, "value")] if has_viewer else [])
                     + [Output(g, "figure", **dup) for g in patch_ids])

    def outputs_for(scene: dict, *, notice=no_update, ready=no_update, pick=no_update) -> list:
        a = apply_scene(data, scene)
        cams = dict(a["cameras"], n=ctx.triggered[0]["prop_id"] if ctx.triggered else "load")
        out = a["filters"] + [a["selected"], a["hash"], a["selected_set"], a["set_message"], cams, a["shown"],
                              _caption(*a["caption"])]
        out += [notice, (not notice) if notice is not no_update else no_update, ready, pick]
        if has_viewer:
            out += list(a["viewer"])
        return out + [a["patches"].get(g, no_update) for g in patch_ids]

    n_out = len(apply_outputs)

    @app.callback(apply_outputs, [Input(ids.URL, "pathname"), Input(ids.SCENE_PICK, "value"),
                                  Input(ids.SCENE_GOTO, "data")],
                  [State(ids.SCENES, "data"), State(ids.URL, "search"), State(ids.URL, "hash"),
                   State(ids.SCENE_READY, "data")], prevent_initial_call=True)
    def on_apply(pathname, pick, goto, scenes, search, url_hash, ready):
        trigger = ctx.triggered_id
        scenes = scenes or []
        if trigger == ids.URL:
            if pathname is None or ready:
                raise PreventUpdate
            scene, notice = scene_from_page_url(data, search, url_hash)
            if scene is None:            # nothing to restore (a #voxel= hash is the selection callback's job)
                out = [no_update] * n_out
                i = len(_FILTER_IDS) + 7
                out[i:i + 3] = [notice, not notice, True]
                return out
            return outputs_for(scene, notice=notice, ready=True)
        if trigger == ids.SCENE_GOTO:
            index = goto.get("index") if isinstance(goto, dict) else None
            pick_out = index
        else:
            index, pick_out = pick, no_update
        if not isinstance(index, int) or not 0 <= index < len(scenes):
            raise PreventUpdate
        return outputs_for(scenes[index], pick=pick_out)

    filter_states = [State(i, "value") for i in _FILTER_IDS]
    view_states = [State(ids.VIEWER_COND, "value"), State(ids.VIEWER_VIEW, "value")] if has_viewer else []

    def scene_now(title, note, shown, filters, selected, sel_set, cameras, viewer):
        return current_scene(data, title=title, note=note, shown=shown, filters=filters, selected=selected,
                             selected_set=sel_set, cameras=cameras, viewer=viewer or None)

    # The URL mirrors the view once the page's own URL scene has been applied (SCENE_READY).
    @app.callback(Output(ids.URL_TOKEN, "data"),
                  [Input(i, "value") for i in _FILTER_IDS]
                  + [Input(ids.SELECTED, "data"), Input(ids.SELECTED_SET, "data"), Input(ids.CAMERA_STATE, "data"),
                     Input(ids.SHOWN, "value"), Input(ids.SCENE_READY, "data"), Input(ids.SCENE_CAPTION, "children")]
                  + [Input(s.component_id, s.component_property) for s in view_states],
                  prevent_initial_call=True)
    def on_mirror(*args):
        filters, (selected, sel_set, cameras, shown, ready, caption) = args[:6], args[6:12]
        if not ready:
            raise PreventUpdate
        title, note = _caption_text(caption)
        try:
            scene = scene_now(title, note, shown, filters, selected, sel_set, cameras, args[12:14])
        except InputError:
            raise PreventUpdate from None
        return url_token(data, scene)

    list_outputs = [Output(ids.SCENES, "data", allow_duplicate=True),
                    Output(ids.SCENE_PICK, "options", allow_duplicate=True),
                    Output(ids.SCENE_PICK, "value", allow_duplicate=True),
                    Output(ids.SCENE_MSG, "children", allow_duplicate=True)]

    @app.callback(list_outputs, Input(ids.URL, "pathname"), prevent_initial_call="initial_duplicate")
    def on_load_scenes(_pathname):
        scenes, message = initial_scenes(data)
        return scenes, scene_options(scenes), no_update, message

    @app.callback(list_outputs + [Output(ids.SCENE_TITLE, "value"), Output(ids.SCENE_NOTE, "value")],
                  [Input(ids.SCENE_SAVE, "n_clicks"), Input(ids.SCENE_UP, "n_clicks"),
                   Input(ids.SCENE_DOWN, "n_clicks"), Input(ids.SCENE_DELETE, "n_clicks"),
                   Input(ids.SCENE_UPLOAD, "contents")],
                  [State(ids.SCENE_UPLOAD, "filename"), State(ids.SCENES, "data"), State(ids.SCENE_PICK, "value"),
                   State(ids.SCENE_TITLE, "value"), State(ids.SCENE_NOTE, "value"), State(ids.SHOWN, "value")]
                  + filter_states + [State(ids.SELECTED, "data"), State(ids.SELECTED_SET, "data"),
                                     State(ids.CAMERA_STATE, "data")] + view_states,
                  prevent_initial_call=True)
    def on_scenes(_save, _up, _down, _delete, contents, filename, scenes, pick, title, note, shown, *rest):
        scenes = scenes or []
        trigger = ctx.triggered_id
        clear = [no_update, no_update]
        if trigger == ids.SCENE_UPLOAD:
            if not contents:
                raise PreventUpdate
            try:
                imported, warning = import_scenes(_decode_upload(contents), **scene_kwargs(data),
                                                  run_id=data.run_id, source=str(filename or "imported file"))
            except (InputError, ValueError) as exc:
                return [no_update, no_update, no_update, f"import failed: {' '.join(str(exc).split())}"] + clear
            new = scenes + imported
            message = f"imported {len(imported)} scene(s) from {filename}. " + (warning + ". " if warning else "")
            return [new, scene_options(new), no_update, message + persist_scenes(data, new)] + clear
        action = {ids.SCENE_SAVE: "save", ids.SCENE_UP: "up", ids.SCENE_DOWN: "down",
                  ids.SCENE_DELETE: "delete"}[trigger]
        new_scene = None
        if action == "save":
            try:
                new_scene = scene_now(title, note, shown, rest[:6], rest[6], rest[7], rest[8], rest[9:11])
            except InputError as exc:
                return [no_update, no_update, no_update, f"scene not saved: {exc}"] + clear
            clear = ["", ""]
        elif not isinstance(pick, int):
            return [no_update, no_update, no_update, "select a scene in the list first"] + clear
        new, index = edit_scenes(scenes, action, pick if isinstance(pick, int) else None, new_scene)
        # The list's value follows the current scene. When it changes (a new or moved scene), on_apply applies
        # that scene again, which leaves the view as it is; a deleted one leaves no scene current.
        value = no_update if index == pick else index
        return [new, scene_options(new), value, persist_scenes(data, new)] + clear

    @app.callback(Output(ids.SCENE_DOWNLOAD, "data"), Input(ids.SCENE_EXPORT, "n_clicks"),
                  State(ids.SCENES, "data"), prevent_initial_call=True)
    def on_export(_n, scenes):
        text = export_scenes(scenes or [], run_id=data.run_id, n_voxels=data.n_voxels)
        return {"content": text, "filename": f"scenes-{data.run_id}.json", "type": "application/json"}

    @app.callback([Output(ids.cond_col(m), "hidden") for m in ids.PAIR], Input(ids.SHOWN, "value"))
    def on_shown(shown):
        shown = shown or list(ids.PAIR)
        return [m not in shown for m in ids.PAIR]

    app.clientside_callback(ClientsideFunction("attnbrain", "animateCameras"), Output(ids.CAMERA_SINK, "data",
                                                                                      allow_duplicate=True),
                            Input(ids.SCENE_CAMERAS, "data"), prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction("attnbrain", "writeUrl"), Output(ids.URL, "search"),
                            Input(ids.URL_TOKEN, "data"), prevent_initial_call=True)
    app.clientside_callback(ClientsideFunction("attnbrain", "sceneList"), Output(ids.SCENE_GOTO, "data",
                                                                                 allow_duplicate=True),
                            [Input(ids.SCENES, "data"), Input(ids.SCENE_PICK, "value")],
                            prevent_initial_call="initial_duplicate")


def _caption_text(caption) -> tuple[str, str]:
    """Title and note back from the caption's children (as Dash sends them: dicts with props)."""
    title = note = ""
    for child in caption or []:
        props = child.get("props", {}) if isinstance(child, dict) else {}
        text = props.get("children") if isinstance(props.get("children"), str) else ""
        if props.get("className") == "caption-title" and text != "untitled scene":
            title = text
        elif props.get("className") == "caption-note":
            note = text
    return title, note

