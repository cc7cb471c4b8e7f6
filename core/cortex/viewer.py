"""The pycortex WebGL static viewer of a run, with a postMessage bridge to the page that embeds it.

:func:`make_viewer` builds ``cortex.webgl.make_static``'s viewer from pycortex's own ``static.html``
template, extended by ``viewer_template/attnbrain_viewer.html`` (read at build time; only our additions are
in this repository), and ships ``attnbrain_viewer.json`` + ``attnbrain_lookup.bin`` so the page can speak
in geometry rows rather than pycortex volume indices.

Bridge protocol (``window.postMessage``, same origin only; every message is an object with ``type``):

viewer -> parent
    ``{type: "attnbrain:ready", datasets, active, view, n_voxels}`` once the surfaces, the first dataset,
    the picker and the lookup are loaded; ``{type: "attnbrain:pick", voxel, hemi, vertex, ijk}`` after a
    click on the brain (``voxel``: geometry row, or null when the picked voxel is not in the geometry;
    ``hemi``: "left" / "right"; ``vertex``: index within that hemisphere's surface; ``ijk``: the volume
    voxel); ``{type: "attnbrain:ack", request, params, ok, error?, state}`` after every request below
    (``request``: the request's type; ``params``: the whole request; ``state``: active dataset, view,
    marked voxel, key mode);
    ``{type: "attnbrain:key", key, code, ...}`` for each key pressed while keys go to the parent.
parent -> viewer
    ``{type: "attnbrain:setDataset", name}``; ``{type: "attnbrain:setView", view: "flat" | "inflated" |
    "fiducial", animate?}`` (also stops a running fold/inflate animation); ``{type: "attnbrain:mark",
    voxel}`` (moves the pick marker to a vertex of that voxel, see ``_mark_vertices``; ``voxel: null``
    clears it; no pick message is echoed);
    ``{type: "attnbrain:blur"}`` (the viewer drops keyboard focus and focuses the parent window);
    ``{type: "attnbrain:setKeys", mode: "viewer" | "parent"}``; ``{type: "attnbrain:getState"}``.

Keyboard policy: pycortex binds single-letter shortcuts (f flatten, i inflate, r fold, t reset, h help, ...)
on the viewer's window, so they fire whenever the iframe has keyboard focus, which a click on its dataset
list or controls gives it (clicks on the brain itself do not take focus). A page with its own shortcuts
(presentation mode) sends ``blur`` to take focus back, or ``setKeys`` with mode "parent", which swallows
every key in the viewer and forwards key-downs as ``attnbrain:key``.
Requests sent before ``ready`` are queued and answered once the viewer is ready, so a page that may have
missed ``ready`` (its listener attached late) sends ``getState`` and waits for the ack.
"""
from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core._validation import InputError
from core.cortex.flatmap import _surfinfo_cache_path, pycortex_cache, quiet_pycortex, single_threaded_blas

__all__ = ["make_viewer", "viewer_surfaces_in_background", "VIEWER_VERSION", "LOOKUP_FILE", "META_FILE"]

log = logging.getLogger("attnbrain")

VIEWER_VERSION = "1"
TEMPLATE_DIR = Path(__file__).with_name("viewer_template")
LOOKUP_FILE = "attnbrain_lookup.bin"
META_FILE = "attnbrain_viewer.json"
# Dataset names end up as text in the viewer's HTML dataset list: keep them printable and markup-free.
_NAME_RE = re.compile(r"^[^<&\"'\\\x00-\x1f]{1,64}$")


def make_viewer(geometry, datasets: dict, out_dir: str | Path, *, title: str = "",
                cache_dir: str | Path) -> Path:
    """Build the static WebGL viewer with one dataset per name, coloured by the given RGBA.

    Parameters
    ----------
    geometry : core.cortex.VoxelGeometry
        The voxels (rows) the colours refer to; voxels of the volume outside it stay transparent.
    datasets : dict of str -> uint8 array of shape (n_voxels, 4)
        RGBA per voxel for each dataset, in display order (the first is shown on load). Alpha 0 shows the
        curvature. Names are shown in the viewer's dataset list (at most 64 characters, no ``< & " '``).
    out_dir : str or Path
        The viewer folder (``index.html``, surfaces, ``data/*.png``, the bridge files). It is built beside
        it and swapped in at the end, so an interrupted build leaves the previous viewer (or none).
    title : str
        Page title.
    cache_dir : str or Path
        pycortex cache folder (see :func:`core.cortex.flatmap.configure_pycortex_cache`); the surface pack takes
        ~40-60 s the first time.

    Returns
    -------
    out_dir : Path
        The viewer folder; serve it over HTTP (pycortex viewers do not work from ``file://``) and load
        ``index.html``. For S1: ~11 MB of surfaces and scripts, 1.2 MB of vertex order for the bridge,
        16 bytes per voxel, and 0.05-0.35 MB per dataset (13.9 MB for 80,615 voxels and 10 datasets).
    """
    import cortex

    datasets = _check_datasets(geometry, datasets)
    if not isinstance(title, str):
        raise InputError(f"expected a string title, found {type(title).__name__}", source="make_viewer",
                         field="title")
    out_dir = Path(out_dir).resolve()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}.building-"))
    try:
        with pycortex_cache(cache_dir), tempfile.TemporaryDirectory(prefix="attnbrain-template-") as tpl, \
                single_threaded_blas():
            template = _prepare_template(Path(tpl))
            views = cortex.Dataset()
            for name, rgba in datasets.items():
                views.views[name] = _volume_rgb(geometry, rgba)
            try:
                with quiet_pycortex("make_static"):
                    cortex.webgl.make_static(
                        str(build), views, template=str(template), types=("inflated",),
                        overlays_available=("rois",), overlays_visible=("rois",), labels_visible=("rois",),
                        title=title or "attnbrain viewer", html_embed=True, copy_ctmfiles=True)
            finally:
                # make_static leaves db.auxfile set if it fails half-way, which changes where later
                # pycortex calls look for surfaces and caches.
                cortex.db.auxfile = None
            _write_bridge_files(build, geometry, list(datasets))
        os.chmod(build, 0o755)
        _swap_in(build, out_dir)
    except BaseException:
        shutil.rmtree(build, ignore_errors=True)
        raise
    return out_dir


# Surface info that make_static's surface pack computes when it is not cached (pycortex 1.4: the vertex areas
# of its equivolume depth sampling, four sparse LU factorisations, ~15 s for S1) and that nothing before
# make_static needs.
_BACKGROUND_SURFINFO = ("equivolume_areas",)


@contextmanager
def viewer_surfaces_in_background(subject: str, cache_dir: str | Path):
    """Context manager: compute the viewer's missing surface info in a helper process while the block runs.

    The cortex stage wraps its flatmaps in this, so the two cores share the cold build: :func:`make_viewer`
    afterwards finds the surface info in ``cache_dir`` instead of computing it. The helper runs pycortex's own
    code into the same cache file (written under a temporary name and renamed), so the viewer is identical
    either way. Leaving the block waits for the helper; if it failed, make_viewer simply computes what is
    missing itself.
    """
    with pycortex_cache(cache_dir):
        missing = []
        for kind in _BACKGROUND_SURFINFO:
            target, shipped = _surfinfo_cache_path(subject, kind)
            if target is not None and not shipped and not target.exists():
                missing.append(kind)
    if not missing:
        yield
        return
    from core._proc import spawn_pool
    pool = spawn_pool(1)
    try:
        job = pool.submit(_compute_surfinfo, subject, str(cache_dir), tuple(missing))
        yield
        try:
            job.result()
        except Exception as exc:  # noqa: BLE001 - the viewer build recomputes whatever is missing
            log.warning("background pycortex surface info for %s failed (%s); the viewer computes it", subject,
                        exc)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _compute_surfinfo(subject: str, cache_dir: str, kinds: tuple[str, ...]) -> None:
    """Helper-process side of :func:`viewer_surfaces_in_background`."""
    with quiet_pycortex("surface info"):
        import cortex  # its import prints a note about Inkscape: once per run is enough
        with pycortex_cache(cache_dir), single_threaded_blas():
            for kind in kinds:
                info = cortex.db.get_surfinfo(subject, type=kind)
                if hasattr(info, "close"):
                    info.close()


def _write_bridge_files(folder: Path, geometry, names: list[str]) -> None:
    """``attnbrain_lookup.bin`` (int32 arrays, laid out as listed in the metadata) and
    ``attnbrain_viewer.json``, which the bridge reads to translate between rows and pycortex's indices."""
    mark_hemi, mark_vertex, pickable, in_column = _mark_vertices(geometry)
    ctm_to_vertex = _ctm_vertex_order(geometry.subject)
    mark_ctm = np.empty_like(mark_vertex)
    for h in (0, 1):
        sel = mark_hemi == h
        mark_ctm[sel] = np.argsort(ctm_to_vertex[h])[mark_vertex[sel]]
    arrays = {
        "vol_index": np.flatnonzero(geometry.mask.ravel()),
        "mark_hemi": mark_hemi, "mark_vertex": mark_vertex, "mark_ctm_vertex": mark_ctm,
        "ctm_to_vertex": np.concatenate(ctm_to_vertex),
    }
    table = b"".join(np.asarray(a, dtype="<i4").tobytes() for a in arrays.values())
    (folder / LOOKUP_FILE).write_bytes(table)
    meta = {
        "version": VIEWER_VERSION, "subject": geometry.subject, "transform": geometry.transform,
        "mask": geometry.mask_name, "n_voxels": geometry.n_voxels,
        "volume_shape": [int(s) for s in geometry.mask.shape], "datasets": names,
        "n_vertices": [len(m) for m in ctm_to_vertex],
        "lookup": {
            "file": LOOKUP_FILE, "dtype": "int32 little-endian",
            "arrays": [[name, int(len(a))] for name, a in arrays.items()],
            "meaning": {
                "vol_index": "volume index (C order over volume_shape: z, y, x) of each geometry row",
                "mark_hemi": "hemisphere of the vertex a mark moves to (0 left, 1 right)",
                "mark_vertex": "that vertex, numbered as in the subject's surfaces",
                "mark_ctm_vertex": "that vertex, numbered as in the viewer's surface file",
                "ctm_to_vertex": "per hemisphere (left then right), the subject's vertex number of each "
                                 "vertex of the viewer's surface file (its compression reorders them)",
            }},
        # Share of rows whose marker vertex the picker maps back to the row, and share whose marker
        # vertex's cortical column at least passes through the voxel (see _mark_vertices).
        "mark_pickable_fraction": round(float(pickable.mean()), 4) if pickable.size else 1.0,
        "mark_in_column_fraction": round(float(in_column.mean()), 4) if in_column.size else 1.0,
    }
    (folder / META_FILE).write_text(json.dumps(meta, indent=1))


def _prepare_template(folder: Path) -> Path:
    """Our template and bridge, plus pycortex's ``template.html`` without the Leap Motion scripts, in one
    folder; pycortex's ``static.html`` (which ours extends) and its resources are found in the package.

    make_static renders with ``leapmotion=True`` hard-coded, and the Leap Motion script then opens
    ws://127.0.0.1:6437 on every page load: a console error in every browser, for a controller nobody
    uses. Tornado's loader prefers this folder, so the edited copy replaces pycortex's base template.
    """
    from cortex.webgl import serve

    for name in ("attnbrain_viewer.html", "attnbrain_bridge.js"):
        shutil.copy(TEMPLATE_DIR / name, folder / name)
    base = (Path(serve.cwd) / "template.html").read_text()
    needle = "{% if leapmotion %}"
    if base.count(needle) == 1:
        (folder / "template.html").write_text(base.replace(needle, "{% if False %}"))
    else:
        log.warning("pycortex's template.html changed (no single '%s'); the viewer keeps the Leap Motion "
                    "scripts, which log a failed websocket connection in the browser console", needle)
    return folder / "attnbrain_viewer.html"


def _check_datasets(geometry, datasets) -> dict[str, np.ndarray]:
    if not isinstance(datasets, dict) or not datasets:
        raise InputError(f"expected a non-empty dict name -> RGBA array, found {type(datasets).__name__}",
                         source="make_viewer", field="datasets")
    out = {}
    for name, rgba in datasets.items():
        if not isinstance(name, str) or not _NAME_RE.match(name):
            raise InputError(f"dataset names are shown in the viewer: expected 1-64 printable characters "
                             f"without < & \" ' \\, found {name!r}", source="make_viewer", field="datasets")
        rgba = np.asarray(rgba)
        if rgba.dtype != np.uint8 or rgba.shape != (geometry.n_voxels, 4):
            raise InputError(f"expected a uint8 array of shape ({geometry.n_voxels}, 4) (RGBA per geometry "
                             f"voxel), found {rgba.dtype} {rgba.shape}; colour bins with "
                             "core.vocabulary.BinScheme.to_rgba", source="make_viewer", field=f"datasets[{name!r}]")
        out[name] = rgba
    return out


def _volume_rgb(geometry, rgba: np.ndarray):
    """A VolumeRGB with the geometry's voxels coloured and the rest of the volume transparent.

    uint8 channels in the default red/green/blue basis pass through VolumeRGB unchanged (no rescaling),
    which is what keeps the viewer's colours identical to the bin scheme's (:mod:`core.vocabulary`).
    """
    import cortex
    ch = np.zeros((4,) + geometry.mask.shape, dtype=np.uint8)
    ch[:, geometry.mask] = rgba.T
    return cortex.VolumeRGB(ch[0], ch[1], ch[2], geometry.subject, geometry.transform, alpha=ch[3])


def _ctm_vertex_order(subject: str) -> list[np.ndarray]:
    """Per hemisphere, the subject's vertex number of each vertex in the viewer's surface file.

    The viewer's surfaces are stored with OpenCTM's MG2 compression, which reorders vertices; pycortex
    records the order in an index file beside the cached pack (the same pack make_static just used).
    In the browser, picks report positions in that file's order (after the loader's own reordering, which
    the bridge undoes with the loader's map).
    """
    import cortex
    pack = cortex.utils.get_ctmpack(subject, ("inflated",), method="mg2", level=9,
                                    overlays_available=("rois",))
    with np.load(os.path.splitext(pack)[0] + ".npz") as z:
        index = z["index"]
    n_left = cortex.db.get_surf(subject, "pia", "lh")[0].shape[0]
    left, right = index[:n_left], index[n_left:] - n_left
    for name, m in (("left", left), ("right", right)):
        if np.unique(m).size != m.size:
            raise RuntimeError(f"pycortex's surface index for {subject} ({name}) is not a permutation; "
                               "delete the cached pack in the pycortex cache folder and rebuild")
    return [left.astype(np.int32), right.astype(np.int32)]


def _mark_vertices(geometry):
    """For each geometry row, the surface vertex the viewer's marker goes to.

    pycortex's picker reports, for a picked vertex, the voxel holding its mid-thickness point (pial and
    white surfaces averaged: the viewer's default depth) rounded half up; only about 40 % of a thick mask's
    voxels hold such a point. A row gets, in order of preference: the vertex whose mid-thickness point lies
    in it closest to its centre (marking then clicking the marker gives the row back: ``pickable``); else
    the vertex whose pial-to-white column passes through it closest to its centre; else the vertex whose
    mid-thickness point is nearest.

    Returns
    -------
    hemi : int8 array of shape (n_voxels,)
    vertex : int32 array of shape (n_voxels,)
    pickable : bool array of shape (n_voxels,)
    in_column : bool array of shape (n_voxels,)
    """
    import cortex
    from scipy.spatial import cKDTree

    xfm = cortex.db.get_xfm(geometry.subject, geometry.transform, "coord")
    pias, wms, hemis, verts = [], [], [], []
    for h, name in enumerate(("lh", "rh")):
        pia, _ = cortex.db.get_surf(geometry.subject, "pia", name)
        wm, _ = cortex.db.get_surf(geometry.subject, "wm", name)
        pias.append(xfm(pia))                              # (x, y, z) voxel coordinates
        wms.append(xfm(wm))
        hemis.append(np.full(len(pia), h, dtype=np.int8))
        verts.append(np.arange(len(pia), dtype=np.int32))
    pia, wm, hemi, vert = np.vstack(pias), np.vstack(wms), np.concatenate(hemis), np.concatenate(verts)

    shape = geometry.mask.shape                            # (z, y, x)
    row_of_vol = np.full(geometry.mask.size, -1, dtype=np.int64)
    row_of_vol[np.flatnonzero(geometry.mask.ravel())] = np.arange(geometry.n_voxels)
    out_hemi = np.zeros(geometry.n_voxels, dtype=np.int8)
    out_vert = np.zeros(geometry.n_voxels, dtype=np.int32)
    done = np.zeros(geometry.n_voxels, dtype=bool)
    pickable = np.zeros(geometry.n_voxels, dtype=bool)
    # Depth 0.5 first (what the picker uses), then the rest of the column, outwards from the middle.
    for depth in (0.5, 0.375, 0.625, 0.25, 0.75, 0.125, 0.875, 0.0, 1.0):
        pts = pia * (1 - depth) + wm * depth
        xyz = np.floor(pts + 0.5).astype(np.int64)         # JavaScript Math.round
        inside = np.all((xyz >= 0) & (xyz < np.array(shape[::-1])), axis=1)
        row = np.full(len(pts), -1, dtype=np.int64)
        row[inside] = row_of_vol[np.ravel_multi_index(xyz[inside, ::-1].T, shape)]
        hit = np.flatnonzero(row >= 0)
        hit = hit[~done[row[hit]]]
        if not hit.size:
            continue
        dist = np.linalg.norm(pts[hit] - xyz[hit], axis=1)
        order = np.lexsort((dist, row[hit]))               # by row, then closest to the voxel centre
        first = np.r_[True, np.diff(row[hit][order]) != 0]
        best = hit[order[first]]
        out_hemi[row[best]], out_vert[row[best]], done[row[best]] = hemi[best], vert[best], True
        if depth == 0.5:
            pickable[row[best]] = True
    in_column = done.copy()
    if not done.all():
        _, nearest = cKDTree((pia + wm) / 2).query(geometry.ijk[~done].astype(np.float64))  # ijk = x, y, z
        out_hemi[~done], out_vert[~done] = hemi[nearest], vert[nearest]
    return out_hemi, out_vert, pickable, in_column


def _swap_in(build: Path, out_dir: Path) -> None:
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out_dir, old)
    os.replace(build, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
