"""The pycortex static viewer build: folder contents, colours passed through unchanged, the bridge's lookup
tables checked against pycortex's own vertex maps and an independent vertex -> voxel computation, pycortex
caches reused and kept out of the filestore, atomic replacement. (The bridge itself runs in
test_viewer_browser.py.)"""
from __future__ import annotations

import json
import time
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core._validation import InputError
from core.vocabulary import DEFAULT_BINS
from test_flatmap import file_tree, pycortex_cache_dir  # noqa: F401 (a fixture)


@pytest.mark.parametrize("datasets, title, match", [
    ({}, "", "non-empty dict"),
    ({"off": np.zeros((3, 4))}, "", r"uint8 array of shape \(3, 4\)"),
    ({"off": np.zeros((3, 3), np.uint8)}, "", r"found uint8 \(3, 3\)"),
    ({"<b>off</b>": np.zeros((3, 4), np.uint8)}, "", "printable characters"),
    ({"x" * 65: np.zeros((3, 4), np.uint8)}, "", "1-64"),
    ({"off": np.zeros((3, 4), np.uint8)}, 3, "string title"),
])
def test_make_viewer_rejects_bad_input(tmp_path, datasets, title, match):
    from core.cortex.viewer import make_viewer
    geometry = types.SimpleNamespace(n_voxels=3)   # checks run before pycortex is touched
    with pytest.raises(InputError, match=match):
        make_viewer(geometry, datasets, tmp_path / "viewer", title=title, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "viewer").exists()


def read_lookup(folder: Path) -> tuple[dict, dict]:
    """The viewer's bridge metadata and lookup arrays, decoded as the bridge decodes them."""
    meta = json.loads((folder / "attnbrain_viewer.json").read_text())
    raw = np.frombuffer((folder / meta["lookup"]["file"]).read_bytes(), dtype="<i4")
    arrays, offset = {}, 0
    for name, n in meta["lookup"]["arrays"]:
        arrays[name] = raw[offset:offset + n]
        offset += n
    assert offset == raw.size
    return meta, arrays


def picked_rows(geometry, hemi: int, vertices: np.ndarray) -> np.ndarray:
    """Geometry row of the voxel pycortex's picker reports for each vertex, computed here from scratch:
    the mid-thickness point (pial and white surfaces averaged), through the transform, rounded half up."""
    import cortex
    name = ("lh", "rh")[hemi]
    pia, _ = cortex.db.get_surf(geometry.subject, "pia", name)
    wm, _ = cortex.db.get_surf(geometry.subject, "wm", name)
    affine = np.asarray(cortex.db.get_xfm(geometry.subject, geometry.transform, "coord").xfm)
    mid = (pia[vertices] + wm[vertices]) / 2
    xyz = np.floor(mid @ affine[:3, :3].T + affine[:3, 3] + 0.5).astype(int)
    nz, ny, nx = geometry.mask.shape
    ok = np.all((xyz >= 0) & (xyz < [nx, ny, nz]), axis=1)
    vol = np.where(ok, (xyz[:, 2] * ny + xyz[:, 1]) * nx + xyz[:, 0], -1)
    index = np.flatnonzero(geometry.mask.ravel())
    pos = np.clip(np.searchsorted(index, vol), 0, index.size - 1)
    return np.where(ok & (index[pos] == vol), pos, -1)


def patch_subset(geometry, radius=40.0):
    """A few thousand voxels: a disc of the left occipital flatmap around V2 (compact, so most of a
    picked vertex's neighbours are in it)."""
    v2 = geometry.roi_mask(["V2"]) & (geometry.hemi == 0)
    centre = geometry.flat_xy[v2].mean(0)
    keep = (geometry.hemi == 0) & (np.linalg.norm(geometry.flat_xy - centre, axis=1) < radius)
    return np.flatnonzero(keep)


@pytest.fixture(scope="module")
def built(s1_geometry, pycortex_cache_dir, tmp_path_factory):
    import cortex
    from core.cortex.viewer import make_viewer
    sub = s1_geometry.subset(patch_subset(s1_geometry))
    rng = np.random.default_rng(7)
    datasets = {"off": DEFAULT_BINS.to_rgba(rng.integers(-2, 4, sub.n_voxels).astype(np.int8)),
                "on: >=0.3": DEFAULT_BINS.to_rgba(np.full(sub.n_voxels, 3, np.int8))}
    filestore = Path(cortex.database.default_filestore) / sub.subject
    store_before = file_tree(filestore)
    parent = tmp_path_factory.mktemp("viewers")
    t0 = time.perf_counter()
    folder = make_viewer(sub, datasets, parent / "viewer", title="test", cache_dir=pycortex_cache_dir)
    t1 = time.perf_counter()
    first = {p: (folder / p).read_bytes() for p in ("attnbrain_viewer.json", "attnbrain_lookup.bin")}
    cache_after_first = file_tree(pycortex_cache_dir)
    folder2 = make_viewer(sub, datasets, parent / "viewer", title="test", cache_dir=pycortex_cache_dir)
    t2 = time.perf_counter()
    cache_after_second, store_after = file_tree(pycortex_cache_dir), file_tree(filestore)
    size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    print(f"make_viewer: first {t1 - t0:.1f} s, second {t2 - t1:.1f} s, folder {size / 1e6:.1f} MB")
    return types.SimpleNamespace(geometry=sub, datasets=datasets, folder=folder, folder2=folder2, first=first,
                                 size=size, cache_dir=pycortex_cache_dir, cache_after_first=cache_after_first,
                                 cache_after_second=cache_after_second, store_before=store_before,
                                 store_after=store_after, parent=parent)


@pytest.mark.slow
def test_viewer_folder_holds_viewer_bridge_and_datasets(built):
    html = (built.folder / "index.html").read_text()
    assert "attnbrainBridge" in html and "attnbrain_lookup.bin" in html   # our bridge, embedded
    assert "Leap.loop" not in html                                     # no Leap Motion websocket
    assert "<title>test</title>" in html
    names = {p.suffix for p in built.folder.iterdir()}
    assert {".ctm", ".svg", ".json", ".bin", ".html"} <= names
    assert len(list((built.folder / "data").glob("*.png"))) == len(built.datasets)
    meta, _ = read_lookup(built.folder)
    assert meta["datasets"] == ["off", "on: >=0.3"]
    assert meta["n_voxels"] == built.geometry.n_voxels
    assert meta["volume_shape"] == list(built.geometry.mask.shape)
    # Measured here: 11 MB of surfaces and embedded scripts, 1.2 MB of vertex order, 16 bytes per voxel and
    # at most ~0.35 MB per dataset (random colours; bins compress to ~0.05 MB).
    assert built.size < 12.5e6 + 16 * built.geometry.n_voxels + 0.5e6 * len(built.datasets)


@pytest.mark.slow
def test_dataset_colours_reach_the_viewer_unchanged(built):
    import cortex
    g = built.geometry
    expected = []
    for rgba in built.datasets.values():
        vol = np.zeros(g.mask.shape + (4,), np.uint8)
        vol[g.mask] = rgba
        expected.append(cortex.volume.mosaic(vol, show=False)[0])
    got = [np.asarray(Image.open(p)) for p in sorted((built.folder / "data").glob("*.png"))]
    # Exact: the viewer gets the bin scheme's bytes (a colormap or value rescaling would alter them).
    for exp in expected:
        assert any(im.shape == exp.shape and np.array_equal(im, exp) for im in got)


@pytest.mark.slow
def test_lookup_matches_pycortex_maps_and_picker_rule(built):
    import cortex
    g = built.geometry
    meta, a = read_lookup(built.folder)
    np.testing.assert_array_equal(a["vol_index"], np.flatnonzero(g.mask.ravel()))
    # The surface file's vertex order, against pycortex's own CTM -> FreeSurfer map (a KD-tree match of
    # the decompressed surface file to the subject's surfaces).
    from core.cortex.flatmap import pycortex_cache
    # In our cache folder: else pycortex would look for (and build) the pack in its filestore.
    with pycortex_cache(built.cache_dir):
        left, right = cortex.utils.get_ctmmap(g.subject, types=("inflated",), method="mg2", level=9)
    n_left = meta["n_vertices"][0]
    np.testing.assert_array_equal(a["ctm_to_vertex"][:n_left], left)
    np.testing.assert_array_equal(a["ctm_to_vertex"][n_left:], right)
    hemi, vert, ctm = a["mark_hemi"], a["mark_vertex"], a["mark_ctm_vertex"]
    subject_vertex = np.where(hemi == 0, a["ctm_to_vertex"][ctm], a["ctm_to_vertex"][n_left + ctm])
    np.testing.assert_array_equal(subject_vertex, vert)
    # Marker vertices: wherever some vertex's mid-thickness point falls in the voxel, the marker vertex is
    # one of those, so the picker maps it back to the same row.
    rows = np.arange(g.n_voxels)
    back = np.full(g.n_voxels, -1)
    for h in (0, 1):
        sel = hemi == h
        back[sel] = picked_rows(g, h, vert[sel])
    pickable = back == rows
    assert pickable.mean() == pytest.approx(meta["mark_pickable_fraction"], abs=1e-4)
    every = np.concatenate([picked_rows(g, h, np.arange(meta["n_vertices"][h])) for h in (0, 1)])
    reachable = np.zeros(g.n_voxels, bool)
    reachable[every[every >= 0]] = True
    np.testing.assert_array_equal(pickable, reachable)
    assert pickable.mean() > 0.3


@pytest.mark.slow
def test_rebuild_reuses_caches_and_replaces_the_folder(built):
    # pycortex caches (surface pack, surface info, view framing) are in cache_dir, reused as they are;
    # nothing was written into pycortex's filestore.
    assert built.cache_after_second == built.cache_after_first
    assert any(k.endswith(".ctm") for k in built.cache_after_first)
    assert built.store_after == built.store_before
    assert built.folder2 == built.folder
    for name, content in built.first.items():
        assert (built.folder / name).read_bytes() == content
    # The build folder was swapped in: no temporary or previous copies are left beside it.
    assert [p.name for p in built.parent.iterdir()] == ["viewer"]


@pytest.mark.slow
def test_background_surface_info_is_what_the_viewer_computes(tmp_path, monkeypatch):
    """The cortex stage builds the viewer's equivolume areas in a helper process during the flatmaps: the
    file must be the one make_static would otherwise compute itself, and a warm cache starts no helper."""
    import concurrent.futures

    import cortex

    from core.cortex.flatmap import pycortex_cache, quiet_pycortex
    from core.cortex.viewer import viewer_surfaces_in_background
    with viewer_surfaces_in_background("S1", tmp_path / "bg"):
        pass
    done = tmp_path / "bg" / "S1" / "surface-info" / "equivolume_areas.npz"
    assert done.is_file()
    assert not [p for p in done.parent.iterdir() if p.name.startswith(".")]   # no temporary left behind

    def no_helper(*args, **kwargs):
        raise AssertionError("a helper process was started although nothing is missing")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", no_helper)
    with viewer_surfaces_in_background("S1", tmp_path / "bg"):
        pass

    with pycortex_cache(tmp_path / "here"), quiet_pycortex("test"):
        ref = cortex.db.get_surfinfo("S1", type="equivolume_areas")   # in this process, threaded BLAS
        with np.load(done) as got:
            assert sorted(got.files) == sorted(ref.files) == ["pia_left", "pia_right", "wm_left", "wm_right"]
            for k in ref.files:
                np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        ref.close()
