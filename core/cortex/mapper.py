"""A cortex from a mapper file, as the Gallant lab publishes them (shortclips ``mappers/Sxx_mappers.hdf``).

A mapper file holds, for one subject, a sparse matrix from voxels to flatmap pixels and the pixels' mask:

- ``voxel_to_flatmap_data``, ``_indices``, ``_indptr``, ``_shape``: a CSR matrix of shape (n_pixels, n_voxels);
  row ``i`` weights the voxels under the ``i``-th True pixel of the mask (older files: ``pixmap_*``).
- ``flatmap_mask``: bool (width, height) (older files: ``pixmask``); the image is its transpose with the rows
  flipped (row 0 at the top): ``image = swapaxes(img, 0, 1)[::-1]`` where ``img[flatmap_mask] = M @ values``,
  exactly as voxelwise_tutorials' ``map_voxels_to_flatmap``.
- optional ``flatmap_curvature`` (width, height) in [0, 1], ``flatmap_rois`` (width, height, 4) an RGBA drawing
  of the ROI outlines and labels, ``roi_mask_<name>`` (n_voxels,) per ROI, ``voxel_to_fsaverage_*`` (a CSR
  matrix from voxels to fsaverage vertices, left hemisphere first; or split as ``voxel_to_fsaverage_left`` and
  ``_right``).

What the dashboard needs from a cortex is computed here: the voxel under each pixel (the largest weight of
the pixel's row; ties to the lower voxel), each voxel's flat position (the centre of the pixels that show it),
its ROI label, its hemisphere where the fsaverage mapper says, and ROI outlines with label anchors traced on
the flatmap. A volume (NIfTI export, the 3-D viewer) needs a pycortex subject and is not part of a mapper.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core._validation import InputError

__all__ = ["Mapper", "MapperGeometry", "mapper_geometry", "load_mapper", "map_to_flatmap", "pixel_lookup", "flat_positions", "roi_labels",
           "mapper_hemispheres", "roi_outlines_from_lookup", "curvature_rgba", "rois_rgba", "to_fsaverage",
           "FSAVERAGE_VERTICES_PER_HEMI"]

#: fsaverage's vertices per hemisphere (pycortex's and FreeSurfer's fsaverage: 163,842).
FSAVERAGE_VERTICES_PER_HEMI = 163_842

_SPARSE_PARTS = ("data", "indices", "indptr", "shape")


@dataclass
class Mapper:
    """The arrays of one mapper file (see the module docstring), checked against each other."""
    path: str
    voxel_to_flatmap: object                 # scipy.sparse.csr_matrix (n_pixels, n_voxels)
    flatmap_mask: np.ndarray                 # bool (width, height), as stored
    curvature: np.ndarray | None = None      # (width, height) float, as stored
    rois_image: np.ndarray | None = None     # (width, height, 4), as stored
    roi_masks: dict[str, np.ndarray] = field(default_factory=dict)  # name -> bool (n_voxels,)
    fsaverage: dict[str, object] = field(default_factory=dict)       # "left"/"right" or "both" -> csr
    _lookup: np.ndarray | None = field(default=None, repr=False)     # pixel_lookup's result, computed once

    @property
    def n_voxels(self) -> int:
        return int(self.voxel_to_flatmap.shape[1])

    @property
    def height(self) -> int:
        return int(self.flatmap_mask.shape[1])

    @property
    def width(self) -> int:
        return int(self.flatmap_mask.shape[0])


def _image(stored: np.ndarray) -> np.ndarray:
    """A stored (width, height, ...) layer in image order (height, width, ...), row 0 at the top."""
    return np.swapaxes(stored, 0, 1)[::-1]


def _read_sparse(h5, key: str, source: str):
    import scipy.sparse
    names = [f"{key}_{p}" for p in _SPARSE_PARTS]
    missing = [n for n in names if n not in h5]
    if missing:
        raise InputError(f"the sparse matrix {key!r} needs {', '.join(names)}; missing {', '.join(missing)}",
                         source=source, field=missing[0])
    shape = tuple(int(n) for n in np.asarray(h5[f"{key}_shape"][()]).ravel())
    if len(shape) != 2:
        raise InputError(f"expected a shape of 2 numbers, found {shape}", source=source, field=f"{key}_shape")
    data, indices, indptr = (np.asarray(h5[n][()]) for n in names[:3])
    if indptr.ndim != 1 or indptr.size != shape[0] + 1 or data.shape != indices.shape or \
            (indptr.size and (indptr[0] != 0 or indptr[-1] != data.size or np.any(np.diff(indptr) < 0))):
        raise InputError(f"not a CSR matrix of shape {shape}: indptr has {indptr.size} entries (expected "
                         f"{shape[0] + 1}, from 0 to {data.size}, non-decreasing), data {data.shape}, indices "
                         f"{indices.shape}", source=source, field=f"{key}_indptr")
    if indices.size and (indices.min() < 0 or indices.max() >= shape[1]):
        raise InputError(f"column indices outside 0..{shape[1] - 1}", source=source, field=f"{key}_indices")
    if not np.isfinite(data).all():
        raise InputError(f"{int((~np.isfinite(data)).sum())} non-finite weights", source=source,
                         field=f"{key}_data")
    return scipy.sparse.csr_matrix((data.astype(np.float64), indices, indptr), shape=shape)


def load_mapper(path: str | Path, n_voxels: int | None = None) -> Mapper:
    """Read and check a mapper file; ``n_voxels``: the responses' voxel count it must match.

    Raises
    ------
    InputError
        A missing file or key, a malformed sparse matrix, a mask whose True count is not the matrix's rows,
        curvature / ROI drawing / ROI masks / fsaverage mapper of the wrong shape, or a voxel count other than
        the responses'.
    """
    import h5py
    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise InputError("mapper file not found; set data.mapper to the subject's mappers/Sxx_mappers.hdf",
                         source=source, field="data.mapper")
    try:
        h5 = h5py.File(p, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", source=source, field="data.mapper") from None
    with h5:
        keys = set(h5.keys())
        matrix_key = "voxel_to_flatmap" if "voxel_to_flatmap_data" in keys else \
            "pixmap" if "pixmap_data" in keys else None
        mask_key = "flatmap_mask" if "flatmap_mask" in keys else "pixmask" if "pixmask" in keys else None
        if matrix_key is None or mask_key is None:
            raise InputError(f"expected a flatmap mapper (voxel_to_flatmap_data/_indices/_indptr/_shape and "
                             f"flatmap_mask, or the older pixmap_* and pixmask); found {sorted(keys)}",
                             source=source, field="voxel_to_flatmap" if matrix_key is None else "flatmap_mask")
        M = _read_sparse(h5, matrix_key, source)
        mask = np.asarray(h5[mask_key][()])
        if mask.ndim != 2:
            raise InputError(f"expected a 2-D (width, height) mask, found shape {mask.shape}", source=source,
                             field=mask_key)
        mask = mask.astype(bool)
        if int(mask.sum()) != M.shape[0]:
            raise InputError(f"the mask has {int(mask.sum())} True pixels but {matrix_key} has {M.shape[0]} rows "
                             "(one per mask pixel); the mask and the matrix must come from the same mapper",
                             source=source, field=mask_key)
        if n_voxels is not None and M.shape[1] != n_voxels:
            raise InputError(f"the mapper maps {M.shape[1]} voxels but the responses have {n_voxels}; use the "
                             "mapper of the same subject (and the responses' full voxel set, in file order)",
                             source=source, field=f"{matrix_key}_shape")
        out = Mapper(path=source, voxel_to_flatmap=M, flatmap_mask=mask)
        if "flatmap_curvature" in keys:
            curv = np.asarray(h5["flatmap_curvature"][()], dtype=np.float64)
            if curv.shape != mask.shape:
                raise InputError(f"expected the mask's shape {mask.shape}, found {curv.shape}", source=source,
                                 field="flatmap_curvature")
            out.curvature = curv
        if "flatmap_rois" in keys:
            rois = np.asarray(h5["flatmap_rois"][()])
            if rois.ndim != 3 or rois.shape[:2] != mask.shape or rois.shape[2] != 4:
                raise InputError(f"expected an RGBA drawing of shape {mask.shape + (4,)} (its alpha says where "
                                 f"the outlines are), found {rois.shape}",
                                 source=source, field="flatmap_rois")
            out.rois_image = rois
        for key in sorted(k for k in keys if k.startswith("roi_mask_")):
            m = np.asarray(h5[key][()])
            if m.shape != (M.shape[1],):
                raise InputError(f"expected one value per voxel, shape ({M.shape[1]},), found {m.shape}",
                                 source=source, field=key)
            out.roi_masks[key[len("roi_mask_"):]] = m.astype(bool)
        for name, key in (("left", "voxel_to_fsaverage_left"), ("right", "voxel_to_fsaverage_right"),
                          ("both", "voxel_to_fsaverage")):
            if f"{key}_data" in keys:
                F = _read_sparse(h5, key, source)
                if F.shape[1] != M.shape[1]:
                    raise InputError(f"maps {F.shape[1]} voxels, the flatmap mapper {M.shape[1]}", source=source,
                                     field=f"{key}_shape")
                out.fsaverage[name] = F
    return out


def map_to_flatmap(mapper: Mapper, values) -> np.ndarray:
    """Voxel values on the flatmap, (height, width) (or (height, width, n_channels) for 2-D values) float64,
    NaN outside the mask and on mask pixels no voxel maps to: the tutorials' ``map_voxels_to_flatmap``."""
    v = np.asarray(values, dtype=np.float64)
    if v.shape[:1] != (mapper.n_voxels,) or v.ndim > 2:
        raise InputError(f"expected ({mapper.n_voxels},) or ({mapper.n_voxels}, n_channels) values, found "
                         f"{v.shape}", source="map_to_flatmap", field="values")
    col = v[:, None] if v.ndim == 1 else v
    M = mapper.voxel_to_flatmap
    pixels = np.asarray(M @ col)
    used = np.asarray(M.getnnz(axis=1) > 0) & (np.asarray(abs(M).sum(axis=1)).ravel() > 0)
    pixels[~used] = np.nan
    img = np.full(mapper.flatmap_mask.shape + (col.shape[1],), np.nan)
    img[mapper.flatmap_mask] = pixels
    img = _image(img)
    return img[..., 0] if v.ndim == 1 else img


def pixel_lookup(mapper: Mapper) -> np.ndarray:
    """The voxel shown under each pixel, int32 (height, width), -1 outside the mask or where no voxel maps:
    per pixel row of the mapper, the voxel with the largest weight (ties: the lower voxel index, whatever the
    storage order)."""
    if mapper._lookup is not None:
        return mapper._lookup
    M = mapper.voxel_to_flatmap
    n_rows = M.shape[0]
    row = np.repeat(np.arange(n_rows), np.diff(M.indptr))
    order = np.lexsort((M.indices, -M.data, row))      # per row: largest weight first, then the lower voxel
    row, vox, w = row[order], M.indices[order], M.data[order]
    best = np.full(n_rows, -1, dtype=np.int32)
    if row.size:
        first = np.flatnonzero(np.r_[True, row[1:] != row[:-1]])
        ok = w[first] > 0
        best[row[first[ok]]] = vox[first[ok]]
    grid = np.full(mapper.flatmap_mask.shape, -1, dtype=np.int32)
    grid[mapper.flatmap_mask] = best
    mapper._lookup = np.ascontiguousarray(_image(grid))
    mapper._lookup.setflags(write=False)
    return mapper._lookup


def flat_positions(lookup: np.ndarray, n_voxels: int) -> tuple[np.ndarray, np.ndarray]:
    """Each voxel's flat position in the flatmap's pixel frame, ``(x, y) = (column, height - 1 - row)`` (y up:
    the frame :func:`core.cortex.flatmap.flat_to_pixel` maps back with extents ``(0, width - 1, 0, height - 1)``),
    the centre of the pixels that show it; and ``unmapped``, True (position NaN) where no pixel shows it."""
    h = lookup.shape[0]
    rows, cols = np.nonzero(lookup >= 0)
    vox = lookup[rows, cols]
    count = np.bincount(vox, minlength=n_voxels).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        x = np.bincount(vox, weights=cols, minlength=n_voxels) / count
        y = np.bincount(vox, weights=(h - 1) - rows, minlength=n_voxels) / count
    xy = np.stack([x, y], axis=1).astype(np.float32)
    unmapped = count == 0
    xy[unmapped] = np.nan
    return xy, unmapped


def roi_labels(mapper: Mapper) -> tuple[np.ndarray, list[str]]:
    """One ROI per voxel from the ``roi_mask_*`` arrays: int16 indices into the names (0 = "other"); a voxel in
    several masks gets the smallest of them (the most specific: a face patch inside a larger visual area)."""
    names = sorted(mapper.roi_masks, key=lambda n: (int(mapper.roi_masks[n].sum()), n))
    roi = np.zeros(mapper.n_voxels, dtype=np.int16)
    for i, name in reversed(list(enumerate(names, start=1))):
        roi[mapper.roi_masks[name]] = i
    return roi, ["other", *names]


def mapper_hemispheres(mapper: Mapper) -> np.ndarray | None:
    """0 (left) / 1 (right) per voxel from the fsaverage mapper: the hemisphere holding most of the voxel's
    weight (split mappers: which one; a single one: rows below 163,842 are the left hemisphere). None when the
    file has no fsaverage mapper or a voxel maps to neither."""
    f = mapper.fsaverage
    if "left" in f and "right" in f:
        left = np.asarray(abs(f["left"]).sum(axis=0)).ravel()
        right = np.asarray(abs(f["right"]).sum(axis=0)).ravel()
    elif "both" in f and f["both"].shape[0] == 2 * FSAVERAGE_VERTICES_PER_HEMI:
        F = abs(f["both"]).tocsr()
        left = np.asarray(F[:FSAVERAGE_VERTICES_PER_HEMI].sum(axis=0)).ravel()
        right = np.asarray(F[FSAVERAGE_VERTICES_PER_HEMI:].sum(axis=0)).ravel()
    else:
        return None
    if np.any((left == 0) & (right == 0)):
        return None
    return (right > left).astype(np.int8)


def to_fsaverage(mapper: Mapper, values) -> dict[str, np.ndarray]:
    """Voxel values projected onto fsaverage, per hemisphere (``lh``, ``rh``: float32 (163,842,) each).

    Raises
    ------
    InputError
        When the mapper file has no fsaverage mapper.
    """
    v = np.asarray(values, dtype=np.float64)
    f = mapper.fsaverage
    if "left" in f and "right" in f:
        return {"lh": np.asarray(f["left"] @ v, np.float32), "rh": np.asarray(f["right"] @ v, np.float32)}
    if "both" in f:
        full = np.asarray(f["both"] @ v, np.float32)
        n = full.size // 2
        return {"lh": full[:n], "rh": full[n:]}
    raise InputError("this mapper file has no voxel_to_fsaverage mapper; the fsaverage export needs one",
                     source=mapper.path, field="voxel_to_fsaverage")


def roi_outlines_from_lookup(lookup: np.ndarray, roi: np.ndarray, roi_names: list[str],
                             hemi: np.ndarray | None = None) -> list[dict]:
    """ROI outlines traced on the flatmap, in the format of ``flatmap_rois.json`` (pixel coordinates, x =
    column, y = row from the top): per ROI and connected region, its boundary polylines and a label anchor (the
    region's pixel centre), the hemisphere where ``hemi`` is known ("" otherwise). Regions under 4 pixels are
    left out (specks of a mask, not an area one could label)."""
    from scipy import ndimage
    from skimage import measure
    out = []
    shown = lookup >= 0
    label_of_pixel = np.zeros(lookup.shape, dtype=np.int64)
    label_of_pixel[shown] = roi[lookup[shown]]
    for idx, name in enumerate(roi_names):
        if idx == 0:
            continue
        inside = label_of_pixel == idx
        regions, n = ndimage.label(inside)
        for k in range(1, n + 1):
            region = regions == k
            if region.sum() < 4:
                continue
            # Contours at the half level of the padded region: closed polylines through pixel edges' midpoints.
            contours = measure.find_contours(np.pad(region, 1).astype(np.float64), 0.5)
            lines = [np.round(c[:, ::-1] - 1, 2).tolist() for c in contours if len(c) >= 2]
            rr, cc = np.nonzero(region)
            tag = ""
            if hemi is not None:
                tag = "rh" if np.mean(hemi[lookup[rr, cc]]) > 0.5 else "lh"
            out.append({"name": name, "hemi": tag, "outline": lines,
                        "label": [round(float(cc.mean()), 2), round(float(rr.mean()), 2)]})
    return out


def curvature_rgba(mapper: Mapper) -> np.ndarray:
    """The flatmap's background, (height, width, 4) uint8: the file's curvature in grey (as the tutorials show
    it, 0..1 to black..white), or mid grey on every mask pixel a voxel maps to when the file has none;
    transparent elsewhere."""
    from matplotlib import colormaps
    if mapper.curvature is not None:
        curv = _image(mapper.curvature)
        inside = np.isfinite(curv) & _image(mapper.flatmap_mask)
        grey = np.clip(np.where(inside, curv, 0), 0, 1)
    else:
        inside = pixel_lookup(mapper) >= 0
        grey = np.where(inside, 0.5, 0)
    rgba = colormaps["gray"](grey, bytes=True)
    rgba[~inside] = 0
    return rgba


def rois_rgba(mapper: Mapper) -> np.ndarray | None:
    """The file's ROI drawing (``flatmap_rois``) as (height, width, 4) uint8, or None."""
    if mapper.rois_image is None:
        return None
    img = _image(mapper.rois_image)
    if np.issubdtype(img.dtype, np.floating):
        img = np.round(np.clip(np.nan_to_num(img), 0, 1) * 255)
    img = img.astype(np.uint8)
    return np.ascontiguousarray(img)


@dataclass
class MapperGeometry:
    """The per-voxel cortex of a run whose cortex is a mapper file: the dataset stage's geometry fields for the
    run's voxels (the file's voxels less those left out, ``voxel_index``), without a volume (no ``ijk``)."""
    mapper_path: str
    flat_xy: np.ndarray                      # float32 (n_voxels, 2), the flatmap's pixel frame, y up; NaN: unmapped
    hemi: np.ndarray                         # int8 (n_voxels,): 0 left, 1 right, -1 unknown (no fsaverage mapper)
    roi: np.ndarray                          # int16 (n_voxels,) into roi_names (0 = other)
    roi_names: list[str]
    unmapped: np.ndarray                     # bool (n_voxels,): no pixel shows the voxel
    voxel_index: np.ndarray                  # int64 (n_voxels,): the voxel's column in the response file
    subject: str = ""                        # no pycortex subject
    transform: str = ""
    mask_name: str = ""
    mapper: Mapper | None = field(default=None, repr=False)  # the file, read once (flatmaps reuse it)

    @property
    def n_voxels(self) -> int:
        return int(self.voxel_index.size)

    def subset(self, index: np.ndarray) -> "MapperGeometry":
        index = np.asarray(index)
        kw = {k: getattr(self, k) for k in ("flat_xy", "hemi", "roi", "unmapped", "voxel_index")}
        return MapperGeometry(mapper_path=self.mapper_path, roi_names=list(self.roi_names), mapper=self.mapper,
                              **{k: v[index] for k, v in kw.items()})

    def lookup(self, mapper: Mapper | None = None) -> np.ndarray:
        """The run's voxel row under each pixel, int32 (height, width); -1 off the mask, where no voxel maps, or
        where the voxel shown was left out of the run."""
        mapper = mapper or self.mapper or load_mapper(self.mapper_path)
        by_file = pixel_lookup(mapper)
        row_of = np.full(mapper.n_voxels, -1, dtype=np.int32)
        row_of[self.voxel_index] = np.arange(self.n_voxels, dtype=np.int32)
        out = np.full(by_file.shape, -1, dtype=np.int32)
        hit = by_file >= 0
        out[hit] = row_of[by_file[hit]]
        return out


def mapper_geometry(path: str | Path, voxel_index: np.ndarray | None = None,
                    n_file_voxels: int | None = None) -> MapperGeometry:
    """The geometry of the run's voxels (``voxel_index`` into the file's, None: all of them) from a mapper file;
    ``n_file_voxels``: the response file's voxel count, which the mapper must match."""
    mapper = load_mapper(path, n_file_voxels)
    n = mapper.n_voxels
    index = np.arange(n, dtype=np.int64) if voxel_index is None else np.asarray(voxel_index, np.int64)
    xy, unmapped = flat_positions(pixel_lookup(mapper), n)
    roi, names = roi_labels(mapper)
    hemi = mapper_hemispheres(mapper)
    hemi = np.full(n, -1, np.int8) if hemi is None else hemi
    return MapperGeometry(mapper_path=str(path), flat_xy=xy[index], hemi=hemi[index], roi=roi[index],
                          roi_names=names, unmapped=unmapped[index], voxel_index=index, mapper=mapper)
