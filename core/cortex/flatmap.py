"""Flatmap images per condition (pycortex curvature underneath, voxels coloured by correlation bin, ROI
outlines) plus the pixel -> voxel lookup and ROI polylines the dashboard needs to make the images clickable.

Each pixel shows exactly one voxel: the voxel of the geometry that pycortex's pixel map (32 samples across
cortical thickness per pixel) hits most often. Colouring from that lookup, rather than averaging colours
across thickness as ``quickflat`` does, keeps every coloured pixel in one legend colour and guarantees that
a click finds the voxel whose colour was clicked. ROI outlines come straight from the subject's overlay
svg (no Inkscape needed).
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import tempfile
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core._validation import InputError
from core.vocabulary import DEFAULT_BINS, NEGATIVE_CODE, NEGATIVE_RGBA, NS_CODE, BinScheme, rgba_hex

__all__ = ["configure_pycortex_cache", "pycortex_cache", "quiet_pycortex", "single_threaded_blas", "make_flatmaps",
           "flat_to_pixel", "FLATMAP_VERSION"]

log = logging.getLogger("attnbrain")

# Bumped when the images, lookup or ROI files change meaning, so callers can key their caches on it.
FLATMAP_VERSION = "1"
_COND_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


# --------------------------------------------------------------------------------------------- pycortex cache
def configure_pycortex_cache(cache_dir: str | Path) -> str | None:
    """Send pycortex's per-subject caches to ``cache_dir`` instead of its filestore.

    pycortex writes surface, pixel-map and viewer caches under ``db.get_cache(subject)``, by default inside
    the filestore (for a pip install, inside the virtual environment). Setting ``[basic] cache`` makes that
    ``cache_dir/<subject>/cache``. Surface info that pycortex computes on demand (curvature, the viewer's
    equivolume areas) is written by ``db.get_surfinfo`` into the filestore regardless of that setting; while
    a cache folder is configured it goes to ``cache_dir/<subject>/surface-info`` instead (files shipped
    with the subject are still read from the filestore). The setting is process-wide and lasts until
    changed; :func:`pycortex_cache` scopes it to a block.

    Parameters
    ----------
    cache_dir : str or Path
        Folder for the caches (created if missing); normally inside the results folder.

    Returns
    -------
    previous : str or None
        The cache folder configured before, or None if pycortex was using its filestore.
    """
    import cortex
    cache_dir = Path(cache_dir).expanduser().resolve()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cfg = cortex.options.config
    previous = cfg.get("basic", "cache") if cfg.has_option("basic", "cache") else None
    cfg.set("basic", "cache", str(cache_dir))
    if not getattr(cortex.db.get_surfinfo, "_attnbrain_redirect", False):
        # An instance attribute shadows Database.get_surfinfo for every caller (pycortex calls db.get_...).
        cortex.db.get_surfinfo = _get_surfinfo
    return previous


@contextmanager
def pycortex_cache(cache_dir: str | Path):
    """Context manager: :func:`configure_pycortex_cache` for the block, then restore the previous setting."""
    import cortex
    previous = configure_pycortex_cache(cache_dir)
    try:
        yield Path(cache_dir)
    finally:
        if previous is None:
            cortex.options.config.remove_option("basic", "cache")
        else:
            cortex.options.config.set("basic", "cache", previous)


@contextmanager
def quiet_pycortex(what: str):
    """Silence pycortex's warnings and progress prints for a block; the prints go to the debug log."""
    printed = io.StringIO()
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(printed):
            warnings.simplefilter("ignore")
            yield
    finally:
        if printed.getvalue().strip():
            log.debug("pycortex (%s): %s", what, printed.getvalue().strip().replace("\n", " | "))


def _get_surfinfo(subject: str, type: str = "curvature", recache: bool = False, **kwargs):
    """``Database.get_surfinfo`` writing what it has to compute into the configured cache folder."""
    import cortex
    from cortex import surfinfo
    from cortex.database import Database
    from cortex.dataset import Vertex

    db = cortex.db
    target, shipped = _surfinfo_cache_path(subject, type, **kwargs)
    if target is None or (shipped and not recache):
        return Database.get_surfinfo(db, subject, type, recache, **kwargs)
    if recache or not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{type}.", suffix=".npz")
        os.close(fd)
        try:
            getattr(surfinfo, type)(tmp, subject, **kwargs)
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    npz = np.load(target)
    if "left" in npz and "right" in npz:
        verts = np.hstack([npz["left"], npz["right"]])
        npz.close()
        return Vertex(verts, subject)
    return npz


_get_surfinfo._attnbrain_redirect = True


def _surfinfo_cache_path(subject: str, type: str, **kwargs) -> tuple[Path | None, bool]:
    """Where :func:`_get_surfinfo` keeps surface info ``type`` in the configured cache folder (None: pycortex
    handles it itself, as no cache folder is configured or the surfaces come from a packed dataset file), and
    whether the subject's filestore ships that file (then it is read from there)."""
    import cortex
    db, cfg = cortex.db, cortex.options.config
    if db.auxfile is not None:
        try:  # the same test pycortex uses for "surfaces come from a packed dataset file"
            db.auxfile.get_surf(subject, "fiducial")
            return None, False
        except (AttributeError, IOError):
            pass
    if not cfg.has_option("basic", "cache"):
        return None, False
    opts = "[%s]" % ",".join("%s=%s" % kv for kv in kwargs.items()) if kwargs else ""
    shipped = os.path.exists(db.get_paths(subject)["surfinfo"].format(type=type, opts=opts))
    return Path(cfg.get("basic", "cache")) / subject / "surface-info" / f"{type}{opts}.npz", shipped


@contextmanager
def single_threaded_blas():
    """Run a block with one BLAS/LAPACK thread.

    pycortex's builds call LAPACK once per tiny problem: the pixel map's Delaunay triangulation computes
    ``scipy.spatial.Delaunay.transform`` with one 2 x 2 LU per triangle (584,001 for S1), and a threaded
    OpenBLAS wakes and joins its thread pool on every call: ~20-60 s on 2 cores instead of ~2 s. The same
    calls on one thread give bit-identical results.
    """
    from threadpoolctl import threadpool_limits
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# --------------------------------------------------------------------------------------------- coordinates
def flat_to_pixel(flat_xy, *, extents, height: int, width: int) -> np.ndarray:
    """Pixel coordinates (column, row; row 0 at the top) of flatmap positions in the flatmap images.

    Parameters
    ----------
    flat_xy : array of shape (n, 2)
        Flat-surface coordinates (as ``VoxelGeometry.flat_xy``).
    extents : sequence of 4 floats
        ``(xmin, xmax, ymin, ymax)`` of the flat surface, from ``flatmap_meta.json``.
    height, width : int
        Image size in pixels, from ``flatmap_meta.json``.

    Returns
    -------
    colrow : float array of shape (n, 2)
        Pixel centres are at integer coordinates; ``np.rint`` gives the pixel to index the lookup with.
    """
    xy = np.asarray(flat_xy, dtype=np.float64).reshape(-1, 2)
    xmin, xmax, ymin, ymax = (float(v) for v in extents)
    # pycortex's pixel map samples the flat surface on an inclusive grid (np.mgrid with width*1j points)
    # and flips it vertically to make the image, hence (width - 1) and the row flip.
    col = (xy[:, 0] - xmin) / (xmax - xmin) * (width - 1)
    row = (height - 1) - (xy[:, 1] - ymin) / (ymax - ymin) * (height - 1)
    return np.stack([col, row], axis=1)


# --------------------------------------------------------------------------------------------- public entry
def make_flatmaps(geometry, bins: dict, out_dir: str | Path, *, height: int = 1024,
                  cache_dir: str | Path, scheme: BinScheme = DEFAULT_BINS) -> dict:
    """Write the flatmap assets of one run: an image per condition, the pixel lookup, ROI outlines, metadata.

    Parameters
    ----------
    geometry : core.cortex.VoxelGeometry
        The voxels (rows) the bins refer to; may be a subset of a pycortex mask.
    bins : dict of str -> int8 array of shape (n_voxels,)
        Correlation-bin codes per condition (see :mod:`core.vocabulary`): ``scheme.codes`` coloured by bin, -2
        (significant negative) in ``NEGATIVE_RGBA``, -1 (not significant) left transparent so the curvature
        shows. Condition names become file names: letters, digits, ``_ . -``.
    out_dir : str or Path
        Where to write ``flatmap_<condition>.png``, ``flatmap_lookup.npy``, ``flatmap_meta.json`` and
        ``flatmap_rois.json`` (each written atomically).
    height : int
        Image height in pixels; the width follows from the flat surface's aspect ratio (~1.9 x height).
    cache_dir : str or Path
        pycortex cache folder (see :func:`configure_pycortex_cache`); the pixel map takes ~40-100 s to
        build the first time and is read back in a second afterwards.
    scheme : core.vocabulary.BinScheme
        The run's bins (:meth:`BinScheme.from_config`): their colours in the images, their labels in the
        metadata's legend.

    Returns
    -------
    paths : dict
        ``{"images": {condition: Path}, "lookup": Path, "meta": Path, "rois": Path}``.

    Notes
    -----
    ``flatmap_lookup.npy`` is int32 of shape (height, width): the geometry row under each pixel, -1 where
    none. ``flatmap_rois.json`` holds, per ROI and hemisphere, the outline polylines and the label anchor in
    the same pixel coordinates (x = column, y = row from the top), ready for a plotly overlay.
    """
    bins = _check_bins(geometry, bins, scheme)
    if isinstance(height, bool) or not isinstance(height, (int, np.integer)) or not 16 <= height <= 8192:
        raise InputError(f"expected an integer image height in 16..8192 pixels, found {height!r}",
                         source="make_flatmaps", field="height")
    height = int(height)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    mapper_path = getattr(geometry, "mapper_path", None)
    if mapper_path:
        lookup, extents, curvature, rois, overlay = _mapper_layers(geometry)
        height, width = lookup.shape
    else:
        with pycortex_cache(cache_dir), quiet_pycortex("flatmaps"), single_threaded_blas():
            lookup, extents = _pixel_lookup(geometry, height)
            width = lookup.shape[1]
            curvature = _curvature_rgba(geometry.subject, height)
            rois = _roi_outlines(geometry.subject, extents, height, width)
        overlay = _roi_layer(rois, height, width)

    paths = {"images": {}}
    for cond, codes in bins.items():
        rgba = _compose(curvature, lookup, codes, overlay, scheme)
        paths["images"][cond] = _save_png(rgba, out_dir / f"flatmap_{cond}.png")
    paths["lookup"] = _atomic_write(out_dir / "flatmap_lookup.npy", lambda fh: np.save(fh, lookup))
    roi_doc = {"height": height, "width": width, "coordinates": "pixel (x = column, y = row from the top)",
               "label_font_px": _label_font_px(height), "rois": rois}
    paths["rois"] = _write_json(out_dir / "flatmap_rois.json", roi_doc)
    meta = {
        "version": FLATMAP_VERSION,
        "subject": geometry.subject, "transform": geometry.transform, "mask": geometry.mask_name,
        **({"mapper": str(mapper_path)} if mapper_path else {}),
        "n_voxels": geometry.n_voxels, "height": height, "width": width,
        "extents": [float(v) for v in extents],
        "flat_to_pixel": "col = (x - xmin) / (xmax - xmin) * (width - 1); "
                         "row = (height - 1) - (y - ymin) / (ymax - ymin) * (height - 1)",
        "conditions": {c: p.name for c, p in paths["images"].items()},
        "lookup": paths["lookup"].name, "rois": paths["rois"].name,
        "palette": {"labels": list(scheme.labels), "hex": scheme.hex, "negative": rgba_hex(NEGATIVE_RGBA),
                    "not_significant": "transparent (curvature shows)"},
    }
    paths["meta"] = _write_json(out_dir / "flatmap_meta.json", meta)
    return paths


# --------------------------------------------------------------------------------------------- validation
def _check_bins(geometry, bins, scheme: BinScheme) -> dict[str, np.ndarray]:
    if not isinstance(bins, dict) or not bins:
        raise InputError(f"expected a non-empty dict condition -> bin codes, found {type(bins).__name__}",
                         source="make_flatmaps", field="bins")
    out = {}
    for cond, arr in bins.items():
        if not isinstance(cond, str) or not _COND_RE.match(cond):
            raise InputError(f"condition names become file names: expected letters, digits, '_', '.', '-' "
                             f"(starting with a letter or digit), found {cond!r}; rename the condition",
                             source="make_flatmaps", field="bins")
        arr = np.asarray(arr)
        if arr.shape != (geometry.n_voxels,):
            raise InputError(f"expected shape ({geometry.n_voxels},) (one code per geometry voxel), found "
                             f"{arr.shape}; build the bins and the geometry from the same mask",
                             source="make_flatmaps", field=f"bins[{cond!r}]")
        top = scheme.n_bins - 1
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"expected integer bin codes {NEGATIVE_CODE}..{top}, found dtype {arr.dtype}",
                             source="make_flatmaps", field=f"bins[{cond!r}]")
        bad = (arr < NEGATIVE_CODE) | (arr > top)
        if bad.any():
            raise InputError(f"expected codes in {NEGATIVE_CODE}..{top}, found {int(bad.sum())} outside "
                             f"(first {int(arr[bad][0])} at voxel {int(np.flatnonzero(bad)[0])})",
                             source="make_flatmaps", field=f"bins[{cond!r}]")
        out[cond] = arr.astype(np.int8)
    return out


# --------------------------------------------------------------------------------------------- pycortex
def _pixel_lookup(geometry, height: int):
    """The geometry row under each pixel, int32 of shape (H, W) (-1 where none), and the flat extents."""
    from cortex.quickflat.utils import get_flatcache, get_flatmask

    fmask, extents = get_flatmask(geometry.subject, height=height)
    pixmap = get_flatcache(geometry.subject, geometry.transform, height=height)
    if pixmap.shape[1] != geometry.mask.size:
        raise InputError(f"the geometry's mask has {geometry.mask.size} volume voxels but pycortex's pixel "
                         f"map for {geometry.subject}/{geometry.transform} has {pixmap.shape[1]}; rebuild "
                         "the geometry with load_geometry for this subject and transform",
                         source="make_flatmaps", field="geometry")
    col_row = np.full(geometry.mask.size, -1, dtype=np.int64)
    col_row[np.flatnonzero(geometry.mask.ravel())] = np.arange(geometry.n_voxels)

    # Per pixel, the voxel with the largest share of the thickness samples; ties go to the lower row so the
    # lookup does not depend on the sparse matrix's storage order. Shares are multiples of 1/thick (32
    # samples), so quantising them to 1/4096 keeps their order, and one integer key per entry
    # (share, then -row) turns the per-pixel choice into a segmented max.
    pixmap = pixmap.tocsr()
    pix = np.repeat(np.arange(pixmap.shape[0]), np.diff(pixmap.indptr))
    row_of = col_row[pixmap.indices]
    keep = row_of >= 0
    pix, vox = pix[keep], row_of[keep]
    big = np.int64(geometry.n_voxels + 1)
    key = np.rint(pixmap.data[keep] * 4096).astype(np.int64) * big - vox
    voxel_of_pixel = np.full(pixmap.shape[0], -1, dtype=np.int32)
    if key.size:
        starts = np.flatnonzero(np.r_[True, pix[1:] != pix[:-1]])
        best = np.maximum.reduceat(key, starts)
        voxel_of_pixel[pix[starts]] = (-best) % big

    # pycortex keeps the mask as (width, height) with y upwards; images are (height, width), y downwards.
    # Pixel-map rows follow fmask[fmask] (x-major), so scatter there first, then flip into image order.
    grid = np.full(fmask.shape, -1, dtype=np.int32)
    grid[fmask] = voxel_of_pixel
    return np.ascontiguousarray(grid.T[::-1]), np.asarray(extents, dtype=np.float64)


def _mapper_layers(geometry):
    """A mapper file's flatmap (core.cortex.mapper): the run's voxel under each pixel, the extents of its pixel
    frame (flat positions are pixels, y up), the curvature background, ROI outlines traced from the ROI masks
    (label anchors for the page) and the overlay: the file's own ROI drawing where it has one, else the traced
    outlines drawn."""
    from core.cortex import mapper as mp
    m = geometry.mapper or mp.load_mapper(geometry.mapper_path)
    lookup = geometry.lookup(m)
    height, width = lookup.shape
    extents = np.array([0.0, width - 1.0, 0.0, height - 1.0])
    hemi = geometry.hemi if np.all(geometry.hemi >= 0) else None
    rois = mp.roi_outlines_from_lookup(lookup, geometry.roi, geometry.roi_names, hemi)
    drawn = mp.rois_rgba(m)
    overlay = _roi_layer(rois, height, width) if drawn is None else drawn
    if drawn is not None:
        _roi_layer(rois, height, width)      # only for each label's box (the file's drawing is what shows)
    return lookup, extents, mp.curvature_rgba(m), rois, overlay


def _curvature_rgba(subject: str, height: int) -> np.ndarray:
    """quickflat's curvature layer as an opaque greyscale RGBA image of shape (H, W, 4), transparent outside
    the flat surface.

    Same recipe and pycortex config values as ``quickflat.composite.add_curvature`` (whose own surface-info
    read would bypass the cache redirect): curvature thresholded at 0 (config ``[curvature] threshold``),
    scaled by ``contrast`` around ``brightness``, through matplotlib's ``gray`` colormap.
    """
    import cortex
    from cortex.quickflat.utils import make_flatmap_image
    from matplotlib import colormaps

    cfg = cortex.options.config
    smooth = cfg.get("curvature", "smooth")
    kwargs = {} if smooth.lower() == "none" else {"smooth": float(smooth)}
    curv, _ = make_flatmap_image(cortex.db.get_surfinfo(subject, **kwargs), height=height)
    inside = np.isfinite(curv)
    norm = curv + 0.5                       # matplotlib Normalize(-0.5, 0.5), as add_curvature
    if cfg.get("curvature", "threshold").lower() in ("true", "t", "1", "y", "yes"):
        norm = (np.nan_to_num(norm) > 0.5).astype(np.float64)
    grey = (norm - 0.5) * float(cfg.get("curvature", "contrast")) + float(cfg.get("curvature", "brightness"))
    rgba = colormaps["gray"](np.clip(np.where(inside, grey, 0), 0, 1), bytes=True)
    rgba[~inside] = 0
    return rgba


def _roi_outlines(subject: str, extents, height: int, width: int) -> list[dict]:
    """ROI outlines of the overlay svg's ``rois`` layer, per ROI and hemisphere, in pixel coordinates."""
    import cortex
    from cortex import svgoverlay
    from scipy.spatial import cKDTree

    pts, _ = cortex.db.get_surf(subject, "flat", merge=True, nudge=True)
    n_left = cortex.db.get_surf(subject, "flat", "lh")[0].shape[0]
    # SVGOverlay rescales the coordinate array it is given in place: give it a copy.
    coords = np.array(pts[:, :2], dtype=np.float64)
    svg = svgoverlay.SVGOverlay(cortex.db.get_paths(subject)["overlays"], coords=coords.copy(),
                                overlays_available=("rois",))
    sw, sh = svg.svgshape
    xmin, xmax, ymin, ymax = (float(v) for v in extents)
    tree = cKDTree(coords)

    def svg_to_flat(p):
        # The overlay svg spans the flat surface's bounding box, y downwards.
        return np.stack([xmin + p[:, 0] / sw * (xmax - xmin), ymin + (sh - p[:, 1]) / sh * (ymax - ymin)], 1)

    layer = svg.layers["rois"]
    out = []
    for name in sorted(layer.shapes):
        shape = layer.shapes[name]
        labels = layer.labels.elements.get(name, [])
        for k, path_el in enumerate(shape.paths):
            path = svgoverlay.gen_path(path_el)
            polys = [p for p in path.to_polygons(closed_only=False) if len(p) >= 2]
            if not polys:
                continue
            flat = [svg_to_flat(np.asarray(p, dtype=np.float64)) for p in polys]
            centre = np.concatenate(flat).mean(0)
            hemi = "lh" if tree.query(centre)[1] < n_left else "rh"
            if k < len(labels):
                anchor = np.array([[float(labels[k].get("x")), float(labels[k].get("y"))]])
                anchor = svg_to_flat(anchor)
            else:
                anchor = centre[None]
            pix = [flat_to_pixel(f, extents=extents, height=height, width=width) for f in flat]
            out.append({
                "name": name, "hemi": hemi,
                "outline": [np.round(p, 2).tolist() for p in pix],
                "label": np.round(flat_to_pixel(anchor, extents=extents, height=height, width=width)[0],
                                  2).tolist(),
            })
    return out


# --------------------------------------------------------------------------------------------- drawing
def _roi_layer(rois: list[dict], height: int, width: int) -> np.ndarray:
    """Outlines (white over a black halo) and labels as an RGBA layer of shape (H, W, 4); adds each
    label's drawn box (x0, y0, x1, y1) to ``rois`` as ``label_box``."""
    from PIL import Image, ImageDraw, ImageFont

    layer = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    draw = ImageDraw.Draw(layer)
    thin = max(1, round(height / 1024))
    for roi in rois:
        for line in roi["outline"]:
            pts = [tuple(p) for p in line]
            draw.line(pts, fill=(0, 0, 0, 255), width=thin + 2, joint="curve")
    for roi in rois:
        for line in roi["outline"]:
            draw.line([tuple(p) for p in line], fill=(255, 255, 255, 255), width=thin)
    try:
        font = ImageFont.load_default(size=_label_font_px(height))
    except TypeError:  # Pillow built without FreeType: fixed-size bitmap font
        font = ImageFont.load_default()
    for roi in rois:
        # PIL places text on whole pixels; anchoring there makes the recorded box the drawn one.
        anchor = tuple(int(round(v)) for v in roi["label"])
        kw = dict(font=font, anchor="mm", stroke_width=max(1, thin))
        draw.text(anchor, roi["name"], fill=(255, 255, 255, 255), stroke_fill=(0, 0, 0, 255), **kw)
        # Where the label landed, so a page drawing its own overlay can avoid or hit-test it.
        roi["label_box"] = [float(v) for v in draw.textbbox(anchor, roi["name"], **kw)]
    return np.asarray(layer)


def _label_font_px(height: int) -> int:
    return max(8, height // 70)


def _compose(curvature: np.ndarray, lookup: np.ndarray, codes: np.ndarray, overlay: np.ndarray,
             scheme: BinScheme) -> np.ndarray:
    """Curvature, then voxel colours (opaque; n.s. left out), then ROI outlines (alpha-composited)."""
    rgba = curvature.copy()
    hit = lookup >= 0
    code = np.full(lookup.shape, NS_CODE, dtype=np.int8)
    code[hit] = codes[lookup[hit]]
    show = code != NS_CODE
    rgba[show] = scheme.to_rgba(code[show])
    on = overlay[..., 3] > 0
    a = overlay[on, 3:4].astype(np.float64) / 255
    under = rgba[on].astype(np.float64)
    rgba[on, :3] = np.round(overlay[on, :3] * a + under[:, :3] * (1 - a)).astype(np.uint8)
    rgba[on, 3:4] = np.round(255 * a + under[:, 3:4] * (1 - a)).astype(np.uint8)
    return rgba


# --------------------------------------------------------------------------------------------- atomic files
def _atomic_write(path: Path, write) -> Path:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared read-only
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _save_png(rgba: np.ndarray, path: Path) -> Path:
    from PIL import Image
    return _atomic_write(path, lambda fh: Image.fromarray(rgba, "RGBA").save(fh, format="PNG"))


def _write_json(path: Path, doc) -> Path:
    return _atomic_write(path, lambda fh: fh.write(json.dumps(doc, indent=1).encode()))
