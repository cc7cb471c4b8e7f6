"""Exact k-nearest-neighbour graph of the correlation-distance RDM from chunked matrix products.

The correlation distance between voxels a and b is ``1 - r_ab``, where ``r_ab`` is the Pearson correlation of
their predicted test series. If each voxel's series is centred and divided by its Euclidean norm, ``r_ab`` is
a plain dot product, so blocks of the RDM are matrix products of the z-scored series (scaled by
``1/sqrt(n_samples)``). Every function here works from that fact.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from core._validation import InputError, check_finite, check_ndim, check_positive_int
from core.device import resolve_device

__all__ = ["zscore_series", "knn_correlation", "knn_tile_shape"]

_SERIES_LAYOUT = "of shape (n_samples, n_voxels): predicted test series, one column per voxel"

# The similarity tile is the largest allocation of the kNN search; the grouped maxima, masks and gathered
# candidates add a few percent. 1.25 leaves room for them when turning a memory budget into a tile size.
_TILE_OVERHEAD = 1.25
# Entries per group when maxima over groups prune a tile, by the axis the neighbours run along. Along rows
# (dim 1) a group is contiguous and 64 is cheapest; along columns (dim 0) each member of a group sits in
# its own cache line when the surviving groups are re-read, so smaller groups are faster (measured).
_GROUP = {1: 64, 0: 16}
# Tile sides are rounded to multiples of this.
_ALIGN = 64
# Query rows per strip when the budget allows it. Each strip recomputes its own square diagonal block in
# full (both triangles), which costs rows/2 extra columns per voxel: 4096 keeps that near 5 % at 80k voxels
# while the matrix products stay large enough to run at full BLAS speed.
_MAX_ROWS = 4096
# Voxels z-scored at once: 8192 x 600 float64 is 39 MB, so the float64 pass never holds the whole series.
_ZSCORE_CHUNK = 8192
# Voxel pairs whose dot product is formed at once in rdm_agreement (2 x 16384 x 600 float32 = 79 MB).
_PAIR_CHUNK = 16384


# --------------------------------------------------------------------------------------------- z-scoring
def _check_series(series, *, field: str, source: str = "rsa") -> np.ndarray:
    """Return ``series`` as a 2-D finite numpy array, or raise InputError saying what is wrong."""
    if isinstance(series, torch.Tensor):
        series = series.detach().cpu().numpy()
    arr = np.asarray(series)
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise InputError(f"expected a numeric array {_SERIES_LAYOUT}, found dtype {arr.dtype}",
                         source=source, field=field)
    check_ndim(arr, (2,), source=source, field=field, layout=_SERIES_LAYOUT)
    n_samples, n_voxels = arr.shape
    if n_samples < 2:
        raise InputError(f"expected at least 2 samples (rows) to correlate voxels, found {n_samples}; "
                         f"pass the series {_SERIES_LAYOUT}", source=source, field=field)
    if n_voxels < 2:
        raise InputError(f"expected at least 2 voxels (columns), found {n_voxels}", source=source, field=field)
    check_finite(arr, source=source, field=field)
    return arr


def _zscore_rows(block: np.ndarray, voxels: np.ndarray, eps: float, *, field: str) -> np.ndarray:
    """Centre each row of a float64 ``(n_voxels_chunk, n_samples)`` block and scale it to unit norm.

    A row whose spread is at the rounding level of its input dtype carries no correlation information;
    dividing by it would produce NaN or amplified rounding noise, so such voxels are rejected (``voxels``
    are the rows' column numbers in the caller's series, for the message).
    """
    mean = block.mean(axis=1, keepdims=True)
    block -= mean
    norm = np.sqrt(np.einsum("ij,ij->i", block, block))
    n = block.shape[1]
    constant = norm <= 10.0 * eps * math.sqrt(n) * np.abs(mean[:, 0])
    if constant.any():
        bad = voxels[np.flatnonzero(constant)]
        raise InputError(
            f"found {bad.size} constant voxel series (no variance over the samples) in this chunk, first at "
            f"voxel column {int(bad[0])}; "
            "a correlation distance is undefined for them. Drop voxels whose predicted series is constant "
            "before building the RDM (they cannot be significant either).",
            source="rsa", field=field)
    block /= norm[:, None]
    return block


def _voxel_major_z(arr: np.ndarray, device: torch.device, *, field: str,
                   columns: np.ndarray | None = None) -> torch.Tensor:
    """z-score voxel columns of a checked ``(n_samples, n_voxels)`` array into ``(n_voxels, n_samples)``.

    Rows of the result are unit-norm and centred (float32 on ``device``), so ``z @ z.T`` is the Pearson
    correlation matrix. ``columns`` selects (and orders) the voxels; default all. The float64 statistics
    are computed chunk by chunk to keep memory bounded.
    """
    columns = np.arange(arr.shape[1]) if columns is None else columns
    eps = float(np.finfo(arr.dtype).eps) if np.issubdtype(arr.dtype, np.floating) else 0.0
    z = torch.empty((columns.size, arr.shape[0]), dtype=torch.float32, device=device)
    for start in range(0, columns.size, _ZSCORE_CHUNK):
        chunk = columns[start:start + _ZSCORE_CHUNK]
        # A run of consecutive columns is sliced (a view) rather than gathered (a copy).
        cols = slice(chunk[0], chunk[-1] + 1) if chunk[-1] - chunk[0] + 1 == chunk.size else chunk
        block = _zscore_rows(np.array(arr[:, cols].T, dtype=np.float64, order="C"), chunk, eps, field=field)
        z[start:start + chunk.size] = torch.from_numpy(block.astype(np.float32)).to(device)
    return z


def zscore_series(series) -> np.ndarray:
    """z-score each voxel's series and scale it by ``1/sqrt(n_samples)``.

    After this, the dot product of two voxel columns is exactly their Pearson correlation, and
    ``1 - dot`` is the correlation distance used for the RDM.

    Parameters
    ----------
    series : array of shape (n_samples, n_voxels)
        Predicted test series, sample-major as they come out of the encoding model.

    Returns
    -------
    z : float32 array of shape (n_samples, n_voxels)
        Centred voxel columns with unit Euclidean norm. Stored voxel-major (Fortran order), so one voxel's
        series is contiguous.

    Raises
    ------
    InputError
        If ``series`` is not 2-D, holds NaN/inf, has fewer than two samples or voxels, or has a constant
        voxel column (its correlation is undefined: filter such voxels out first).
    """
    arr = _check_series(series, field="series")
    return _voxel_major_z(arr, torch.device("cpu"), field="series").numpy().T


# ------------------------------------------------------------------------------------------- exact kNN
def knn_tile_shape(n_voxels: int, *, memory_budget_gb: float = 1.0, chunk: int | None = None) -> tuple[int, int]:
    """Shape of the similarity tile that :func:`knn_correlation` computes at once.

    Parameters
    ----------
    n_voxels : int
        Number of voxels in the graph.
    memory_budget_gb : float
        Working memory allowed for one tile and its temporaries (GB = 1e9 bytes). The z-scored copy of
        the series, ``n_voxels * n_samples * 4`` bytes, comes on top of it.
    chunk : int, optional
        Query voxels per tile (rows). Default: at most 4096, and at most the square root of the budget.

    Returns
    -------
    rows, cols : int
        Query voxels per strip and voxels per column block. ``cols >= rows``; ``rows * cols * 4 *
        1.25`` stays within the budget, except that tiles are never smaller than ``chunk x chunk`` (an
        explicit ``chunk``) or 64 x 64 (the default).
    """
    n_voxels = check_positive_int(n_voxels, field="n_voxels", source="rsa")
    if not (isinstance(memory_budget_gb, (int, float)) and memory_budget_gb > 0):
        raise InputError(f"expected a positive number of GB, found {memory_budget_gb!r}",
                         source="rsa", field="memory_budget_gb")
    elements = int(memory_budget_gb * 1e9 / (4 * _TILE_OVERHEAD))
    if chunk is None:
        rows = min(_MAX_ROWS, math.isqrt(max(elements, 1)) // _ALIGN * _ALIGN)
        rows = max(rows, min(_ALIGN, n_voxels))
    else:
        rows = check_positive_int(chunk, field="chunk", source="rsa")
    rows = min(rows, n_voxels)
    cols = max(rows, elements // rows // _ALIGN * _ALIGN)
    return rows, min(cols, n_voxels)


def _candidates(tile: torch.Tensor, dim: int, running_kth: torch.Tensor, k: int):
    """Entries of a similarity tile that can still enter their query's top k.

    Queries are the tile's rows (``dim=1``: neighbours along the columns) or its columns (``dim=0``:
    neighbours along the rows). An entry is dropped only when at least k entries of the same query are
    strictly larger, so the result keeps everything the final top-k could contain, exact ties included.
    The threshold is the larger of the query's current k-th best (``running_kth``) and the k-th largest
    of its maxima over groups of consecutive entries (k distinct entries are at least that large). Only
    groups whose maximum reaches the threshold are read again, so the full tile is read once.

    Returns
    -------
    list of (query, neighbour, value)
        One or two parts: int64 positions along the tile's query axis (ascending within a part) and
        neighbour axis, and the float32 similarities, each of shape (m,).
    """
    n_query, n_nb = (tile.shape[0], tile.shape[1]) if dim == 1 else (tile.shape[1], tile.shape[0])
    # Groups must outnumber k for the k-th group maximum to exist; narrow tiles use small groups.
    group = min(_GROUP[dim], max(1, n_nb // k))
    full = n_nb // group * group
    # Group along the tile's own memory order: reducing over a transposed view is ~30x slower on CPU.
    if dim == 1:
        grouped = tile[:, :full].reshape(n_query, full // group, group)   # (query, group id, member)
        gmax = grouped.amax(dim=2)
        rest = tile[:, full:]
    else:
        grouped = tile[:full].reshape(full // group, group, n_query)      # (group id, member, query)
        gmax = grouped.amax(dim=1).T.contiguous()
        rest = tile[full:].T
    thr = running_kth
    # Once every query has k real entries its running bound is usually the tighter one; skip the top-k then.
    if gmax.shape[1] >= k and not bool(torch.isfinite(running_kth).all()):
        thr = torch.maximum(thr, torch.topk(gmax, k, dim=1, sorted=False).values.amin(dim=1))
    q, g = torch.nonzero(gmax >= thr[:, None], as_tuple=True)
    vals = grouped[q, g] if dim == 1 else grouped[g, :, q]                # (m, group)
    hit, member = torch.nonzero(vals >= thr[q][:, None], as_tuple=True)  # row-major: query order kept
    parts = [(q[hit], g[hit] * group + member, vals[hit, member])]
    if rest.shape[1]:
        # The last, shorter group is compared entry by entry; it is merged as a part of its own so that
        # each part stays ordered by query without a sort.
        q_rest, j_rest = torch.nonzero(rest >= thr[:, None], as_tuple=True)
        parts.append((q_rest, full + j_rest, rest[q_rest, j_rest]))
    return parts


def _order_key(value: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """int64 keys that sort like (value descending, index ascending) under a plain descending sort.

    A float32's bit pattern read as int32 orders non-negative floats correctly and negative ones in
    reverse; flipping the magnitude bits of negatives makes the map monotone. ``+ 0.0`` turns -0 into +0.
    """
    bits = (value + 0.0).view(torch.int32).to(torch.int64)
    bits = torch.where(bits < 0, bits ^ 0x7FFFFFFF, bits)
    return bits * 2**32 + (2**32 - 1 - index)


def _merge(best_val: torch.Tensor, best_idx: torch.Tensor, query, neighbour, value) -> None:
    """Merge candidates (``query`` ascending, global ids) into the running top-k lists in place.

    Lists stay ordered by (similarity descending, index ascending). Every ordered voxel pair is offered
    exactly once over the whole search, so no duplicates arise.
    """
    if query.numel() == 0:
        return
    k = best_val.shape[1]
    rows, counts = torch.unique_consecutive(query, return_counts=True)
    n_rows = rows.numel()
    seg = torch.repeat_interleave(torch.arange(n_rows, device=query.device), counts)
    pos = torch.arange(query.numel(), device=query.device) - (torch.cumsum(counts, 0) - counts)[seg]
    width = int(counts.max())
    pad_val = torch.full((n_rows, width), -math.inf, dtype=value.dtype, device=value.device)
    pad_idx = torch.full((n_rows, width), 2**32 - 1, dtype=torch.int64, device=value.device)
    pad_val[seg, pos], pad_idx[seg, pos] = value, neighbour
    val = torch.cat([best_val[rows], pad_val], dim=1)
    idx = torch.cat([best_idx[rows], pad_idx], dim=1)
    top = torch.topk(_order_key(val, idx), k, dim=1).indices
    best_val[rows] = torch.gather(val, 1, top)
    best_idx[rows] = torch.gather(idx, 1, top)


def _similarity_tile(out: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> None:
    """``out = rows @ cols.T`` in IEEE float32.

    On the CPU the product goes through numpy's bundled OpenBLAS: on the 2-core AMD EPYC this project runs
    on it is ~1.5x faster than torch's MKL for these shapes (4096 x 600 x 12288, interleaved medians:
    50 vs 34 GF/s on 1 thread, 62 vs 41 on 2). Both are plain float32 GEMMs with the same rounding model.
    """
    if out.device.type == "cpu":
        np.matmul(rows.numpy(), cols.numpy().T, out=out.numpy())
    else:
        torch.mm(rows, cols.T, out=out)


class _single_torch_thread:
    """On the CPU, run torch's part of the search (the selection, not the products) on one thread.

    Those ops are small or memory-bound; on 2 cores a second OpenMP thread mostly spins, and measured
    1.9x more CPU time for the same wall time (more under load). The products use numpy's BLAS threads.
    """

    def __init__(self, device: torch.device):
        self._cpu = device.type == "cpu"

    def __enter__(self):
        self._prev = torch.get_num_threads()
        if self._cpu:
            torch.set_num_threads(1)

    def __exit__(self, *exc):
        torch.set_num_threads(self._prev)


class _HighestMatmulPrecision:
    """Force IEEE float32 products (no TF32/bf16 shortcuts) while the distances are computed."""

    def __enter__(self):
        self._prev = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc):
        torch.set_float32_matmul_precision(self._prev)


def _duplicate_groups(arr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group voxel columns with bit-identical series.

    Returns
    -------
    group : int64 array of shape (n_voxels,)
        Group id of every voxel; groups are numbered in order of their lowest voxel index.
    first : int64 array of shape (n_groups,)
        Lowest voxel index of every group.
    """
    import hashlib

    n_voxels = arr.shape[1]
    digests = np.empty(n_voxels, dtype="S16")
    for start in range(0, n_voxels, _ZSCORE_CHUNK):
        block = np.ascontiguousarray(arr[:, start:start + _ZSCORE_CHUNK].T)
        digests[start:start + block.shape[0]] = [hashlib.blake2b(row.tobytes(), digest_size=16).digest()
                                                 for row in block]
    _, first, group = np.unique(digests, return_index=True, return_inverse=True)
    # np.unique numbers groups by digest; renumber them by their lowest voxel index.
    rank = np.empty_like(first)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    group, first = rank[group.ravel()], np.sort(first)
    # A 128-bit digest collision is practically impossible, but equality is cheap to confirm.
    dup = np.flatnonzero(first[group] != np.arange(n_voxels))
    if dup.size and not np.array_equal(arr[:, dup], arr[:, first[group[dup]]]):
        raise RuntimeError("hash collision between different voxel series")
    return group.astype(np.int64), first.astype(np.int64)


def _knn_search(z: torch.Tensor, k: int, rows: int, cols: int, progress: bool):
    """Top-k similarities of every row of unit-norm ``z`` (self first as +inf), tiled and symmetric.

    Returns ``(index, similarity)``, tensors of shape (n, k) ordered by (similarity desc, index asc).
    """
    n, device = z.shape[0], z.device
    best_val = torch.full((n, k), -math.inf, dtype=torch.float32, device=device)
    # Placeholder index n loses every tie against a real voxel.
    best_idx = torch.full((n, k), n, dtype=torch.int64, device=device)
    buffer = torch.empty(rows * cols, dtype=torch.float32, device=device)
    strips = range(0, n, rows)
    if progress:
        from tqdm.auto import tqdm
        strips = tqdm(strips, desc="kNN strips", unit="strip")
    with _HighestMatmulPrecision(), _single_torch_thread(device):
        for a in strips:
            a_end = min(a + rows, n)
            for b in range(a, n, cols):
                b_end = min(b + cols, n)
                tile = buffer[: (a_end - a) * (b_end - b)].view(a_end - a, b_end - b)
                _similarity_tile(tile, z[a:a_end], z[b:b_end])
                if b == a:
                    # Self similarity made +inf so every voxel lists itself first.
                    tile.diagonal().fill_(math.inf)
                for q, j, v in _candidates(tile, 1, best_val[a:a_end, -1], k):
                    _merge(best_val, best_idx, q + a, j + b, v)
                # Column reading: later voxels (outside this strip) as queries, the strip as neighbours.
                first_col = a_end if b == a else b
                if first_col < b_end:
                    for q, j, v in _candidates(tile[:, first_col - b:], 0, best_val[first_col:b_end, -1], k):
                        _merge(best_val, best_idx, q + first_col, j + a, v)
    return best_idx, best_val


def _expand_groups(g_idx: np.ndarray, g_sim: np.ndarray, group: np.ndarray, k: int):
    """Neighbour lists of voxels from neighbour lists of their duplicate groups.

    Each group stands for all its voxels at one distance (0 within the group). A voxel's list is itself,
    then the voxels of its group's neighbour groups ordered by (distance, voxel index), cut at k.
    """
    n_voxels, n_groups = group.size, g_idx.shape[0]
    dist = np.clip(1.0 - g_sim.astype(np.float64), 0.0, 2.0).astype(np.float32)
    dist[:, 0] = 0.0
    members = np.argsort(group, kind="stable")                      # voxels, grouped, ascending index
    size = np.bincount(group, minlength=n_groups)
    start = np.cumsum(size) - size
    # Flatten every (group, neighbour group) entry into its member voxels.
    count = size[g_idx]                                              # (n_groups, k_g)
    seg = np.repeat(np.arange(n_groups), count.sum(axis=1))
    entry = np.repeat(np.arange(g_idx.size), count.ravel())
    within = np.arange(entry.size) - np.repeat(np.cumsum(count.ravel()) - count.ravel(), count.ravel())
    voxel = members[start[g_idx.ravel()[entry]] + within]
    d = dist.ravel()[entry]
    order = np.lexsort((voxel, d, seg))
    voxel, d = voxel[order], d[order]
    seg_start = np.cumsum(count.sum(axis=1)) - count.sum(axis=1)
    # Every group's list holds at least k voxels; take each voxel's first k, itself moved to the front.
    pos = seg_start[group][:, None] + np.arange(k)
    head, head_d = voxel[pos], d[pos]
    others = np.argsort(head == np.arange(n_voxels)[:, None], axis=1, kind="stable")[:, : k - 1]
    idx = np.empty((n_voxels, k), dtype=np.int64)
    out = np.zeros((n_voxels, k), dtype=np.float32)
    idx[:, 0] = np.arange(n_voxels)
    idx[:, 1:] = np.take_along_axis(head, others, axis=1)
    out[:, 1:] = np.take_along_axis(head_d, others, axis=1)
    return idx, out


def knn_correlation(series, *, k: int = 15, chunk: int | None = None, device,
                    memory_budget_gb: float = 1.0, progress: bool = False):
    """Exact k nearest neighbours of every voxel under correlation distance ``1 - r``.

    The search never holds more than one similarity tile (see :func:`knn_tile_shape`). Voxels are cut
    into strips of ``rows`` query voxels; strip ``i`` is multiplied only with itself and the voxels after
    it, and every tile is read twice: along its rows (neighbours of the strip's voxels) and along its
    columns (neighbours of the later voxels). That uses the symmetry of the RDM and halves the matrix
    products. Entries that cannot reach a voxel's top k are discarded by a test on maxima over small groups
    of entries before anything is sorted, so the selection costs far less than the products.

    Voxels with bit-identical series are searched once: they are at distance exactly 0 from each other and
    tie with each other everywhere, so ties between duplicates are resolved by index rather than by the
    rounding of the matrix product.

    Parameters
    ----------
    series : array of shape (n_samples, n_voxels)
        Predicted test series, one column per voxel (sample-major, as out of the encoding model).
    k : int
        Neighbours per voxel, the voxel itself included (UMAP's convention), ``k < n_voxels``.
    chunk : int, optional
        Query voxels per strip; default chosen from ``memory_budget_gb`` (at most 4096).
    device : torch.device or str
        Where the products run ("cpu", "cuda", ...). Results agree across devices to float32 rounding.
    memory_budget_gb : float
        Working memory for one similarity tile and its temporaries, on ``device``.
    progress : bool
        Show a tqdm progress bar over strips.

    Returns
    -------
    indices : int64 array of shape (n_voxels, k)
        Neighbour voxel columns, nearest first. ``indices[i, 0] == i``.
    distances : float32 array of shape (n_voxels, k)
        Correlation distances ``1 - r`` in [0, 2], non-decreasing along each row; ``distances[:, 0] == 0``.
        Equal distances are ordered by lower voxel index, and among voxels tied at the k-th place the lower
        indices enter the list (ties are decided on the float32 similarity).

    Raises
    ------
    InputError
        For a series that is not 2-D, non-finite or has constant voxels, or ``k`` not in [1, n_voxels).
    """
    arr = _check_series(series, field="series")
    n_voxels = arr.shape[1]
    k = check_positive_int(k, field="k", source="rsa")
    if k >= n_voxels:
        raise InputError(f"expected k < n_voxels = {n_voxels} (k counts the voxel itself), found k = {k}; "
                         "lower k or include more voxels", source="rsa", field="k")
    device = resolve_device(device)
    group, first = _duplicate_groups(arr)
    n_groups = first.size
    z = _voxel_major_z(arr, device, field="series", columns=first)
    # Each group stands for at least one voxel, so k groups always cover k voxels.
    k_groups = min(k, n_groups)
    if n_groups > 1:
        rows, cols = knn_tile_shape(n_groups, memory_budget_gb=memory_budget_gb, chunk=chunk)
        g_idx, g_sim = _knn_search(z, k_groups, rows, cols, progress)
        g_idx, g_sim = g_idx.cpu().numpy(), g_sim.cpu().numpy()
    else:
        g_idx, g_sim = np.zeros((1, 1), np.int64), np.full((1, 1), np.inf, np.float32)
    return _expand_groups(g_idx, g_sim, group, k)


# ------------------------------------------------------------------------------------- voxel selection
