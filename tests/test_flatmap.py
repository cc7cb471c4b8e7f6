"""Flatmap assets: images that agree with the pixel -> voxel lookup, curvature under n.s. voxels, ROI outlines
where the geometry says the ROIs are, pycortex caches kept out of the filestore and reused, deterministic
output. The colour scale itself is tested in test_vocabulary.py."""
from __future__ import annotations

import json
import os
import time
import types
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from matplotlib.path import Path as MplPath
from PIL import Image
from scipy.spatial import cKDTree

from core._validation import InputError
from core.vocabulary import BIN_COLOURS_RGBA, NEGATIVE_RGBA, NS_RGBA

HEIGHT = 256   # small images keep the test quick; pycortex's pixel map costs the same at any height


# ---------------------------------------------------------------------------------------------- input checks
@pytest.mark.parametrize("bins, kwargs, match", [
    ({}, {}, "non-empty dict"),
    ({"off": np.zeros(4, np.int8)}, {}, r"shape \(5,\)"),
    ({"off": np.zeros(5)}, {}, "integer bin codes"),
    ({"off": np.full(5, 7, np.int8)}, {}, "codes in -2..3"),
    ({"off/../x": np.zeros(5, np.int8)}, {}, "condition names become file names"),
    ({"off": np.zeros(5, np.int8)}, {"height": 5}, "image height"),
])
def test_make_flatmaps_rejects_bad_input(tmp_path, bins, kwargs, match):
    from core.cortex.flatmap import make_flatmaps
    geometry = types.SimpleNamespace(n_voxels=5)   # checks run before pycortex is touched
    with pytest.raises(InputError, match=match):
        make_flatmaps(geometry, bins, tmp_path, cache_dir=tmp_path / "cache", **kwargs)


def test_flat_to_pixel_corners():
    from core.cortex.flatmap import flat_to_pixel
    ext = (-10.0, 30.0, -5.0, 15.0)
    xy = [[-10, -5], [30, 15], [10, 5]]
    got = flat_to_pixel(xy, extents=ext, height=21, width=41)
    # Bottom-left of the flat surface is the image's bottom-left pixel, top-right its top-right one.
    np.testing.assert_allclose(got, [[0, 20], [40, 0], [20, 10]], atol=1e-12)


# ------------------------------------------------------------------------------------------------ flatmaps
def file_tree(root: Path) -> dict:
    """Every file under root with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pycortex_cache_dir(tmp_path_factory):
    """pycortex's cache for the tests: under ATTNBRAIN_TEST_CACHE (kept between runs) if set, else one
    folder for the whole session (the modules importing this fixture share it: the pixel map and the
    viewer's surface pack take a minute or more each to build)."""
    root = os.environ.get("ATTNBRAIN_TEST_CACHE")
    path = Path(root) / "pycortex" if root else tmp_path_factory.getbasetemp() / "pycortex-cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def flat(s1_geometry, pycortex_cache_dir, tmp_path_factory):
    """Flatmaps of S1 for two conditions with every bin code present, made twice (second call cached)."""
    import cortex

    from core.cortex.flatmap import make_flatmaps
    rng = np.random.default_rng(2024)
    p = [0.05, 0.35, 0.15, 0.15, 0.15, 0.15]   # -2, -1, 0, 1, 2, 3
    bins = {c: rng.choice(np.arange(-2, 4), s1_geometry.n_voxels, p=p).astype(np.int8) for c in ("off", "on")}
    filestore = Path(cortex.database.default_filestore) / s1_geometry.subject
    store_before = file_tree(filestore)
    out1, out2 = tmp_path_factory.mktemp("flat1"), tmp_path_factory.mktemp("flat2")
    t0 = time.perf_counter()
    paths = make_flatmaps(s1_geometry, bins, out1, height=HEIGHT, cache_dir=pycortex_cache_dir)
    t1 = time.perf_counter()
    cache_after_first = file_tree(pycortex_cache_dir)
    paths2 = make_flatmaps(s1_geometry, bins, out2, height=HEIGHT, cache_dir=pycortex_cache_dir)
    t2 = time.perf_counter()
    cache_after_second, store_after = file_tree(pycortex_cache_dir), file_tree(filestore)
    print(f"make_flatmaps height {HEIGHT}: first {t1 - t0:.1f} s, second {t2 - t1:.1f} s")
    meta = json.loads(paths["meta"].read_text())
    return types.SimpleNamespace(
        geometry=s1_geometry, bins=bins, paths=paths, paths2=paths2, meta=meta,
        lookup=np.load(paths["lookup"]), rois=json.loads(paths["rois"].read_text()),
        images={c: np.asarray(Image.open(p)) for c, p in paths["images"].items()},
        store_before=store_before, store_after=store_after, cache_after_first=cache_after_first,
        cache_after_second=cache_after_second, cache_dir=pycortex_cache_dir)


def _curvature_reference(subject: str, cache_dir: Path) -> np.ndarray:
    """quickflat's own curvature layer (``add_curvature``), coloured as quickflat colours it."""
    import cortex
    from cortex.quickflat.composite import add_curvature
    from matplotlib.figure import Figure

    from core.cortex.flatmap import pycortex_cache
    with pycortex_cache(cache_dir):
        _, extents = cortex.quickflat.utils.get_flatmask(subject, height=HEIGHT)
        img = add_curvature(Figure().add_subplot(), cortex.db.get_surfinfo(subject), extents=extents,
                            height=HEIGHT)
    arr = img.get_array()
    grey = np.ma.filled(arr.astype(float), np.nan)
    rgba = matplotlib.colormaps["gray"](np.nan_to_num(grey), bytes=True)
    rgba[np.isnan(grey)] = 0
    return rgba


def _expected_image(flat, cond, curvature):
    """What each pixel shows without ROI decorations: its voxel's bin colour, else the curvature."""
    colours = np.vstack([NEGATIVE_RGBA, NS_RGBA, BIN_COLOURS_RGBA])
    out = curvature.copy()
    hit = flat.lookup >= 0
    code = np.full(flat.lookup.shape, -1)
    code[hit] = flat.bins[cond][flat.lookup[hit]]
    show = code != -1
    out[show] = colours[code[show] + 2]
    return out, code


@pytest.mark.slow
def test_outputs_and_meta(flat):
    h, w = flat.lookup.shape
    assert flat.lookup.dtype == np.int32 and h == HEIGHT and flat.meta["height"] == h
    assert flat.meta["width"] == w and 1.8 < w / h < 2.0   # S1's flat surface is ~1.9 times wider than high
    assert set(flat.meta["conditions"]) == {"off", "on"}
    for cond, img in flat.images.items():
        assert img.shape == (h, w, 4) and img.dtype == np.uint8
        assert Path(flat.paths["images"][cond]).name == f"flatmap_{cond}.png"
    assert flat.lookup.min() == -1 and flat.lookup.max() < flat.geometry.n_voxels
    assert (flat.meta["subject"], flat.meta["transform"], flat.meta["mask"]) == ("S1", "fullhead", "thick")


@pytest.mark.slow
def test_every_coloured_pixel_belongs_to_a_voxel_of_that_bin(flat):
    for cond, img in flat.images.items():
        codes = flat.bins[cond]
        counts = 0
        for b, colour in [(-2, NEGATIVE_RGBA), *enumerate(BIN_COLOURS_RGBA)]:
            px = np.all(img == colour, axis=-1)
            vox = flat.lookup[px]
            # Exact: no coloured pixel may lead a click to a voxel of another bin (or to no voxel).
            assert (vox >= 0).all()
            np.testing.assert_array_equal(codes[vox], b)
            counts += px.sum()
        # Most pixels over a significant voxel show its colour; the rest lie under ROI outlines and labels
        # (18 % of the surface at this small size, 5 % at 1024 px; the next test checks they are all that).
        significant = (flat.lookup >= 0) & (codes[flat.lookup] != -1)
        assert counts / significant.sum() > 0.75


@pytest.mark.slow
def test_ns_pixels_show_quickflat_curvature_and_only_rois_cover_anything(flat):
    curvature = _curvature_reference("S1", flat.cache_dir)
    assert (curvature[..., 3] > 0).sum() == (flat.lookup >= 0).sum()   # same flat surface, same pixels
    outline = np.concatenate([_densify(line) for roi in flat.rois["rois"] for line in roi["outline"]])
    near_outline = cKDTree(outline)
    for cond, img in flat.images.items():
        expected, code = _expected_image(flat, cond, curvature)
        differs = np.any(img != expected, axis=-1)
        ns = (flat.lookup >= 0) & (code == -1)
        # n.s. pixels show quickflat's curvature exactly, except where an outline or label covers them
        # (18 % of the surface at this small size).
        assert (ns & ~differs).sum() / ns.sum() > 0.75
        rr, cc = np.nonzero(differs)
        pts = np.stack([cc, rr], 1).astype(float)
        dist, _ = near_outline.query(pts)
        # Outlines are 3 px wide (a 1 px white line on a black halo, round joints): PIL fills every pixel
        # whose centre the widened segment covers, so at most 1.5 px + a pixel diagonal (1.41) from the
        # polyline, i.e. < 3 px; labels stay inside the box recorded for them.
        covered = dist < 3.0
        for roi in flat.rois["rois"]:
            x0, y0, x1, y1 = roi["label_box"]
            covered |= (pts[:, 0] >= x0) & (pts[:, 0] <= x1) & (pts[:, 1] >= y0) & (pts[:, 1] <= y1)
        assert covered.all(), f"{(~covered).sum()} changed pixels far from any ROI outline or label"


def _densify(line, step=0.25):
    line = np.asarray(line, dtype=float)
    if len(line) == 1:
        return line
    seg = np.diff(line, axis=0)
    n = np.maximum(1, np.ceil(np.linalg.norm(seg, axis=1) / step).astype(int))
    return np.concatenate([line[i] + np.linspace(0, 1, k, endpoint=False)[:, None] * seg[i]
                           for i, k in enumerate(n)] + [line[-1:]])


@pytest.mark.slow
def test_voxel_pixels_lie_at_its_flat_position(flat):
    from core.cortex.flatmap import flat_to_pixel
    g, lk, meta = flat.geometry, flat.lookup, flat.meta
    rr, cc = np.nonzero(lk >= 0)
    vox = lk[rr, cc]
    cnt = np.bincount(vox, minlength=g.n_voxels)
    has = cnt > 0
    centre = np.stack([np.bincount(vox, cc, g.n_voxels)[has], np.bincount(vox, rr, g.n_voxels)[has]], 1)
    centre /= cnt[has, None]
    expected = flat_to_pixel(g.flat_xy[has], extents=meta["extents"], height=meta["height"],
                             width=meta["width"])
    mm_per_px = (meta["extents"][1] - meta["extents"][0]) / (meta["width"] - 1)
    dist_mm = np.linalg.norm(centre - expected, axis=1) * mm_per_px
    # Voxels are 2.7 mm. A voxel's pixels and its vertices' mean flat position (core.cortex) describe the
    # same patch of cortex, so they agree within about a voxel; voxels whose vertices straddle a sulcus
    # (both banks in one voxel) have a mean between the banks, hence percentiles, not a maximum.
    assert np.median(dist_mm) < 1.5
    assert np.percentile(dist_mm, 90) < 4.0
    # The whole flat surface is covered, and by a good share of the voxels (a pixel shows the voxel
    # holding most of the cortical depth under it, so the voxels at the pial/white edges of a thick
    # mask seldom win a pixel).
    assert has.mean() > 0.3
    # Every pixel with a voxel is opaque (curvature or colour underneath, never a hole).
    assert (flat.images["off"][lk >= 0, 3] == 255).all()


@pytest.mark.slow
def test_subset_lookup_keeps_the_full_lookups_choice(flat, tmp_path):
    """A subset geometry gets the same voxel wherever the full lookup chose a subset voxel."""
    from core.cortex.flatmap import make_flatmaps
    g = flat.geometry
    idx = np.flatnonzero(g.roi_mask(["V1", "V2", "V3"]))
    sub = g.subset(idx)
    paths = make_flatmaps(sub, {"x": np.zeros(sub.n_voxels, np.int8)}, tmp_path, height=HEIGHT,
                          cache_dir=flat.cache_dir)
    lk_sub = np.load(paths["lookup"])
    full_row_to_sub = np.full(g.n_voxels, -1)
    full_row_to_sub[idx] = np.arange(idx.size)
    in_sub = (flat.lookup >= 0) & (full_row_to_sub[np.maximum(flat.lookup, 0)] >= 0)
    np.testing.assert_array_equal(lk_sub[in_sub], full_row_to_sub[flat.lookup[in_sub]])
    assert lk_sub.max() < sub.n_voxels
    # The subset only claims pixels where one of its voxels is in the cortical column.
    assert (lk_sub >= 0).sum() < 0.2 * (flat.lookup >= 0).sum()


@pytest.mark.slow
def test_roi_outlines_enclose_their_rois(flat):
    g, lk = flat.geometry, flat.lookup
    names = {r["name"] for r in flat.rois["rois"]}
    # Every ROI the geometry knows (labelled from the same overlay, through vertex positions) has outlines.
    assert set(g.roi_names[1:]) <= names
    rr, cc = np.nonzero(lk >= 0)
    pix = np.stack([cc, rr], 1)
    hemi_of = {"lh": 0, "rh": 1}
    checked = 0
    for roi in flat.rois["rois"]:
        if roi["name"] not in g.roi_names:
            continue
        closed = [np.asarray(line) for line in roi["outline"] if len(line) > 3]
        inside = np.zeros(len(pix), bool)
        for line in closed:
            inside |= MplPath(line).contains_points(pix)
        if inside.sum() < 20:   # tiny ROIs at this image size
            continue
        vox = lk[rr[inside], cc[inside]]
        # The outline is the ROI: most voxels inside it carry its label (ROIs nest, so not all), and all
        # but those straddling the hemispheres' cut belong to the outline's hemisphere.
        share_roi = np.mean(g.roi[vox] == g.roi_names.index(roi["name"]))
        share_hemi = np.mean(g.hemi[vox] == hemi_of[roi["hemi"]])
        assert share_roi > 0.6, (roi["name"], roi["hemi"], share_roi)
        assert share_hemi > 0.95, (roi["name"], roi["hemi"], share_hemi)
        x, y = roi["label"]
        assert 0 <= x < lk.shape[1] and 0 <= y < lk.shape[0]
        checked += 1
    assert checked >= 30


@pytest.mark.slow
def test_second_call_reuses_caches_and_is_deterministic(flat):
    # pycortex's caches live in cache_dir, were all reused (nothing rewritten), and nothing was written
    # into pycortex's filestore (caches, surface info, overlays) at any point.
    assert flat.cache_after_second == flat.cache_after_first
    assert any("flatpixel_fullhead_%d" % HEIGHT in k for k in flat.cache_after_first)
    assert flat.store_after == flat.store_before
    for key in ("lookup", "meta", "rois"):
        assert Path(flat.paths[key]).read_bytes() == Path(flat.paths2[key]).read_bytes()
    for cond in flat.paths["images"]:
        assert Path(flat.paths["images"][cond]).read_bytes() == Path(flat.paths2["images"][cond]).read_bytes()
    # No temporary files are left beside the outputs.
    assert sorted(p.name for p in Path(flat.paths["lookup"]).parent.iterdir()) == sorted(
        ["flatmap_off.png", "flatmap_on.png", "flatmap_lookup.npy", "flatmap_meta.json", "flatmap_rois.json"])
