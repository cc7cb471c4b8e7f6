"""Which voxels enter the RDM, ROI x ROI block means, and the per-voxel change of kNN neighbourhood."""
from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from core._validation import InputError, check_ndim, check_positive_int
from core.rsa.knn import _ZSCORE_CHUNK, _check_series, _zscore_rows

SELECTION_RULES = ("union", "significant", "all")
"""Which voxels enter the RDM: significant in any condition, in the given condition only, or all."""

__all__ = ["SELECTION_RULES", "select_voxels", "roi_block_rdm", "knn_jaccard"]


def select_voxels(significant: Mapping[str, np.ndarray], rule: str = "union",
                  condition: str | None = None, r: Mapping[str, np.ndarray] | None = None) -> np.ndarray:
    """Voxels that enter the RDM of a condition.

    Encoding significance is about positive prediction: a voxel enters for its significant positive r only
    (the stats stage's ``significant`` is already positive; ``r`` enforces it for any other mask).

    Parameters
    ----------
    significant : mapping of str to bool array of shape (n_voxels,)
        Per condition (e.g. ``{"on": sig_on, "off": sig_off}``), whether each voxel is significant with r > 0.
    rule : {"union", "significant", "all"}
        ``"union"``: significant in any condition, so all conditions embed the same voxels and can be
        compared point for point (default). ``"significant"``: the voxels significant in ``condition``
        itself, as in the study. ``"all"``: every voxel.
    condition : str, optional
        The condition whose own significant voxels ``rule="significant"`` returns; may be omitted when
        ``significant`` holds a single condition. Ignored by the other rules.
    r : mapping of str to float array of shape (n_voxels,), optional
        Per condition, the correlations: a mask entry counts only where r > 0 (significant negative r is its
        own category and never enters the RDM).

    Returns
    -------
    indices : int64 array of shape (n_selected,)
        Sorted voxel indices.
    """
    if not isinstance(significant, Mapping) or not significant:
        raise InputError("expected a non-empty mapping of condition name -> bool array of shape (n_voxels,), "
                         f"found {type(significant).__name__}", source="rsa", field="significant")
    masks = {}
    for name, mask in significant.items():
        mask = np.asarray(mask)
        check_ndim(mask, (1,), source="rsa", field=f"significant[{name!r}]", layout="of shape (n_voxels,)")
        if mask.dtype != bool:
            raise InputError(f"expected a bool array, found dtype {mask.dtype}; pass e.g. p <= 0.01",
                             source="rsa", field=f"significant[{name!r}]")
        if r is not None:
            if name not in r or np.shape(r[name]) != mask.shape:
                raise InputError(f"expected r for condition {name!r} of shape {mask.shape}, found "
                                 f"{np.shape(r[name]) if name in r else 'none'}", source="rsa", field="r")
            mask = mask & (np.asarray(r[name]) > 0)
        masks[name] = mask
    sizes = {m.size for m in masks.values()}
    if len(sizes) > 1:
        raise InputError(f"expected one voxel count for all conditions, found {sorted(sizes)}",
                         source="rsa", field="significant")
    if rule not in SELECTION_RULES:
        raise InputError(f"expected one of {', '.join(SELECTION_RULES)}, found {rule!r}", source="rsa", field="rule")
    if rule == "all":
        return np.arange(sizes.pop(), dtype=np.int64)
    if rule == "union":
        return np.flatnonzero(np.logical_or.reduce(list(masks.values()))).astype(np.int64)
    if condition is None and len(masks) == 1:
        condition = next(iter(masks))
    if condition not in masks:
        raise InputError(f"rule 'significant' needs condition= one of {sorted(masks)}, found {condition!r}",
                         source="rsa", field="condition")
    return np.flatnonzero(masks[condition]).astype(np.int64)


# -------------------------------------------------------------------------------------- RDM summaries
def roi_block_rdm(series, roi_labels, n_rois: int | None = None):
    """ROI x ROI mean correlation distance, exact, from per-ROI sums of z-scored series.

    With unit-norm centred voxel series ``z``, the sum of ``r_ab`` over a in ROI A and b in ROI B is
    ``s_A . s_B`` where ``s_A`` is the sum of the ROI's ``z``: no pairwise matrix is needed. Block means
    follow rsatoolbox's ``calc_rdm(..., method='correlation')`` RDM: an off-diagonal block is the mean
    over all ``n_A * n_B`` pairs; a diagonal block is the mean over the ``n_A (n_A - 1)`` off-diagonal
    entries of the square RDM (self-pairs, always 0, are excluded).

    Parameters
    ----------
    series : array of shape (n_samples, n_voxels)
        Predicted test series.
    roi_labels : int array of shape (n_voxels,)
        ROI index of each voxel in ``[0, n_rois)`` (give voxels outside every ROI their own label, as the
        cortex module's "other" = 0 does).
    n_rois : int, optional
        Number of ROIs; default ``max(roi_labels) + 1``.

    Returns
    -------
    block_mean : float64 array of shape (n_rois, n_rois)
        Mean correlation distance between (and within) ROIs. NaN where a block has no voxel pairs: an empty
        ROI, or the diagonal of a single-voxel ROI.
    counts : int64 array of shape (n_rois,)
        Voxels per ROI.
    """
    arr = _check_series(series, field="series")
    n_voxels = arr.shape[1]
    labels = np.asarray(roi_labels)
    check_ndim(labels, (1,), source="rsa", field="roi_labels", layout="of shape (n_voxels,)")
    if labels.size != n_voxels or not np.issubdtype(labels.dtype, np.integer):
        raise InputError(f"expected {n_voxels} integer ROI labels (one per voxel column), found {labels.size} of "
                         f"dtype {labels.dtype}", source="rsa", field="roi_labels")
    if labels.min() < 0:
        raise InputError(f"expected ROI labels >= 0, found {int(labels.min())}; give voxels outside every ROI "
                         "a label of their own", source="rsa", field="roi_labels")
    top = int(labels.max()) + 1
    n_rois = top if n_rois is None else check_positive_int(n_rois, field="n_rois", source="rsa")
    if top > n_rois:
        raise InputError(f"expected labels below n_rois = {n_rois}, found label {top - 1}",
                         source="rsa", field="roi_labels")
    from scipy.sparse import csr_matrix
    eps = float(np.finfo(arr.dtype).eps) if np.issubdtype(arr.dtype, np.floating) else 0.0
    sums = np.zeros((n_rois, arr.shape[0]), dtype=np.float64)
    for start in range(0, n_voxels, _ZSCORE_CHUNK):
        stop = min(start + _ZSCORE_CHUNK, n_voxels)
        block = _zscore_rows(np.array(arr[:, start:stop].T, dtype=np.float64, order="C"),
                             np.arange(start, stop), eps, field="series")
        member = csr_matrix((np.ones(stop - start), (labels[start:stop], np.arange(stop - start))),
                            shape=(n_rois, stop - start))
        sums += member @ block
    counts = np.bincount(labels, minlength=n_rois).astype(np.int64)
    total_r = sums @ sums.T
    pairs = np.outer(counts, counts).astype(np.float64)
    # Each unit-norm voxel contributes r = 1 with itself to s_A . s_A; those self-pairs are not RDM entries.
    np.fill_diagonal(total_r, np.diag(total_r) - counts)
    np.fill_diagonal(pairs, counts * (counts - 1.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        block_mean = np.where(pairs > 0, 1.0 - total_r / np.where(pairs > 0, pairs, 1.0), np.nan)
    return block_mean, counts



def knn_jaccard(idx_a, idx_b) -> np.ndarray:
    """Per-voxel Jaccard overlap of two kNN neighbour sets, the voxel itself excluded.

    Parameters
    ----------
    idx_a, idx_b : int arrays of shape (n_voxels, k)
        Neighbour lists of the same voxels in two conditions (e.g. from :func:`knn_correlation`).

    Returns
    -------
    jaccard : float32 array of shape (n_voxels,)
        ``|A & B| / |A | B|`` per voxel: 1 = same neighbourhood, 0 = no neighbour in common.
    """
    a, b = np.asarray(idx_a), np.asarray(idx_b)
    for name, arr in (("idx_a", a), ("idx_b", b)):
        check_ndim(arr, (2,), source="rsa", field=name, layout="of shape (n_voxels, k)")
        if not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"expected integer voxel indices, found dtype {arr.dtype}", source="rsa", field=name)
        srt = np.sort(arr, axis=1)
        if (srt[:, 1:] == srt[:, :-1]).any():
            raise InputError("expected distinct neighbours in every row, found a repeated index",
                             source="rsa", field=name)
    if a.shape[0] != b.shape[0]:
        raise InputError(f"expected the same voxels in both graphs, found {a.shape[0]} and {b.shape[0]} rows",
                         source="rsa", field="idx_b")
    self_idx = np.arange(a.shape[0])[:, None]
    in_a, in_b = a != self_idx, b != self_idx
    size_a, size_b = in_a.sum(1), in_b.sum(1)
    if (size_a == 0).any() or (size_b == 0).any():
        raise InputError("expected at least one neighbour besides the voxel itself (k >= 2)",
                         source="rsa", field="idx_a")
    # (n, k_a, k_b) comparison in row chunks keeps the temporary small.
    shared = np.empty(a.shape[0], dtype=np.int64)
    step = max(1, 2**24 // (a.shape[1] * b.shape[1]))
    for start in range(0, a.shape[0], step):
        sl = slice(start, start + step)
        eq = (a[sl, :, None] == b[sl, None, :]) & in_a[sl, :, None] & in_b[sl, None, :]
        shared[sl] = eq.any(axis=2).sum(axis=1)
    return (shared / (size_a + size_b - shared)).astype(np.float32)
