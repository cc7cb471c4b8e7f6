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
from core.vocabulary import CONDITION_LABELS, PAIR
from dashboard.scenefile import (default_scene, export_scenes, import_scenes, load_scenes, save_scenes, scenes_writable,
                                 validate_scene)
from dashboard.scenelink import scene_from_url, scene_to_url

from . import ids
from .data import DashboardData
from .filters import CONTROLS, control_deps
from .plotting import figure_outputs, figure_values
from .selection import highlight_graphs, highlight_patches, set_message, set_patches, voxel_from_hash
from .viewer_bridge import VIEWS

__all__ = [
    "scene_kwargs", "current_scene", "apply_scene", "scene_from_page_url", "url_token", "scene_options",
    "edit_scenes", "persist_scenes", "initial_scenes", "scene_panel", "columns_control", "scene_notices",
    "scene_stores", "register",
]

#: The scene file's name of each filter control (:data:`dashboard.filters.CONTROLS`).
_SCENE_FILTER = {key: ("ns_mode" if key == "ns" else key) for key in CONTROLS}


def scene_kwargs(data: DashboardData) -> dict:
    """What scenes are checked against: this run's voxel count, ROI names, significance rules and contrasts."""
    return {"n_voxels": data.n_voxels, "roi_names": list(data.roi_names), "rules": list(data.rules),
            "contrasts": list(data.contrasts)}


def _default(data: DashboardData) -> dict:
    return default_scene(rule=data.default_rule)


def current_scene(data: DashboardData, *, title: str = "", note: str = "", shown=None, filters=None,
                  selected=None, selected_set=None, cameras=None, viewer=None) -> dict:
    """The scene of the current control values (``filters``: the filter controls' values keyed as
    :data:`dashboard.filters.CONTROLS`; ``viewer``: ``{"condition", "view"}``). Values a control cannot hold
    (e.g. an untouched ``None``) take the defaults; the result is a valid scene."""
    scene = _default(data)
    scene["title"], scene["note"] = str(title or "").strip(), str(note or "").strip()
    if shown:
        scene["conditions"] = [m for m in PAIR if m in shown]
    for key, value in (filters or {}).items():
        if value is not None:
            scene["filters"][_SCENE_FILTER[key]] = value
    scene["selected"] = selected if isinstance(selected, int) and not isinstance(selected, bool) else None
    scene["selected_set"] = list(selected_set or [])
    if isinstance(cameras, dict):
        scene["cameras"] = {m: _plain_camera(cameras.get(m)) for m in PAIR}
    if viewer:
        scene["viewer"] = {"condition": viewer.get("condition") or PAIR[0], "view": viewer.get("view") or VIEWS[0]}
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
        ``filters`` (the filter controls' values keyed as :data:`dashboard.filters.CONTROLS`), ``selected``
        (voxel or None), ``hash`` (``#voxel=<row>`` or ""), ``selected_set`` (list), ``set_message``,
        ``patches`` (graph id -> one Patch moving the highlight and the set traces), ``cameras`` (per condition,
        None = the figure's default), ``viewer`` (``{"condition", "view"}``), ``shown`` (conditions) and
        ``caption`` (title, note).
    """
    f = scene["filters"]
    selected = scene["selected"]
    voxels = np.asarray(scene["selected_set"], dtype=np.int64)
    patches: dict[str, Patch] = {}
    highlight_patches(data, selected, into=patches)
    set_patches(data, voxels, into=patches)
    return {
        "filters": {key: list(f[name]) if isinstance(f[name], list) else f[name]
                    for key, name in _SCENE_FILTER.items()},
        "selected": selected, "hash": ids.voxel_href(selected) if selected is not None else "",
        "selected_set": voxels.tolist(), "set_message": set_message(voxels),
        "patches": patches, "cameras": dict(scene["cameras"]), "viewer": dict(scene["viewer"]),
        "shown": list(scene["conditions"]), "caption": (scene["title"], scene["note"]),
    }


def scene_from_page_url(data: DashboardData, search: str | None, url_hash: str | None) -> tuple[dict | None, str]:
    """The scene a page URL asks for, and a notice ("" when all of it was used).

    ``?scene=<token>`` gives the scene (see :func:`dashboard.scenelink.scene_from_url`); a ``#voxel=<row>`` hash, the
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


def columns_control() -> html.Div:
    """The checklist of the conditions shown (a scene's ``conditions``)."""
    return html.Div([html.Label("Columns"),
                     dcc.Checklist(id=ids.SHOWN, options=[{"label": CONDITION_LABELS[m], "value": m} for m in PAIR],
                                   value=list(PAIR), inline=True, className="check")], className="control")


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
def _fill(schema, values):
    """``values`` completed to the shape of the output grouping ``schema``: what it leaves out is no update."""
    if isinstance(schema, dict):
        values = values if isinstance(values, dict) else {}
        return {k: _fill(s, values.get(k, no_update)) for k, s in schema.items()}
    return values


def register(app, data: DashboardData) -> None:
    """The scene, URL and presentation callbacks."""
    has_viewer = data.viewer_dir is not None
    dup = {"allow_duplicate": True}
    moved = highlight_graphs(data)           # the graphs whose highlight and set traces a scene moves

    def viewer_deps(kind) -> dict:
        """The viewer's condition and view as ``kind`` dependencies (none for a run without the viewer)."""
        if not has_viewer:
            return {}
        return dict(viewer={"condition": kind(ids.VIEWER_COND, "value"), "view": kind(ids.VIEWER_VIEW, "value")})

    applied = dict(
        filters=control_deps(Output, **dup), selected=Output(ids.SELECTED, "data", **dup),
        hash=Output(ids.URL, "hash", **dup), selected_set=Output(ids.SELECTED_SET, "data", **dup),
        set_message=Output(ids.SET_MSG, "children", **dup), cameras=Output(ids.SCENE_CAMERAS, "data"),
        shown=Output(ids.SHOWN, "value"), caption=Output(ids.SCENE_CAPTION, "children"),
        notice=Output(ids.URL_NOTICE, "children"), notice_hidden=Output(ids.URL_NOTICE, "hidden"),
        ready=Output(ids.SCENE_READY, "data"), pick=Output(ids.SCENE_PICK, "value", **dup),
        **viewer_deps(Output), figures=figure_outputs(moved))

    def outputs_for(scene: dict, **extra) -> dict:
        a = apply_scene(data, scene)
        values = dict(filters=a["filters"], selected=a["selected"], hash=a["hash"], selected_set=a["selected_set"],
                      set_message=a["set_message"],
                      cameras=dict(a["cameras"], n=ctx.triggered[0]["prop_id"] if ctx.triggered else "load"),
                      shown=a["shown"], caption=_caption(*a["caption"]), viewer=a["viewer"],
                      figures=figure_values(moved, a["patches"]), **extra)
        if "notice" in extra:
            values["notice_hidden"] = not extra["notice"]
        return _fill(applied, values)

    @app.callback(output=applied,
                  inputs=dict(pathname=Input(ids.URL, "pathname"), pick=Input(ids.SCENE_PICK, "value"),
                              goto=Input(ids.SCENE_GOTO, "data")),
                  state=dict(scenes=State(ids.SCENES, "data"), search=State(ids.URL, "search"),
                             url_hash=State(ids.URL, "hash"), ready=State(ids.SCENE_READY, "data")),
                  prevent_initial_call=True)
    def on_apply(pathname, pick, goto, scenes, search, url_hash, ready):
        trigger = ctx.triggered_id
        scenes = scenes or []
        if trigger == ids.URL:
            if pathname is None or ready:
                raise PreventUpdate
            scene, notice = scene_from_page_url(data, search, url_hash)
            if scene is None:            # nothing to restore (a #voxel= hash is the selection callback's job)
                return _fill(applied, dict(notice=notice, notice_hidden=not notice, ready=True))
            return outputs_for(scene, notice=notice, ready=True)
        if trigger == ids.SCENE_GOTO:
            index = goto.get("index") if isinstance(goto, dict) else None
            extra = dict(pick=index)
        else:
            index, extra = pick, {}
        if not isinstance(index, int) or not 0 <= index < len(scenes):
            raise PreventUpdate
        return outputs_for(scenes[index], **extra)

    def scene_now(title, note, shown, filters, selected, selected_set, cameras, viewer):
        return current_scene(data, title=title, note=note, shown=shown, filters=filters, selected=selected,
                             selected_set=selected_set, cameras=cameras, viewer=viewer)

    view_state = dict(filters=control_deps(State), selected=State(ids.SELECTED, "data"),
                      selected_set=State(ids.SELECTED_SET, "data"), cameras=State(ids.CAMERA_STATE, "data"),
                      shown=State(ids.SHOWN, "value"), **viewer_deps(State))

    # The URL mirrors the view once the page's own URL scene has been applied (SCENE_READY).
    @app.callback(output=dict(token=Output(ids.URL_TOKEN, "data")),
                  inputs=dict(filters=control_deps(Input), selected=Input(ids.SELECTED, "data"),
                              selected_set=Input(ids.SELECTED_SET, "data"), cameras=Input(ids.CAMERA_STATE, "data"),
                              shown=Input(ids.SHOWN, "value"), ready=Input(ids.SCENE_READY, "data"),
                              caption=Input(ids.SCENE_CAPTION, "children"), **viewer_deps(Input)),
                  prevent_initial_call=True)
    def on_mirror(filters, selected, selected_set, cameras, shown, ready, caption, viewer=None):
        if not ready:
            raise PreventUpdate
        title, note = _caption_text(caption)
        try:
            scene = scene_now(title, note, shown, filters, selected, selected_set, cameras, viewer)
        except InputError:
            raise PreventUpdate from None
        return dict(token=url_token(data, scene))

    listed = dict(scenes=Output(ids.SCENES, "data", **dup), options=Output(ids.SCENE_PICK, "options", **dup),
                  pick=Output(ids.SCENE_PICK, "value", **dup), message=Output(ids.SCENE_MSG, "children", **dup))

    @app.callback(output=listed, inputs=dict(_pathname=Input(ids.URL, "pathname")),
                  prevent_initial_call="initial_duplicate")
    def on_load_scenes(_pathname):
        scenes, message = initial_scenes(data)
        return dict(scenes=scenes, options=scene_options(scenes), pick=no_update, message=message)

    edited = dict(listed, title=Output(ids.SCENE_TITLE, "value"), note=Output(ids.SCENE_NOTE, "value"))
    actions = {ids.SCENE_SAVE: "save", ids.SCENE_UP: "up", ids.SCENE_DOWN: "down", ids.SCENE_DELETE: "delete"}

    @app.callback(output=edited,
                  inputs=dict(clicks={cid: Input(cid, "n_clicks") for cid in actions},
                              contents=Input(ids.SCENE_UPLOAD, "contents")),
                  state=dict(filename=State(ids.SCENE_UPLOAD, "filename"), scenes=State(ids.SCENES, "data"),
                             pick=State(ids.SCENE_PICK, "value"), title=State(ids.SCENE_TITLE, "value"),
                             note=State(ids.SCENE_NOTE, "value"), view=view_state),
                  prevent_initial_call=True)
    def on_scenes(clicks, contents, filename, scenes, pick, title, note, view):
        scenes = scenes or []
        trigger = ctx.triggered_id
        if trigger == ids.SCENE_UPLOAD:
            if not contents:
                raise PreventUpdate
            try:
                imported, warning = import_scenes(_decode_upload(contents), **scene_kwargs(data),
                                                  run_id=data.run_id, source=str(filename or "imported file"))
            except (InputError, ValueError) as exc:
                return _fill(edited, dict(message=f"import failed: {' '.join(str(exc).split())}"))
            new = scenes + imported
            message = f"imported {len(imported)} scene(s) from {filename}. " + (warning + ". " if warning else "")
            return _fill(edited, dict(scenes=new, options=scene_options(new),
                                      message=message + persist_scenes(data, new)))
        action = actions[trigger]
        new_scene, cleared = None, {}
        if action == "save":
            try:
                new_scene = scene_now(title, note, view["shown"], view["filters"], view["selected"],
                                      view["selected_set"], view["cameras"], view.get("viewer"))
            except InputError as exc:
                return _fill(edited, dict(message=f"scene not saved: {exc}"))
            cleared = dict(title="", note="")
        elif not isinstance(pick, int):
            return _fill(edited, dict(message="select a scene in the list first"))
        new, index = edit_scenes(scenes, action, pick if isinstance(pick, int) else None, new_scene)
        # The list's value follows the current scene. When it changes (a new or moved scene), on_apply applies
        # that scene again, which leaves the view as it is; a deleted one leaves no scene current.
        return _fill(edited, dict(scenes=new, options=scene_options(new), pick=no_update if index == pick else index,
                                  message=persist_scenes(data, new), **cleared))

    @app.callback(output=dict(download=Output(ids.SCENE_DOWNLOAD, "data")),
                  inputs=dict(_n=Input(ids.SCENE_EXPORT, "n_clicks")), state=dict(scenes=State(ids.SCENES, "data")),
                  prevent_initial_call=True)
    def on_export(_n, scenes):
        text = export_scenes(scenes or [], run_id=data.run_id, n_voxels=data.n_voxels)
        return dict(download={"content": text, "filename": f"scenes-{data.run_id}.json", "type": "application/json"})

    @app.callback(output={m: Output(ids.cond_col(m), "hidden") for m in PAIR},
                  inputs=dict(shown=Input(ids.SHOWN, "value")))
    def on_shown(shown):
        shown = shown or list(PAIR)
        return {m: m not in shown for m in PAIR}

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

