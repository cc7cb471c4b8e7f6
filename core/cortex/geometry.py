"""Where each voxel sits on the cortex (pycortex): flatmap position, hemisphere, ROI.

:func:`load_geometry` maps every voxel of a pycortex mask to the surface vertices that fall in it, once,
and caches the result as a small ``.npz``, so later runs and the dashboard read it instantly.
"""
from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from core._io import atomic_write, file_lock

__all__ = ["VoxelGeometry", "load_geometry", "roi_vertices", "EARLY_VISUAL", "OBJECT_SCENE"]

# ROI groups of pycortex's S1 overlay used by the simulation and the summaries.
EARLY_VISUAL = ("V1", "V2", "V3")
OBJECT_SCENE = ("FFA", "OFA", "EBA", "PPA", "OPA", "RSC")


@dataclass
class VoxelGeometry:
    """Per-voxel cortex geometry for one subject/transform/mask.

    Attributes
    ----------
    mask : bool array of shape (nz, ny, nx)
        The pycortex mask (pycortex's (z, y, x) volume order); voxels are its ``True`` entries in C order.
    ijk : int16 array of shape (n_voxels, 3)
        NIfTI-order voxel indices (i = x, j = y, k = z) in the functional reference volume.
    xyz_mm : float32 array of shape (n_voxels, 3)
        Voxel centres in the reference volume's world space (mm), from its affine.
    flat_xy : float32 array of shape (n_voxels, 2)
        Flatmap position: mean of the voxel's vertices on the flat surface (nearest vertex if it has none).
    hemi : int8 array of shape (n_voxels,)
        0 = left, 1 = right.
    roi : int16 array of shape (n_voxels,)
        Index into ``roi_names``; 0 is "other" (no ROI).
    roi_names : list of str
    unmapped : bool array of shape (n_voxels,)
        True where no vertex falls in the voxel and the nearest vertex stood in.
    """
    subject: str
    transform: str
    mask_name: str
    mask: np.ndarray
    ijk: np.ndarray
    xyz_mm: np.ndarray
    flat_xy: np.ndarray
    hemi: np.ndarray
    roi: np.ndarray
    roi_names: list[str]
    unmapped: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.ijk.shape[0])

    def roi_mask(self, names) -> np.ndarray:
        """Boolean voxel mask of the union of the named ROIs (names absent from this subject are ignored)."""
        wanted = [self.roi_names.index(n) for n in names if n in self.roi_names]
        return np.isin(self.roi, wanted)

    def subset(self, index: np.ndarray) -> "VoxelGeometry":
        """The geometry of a subset of voxels (the mask then marks only those voxels)."""
        mask = np.zeros_like(self.mask)
        flat = np.flatnonzero(self.mask.ravel())[np.sort(index)]
        mask.ravel()[flat] = True
        if not np.all(np.diff(index) > 0):
            raise ValueError("subset indices must be strictly increasing to keep the mask's C order")
        kw = {f.name: getattr(self, f.name) for f in fields(self)}
        for name in ("ijk", "xyz_mm", "flat_xy", "hemi", "roi", "unmapped"):
            kw[name] = kw[name][index]
        kw["mask"] = mask
        return VoxelGeometry(**kw)


def _cache_file(cache_dir: Path, subject: str, transform: str, mask: str) -> Path:
    import cortex
    tag = hashlib.sha256(f"{subject}|{transform}|{mask}|{cortex.__version__}|v1".encode()).hexdigest()[:12]
    return cache_dir / f"geometry_{subject}_{transform}_{mask}_{tag}.npz"


def load_geometry(subject: str, transform: str, mask: str, cache_dir: str | Path) -> VoxelGeometry:
    """Per-voxel geometry of ``subject/transform/mask``, computed once and cached in ``cache_dir``."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = _cache_file(cache_dir, subject, transform, mask)
    if path.is_file():
        return _read_geometry(path)
    # One process computes it (pycortex may write the mask into its filestore on first use); another that
    # asks meanwhile (the run's background pycortex preparation) waits and reads the result.
    with file_lock(path.with_suffix(".lock")):
        if path.is_file():
            return _read_geometry(path)
        geom = _compute_geometry(subject, transform, mask)
        arrays = {f.name: (np.asarray(getattr(geom, f.name)) if f.name != "roi_names"
                           else np.asarray(geom.roi_names, dtype=str)) for f in fields(geom)}
        atomic_write(path, lambda fh: np.savez(fh, **arrays))
    return geom


def _read_geometry(path: Path) -> VoxelGeometry:
    with np.load(path, allow_pickle=False) as z:
        kw = {k: z[k] for k in z.files}
    kw["roi_names"] = [str(s) for s in kw["roi_names"]]
    for k in ("subject", "transform", "mask_name"):
        kw[k] = str(kw[k])
    return VoxelGeometry(**kw)


def _mesh_adjacency(polys: np.ndarray, n_vertices: int):
    """Vertex adjacency (CSR, both directions) of a triangle mesh: row ``v`` lists the neighbours of ``v``."""
    from scipy import sparse
    p = np.asarray(polys, dtype=np.int64)
    a = p.ravel()
    b = p[:, [1, 2, 0]].ravel()
    rows = np.concatenate([a, b])
    cols = np.concatenate([b, a])
    adj = sparse.csr_matrix((np.ones(rows.size, np.int32), (rows, cols)), shape=(n_vertices, n_vertices))
    adj.sum_duplicates()
    return adj


def _add_cut_neighbours(roi_idx: np.ndarray, good: np.ndarray, adjacency) -> np.ndarray:
    """``roi_idx`` plus its full-mesh neighbours that are not on the flat surface (``~good``), sorted.

    The vectorised form of the loop in pycortex's ``get_roi_verts`` that recovers the vertices the flatmap
    cuts removed; like pycortex it returns ``roi_idx`` unchanged when there are none to add.
    """
    nb = adjacency[roi_idx].indices
    extra = nb[~good[nb]]
    if extra.size == 0:
        return roi_idx
    return np.unique(np.concatenate((roi_idx, extra))).astype(int)


def roi_vertices(subject: str, overlay_file: str | None = None) -> dict[str, np.ndarray]:
    """``{roi name: vertex indices}`` of every ROI of the subject's overlay, as ``cortex.get_roi_verts``.

    Same result as pycortex's ``get_roi_verts(subject)`` (pycortex's own ROI polygons and point-in-path test
    on the flat vertices, restricted to the flat surface, plus the cut vertices adjacent to those), but the
    neighbour recovery is one sparse-matrix lookup instead of a Python loop over sets: ~2 s instead of ~30 s.
    """
    import cortex
    svg = cortex.db.get_overlay(subject, overlay_file=overlay_file)
    pts, polys = cortex.db.get_surf(subject, "flat", merge=True)
    goodpts = np.unique(polys)
    _, polys_full = cortex.db.get_surf(subject, "fiducial", merge=True)
    n = max(int(pts.shape[0]), int(polys_full.max()) + 1)
    good = np.zeros(n, dtype=bool)
    good[goodpts] = True
    adjacency = _mesh_adjacency(polys_full, n)
    coords = np.asarray(svg.rois.svgobject.coords)
    out = {}
    for name, shape in svg.rois.shapes.items():
        inside = np.zeros(n, dtype=bool)
        inside[_shape_vertices(shape, coords)] = True
        roi_idx = np.flatnonzero(inside & good)   # == np.intersect1d(shape mask, goodpts)
        out[name] = _add_cut_neighbours(roi_idx, good, adjacency) if roi_idx.size else roi_idx
    return out


def _shape_vertices(shape, coords: np.ndarray) -> np.ndarray:
    """Vertices inside one ROI shape: pycortex's ``Shape.get_mask`` run only on the vertices in the shape's
    bounding box (of all path vertices and Bezier control points, so no inside vertex is left out)."""
    splines = shape.splines
    if not splines:
        return np.zeros(0, dtype=np.int64)
    v = np.concatenate([np.asarray(p.vertices, dtype=float) for p in splines])
    lo, hi = v.min(axis=0), v.max(axis=0)
    # The paths are upside down with respect to the vertex coordinates (pycortex flips y by the height).
    y = shape.height - coords[:, 1]
    sel = np.flatnonzero((coords[:, 0] >= lo[0]) & (coords[:, 0] <= hi[0]) & (y >= lo[1]) & (y <= hi[1]))
    if sel.size == 0:
        return sel
    return sel[np.asarray(shape.get_mask(coords[sel]), dtype=np.int64)]


def _compute_geometry(subject: str, transform: str, mask_name: str) -> VoxelGeometry:
    import cortex
    from scipy.spatial import cKDTree

    from core.data.datasets import CortexSpec, check_cortex_spec
    check_cortex_spec(CortexSpec(subject, transform, mask_name))
    mask = np.asarray(cortex.db.get_mask(subject, transform, mask_name), dtype=bool)
    vol_index = np.flatnonzero(mask.ravel())
    n = vol_index.size
    lookup = np.full(mask.size, -1, dtype=np.int64)
    lookup[vol_index] = np.arange(n)

    mapper = cortex.get_mapper(subject, transform, "nearest")
    flat_pts, _ = cortex.db.get_surf(subject, "flat", merge=True, nudge=True)
    n_left = mapper.masks[0].shape[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty ROI layers of the bundled overlay warn; they are simply absent
        roi_verts = roi_vertices(subject)
    roi_names = ["other"] + sorted(k for k, v in roi_verts.items() if len(v))
    vert_roi = np.zeros(flat_pts.shape[0], dtype=np.int64)
    # Smaller ROIs are painted last so a small ROI nested in a big one keeps its vertices.
    for name in sorted(roi_names[1:], key=lambda k: -len(roi_verts[k])):
        vert_roi[np.asarray(roi_verts[name], dtype=np.int64)] = roi_names.index(name)

    vox_of_vert, vert_ids = [], []
    for h, m in enumerate(mapper.masks):
        coo = m.tocoo()
        vox = lookup[coo.col]
        keep = vox >= 0
        vox_of_vert.append(vox[keep])
        vert_ids.append(coo.row[keep] + (n_left if h else 0))
    vox_of_vert = np.concatenate(vox_of_vert)
    vert_ids = np.concatenate(vert_ids)
    counts = np.bincount(vox_of_vert, minlength=n)
    unmapped = counts == 0
    if unmapped.any():
        # Nearest vertex, measured in functional voxel space on the fiducial (mid-thickness) surface.
        xfm = cortex.db.get_xfm(subject, transform)
        fid = []
        for hemi in ("lh", "rh"):
            pia, _ = cortex.db.get_surf(subject, "pia", hemi)
            wm, _ = cortex.db.get_surf(subject, "wm", hemi)
            fid.append((pia + wm) / 2)
        fid_vox = xfm(np.vstack(fid))  # (x, y, z) voxel coordinates
        zyx = np.array(np.unravel_index(vol_index[unmapped], mask.shape)).T
        _, nearest = cKDTree(fid_vox).query(zyx[:, ::-1].astype(float))
        vox_of_vert = np.concatenate([vox_of_vert, np.flatnonzero(unmapped)])
        vert_ids = np.concatenate([vert_ids, nearest])
        counts = np.bincount(vox_of_vert, minlength=n)
    flat_xy = np.stack([np.bincount(vox_of_vert, flat_pts[vert_ids, d], minlength=n) / counts
                        for d in (0, 1)], axis=1).astype(np.float32)
    hemi = (np.bincount(vox_of_vert, (vert_ids >= n_left).astype(float), minlength=n) / counts > 0.5)
    # ROI by majority vote of the voxel's vertices (ties go to the lower label index).
    votes = np.zeros((n, len(roi_names)), dtype=np.int32)
    np.add.at(votes, (vox_of_vert, vert_roi[vert_ids]), 1)
    roi = votes.argmax(axis=1).astype(np.int16)

    zyx = np.array(np.unravel_index(vol_index, mask.shape)).T
    ijk = zyx[:, ::-1].astype(np.int16)
    affine = cortex.db.get_xfm(subject, transform).reference.affine
    xyz_mm = (np.c_[ijk.astype(float), np.ones(n)] @ affine.T)[:, :3].astype(np.float32)
    return VoxelGeometry(subject=subject, transform=transform, mask_name=mask_name, mask=mask, ijk=ijk,
                         xyz_mm=xyz_mm, flat_xy=flat_xy, hemi=hemi.astype(np.int8), roi=roi,
                         roi_names=roi_names, unmapped=unmapped)
