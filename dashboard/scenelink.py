"""Scenes in page URLs: ``?scene=<token>`` (compact JSON, zlib, base64url) and back, where bad or stale state
falls back to the defaults field by field with a notice instead of an error (:mod:`dashboard.scenefile` holds
the format and its checks).
"""
from __future__ import annotations

import base64
import binascii
import json
import zlib
from typing import Any
from urllib.parse import parse_qs

from core._validation import InputError

from .scenefile import _CAMERA_PARTS, CONDITIONS, URL_PARAM, _Ctx, _is_int, _normalise, default_scene

__all__ = ["scene_to_url", "scene_from_url"]


# Short keys keep links short; the set is stored as gaps between sorted rows (small numbers compress well).
_SHORT = {"version": "v", "title": "t", "note": "n", "conditions": "c", "filters": "f", "selected": "s",
          "selected_set": "S", "cameras": "k", "viewer": "w"}
_SHORT_FILTERS = {"rule": "r", "bins": "b", "rois": "o", "hemis": "h", "threshold": "x", "ns_mode": "m",
                  "colour": "l", "contrast": "d", "outcomes": "u", "bin_set": "a", "adds": "j"}


def _camera_list(cam: dict | None):
    if cam is None:
        return None
    return [round(cam[p][a], 4) for p in _CAMERA_PARTS for a in "xyz"]


def _camera_dict(values):
    if values is None:
        return None
    if not isinstance(values, list) or len(values) != 9:
        return {"eye": values}           # fails validation, field by field
    return {p: {a: values[3 * i + j] for j, a in enumerate("xyz")} for i, p in enumerate(_CAMERA_PARTS)}


def _gaps(rows: list[int]) -> list[int]:
    return [b - a for a, b in zip([0] + rows[:-1], rows)]


def _ungaps(gaps) -> Any:
    if not isinstance(gaps, list) or not all(_is_int(g) for g in gaps):
        return gaps
    out, total = [], 0
    for g in gaps:
        total += g
        out.append(total)
    return out


def scene_to_url(scene: dict) -> str:
    """A scene as a URL query string ``?scene=<token>`` (compact JSON, zlib, base64url without padding).

    The page's hash (``#voxel=<row>``) is left to the caller: append it after the query.
    """
    short = {_SHORT[k]: v for k, v in scene.items() if k not in ("filters", "selected_set", "cameras")}
    short["f"] = {_SHORT_FILTERS[k]: v for k, v in scene["filters"].items()}
    short["S"] = _gaps(list(scene["selected_set"]))
    short["k"] = {m: _camera_list(scene["cameras"].get(m)) for m in CONDITIONS}
    raw = json.dumps(short, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    token = base64.urlsafe_b64encode(zlib.compress(raw, 9)).rstrip(b"=").decode("ascii")
    return f"?{URL_PARAM}={token}"


def _decode_token(token: str) -> Any:
    """The short-key JSON in a token; raises ValueError with a reason."""
    try:
        packed = base64.b64decode(token + "=" * (-len(token) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("it is not base64url text") from None
    try:
        raw = zlib.decompress(packed)
    except zlib.error:
        raise ValueError("it is not a compressed scene (cut short or edited?)") from None
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ValueError("it does not hold scene JSON") from None


def _expand(short: Any) -> Any:
    """Short keys back to scene fields (unknown keys kept, so validation names them)."""
    if not isinstance(short, dict):
        return short
    long = {v: k for k, v in _SHORT.items()}
    lf = {v: k for k, v in _SHORT_FILTERS.items()}
    out = {long.get(k, k): v for k, v in short.items()}
    if isinstance(out.get("filters"), dict):
        out["filters"] = {lf.get(k, k): v for k, v in out["filters"].items()}
    if "selected_set" in out:
        out["selected_set"] = _ungaps(out["selected_set"])
    if isinstance(out.get("cameras"), dict):
        out["cameras"] = {m: _camera_dict(v) for m, v in out["cameras"].items()}
    return out


def scene_from_url(query_or_hash: str | None, *, n_voxels: int, roi_names, rules,
                   default: dict | None = None, bin_codes=None, contrasts=None) -> tuple[dict | None, str]:
    """The scene held by a page URL's query (``?scene=...``) or hash (``#scene=...``), never raising.

    Parameters
    ----------
    query_or_hash : str or None
        ``location.search`` or ``location.hash`` (other parameters are ignored), or a bare token.
    n_voxels, roi_names, rules, bin_codes
        The run (see :func:`validate_scene`).
    default : dict, optional
        The scene whose fields replace bad ones (default: :func:`default_scene` with rule "p" and the run's
        bin codes).

    Returns
    -------
    scene : dict or None
        None when the URL holds no scene; else a valid scene, each unreadable or stale field (voxel out of
        range, unknown ROI, ...) replaced by the default's.
    notice : str
        "" when everything was used; else one line saying what was ignored and why.
    """
    default = default or default_scene(bin_codes=bin_codes)
    text = (query_or_hash or "").strip()
    if not text:
        return None, ""
    if text[0] in "?#" or "=" in text:
        values = parse_qs(text.lstrip("?#"), keep_blank_values=True).get(URL_PARAM)
        if not values:
            return None, ""
        token = values[-1]
    else:
        token = text
    lead = "The link's scene could not be fully used"
    try:
        short = _decode_token(token.strip())
    except ValueError as exc:
        return _copy(default), f"{lead}: its scene state is unreadable ({exc}); showing the default view instead."
    problems: list[str] = []

    def note(exc: InputError):
        field = f"{exc.field}: " if exc.field else ""
        text = str(exc)
        problems.append(field + (text.split(": ", 1)[1] if exc.field and ": " in text else text))

    ctx = _Ctx(n_voxels, roi_names, rules, "link", bin_codes=bin_codes, contrasts=contrasts)
    try:
        scene = _normalise(_expand(short), ctx, default, note)
    except InputError:
        return _copy(default), f"{lead}: it does not hold a scene object; showing the default view instead."
    if not problems:
        return scene, ""
    shown = "; ".join(p.split("; ")[0] for p in problems[:4]) + ("; ..." if len(problems) > 4 else "")
    return scene, f"{lead} ({len(problems)} field(s) reset to the defaults): {shown}."


def _copy(scene: dict) -> dict:
    return json.loads(json.dumps(scene))
