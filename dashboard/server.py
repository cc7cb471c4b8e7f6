"""Flask routes beside Dash: the pycortex viewer folder, stimulus PNGs and flatmap images.

The viewer is served from its own route (never from ``assets/``, where Dash would inject every JS file into
the app) and only files inside the run's viewer folder are reachable: ``..``, encoded traversal, absolute
paths, hidden files and symlinks leading out of the folder all answer 404. Stimulus thumbnails and attention
overlays are encoded to PNG on demand from the memory-mapped arrays; the flatmap filter layer is drawn from
the pixel lookup for the filter state in its query string.
"""
from __future__ import annotations

import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from flask import Response, abort, request, send_file

from .data import DashboardData, FilterState
from .flatmaps import state_layer

__all__ = ["register_routes", "safe_path", "png_bytes", "suspicious_path"]

_PNG = "image/png"


def safe_path(root: Path | None, subpath: str) -> Path | None:
    """The file ``root/subpath`` if it is a regular file inside ``root``, else None.

    Parameters
    ----------
    root : Path or None
        The folder files may come from.
    subpath : str
        The URL path below the route, already percent-decoded once by the server.

    Returns
    -------
    Path or None
        None for any part that is empty, ``.``, ``..`` or hidden (starts with a dot), for backslashes, NUL
        bytes or a leading slash, for paths that (after resolving symlinks) leave ``root``, and for
        anything that is not a regular file.
    """
    if root is None or not subpath or "\\" in subpath or "\x00" in subpath or subpath.startswith("/"):
        return None
    parts = subpath.split("/")
    if any(p in ("", ".", "..") or p.startswith(".") for p in parts):
        return None
    base = Path(root).resolve()
    try:
        candidate = base.joinpath(*parts).resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


def suspicious_path(path: str) -> bool:
    """True for a request path (as decoded once by the server) that no page of the app ever asks for:
    ``..`` or ``.`` segments, empty segments (``//``), backslashes, NUL bytes, or percent-encoded dots and
    slashes that survived the first decoding (double encoding)."""
    lowered = path.lower()
    if "\\" in path or "\x00" in path or "//" in path or "%2e" in lowered or "%2f" in lowered or "%5c" in lowered:
        return True
    return any(part in (".", "..") for part in path.split("/"))


def png_bytes(image: np.ndarray, compress_level: int = 3) -> bytes:
    """Encode an RGB or RGBA uint8 image of shape (height, width, 3|4) as PNG."""
    from PIL import Image
    arr = np.ascontiguousarray(image, dtype=np.uint8)
    if arr.ndim != 3 or arr.shape[2] not in (3, 4):
        raise ValueError(f"expected an image of shape (height, width, 3|4), found {arr.shape}")
    buf = io.BytesIO()
    Image.fromarray(arr, "RGBA" if arr.shape[2] == 4 else "RGB").save(buf, format="PNG",
                                                                        compress_level=compress_level)
    return buf.getvalue()


def _png_response(payload: bytes, max_age: int) -> Response:
    resp = Response(payload, mimetype=_PNG)
    resp.headers["Cache-Control"] = f"private, max-age={max_age}"
    resp.headers["X-Content-Type-Options"] = "nosniff"
    return resp


def register_routes(server, data: DashboardData) -> None:
    """Add the dashboard's routes to a Flask ``server`` (under ``data.route_prefix``, which holds the run id; pages reach them at ``data.url_prefix``).

    Routes
    ------
    ``/viewer/<path>``
        Files of the run's pycortex viewer folder (404 outside it).
    ``/stimulus/<thumb|overlay>/<i>.png``
        Test stimulus ``i`` as a thumbnail, or with its attention map overlaid.
    ``/flatmap/<condition>.png``
        The precomputed flatmap image.
    ``/flatmap/<condition>/filtered.png?<filters>``
        The layer that makes that image show a filter state (see :func:`dashboard.flatmaps.flatmap_filter_layer`).
    """
    prefix = data.route_prefix
    name = prefix.strip("/").replace("/", "_").replace(".", "_")

    @server.before_request
    def refuse_traversal():
        # Before any route (ours, Dash's assets and component suites, Flask's static): a traversal attempt is
        # a plain 404, never Dash's catch-all page or an error page from a route that refused it later.
        if suspicious_path(request.path):
            abort(404)

    def viewer(subpath: str = "index.html"):
        path = safe_path(data.viewer_dir, subpath)
        if path is None:
            abort(404)
        resp = send_file(path, conditional=True, max_age=0)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        return resp

    server.add_url_rule(f"{prefix}/viewer/", f"{name}_viewer_index", viewer)
    server.add_url_rule(f"{prefix}/viewer/<path:subpath>", f"{name}_viewer", viewer)

    @lru_cache(maxsize=512)
    def stimulus_png(kind: str, index: int) -> bytes:
        arrays = data.thumbs if kind == "thumb" else data.overlays
        return png_bytes(np.asarray(arrays[index]))

    def stimulus(kind: str, index: int):
        arrays = {"thumb": data.thumbs, "overlay": data.overlays}.get(kind)
        if arrays is None or not 0 <= index < arrays.shape[0]:
            abort(404)
        # The URL holds the run id and the arrays never change for a run: let the browser keep them.
        return _png_response(stimulus_png(kind, index), max_age=86400)

    server.add_url_rule(f"{prefix}/stimulus/<kind>/<int:index>.png", f"{name}_stimulus", stimulus)

    def flatmap(condition: str):
        fm = data.flatmap
        if fm is None or condition not in fm.images:
            abort(404)
        path = safe_path(fm.folder, fm.images[condition])
        if path is None:
            abort(404)
        return send_file(path, mimetype=_PNG, conditional=True, max_age=86400)

    server.add_url_rule(f"{prefix}/flatmap/<condition>.png", f"{name}_flatmap", flatmap)

    @lru_cache(maxsize=32)
    def layer_png(condition: str, state: FilterState) -> bytes:
        layer = state_layer(data, condition, state)
        # Mostly transparent: the fastest zlib level already compresses it well and keeps a filter change quick.
        return png_bytes(layer, compress_level=1)

    def flatmap_layer(condition: str):
        fm = data.flatmap
        if fm is None or condition not in fm.images or condition not in data.conditions:
            abort(404)
        try:
            state = FilterState.from_query(request.args)
        except ValueError as exc:
            abort(Response(f"bad filter: {exc}", status=400, mimetype="text/plain"))
        if state.rule not in data.rules or any(r not in data.roi_names for r in state.rois):
            abort(Response(f"bad filter: rule must be one of {data.rules}, ROIs among {data.roi_names}",
                           status=400, mimetype="text/plain"))
        return _png_response(layer_png(condition, state), max_age=3600)

    server.add_url_rule(f"{prefix}/flatmap/<condition>/filtered.png", f"{name}_flatmap_layer", flatmap_layer)

    def not_found(rest: str):
        abort(404)

    # Dash answers every unknown path with its page (for client-side routing); under our prefix an unknown
    # path is a plain 404 instead, so a mistyped or hostile URL never looks like a success.
    server.add_url_rule("/attnbrain/<path:rest>", f"{name}_not_found", not_found)
