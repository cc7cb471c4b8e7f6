"""A cortex from a mapper file (core.cortex.mapper), checked against scipy's CSR product and brute force on small
files written in the shortclips layout (core.testing.published)."""
import h5py
import numpy as np
import pytest

from core._validation import InputError
from core.cortex.flatmap import flat_to_pixel
from core.cortex.mapper import (
    curvature_rgba,
    flat_positions,
    load_mapper,
    map_to_flatmap,
    mapper_hemispheres,
    pixel_lookup,
    roi_labels,
    roi_outlines_from_lookup,
    rois_rgba,
    to_fsaverage,
)
from core.testing.published import write_mapper

N_VOX = 240


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    path = tmp_path_factory.mktemp("mapper") / "S01_mappers.hdf"
    return path, write_mapper(path, N_VOX, unmapped=5)


def test_the_flatmap_image_is_the_csr_product_pixel_for_pixel(planted):
    """map_to_flatmap equals the image built here with scipy's CSR product on the mask, transposed and flipped
    (the tutorials' recipe), exactly: the same sparse product, no tolerance."""
    path, truth = planted
    mapper = load_mapper(path, N_VOX)
    values = np.random.default_rng(1).normal(size=N_VOX)
    with h5py.File(path) as h5:
        import scipy.sparse
        M = scipy.sparse.csr_matrix((h5["voxel_to_flatmap_data"][()], h5["voxel_to_flatmap_indices"][()],
                                     h5["voxel_to_flatmap_indptr"][()]), shape=tuple(h5["voxel_to_flatmap_shape"][()]))
        mask = h5["flatmap_mask"][()].astype(bool)
    img = np.full(mask.shape, np.nan)
    img[mask] = M @ values
    expected = img.T[::-1]
    got = map_to_flatmap(mapper, values)
    assert got.shape == (mask.shape[1], mask.shape[0])
    np.testing.assert_array_equal(got, expected)
    # Two channels at once: each channel is its own product.
    both = map_to_flatmap(mapper, np.stack([values, -values], 1))
    np.testing.assert_array_equal(both[..., 1], -expected)


def test_the_lookup_is_each_pixel_rows_largest_weight(planted):
    """The voxel under each pixel is the argmax of its mapper row (brute force per row); -1 off the mask."""
    path, truth = planted
    mapper = load_mapper(path)
    lookup = pixel_lookup(mapper)
    M = truth["M"].tocsr()
    best = np.array([M.indices[M.indptr[i]:M.indptr[i + 1]][np.argmax(M.data[M.indptr[i]:M.indptr[i + 1]])]
                     for i in range(M.shape[0])])
    grid = np.full(truth["mask"].shape, -1)
    grid[truth["mask"]] = best
    np.testing.assert_array_equal(lookup, grid.T[::-1])
    # The planted unmapped voxels are under no pixel; every other voxel is under at least one.
    shown = np.unique(lookup[lookup >= 0])
    np.testing.assert_array_equal(np.setdiff1d(np.arange(N_VOX), shown), truth["unmapped"])


def test_ties_in_a_pixel_row_go_to_the_lower_voxel_whatever_the_storage_order(tmp_path):
    import scipy.sparse

    from core.testing.published import _save_sparse
    mask = np.zeros((3, 2), bool)
    mask[1, :] = True
    for order in ((0, 1), (1, 0)):
        M = scipy.sparse.csr_matrix((np.array([0.5, 0.5, 1.0]), np.array([order[0] + 2, order[1] + 2, 0]),
                                     np.array([0, 2, 3])), shape=(2, 4))
        with h5py.File(tmp_path / "m.hdf", "w") as h5:
            _save_sparse(h5, "voxel_to_flatmap", M)
            h5.create_dataset("flatmap_mask", data=mask)
        lookup = pixel_lookup(load_mapper(tmp_path / "m.hdf"))
        assert sorted(lookup[lookup >= 0].tolist()) == [0, 2]


def test_flat_positions_are_the_centres_of_the_pixels_showing_each_voxel(planted):
    path, truth = planted
    lookup = pixel_lookup(load_mapper(path))
    xy, unmapped = flat_positions(lookup, N_VOX)
    np.testing.assert_array_equal(np.flatnonzero(unmapped), truth["unmapped"])
    assert np.isnan(xy[unmapped]).all()
    h, w = lookup.shape
    for v in (0, 17, N_VOX // 2 + 3, N_VOX - 1):
        if unmapped[v]:
            continue
        rows, cols = np.nonzero(lookup == v)
        np.testing.assert_allclose(xy[v], [cols.mean(), (h - 1 - rows).mean()], rtol=0, atol=1e-4)
    # In the dashboard's frame (extents 0..w-1, 0..h-1) a voxel's position lands on a pixel it owns for
    # nearly all voxels (its patch is near convex here).
    colrow = np.rint(flat_to_pixel(xy[~unmapped], extents=(0, w - 1, 0, h - 1), height=h, width=w)).astype(int)
    hits = lookup[colrow[:, 1], colrow[:, 0]] == np.flatnonzero(~unmapped)
    assert hits.mean() > 0.95


def test_roi_labels_hemispheres_and_outlines(planted, tmp_path):
    path, truth = planted
    mapper = load_mapper(path)
    roi, names = roi_labels(mapper)
    assert names[0] == "other" and set(names[1:]) == {"V1", "VIS", "FFA"}
    # A voxel in V1 and VIS is labelled V1, the smaller mask.
    both = truth["roi_masks"]["V1"] & truth["roi_masks"]["VIS"]
    assert both.any() and (np.asarray(names)[roi[both]] == "V1").all()
    only_vis = truth["roi_masks"]["VIS"] & ~truth["roi_masks"]["V1"]
    assert (np.asarray(names)[roi[only_vis]] == "VIS").all()
    np.testing.assert_array_equal(roi == 0, ~(truth["roi_masks"]["V1"] | truth["roi_masks"]["VIS"]
                                               | truth["roi_masks"]["FFA"]))
    np.testing.assert_array_equal(mapper_hemispheres(mapper), truth["hemi"])
    split = tmp_path / "split.hdf"
    write_mapper(split, N_VOX, fsaverage="split", unmapped=5)
    np.testing.assert_array_equal(mapper_hemispheres(load_mapper(split)), truth["hemi"])
    none = tmp_path / "none.hdf"
    write_mapper(none, N_VOX, fsaverage=None)
    assert mapper_hemispheres(load_mapper(none)) is None
    # fsaverage projection: each voxel maps to one vertex of its hemisphere with weight 1.
    values = np.arange(N_VOX, dtype=np.float64)
    fs = to_fsaverage(mapper, values)
    assert fs["lh"].shape == fs["rh"].shape == (163_842,)
    assert fs["lh"].sum() == values[truth["hemi"] == 0].sum() and fs["rh"].sum() == values[truth["hemi"] == 1].sum()
    with pytest.raises(InputError, match="no voxel_to_fsaverage"):
        to_fsaverage(load_mapper(none), values)
    # Outlines: every labelled region's anchor sits over pixels of its ROI, hemisphere from the voxels.
    lookup = pixel_lookup(mapper)
    outlines = roi_outlines_from_lookup(lookup, roi, names, mapper_hemispheres(mapper))
    assert {o["name"] for o in outlines} == {"V1", "VIS", "FFA"}
    assert {o["hemi"] for o in outlines if o["name"] == "V1"} == {"lh", "rh"}
    for o in outlines:
        assert o["outline"] and all(len(line) >= 2 for line in o["outline"])
        pts = np.concatenate([np.asarray(line) for line in o["outline"]])
        assert (pts[:, 0] >= -0.5).all() and (pts[:, 0] <= lookup.shape[1] - 0.5).all()


def test_background_layers(planted, tmp_path):
    path, truth = planted
    mapper = load_mapper(path)
    curv = curvature_rgba(mapper)
    h, w = truth["mask"].shape[1], truth["mask"].shape[0]
    assert curv.shape == (h, w, 4) and curv.dtype == np.uint8
    inside = truth["mask"].T[::-1]
    assert (curv[~inside, 3] == 0).all() and (curv[inside, 3] == 255).all()
    rois = rois_rgba(mapper)
    assert rois.shape == (h, w, 4) and rois[..., 3].max() == 255
    # Without a curvature layer: mid grey where a voxel shows.
    bare = tmp_path / "bare.hdf"
    write_mapper(bare, N_VOX, curvature=False, rois_image=False)
    m2 = load_mapper(bare)
    assert rois_rgba(m2) is None
    c2 = curvature_rgba(m2)
    np.testing.assert_array_equal(c2[..., 3] > 0, pixel_lookup(m2) >= 0)


def test_the_older_pixmap_names_read_the_same(planted, tmp_path):
    path, truth = planted
    old = tmp_path / "old.hdf"
    write_mapper(old, N_VOX, legacy_names=True, unmapped=5)
    np.testing.assert_array_equal(pixel_lookup(load_mapper(old)), pixel_lookup(load_mapper(path)))


@pytest.mark.parametrize("edit, match", [
    (lambda h5: (h5.__delitem__("flatmap_mask"), h5.create_dataset("flatmap_mask", data=np.ones((3, 3), bool))),
     "the mask has 9 True pixels but voxel_to_flatmap has \\d+ rows"),
    (lambda h5: h5.__delitem__("voxel_to_flatmap_indptr"), "missing voxel_to_flatmap_indptr"),
    (lambda h5: (h5.__delitem__("flatmap_curvature"), h5.create_dataset("flatmap_curvature", data=np.ones((4, 4)))),
     "flatmap_curvature.*expected the mask's shape"),
    (lambda h5: (h5.__delitem__("roi_mask_V1"), h5.create_dataset("roi_mask_V1", data=np.ones(7))),
     "roi_mask_V1.*expected one value per voxel"),
    (lambda h5: (h5.__delitem__("voxel_to_flatmap_data"), h5.__delitem__("flatmap_mask")),
     "expected a flatmap mapper"),
])
def test_bad_mapper_files_are_one_clear_error(tmp_path, edit, match):
    path = tmp_path / "m.hdf"
    write_mapper(path, 60, width=40, height=24)
    with h5py.File(path, "a") as h5:
        edit(h5)
    with pytest.raises(InputError, match=match):
        load_mapper(path)


def test_the_mapper_must_map_the_responses_voxels(planted, tmp_path):
    path, _ = planted
    with pytest.raises(InputError, match=f"maps {N_VOX} voxels but the responses have 100"):
        load_mapper(path, 100)
    with pytest.raises(InputError, match="mapper file not found"):
        load_mapper(tmp_path / "nope.hdf")
