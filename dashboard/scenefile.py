"""Saved dashboard scenes: what a view shows (filters, selection, cameras, viewer), checked against a run.

A *scene* is a plain JSON object::

    {"version": 1, "title": str, "note": str,
     "conditions": ["off", "on"],                     # the conditions shown
     "filters": {"rule": "p" | "q" | "perm", "bins": [int], "rois": [str], "hemis": ["L", "R"],
                 "threshold": float in [0, 1], "ns_mode": "faint" | "hidden",
                 "colour": "bins" | "contrast" | "ceiling" | "adds",
                 "contrast": "on_off" | "on_uniform" | "uniform_off",
                 "outcomes": [-1 | 0 | 1], "bin_set": "significant" | "all", "adds": [0 | 1 | 2 | 3]},
     "selected": int | null,                           # voxel row
     "selected_set": [int],
     "cameras": {"off": camera | null, "on": camera | null},   # plotly 3-D scene cameras
     "viewer": {"condition": "off" | "on", "view": "flat" | "inflated"}}

where a camera is ``{"eye": {x, y, z}, "center": {x, y, z}, "up": {x, y, z}}`` and ``bins`` are among the
run's filter codes (``BinScheme.filter_codes`` of its ``stats.bin_edges``: -2 for significant r below the first
edge, then ``0 .. n_bins - 1``; :mod:`core.vocabulary`). A run's scenes live in
``RESULTS/<run_id>/scenes/scenes.json`` = ``{"version": 1, "run_id": str, "n_voxels": int, "scenes": [...]}``,
the only file the dashboard ever writes (atomically). A scene also travels in a page URL as
``?scene=<token>`` (:mod:`dashboard.scenelink`), where bad or stale state falls back to the
defaults field by field with a notice instead of an error.

Every problem with a scene file is one :class:`~core._validation.InputError` line naming the file, the field,
what was expected, what was found and how to fix it.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Callable

from core._io import write_json_atomic
from core._validation import InputError
from core.vocabulary import ADDS_CODES, BIN_SETS, COLOURINGS, CONTRASTS, DEFAULT_BINS, OUTCOME_CODES, PAIR, RULES, BinScheme

__all__ = [
    "SCENE_VERSION", "CONDITIONS", "RULES", "HEMIS", "NS_MODES", "VIEWS", "MAX_SCENES",
    "MAX_TITLE", "MAX_NOTE", "URL_PARAM", "default_scene", "validate_scene", "validate_scenes_file",
    "scenes_path", "load_scenes", "save_scenes", "scenes_writable", "export_scenes", "import_scenes",
    "scene_context",
]

SCENE_VERSION = 1
#: The conditions a scene shows: the compared pair.
CONDITIONS = PAIR
HEMIS = ("L", "R")
NS_MODES = ("faint", "hidden")
VIEWS = ("flat", "inflated")
#: Limits that keep a scene file (and a link) readable; far above what a talk needs.
MAX_SCENES = 200
MAX_TITLE = 200
MAX_NOTE = 4000
#: The query parameter of a page URL that holds a scene (the hash stays ``#voxel=<row>``).
URL_PARAM = "scene"

_SCENE_KEYS = ("version", "title", "note", "conditions", "filters", "selected", "selected_set", "cameras",
               "viewer")
_FILTER_KEYS = ("rule", "bins", "rois", "hemis", "threshold", "ns_mode", "colour", "contrast", "outcomes", "bin_set",
                "adds")
_FILE_KEYS = ("version", "run_id", "n_voxels", "scenes")
_CAMERA_PARTS = ("eye", "center", "up")


def _bin_codes(bin_codes) -> tuple[int, ...]:
    return DEFAULT_BINS.filter_codes if bin_codes is None else tuple(int(c) for c in bin_codes)


def default_scene(*, rule: str = "p", title: str = "", note: str = "", bin_codes=None) -> dict:
    """The dashboard's opening view as a scene: everything shown, nothing selected, default cameras.

    ``bin_codes``: the run's filter codes (:func:`scene_context`; default those of the default bins).
    """
    return {"version": SCENE_VERSION, "title": title, "note": note, "conditions": list(CONDITIONS),
            "filters": {"rule": rule, "bins": sorted(_bin_codes(bin_codes)), "rois": [], "hemis": list(HEMIS),
                        "threshold": 0.0, "ns_mode": "faint", "colour": "bins", "contrast": "on_off",
                        "outcomes": sorted(OUTCOME_CODES), "bin_set": "significant", "adds": sorted(ADDS_CODES)},
            "selected": None, "selected_set": [], "cameras": {m: None for m in CONDITIONS},
            "viewer": {"condition": "off", "view": "flat"}}


# ---------------------------------------------------------------------------------------------- field checks
class _Ctx:
    """What a scene is checked against: the run's voxel count, ROI names, significance rules and bin codes."""

    def __init__(self, n_voxels: int, roi_names, rules, source: str, prefix: str = "", bin_codes=None,
                 contrasts=None):
        self.n_voxels = int(n_voxels)
        # The contrasts the run tested (None: any of the vocabulary's, for scenes checked without a run).
        self.contrasts = list(CONTRASTS) if contrasts is None else [str(c) for c in contrasts]
        self.roi_names = [str(r) for r in roi_names]
        self.rules = [str(r) for r in rules]
        self.bin_codes = _bin_codes(bin_codes)
        self.source = source
        self.prefix = prefix

    def fail(self, field: str, message: str):
        raise InputError(message, source=self.source, field=self.prefix + field)


def _show(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choices(values) -> str:
    return ", ".join(repr(v) for v in values)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text(ctx: _Ctx, field: str, value, limit: int) -> str:
    if not isinstance(value, str):
        ctx.fail(field, f"expected text, found {_show(value)}; write it in double quotes")
    if len(value) > limit:
        ctx.fail(field, f"expected at most {limit} characters, found {len(value)}; shorten it")
    return value


def _subset(ctx: _Ctx, field: str, value, allowed, what: str, *, empty_ok: bool, order=None) -> list:
    if not isinstance(value, list):
        ctx.fail(field, f"expected a list of {what}, found {_show(value)}; write e.g. {json.dumps(list(allowed)[:2])}")
    bad = [v for v in value if v not in allowed or isinstance(v, bool)]
    if bad:
        ctx.fail(field, f"expected {what} among {_choices(allowed)}, found {_show(bad[0])}; remove it or use one "
                        "of those")
    if not value and not empty_ok:
        ctx.fail(field, f"expected at least one of {_choices(allowed)}, found an empty list; add one")
    keep = set(value)
    return [v for v in (order if order is not None else allowed) if v in keep]


def _check_version(ctx, value):
    if value != SCENE_VERSION or not _is_int(value):
        ctx.fail("version", f"expected scene version {SCENE_VERSION}, found {_show(value)}; this tool reads "
                            f"version {SCENE_VERSION} scenes (re-save the scene with this dashboard)")
    return SCENE_VERSION


def _check_conditions(ctx, value):
    return _subset(ctx, "conditions", value, CONDITIONS, "conditions", empty_ok=False)


def _check_rule(ctx, value):
    if value not in ctx.rules:
        ctx.fail("filters.rule", f"expected one of {_choices(ctx.rules)} (the significance rules of this run), "
                                 f"found {_show(value)}; use one of those")
    return value


def _check_bins(ctx, value):
    if isinstance(value, list) and any(isinstance(v, float) and v.is_integer() for v in value):
        value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    return _subset(ctx, "filters.bins", value, ctx.bin_codes, "bin codes", empty_ok=True, order=sorted(ctx.bin_codes))


def _check_rois(ctx, value):
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        ctx.fail("filters.rois", f"expected a list of ROI names, found {_show(value)}; write e.g. [\"FFA\"] or [] "
                                 "for all ROIs")
    unknown = [v for v in value if v not in ctx.roi_names]
    if unknown:
        known = ", ".join(ctx.roi_names) if ctx.roi_names else "none: this run has no ROIs"
        ctx.fail("filters.rois", f"unknown ROI {unknown[0]!r} (this run's ROIs: {known}); remove it or use one of "
                                 "those")
    return sorted(set(value))


def _check_hemis(ctx, value):
    return _subset(ctx, "filters.hemis", value, HEMIS, "hemispheres", empty_ok=True)


def _check_threshold(ctx, value):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) \
            or not 0 <= value <= 1:
        ctx.fail("filters.threshold", f"expected a number between 0 and 1 (minimum |r|), found {_show(value)}; "
                                      "use e.g. 0.1")
    return float(value)


def _check_ns(ctx, value):
    if value not in NS_MODES:
        ctx.fail("filters.ns_mode", f"expected one of {_choices(NS_MODES)}, found {_show(value)}; use one of those")
    return value


def _check_colour(ctx, value):
    if value not in COLOURINGS:
        ctx.fail("filters.colour", f"expected one of {_choices(COLOURINGS)}, found {_show(value)}; use one of those")
    if value == "contrast" and not ctx.contrasts:
        ctx.fail("filters.colour", "expected 'bins': this run has no contrasts stage to colour by (rerun "
                                   "precompute.py to add it)")
    return value


def _check_contrast(ctx, value):
    if value not in CONTRASTS:
        ctx.fail("filters.contrast", f"expected one of {_choices(CONTRASTS)}, found {_show(value)}; use one of those")
    if ctx.contrasts and value not in ctx.contrasts:
        ctx.fail("filters.contrast", f"this run did not test {value!r} (it tested {_choices(ctx.contrasts)}); "
                                     "use one of those")
    return value


def _check_outcomes(ctx, value):
    if isinstance(value, list):
        value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    return _subset(ctx, "filters.outcomes", value, sorted(OUTCOME_CODES), "outcome codes (-1 hurts, 0 no detectable "
                   "difference, 1 helps)", empty_ok=True)


def _check_adds(ctx, value):
    if isinstance(value, list):
        value = [int(v) if isinstance(v, float) and v.is_integer() else v for v in value]
    return _subset(ctx, "filters.adds", value, sorted(ADDS_CODES), "codes of what attention adds (0 neither, 1 on, "
                   "2 off, 3 both)", empty_ok=True)


def _check_bin_set(ctx, value):
    if value not in BIN_SETS:
        ctx.fail("filters.bin_set", f"expected one of {_choices(BIN_SETS)}, found {_show(value)}; use one of those")
    return value


def _voxel(ctx, field, value):
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not _is_int(value) or not 0 <= value < ctx.n_voxels:
        ctx.fail(field, f"expected a voxel row from 0 to {ctx.n_voxels - 1}, found {_show(value)}; "
                        "this scene was made for another run or edited by hand: pick a voxel of this run")
    return int(value)


def _check_selected(ctx, value):
    return None if value is None else _voxel(ctx, "selected", value)


def _check_set(ctx, value):
    if not isinstance(value, list):
        ctx.fail("selected_set", f"expected a list of voxel rows, found {_show(value)}; write [] for no set")
    out = set()
    for i, v in enumerate(value):
        out.add(_voxel(ctx, f"selected_set[{i}]", v))
    return sorted(out)


def _check_camera(ctx, field, value):
    if value is None:
        return None
    if not isinstance(value, dict):
        ctx.fail(field, f"expected a plotly camera {{\"eye\", \"center\", \"up\"}} or null, found {_show(value)}; "
                        "use null for the default view")
    extra = sorted(set(value) - set(_CAMERA_PARTS) - {"projection"})
    if extra:
        ctx.fail(field, f"unknown camera field {extra[0]!r}; expected only eye, center, up (remove it)")
    cam = {}
    for part in _CAMERA_PARTS:
        vec = value.get(part)
        ok = isinstance(vec, dict) and set(vec) == {"x", "y", "z"} and all(
            isinstance(vec[a], (int, float)) and not isinstance(vec[a], bool) and math.isfinite(vec[a])
            for a in "xyz")
        if not ok:
            ctx.fail(f"{field}.{part}", f"expected {{\"x\": number, \"y\": number, \"z\": number}}, found "
                                        f"{_show(vec)}; use null for the default camera")
        cam[part] = {a: float(vec[a]) for a in "xyz"}
    if math.isclose(sum(c * c for c in cam["up"].values()), 0.0):
        ctx.fail(f"{field}.up", "expected a non-zero up vector, found (0, 0, 0); use e.g. {\"x\": 0, \"y\": 0, "
                                "\"z\": 1}")
    return cam


def _check_cameras(ctx, value):
    if not isinstance(value, dict):
        ctx.fail("cameras", f"expected {{\"off\": camera or null, \"on\": camera or null}}, found {_show(value)}")
    extra = sorted(set(value) - set(CONDITIONS))
    if extra:
        ctx.fail("cameras", f"unknown condition {extra[0]!r}; expected only 'off' and 'on' (remove it)")
    return {m: _check_camera(ctx, f"cameras.{m}", value.get(m)) for m in CONDITIONS}


def _check_viewer(ctx, value):
    if not isinstance(value, dict):
        ctx.fail("viewer", f"expected {{\"condition\": \"off\"|\"on\", \"view\": \"flat\"|\"inflated\"}}, found "
                           f"{_show(value)}")
    extra = sorted(set(value) - {"condition", "view"})
    if extra:
        ctx.fail("viewer", f"unknown field {extra[0]!r}; expected only condition and view (remove it)")
    cond, view = value.get("condition", "off"), value.get("view", "flat")
    if cond not in CONDITIONS:
        ctx.fail("viewer.condition", f"expected one of {_choices(CONDITIONS)}, found {_show(cond)}")
    if view not in VIEWS:
        ctx.fail("viewer.view", f"expected one of {_choices(VIEWS)}, found {_show(view)}")
    return {"condition": cond, "view": view}


_FILTER_CHECKS: dict[str, Callable] = {"rule": _check_rule, "bins": _check_bins, "rois": _check_rois,
                                       "hemis": _check_hemis, "threshold": _check_threshold, "ns_mode": _check_ns,
                                       "colour": _check_colour, "contrast": _check_contrast,
                                       "outcomes": _check_outcomes, "bin_set": _check_bin_set, "adds": _check_adds}
_SCENE_CHECKS: dict[str, Callable] = {
    "version": _check_version, "title": lambda c, v: _text(c, "title", v, MAX_TITLE),
    "note": lambda c, v: _text(c, "note", v, MAX_NOTE), "conditions": _check_conditions,
    "selected": _check_selected, "selected_set": _check_set, "cameras": _check_cameras, "viewer": _check_viewer,
}


def _normalise(obj: Any, ctx: _Ctx, default: dict, on_error: Callable[[InputError], None] | None) -> dict:
    """Check every field of ``obj``; missing fields take ``default``'s. ``on_error`` None = raise the first
    problem; otherwise report it there and keep the default for that field (the URL path)."""
    def attempt(check, *args, fallback):
        try:
            return check(*args)
        except InputError as exc:
            if on_error is None:
                raise
            on_error(exc)
            return fallback

    if not isinstance(obj, dict):
        ctx.fail("", f"expected a scene (a JSON object with {', '.join(_SCENE_KEYS)}), found {_show(obj)}")
    for key in obj:
        if key not in _SCENE_KEYS:
            attempt(ctx.fail, key, f"unknown scene field {key!r}; expected only {', '.join(_SCENE_KEYS)} (remove "
                                   "it or check its spelling)", fallback=None)
    if "version" not in obj and on_error is None:
        ctx.fail("version", f"missing; expected \"version\": {SCENE_VERSION} in every scene")
    out = {}
    for key in _SCENE_KEYS:
        if key == "filters":
            continue
        out[key] = attempt(_SCENE_CHECKS[key], ctx, obj[key], fallback=default[key]) if key in obj else default[key]
    filters = obj.get("filters", {})
    out["filters"] = dict(default["filters"])
    if not isinstance(filters, dict):
        attempt(ctx.fail, "filters", f"expected an object with {', '.join(_FILTER_KEYS)}, found {_show(filters)}",
                fallback=None)
        filters = {}
    for key in filters:
        if key not in _FILTER_KEYS:
            attempt(ctx.fail, f"filters.{key}", f"unknown filter {key!r}; expected only {', '.join(_FILTER_KEYS)} "
                                                "(remove it or check its spelling)", fallback=None)
    for key in _FILTER_KEYS:
        if key in filters:
            out["filters"][key] = attempt(_FILTER_CHECKS[key], ctx, filters[key], fallback=default["filters"][key])
    return {k: out[k] for k in _SCENE_KEYS}


def validate_scene(obj: Any, *, n_voxels: int, roi_names, rules, source: str = "scene", field: str = "",
                   bin_codes=None, contrasts=None) -> dict:
    """Check a scene against a run and return it normalised (defaults filled in, lists sorted, floats).

    Parameters
    ----------
    obj : any
        The parsed JSON of one scene.
    n_voxels : int
        The run's voxel count: ``selected`` and ``selected_set`` must be rows below it.
    roi_names : sequence of str
        The run's ROI names (``filters.rois`` must be among them).
    rules : sequence of str
        The significance rules the run supports (``"p"``, ``"q"``, and ``"perm"`` when it has permutations).
    source : str
        Names the input in messages (a file path, "link").
    field : str
        Prefix of field names in messages (e.g. ``"scenes[2]."``).
    bin_codes : sequence of int, optional
        The run's filter codes (``BinScheme.filter_codes``; :func:`scene_context` gives them); default those
        of the default bins.
    contrasts : sequence of str, optional
        The contrasts the run tested (``filters.contrast`` must be one; ``filters.colour`` may be
        ``"contrast"`` only when there is one); default any of :data:`core.vocabulary.CONTRASTS`.

    Returns
    -------
    dict
        The scene with every field of the format, in its order. Missing fields other than ``version`` take
        the defaults of :func:`default_scene`.

    Raises
    ------
    InputError
        One line: source, field, expected, found, how to fix it.
    """
    ctx = _Ctx(n_voxels, roi_names, rules, source, field, bin_codes, contrasts)
    rule = "p" if "p" in ctx.rules else (ctx.rules[0] if ctx.rules else "p")
    return _normalise(obj, ctx, default_scene(rule=rule, bin_codes=ctx.bin_codes), None)


def validate_scenes_file(obj: Any, *, n_voxels: int, roi_names, rules, run_id: str | None = None,
                         source: str = "scenes file", bin_codes=None,
                         contrasts=None) -> tuple[list[dict], str | None]:
    """Check a parsed scenes file against a run.

    A file written for another run id is accepted when its ``n_voxels`` matches this run's (the voxel rows
    then mean the same voxels if both runs share the dataset), with a warning.

    Returns
    -------
    scenes : list of dict
        Normalised scenes (see :func:`validate_scene`).
    warning : str or None
        Set when the file comes from another run.
    """
    ctx = _Ctx(n_voxels, roi_names, rules, source, bin_codes=bin_codes, contrasts=contrasts)
    if not isinstance(obj, dict):
        ctx.fail("", f"expected a scenes file (a JSON object with {', '.join(_FILE_KEYS)}), found {_show(obj)}; "
                     "export scenes from the dashboard to get one")
    extra = [k for k in obj if k not in _FILE_KEYS]
    if extra:
        ctx.fail(extra[0], f"unknown field {extra[0]!r}; expected only {', '.join(_FILE_KEYS)} (remove it)")
    if obj.get("version") != SCENE_VERSION or not _is_int(obj.get("version")):
        ctx.fail("version", f"expected scenes file version {SCENE_VERSION}, found {_show(obj.get('version'))}; "
                            "export the scenes again with this dashboard")
    file_run = obj.get("run_id")
    if not isinstance(file_run, str) or not file_run:
        ctx.fail("run_id", f"expected the run id the scenes were made for, found {_show(file_run)}")
    file_n = obj.get("n_voxels")
    if file_n is not None and not _is_int(file_n):
        ctx.fail("n_voxels", f"expected an integer voxel count, found {_show(file_n)}")
    warning = None
    if run_id is not None and file_run != run_id:
        if file_n is None:
            ctx.fail("run_id", f"scenes of run {file_run!r}, not of this run {run_id!r}, and no n_voxels to check "
                               "that its voxel rows fit; export them again with n_voxels or use them on their run")
        if file_n != n_voxels:
            ctx.fail("n_voxels", f"scenes of run {file_run!r} with {file_n} voxels, but run {run_id!r} has "
                                 f"{n_voxels}; voxel rows would name other voxels, so they cannot be used here")
        warning = (f"these scenes were made for run {file_run}, not {run_id}; both have {n_voxels} voxels, so "
                   "voxel rows are kept, but check that the runs share one dataset")
    elif file_n is not None and file_n != n_voxels:
        ctx.fail("n_voxels", f"expected {n_voxels} (this run's voxel count), found {file_n}; the file was edited "
                             "or damaged")
    scenes = obj.get("scenes")
    if not isinstance(scenes, list):
        ctx.fail("scenes", f"expected a list of scenes, found {_show(scenes)}")
    if len(scenes) > MAX_SCENES:
        ctx.fail("scenes", f"expected at most {MAX_SCENES} scenes, found {len(scenes)}; split them into files")
    out = [validate_scene(s, n_voxels=n_voxels, roi_names=roi_names, rules=rules, source=source,
                          field=f"scenes[{i}].", bin_codes=bin_codes, contrasts=contrasts)
           for i, s in enumerate(scenes)]
    return out, warning


# ---------------------------------------------------------------------------------------------- files
def scenes_path(path_or_run_dir: str | Path) -> Path:
    """``RUN_DIR/scenes/scenes.json`` for a run folder (a path to a ``.json`` file is returned as is)."""
    path = Path(path_or_run_dir)
    return path if path.suffix == ".json" else path / "scenes" / "scenes.json"


def _parse(text: str | bytes, source: str) -> Any:
    try:
        if isinstance(text, bytes):
            text = text.decode("utf-8")
        return json.loads(text)
    except UnicodeDecodeError:
        raise InputError("not UTF-8 text (a binary file?); expected a scenes JSON file exported from the "
                         "dashboard", source=source) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno}), the file is damaged or was cut short; "
                         "export the scenes again or fix the file", source=source) from None


def load_scenes(path_or_run_dir: str | Path, *, n_voxels: int, roi_names, rules,
                run_id: str | None = None, bin_codes=None, contrasts=None) -> tuple[list[dict], str | None]:
    """Read and check a run's scenes (``[]`` when the run has no scenes file yet).

    Parameters
    ----------
    path_or_run_dir : path
        A run folder (``RESULTS/<run_id>``) or a scenes ``.json`` file.
    n_voxels, roi_names, rules, run_id, bin_codes
        The run the scenes must fit (see :func:`scene_context`).

    Returns
    -------
    scenes : list of dict
    warning : str or None
        See :func:`validate_scenes_file`.
    """
    path = scenes_path(path_or_run_dir)
    if not path.exists():
        return [], None
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot be read ({exc.strerror or exc}); check its permissions", source=str(path)) from None
    return validate_scenes_file(_parse(raw, str(path)), n_voxels=n_voxels, roi_names=roi_names, rules=rules,
                                run_id=run_id, source=str(path), bin_codes=bin_codes, contrasts=contrasts)


def save_scenes(run_dir: str | Path, scenes: list[dict], *, run_id: str, n_voxels: int) -> Path:
    """Write ``RUN_DIR/scenes/scenes.json`` atomically (a temporary file renamed over it; nothing else in the
    results folder is touched). Raises OSError when the folder is not writable."""
    return write_json_atomic(scenes_path(run_dir), _file_obj(scenes, run_id=run_id, n_voxels=n_voxels))


def scenes_writable(run_dir: str | Path) -> bool:
    """Whether :func:`save_scenes` can write into this run folder (the scenes folder, or the run folder that
    would hold it)."""
    folder = scenes_path(run_dir).parent
    target = folder if folder.exists() else folder.parent
    return target.is_dir() and os.access(target, os.W_OK | os.X_OK)


def _file_obj(scenes: list[dict], *, run_id: str, n_voxels: int) -> dict:
    return {"version": SCENE_VERSION, "run_id": str(run_id), "n_voxels": int(n_voxels), "scenes": list(scenes)}


def export_scenes(scenes: list[dict], *, run_id: str, n_voxels: int) -> str:
    """A scenes file's text (indented JSON), for a download."""
    return json.dumps(_file_obj(scenes, run_id=run_id, n_voxels=n_voxels), indent=2)


def import_scenes(content: str | bytes, *, n_voxels: int, roi_names, rules, run_id: str | None = None,
                  source: str = "imported scenes file", bin_codes=None,
                  contrasts=None) -> tuple[list[dict], str | None]:
    """Parse and check an uploaded scenes file against this run (see :func:`validate_scenes_file`)."""
    return validate_scenes_file(_parse(content, source), n_voxels=n_voxels, roi_names=roi_names, rules=rules,
                                run_id=run_id, source=source, bin_codes=bin_codes, contrasts=contrasts)


def scene_context(results) -> dict:
    """The keyword arguments that fit scenes to an opened run: ``n_voxels``, ``roi_names``, ``rules``,
    ``run_id``, ``bin_codes`` (its scheme's filter codes) and ``contrasts`` (those it tested)
    (``results``: :class:`core.outputs.Results`)."""
    # The permutation rule only where the run has permutation p-values for every shown condition.
    rules = [r for r in RULES if r != "perm"]
    if results.has_stage("stats") and all(results.has_array("stats", "p_perm", m) for m in CONDITIONS):
        rules.append("perm")
    roi_names = results.roi_names if results.has_stage("dataset") else []
    return {"n_voxels": int(results.n_voxels), "roi_names": list(roi_names), "rules": rules,
            "run_id": str(results.run_id), "bin_codes": list(BinScheme.from_config(results.config).filter_codes),
            "contrasts": results.contrast_names()}
