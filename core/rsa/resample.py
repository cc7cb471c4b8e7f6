"""Uncertainty and reference scales of the RDM agreement, on a fixed set of voxel pairs.

Two resampling schemes, each answering its own question:

- test samples in blocks (circular block bootstrap, :func:`core.contrasts.block_bootstrap_counts`): every
  resample recomputes both conditions' pair correlations from the resampled rows, then their agreement. How
  much the agreement would move with another draw of test stimuli from the same (autocorrelated) sequence.
- voxels with replacement: voxel i drawn c_i times gives pair (i, j) the weight c_i c_j (pairs of a voxel with
  its own copies, zero distance in both RDMs, are left out). How much it would move with another draw of
  voxels from the same population.

The pair-sampling Monte-Carlo error of the estimate itself is :func:`core.rsa.agreement.rdm_agreement`'s
(zero when every pair is used).
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["sample_resamples", "voxel_resamples", "rdm_pairs", "pair_agreement", "split_half_ceiling"]

_CHUNK = 8192


def _z(series: np.ndarray) -> np.ndarray:
    """Column z-scores (population SD), float64; constant columns become 0."""
    x = np.asarray(series, dtype=np.float64)
    x = x - x.mean(0)
    sd = np.sqrt((x * x).mean(0))
    return x / np.where(sd > 0, sd, 1.0)


def rdm_pairs(series, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Correlation distances ``1 - r`` of voxel pairs (i[p], j[p]), series (n_samples, n_voxels) -> (n_pairs,)."""
    z = _z(series)
    return 1.0 - np.einsum("tp,tp->p", z[:, i], z[:, j]) / z.shape[0]


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks along the last axis (ties broken by order: the distances are continuous)."""
    order = np.argsort(x, axis=-1, kind="stable")
    r = np.empty_like(order, dtype=np.float64)
    np.put_along_axis(r, order, np.broadcast_to(np.arange(x.shape[-1], dtype=np.float64), x.shape), axis=-1)
    return r


def _rowcorr(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x = x - x.mean(-1, keepdims=True)
    y = y - y.mean(-1, keepdims=True)
    return (x * y).sum(-1) / np.sqrt((x * x).sum(-1) * (y * y).sum(-1))


def pair_agreement(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Pearson and Spearman correlation of two RDMs' pair distances."""
    return float(_rowcorr(x, y)), float(_rowcorr(_ranks(x), _ranks(y)))


def _resampled_distances(series: np.ndarray, i, j, W: torch.Tensor) -> np.ndarray:
    """Pair distances in every test-sample resample: W (B, n) counts -> (B, n_pairs) float32."""
    n = W.shape[1]
    z = torch.as_tensor(_z(series), dtype=torch.float64)
    Wd = W.double()
    S = Wd @ z / n                                              # (B, v) resampled means
    V = Wd @ (z * z) / n - S * S                                # resampled variances
    inv = torch.where(V > 0, V, torch.nan).rsqrt()
    out = np.empty((W.shape[0], i.size), np.float32)
    for start in range(0, i.size, _CHUNK):
        ii = torch.as_tensor(i[start:start + _CHUNK])
        jj = torch.as_tensor(j[start:start + _CHUNK])
        cross = Wd @ (z[:, ii] * z[:, jj]) / n
        r = (cross - S[:, ii] * S[:, jj]) * inv[:, ii] * inv[:, jj]
        out[:, start:start + ii.numel()] = (1.0 - r).float().numpy()
    return out


def sample_resamples(series_a, series_b, i, j, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Agreement (Pearson, Spearman) in each test-sample resample on the fixed pairs (i, j).

    Parameters
    ----------
    series_a, series_b : arrays of shape (n_samples, n_voxels)
    i, j : int arrays of shape (n_pairs,)
    counts : array of shape (n_boot, n_samples)
        How often each test sample is drawn in each resample (:func:`core.contrasts.block_bootstrap_counts`).

    Returns
    -------
    pearson, spearman : ndarrays of shape (n_boot,)
    """
    W = torch.as_tensor(np.asarray(counts, dtype=np.float64))
    x = _resampled_distances(np.asarray(series_a), i, j, W).astype(np.float64)
    y = _resampled_distances(np.asarray(series_b), i, j, W).astype(np.float64)
    ok = np.isfinite(x).all(1) & np.isfinite(y).all(1)
    pearson = np.full(W.shape[0], np.nan)
    spearman = np.full(W.shape[0], np.nan)
    pearson[ok] = _rowcorr(x[ok], y[ok])
    spearman[ok] = _rowcorr(_ranks(x[ok]), _ranks(y[ok]))
    return pearson, spearman


def _weighted_corr(x, y, w):
    sw = w.sum(-1, keepdims=True)
    mx, my = (w * x).sum(-1, keepdims=True) / sw, (w * y).sum(-1, keepdims=True) / sw
    dx, dy = x - mx, y - my
    return (w * dx * dy).sum(-1) / np.sqrt((w * dx * dx).sum(-1) * (w * dy * dy).sum(-1))


def _weighted_midranks(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Mid-ranks of x in a sample where item p appears w[b, p] times, for each row b of w."""
    order = np.argsort(x, kind="stable")
    ws = w[:, order]
    before = np.cumsum(ws, axis=1) - ws
    ranks = np.empty_like(ws, dtype=np.float64)
    ranks[:, order] = before + (ws + 1) / 2.0
    return ranks


def voxel_resamples(x: np.ndarray, y: np.ndarray, i, j, n_voxels: int, n_boot: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Agreement (Pearson, Spearman) of the pair distances x, y when the voxels are resampled with replacement.

    Voxel v drawn c_v times (multinomial, n_voxels draws) weighs pair (i, j) by c_i c_j; Spearman uses the
    weighted mid-ranks of the resample.

    Returns
    -------
    pearson, spearman : ndarrays of shape (n_boot,)
    """
    rng = np.random.default_rng([seed, 13])
    pearson, spearman = np.empty(n_boot), np.empty(n_boot)
    step = max(1, 2 ** 22 // max(1, x.size))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        c = rng.multinomial(n_voxels, np.full(n_voxels, 1.0 / n_voxels), size=b).astype(np.float64)
        w = c[:, i] * c[:, j]
        pearson[start:start + b] = _weighted_corr(x[None], y[None], w)
        spearman[start:start + b] = _weighted_corr(_weighted_midranks(x, w), _weighted_midranks(y, w), w)
    return pearson, spearman


def split_half_ceiling(repeats, i, j) -> dict:
    """Reliability of the measured-response RDM from its repeats, over pairs (i, j).

    The repeats are split into their first and second halves (in order; the middle one of an odd count goes
    to the first half), each half averaged; the two halves' RDMs are correlated and Spearman-Brown corrected
    to the full number of repeats, ``2 rho / (1 + rho)``: the agreement a predicted RDM could reach with the
    measured (all-repeat-averaged) RDM if it were the noise-free one.

    Parameters
    ----------
    repeats : array of shape (n_repeats >= 2, n_samples, n_voxels)
    i, j : int arrays of shape (n_pairs,)

    Returns
    -------
    dict
        ``pearson``, ``spearman`` (Spearman-Brown corrected), ``pearson_half``, ``spearman_half`` (raw),
        ``n_repeats``.
    """
    R = np.asarray(repeats)
    k = (R.shape[0] + 1) // 2
    half_a = rdm_pairs(R[:k].mean(0), i, j)
    half_b = rdm_pairs(R[k:].mean(0), i, j)
    p, s = pair_agreement(half_a, half_b)
    sb = lambda r: float(2 * r / (1 + r)) if np.isfinite(r) and r > -1 else float("nan")  # noqa: E731
    return {"pearson": sb(p), "spearman": sb(s), "pearson_half": p, "spearman_half": s, "n_repeats": int(R.shape[0])}
