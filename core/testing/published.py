"""Small files in the layouts public voxelwise datasets are published in, for tests (no downloads):

- :func:`write_mapper`: a shortclips-style ``Sxx_mappers.hdf`` (a CSR ``voxel_to_flatmap`` in four arrays,
  ``flatmap_mask``, ``flatmap_curvature``, ``flatmap_rois``, ``roi_mask_*``, ``voxel_to_fsaverage``);
- :func:`write_shortclips_responses`: ``Y_train`` (n_train, n_voxels), ``Y_test`` (n_repeats, n_test, n_voxels),
  ``run_onsets``;
- :func:`write_vim2_responses`: vim-2's MATLAB v7.3 (HDF5) ``rt`` (n_voxels, n_train), ``rv`` (n_voxels, n_test),
  ``rva`` (n_voxels, n_repeats, n_test), voxel-major, NaN voxels, ROI masks under ``/roi/``.

The flatmap is two blobs (hemispheres) of pixels; each voxel owns a patch of pixels with the largest weight
there and a smaller weight on its neighbours' pixels, as a thickness sampling spreads a voxel.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_mapper", "write_shortclips_responses", "write_vim2_responses", "mapper_voxel_layout",
           "planted_frames", "planted_weights", "planted_responses", "write_matlab_v73", "feature_latents"]

FS_PER_HEMI = 163_842


def mapper_voxel_layout(n_voxels: int, width: int, height: int) -> np.ndarray:
    """Voxel centres (column, row in the stored (width, height) frame) on a grid in two blobs, left
    hemisphere (first half of the voxels) in the left half of the flatmap."""
    half = n_voxels // 2
    centres = []
    for h, n in ((0, half), (1, n_voxels - half)):
        side = int(np.ceil(np.sqrt(n * 1.5)))
        xs = np.linspace(0.08, 0.42, side) + 0.5 * h
        ys = np.linspace(0.12, 0.88, int(np.ceil(n / side)))
        grid = np.array([(x, y) for y in ys for x in xs])[:n]
        centres.append(grid * [width, height])
    return np.concatenate(centres)


def _save_sparse(h5, key: str, M) -> None:
    M = M.tocsr()
    h5.create_dataset(f"{key}_data", data=M.data)
    h5.create_dataset(f"{key}_indices", data=M.indices)
    h5.create_dataset(f"{key}_indptr", data=M.indptr)
    h5.create_dataset(f"{key}_shape", data=np.asarray(M.shape))


def write_mapper(path, n_voxels: int, *, width: int = 96, height: int = 64, seed: int = 0,
                 curvature: bool = True, rois_image: bool = True, fsaverage: str | None = "both",
                 legacy_names: bool = False, unmapped: int = 0) -> dict:
    """Write a mapper file; returns what was planted (``M`` the CSR matrix, ``mask``, ``roi_masks``, ``hemi``,
    ``centres``, ``unmapped`` the voxels no pixel maps to). ``fsaverage``: "both" (one matrix, left then right
    hemisphere rows), "split" (``voxel_to_fsaverage_left`` / ``_right``) or None."""
    import h5py
    import scipy.sparse
    from scipy.spatial import cKDTree
    rng = np.random.default_rng(seed)
    centres = mapper_voxel_layout(n_voxels, width, height)
    skip = np.sort(rng.choice(n_voxels, unmapped, replace=False)) if unmapped else np.array([], int)
    mapped = np.setdiff1d(np.arange(n_voxels), skip)
    tree = cKDTree(centres[mapped])
    cols, rows = np.meshgrid(np.arange(width), np.arange(height), indexing="ij")   # (width, height) frame
    pts = np.stack([cols.ravel(), rows.ravel()], 1).astype(np.float64)
    dist, near = tree.query(pts, k=3)
    spacing = np.median(tree.query(centres[mapped], k=2)[0][:, 1])
    mask = (dist[:, 0] <= 0.8 * spacing).reshape(width, height)
    mask[0, :] = False                       # one pixel of margin, like a real flatmap's background
    sel = mask.ravel()
    rows_i, cols_i, vals = [], [], []
    for i, (d, n) in enumerate(zip(dist[sel], near[sel])):
        w = np.array([1.0, 0.35, 0.15]) * rng.uniform(0.9, 1.1, 3)
        keep = d <= 1.6 * spacing
        keep[0] = True
        rows_i += [i] * int(keep.sum())
        cols_i += mapped[n[keep]].tolist()
        vals += (w[keep] / w[keep].sum()).tolist()
    M = scipy.sparse.csr_matrix((vals, (rows_i, cols_i)), shape=(int(sel.sum()), n_voxels))
    x = centres[:, 0] / width
    hemi = (x >= 0.5).astype(np.int8)
    y = centres[:, 1] / height
    roi_masks = {"V1": (y < 0.35) & ((x < 0.2) | ((x >= 0.5) & (x < 0.7))),
                 "VIS": y < 0.55,                                  # contains V1: V1 is the smaller one
                 "FFA": (y > 0.7) & (np.abs(x - 0.25) < 0.08)}
    with h5py.File(path, "w") as h5:
        _save_sparse(h5, "pixmap" if legacy_names else "voxel_to_flatmap", M)
        h5.create_dataset("pixmask" if legacy_names else "flatmap_mask", data=mask)
        if curvature:
            curv = np.where(mask, (np.sin(cols / 5.0) > 0) * 0.4 + 0.3, np.nan)
            h5.create_dataset("flatmap_curvature", data=curv)
        if rois_image:
            img = np.zeros((width, height, 4))
            img[width // 4, :, :] = [1, 1, 1, 1]                 # one white line, full alpha
            h5.create_dataset("flatmap_rois", data=img)
        for name, m in roi_masks.items():
            h5.create_dataset(f"roi_mask_{name}", data=m.astype(np.float64))
        if fsaverage:
            vert = np.where(hemi == 0, 0, FS_PER_HEMI) + (np.arange(n_voxels) * 37) % FS_PER_HEMI
            F = scipy.sparse.csr_matrix((np.ones(n_voxels), (vert, np.arange(n_voxels))),
                                        shape=(2 * FS_PER_HEMI, n_voxels))
            if fsaverage == "split":
                _save_sparse(h5, "voxel_to_fsaverage_left", F[:FS_PER_HEMI])
                _save_sparse(h5, "voxel_to_fsaverage_right", F[FS_PER_HEMI:])
            else:
                _save_sparse(h5, "voxel_to_fsaverage", F)
    return {"M": M, "mask": mask, "roi_masks": roi_masks, "hemi": hemi, "centres": centres, "unmapped": skip}


def write_shortclips_responses(path, Y_train: np.ndarray, Y_test_repeats: np.ndarray,
                               run_onsets: np.ndarray) -> Path:
    """``Y_train`` (n_train, n_voxels), ``Y_test`` (n_repeats, n_test, n_voxels), ``run_onsets``, as published."""
    import h5py
    with h5py.File(path, "w") as h5:
        h5.create_dataset("Y_train", data=np.asarray(Y_train, np.float32))
        h5.create_dataset("Y_test", data=np.asarray(Y_test_repeats, np.float32))
        h5.create_dataset("run_onsets", data=np.asarray(run_onsets, np.int64))
    return Path(path)


def write_vim2_responses(path, Y_train: np.ndarray, Y_test_repeats: np.ndarray, *, nan_voxels=(),
                         roi_masks: dict | None = None, volume_shape: tuple | None = None) -> Path:
    """vim-2's layout from sample-major arrays: ``rt`` (n_voxels, n_train), ``rv`` (n_voxels, n_test) the repeat
    mean, ``rva`` (n_voxels, n_repeats, n_test), float32, NaN in every sample of ``nan_voxels``; ROI masks
    under ``/roi/`` as volumes of ``volume_shape`` (whose C-order size is n_voxels) or per voxel."""
    import h5py
    Y_train = np.asarray(Y_train, np.float32).copy()
    reps = np.asarray(Y_test_repeats, np.float32).copy()
    nan_voxels = np.asarray(nan_voxels, int)
    Y_train[:, nan_voxels] = np.nan
    reps[:, :, nan_voxels] = np.nan
    with h5py.File(path, "w") as h5:
        h5.create_dataset("rt", data=Y_train.T)
        h5.create_dataset("rv", data=reps.mean(0).T)
        h5.create_dataset("rva", data=np.transpose(reps, (2, 0, 1)))
        for name, m in (roi_masks or {}).items():
            m = np.asarray(m, np.uint8)
            h5.create_dataset(f"roi/{name}", data=m.reshape(volume_shape) if volume_shape else m)
    return Path(path)


def planted_frames(n_samples: int, per_sample: int, size: int, rng, n_latent: int = 4):
    """Stimulus frames (n_samples * per_sample, size, size, 3) uint8, each sample's frames one base image plus
    small frame-to-frame noise, and the base images' latent values (n_samples, n_latent) that responses can be
    planted from (colour and coarse layout, which a CNN's pooled features carry)."""
    latent = rng.standard_normal((n_samples, n_latent))
    yy, xx = np.mgrid[0:size, 0:size] / size
    patterns = [np.ones_like(xx), xx - 0.5, yy - 0.5, (xx - 0.5) * (yy - 0.5) * 4]
    base = np.zeros((n_samples, size, size, 3))
    for k in range(n_latent):
        base[..., k % 3] += latent[:, k, None, None] * patterns[k % len(patterns)][None]
    base = 128 + 40 * base
    frames = np.repeat(base, per_sample, axis=0) + rng.normal(0, 4, (n_samples * per_sample, size, size, 3))
    return np.clip(np.rint(frames), 0, 255).astype(np.uint8), latent


def planted_weights(n_latent: int, n_voxels: int, rng, signal_share: float = 0.5) -> np.ndarray:
    """Latent-to-voxel weights (n_latent, n_voxels): the first ``signal_share`` of the voxels carry signal."""
    return rng.standard_normal((n_latent, n_voxels)) * (np.arange(n_voxels) < signal_share * n_voxels)


def planted_responses(latent: np.ndarray, weights: np.ndarray, rng, n_repeats: int = 0, noise: float = 1.0,
                      delay: int = 2, run_onsets=(0,)):
    """Responses (n_samples, n_voxels) float32, ``latent @ weights`` ``delay`` samples later within each run (the
    haemodynamic lag the encoding model's FIR delays cover; the first samples of a run carry none) plus white noise
    of SD ``noise``; with ``n_repeats``, (n_repeats, n_samples, n_voxels) noisy repeats of the same signal."""
    drive = latent @ weights
    signal = np.zeros_like(drive)
    bounds = list(run_onsets) + [drive.shape[0]]
    for a, b in zip(bounds[:-1], bounds[1:]):
        signal[a + delay:b] = drive[a:b - delay]
    shape = (n_repeats,) + signal.shape if n_repeats else signal.shape
    return (signal + noise * rng.standard_normal(shape)).astype(np.float32)


def write_matlab_v73(path, arrays: dict) -> Path:
    """An HDF5 file with MATLAB v7.3's 512-byte header (what MATLAB's ``save -v7.3`` writes): ``arrays`` are
    given in MATLAB's axis order and stored reversed, as MATLAB stores them (column-major)."""
    import h5py
    with h5py.File(path, "w", userblock_size=512) as h5:
        for k, v in arrays.items():
            v = np.asarray(v)
            h5.create_dataset(k, data=np.transpose(v, tuple(range(v.ndim))[::-1]))
    with open(path, "r+b") as fh:
        fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: test HDF5 schema 1.00 .".ljust(116, b" "))
    return Path(path)


def feature_latents(images_train: np.ndarray, images_test: np.ndarray, n_latent: int = 4, input_size: int = 64):
    """Latents a voxel's responses can be planted from so that the pipeline's encoding model can recover them: the
    top principal components (of the training images) of the ABN's attention-off pool features, as the run
    computes them (``features.weights = "auto"``, seed 0), for the training and test images, unit variance."""
    import warnings

    from core.model.abn import build_abn
    from core.model.features import extract_features
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_abn("auto", seed=0)
        feats = [extract_features(model, imgs, modes=("off",), layer="pool", batch_size=64, device="cpu",
                                  input_size=input_size).features["off"].astype(np.float64)
                 for imgs in (images_train, images_test)]
    mean, sd = feats[0].mean(0), feats[0].std(0) + 1e-8
    z = [(f - mean) / sd for f in feats]
    _, _, vt = np.linalg.svd(z[0], full_matrices=False)
    lat = [f @ vt[:n_latent].T for f in z]
    scale = lat[0].std(0)
    return lat[0] / scale, lat[1] / scale
