"""UMAP's layout optimisation, run on every core and reproducible whatever their number.

umap-learn optimises the layout one edge at a time, in place, on one thread when seeded (its parallel mode is
"Hogwild": the result then depends on thread timing). At the study's scale that loop is most of the UMAP's
time (25 s per 50,000-voxel condition here, on one core). This module runs the same objective, schedule and
gradients as umap-learn's ``optimize_layout_euclidean`` (attraction along the fuzzy graph's edges sampled in
proportion to their weight, ``negative_sample_rate`` repulsive samples per attraction, gradients clipped to
[-4, 4], learning rate decaying linearly to 0), but synchronously: every epoch reads the layout as it was at
the start of the epoch, and each vertex sums its own updates in a fixed order, drawing its negative samples
from a counter-based generator keyed by (seed, epoch, edge). Vertices are independent within an epoch, so they
run in parallel, and the result is bit-identical for any thread count.

An edge and its reverse are both in the symmetric fuzzy graph and are due in the same epochs; in umap-learn
each moves both of its ends ("move_other"), so a vertex gets its attraction from the edge twice per sample.
Here each vertex applies twice the attraction of its own edges, which is the same total.
"""
from __future__ import annotations

import numba
import numpy as np

__all__ = ["optimize_layout"]


@numba.njit(cache=True, inline="always")
def _mix(z):
    """splitmix64's finaliser: a well-mixed 64-bit value from a counter."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _clip(v):
    return 4.0 if v > 4.0 else (-4.0 if v < -4.0 else v)


@numba.njit(parallel=True, cache=True)
def _epoch(current, updated, indptr, tail, epochs_per_sample, next_sample, epochs_per_negative,
           next_negative, a, b, gamma, alpha, epoch, key):
    n_vertices, dim = current.shape
    for i in numba.prange(n_vertices):
        for d in range(dim):
            updated[i, d] = current[i, d]
        for e in range(indptr[i], indptr[i + 1]):
            if next_sample[e] > epoch:
                continue
            j = tail[e]
            dist2 = 0.0
            for d in range(dim):
                diff = current[i, d] - current[j, d]
                dist2 += diff * diff
            if dist2 > 0.0:
                coeff = -2.0 * a * b * dist2 ** (b - 1.0) / (a * dist2 ** b + 1.0)
                for d in range(dim):
                    updated[i, d] += 2.0 * _clip(coeff * (current[i, d] - current[j, d])) * alpha
            next_sample[e] += epochs_per_sample[e]

            n_neg = int((epoch - next_negative[e]) / epochs_per_negative[e])
            counter = _mix(key ^ _mix(np.uint64(epoch) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(e)))
            for p in range(n_neg):
                counter = _mix(counter + np.uint64(0x9E3779B97F4A7C15))
                k = np.int64(counter % np.uint64(n_vertices))
                if k == i:
                    continue
                dist2 = 0.0
                for d in range(dim):
                    diff = current[i, d] - current[k, d]
                    dist2 += diff * diff
                if dist2 > 0.0:
                    coeff = 2.0 * gamma * b / ((0.001 + dist2) * (a * dist2 ** b + 1.0))
                    for d in range(dim):
                        updated[i, d] += _clip(coeff * (current[i, d] - current[k, d])) * alpha
            next_negative[e] += n_neg * epochs_per_negative[e]


def optimize_layout(init: np.ndarray, graph, a: float, b: float, n_epochs: int, seed: int, *,
                    negative_sample_rate: int = 5, gamma: float = 1.0, initial_alpha: float = 1.0) -> np.ndarray:
    """Optimise a UMAP layout of ``graph`` from ``init``.

    Parameters
    ----------
    init : float array of shape (n_vertices, dim)
        Starting layout (umap-learn scales it to [0, 10] first; so does this function).
    graph : scipy sparse matrix of shape (n_vertices, n_vertices)
        The symmetric fuzzy simplicial set, already pruned of edges too weak to be sampled in ``n_epochs``.
    a, b : float
        The low-dimensional similarity curve ``1 / (1 + a d^(2b))`` (umap's ``find_ab_params``).
    n_epochs : int
        Epochs; an edge of the largest weight is sampled once per epoch.
    seed : int
        Seeds the negative samples.

    Returns
    -------
    float32 array of shape (n_vertices, dim)
    """
    from umap.umap_ import make_epochs_per_sample

    g = graph.tocsr(copy=True)
    g.sum_duplicates()
    g.sort_indices()
    emb = np.asarray(init, dtype=np.float64)
    emb = 10.0 * (emb - emb.min(0)) / (emb.max(0) - emb.min(0))
    current = np.ascontiguousarray(emb, dtype=np.float32)
    updated = np.empty_like(current)
    epochs_per_sample = make_epochs_per_sample(g.data, n_epochs).astype(np.float64)
    next_sample = epochs_per_sample.copy()
    epochs_per_negative = epochs_per_sample / negative_sample_rate
    next_negative = epochs_per_negative.copy()
    indptr, tail = g.indptr.astype(np.int64), g.indices.astype(np.int64)
    key = np.uint64(np.random.SeedSequence(seed).generate_state(1, dtype=np.uint64)[0])
    for epoch in range(n_epochs):
        alpha = initial_alpha * (1.0 - epoch / n_epochs)
        _epoch(current, updated, indptr, tail, epochs_per_sample, next_sample, epochs_per_negative, next_negative,
               float(a), float(b), float(gamma), float(alpha), epoch, key)
        current, updated = updated, current
    return current
