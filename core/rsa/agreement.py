"""On-vs-off RDM agreement over voxel pairs: its value, its intervals (test samples in blocks, voxels) and the
Monte-Carlo error of the pair sample (a Poisson bootstrap over the pairs), and its reference scales."""
from __future__ import annotations

__all__ = ["rdm_agreement", "rdm_reference_scales", "splitmix_mix", "SPLITMIX_GAMMA"]


import numba
import numpy as np
import torch

from core._validation import InputError, check_positive_int
from core.device import resolve_device
from core.rsa.knn import _check_series, _voxel_major_z

_PAIR_CHUNK = 16384


def _sample_pairs(n_voxels: int, n_pairs: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """i.i.d. uniform voxel pairs i < j (with replacement); all pairs, in order, if there are few enough."""
    n_all = n_voxels * (n_voxels - 1) // 2
    if n_pairs >= n_all:
        i, j = np.triu_indices(n_voxels, k=1)
        return i.astype(np.int64), j.astype(np.int64)
    rng = np.random.default_rng(seed)
    i = rng.integers(0, n_voxels, size=n_pairs)
    j = rng.integers(0, n_voxels - 1, size=n_pairs)
    j += j >= i  # uniform over the n - 1 voxels other than i
    return np.minimum(i, j), np.maximum(i, j)


def _pair_dissimilarity(z: torch.Tensor, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``1 - r`` for voxel pairs (i[p], j[p]) from voxel-major unit-norm ``z``, in float64."""
    out = np.empty(i.size, dtype=np.float64)
    for start in range(0, i.size, _PAIR_CHUNK):
        stop = min(start + _PAIR_CHUNK, i.size)
        ii = torch.from_numpy(i[start:stop]).to(z.device)
        jj = torch.from_numpy(j[start:stop]).to(z.device)
        r = torch.einsum("pd,pd->p", z[ii].double(), z[jj].double())
        out[start:stop] = 1.0 - r.cpu().numpy()
    return out


@numba.njit(cache=True)
def _corr_from_sums(total, sx, sy, sxx, syy, sxy):
    cov = sxy / total - (sx / total) * (sy / total)
    return cov / np.sqrt((sxx / total - (sx / total) ** 2) * (syy / total - (sy / total) ** 2))


#: splitmix64's state increment (the golden ratio in 64 bits).
SPLITMIX_GAMMA = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, inline="always")
def splitmix_mix(z):
    """splitmix64's finaliser: a well-mixed 64-bit value from a counter (also core.embedding.layout's generator)."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@numba.njit(cache=True, inline="always")
def _splitmix64(state):
    """Next state and a uniform float in [0, 1): a tiny, fast generator each resample seeds on its own."""
    state = state + SPLITMIX_GAMMA
    return state, (splitmix_mix(state) >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@numba.njit(parallel=True, cache=True)
def _bootstrap_kernel(x_sorted, y_in_x_order, y_sorted, y_pos_in_x_order, poisson_cdf, seeds):
    """Pearson and Spearman of one Poisson-weighted resample of the pairs per seed.

    Each pair is drawn ``w ~ Poisson(1)`` times, independently (the Poisson bootstrap: asymptotically the
    multinomial bootstrap, but generated in one sequential pass). Weights are laid out in x-sorted and
    y-sorted order; a drawn pair's average rank in the resample is the weight of the pairs before it plus
    ``(w + 1) / 2``, a running sum, so every resample is re-ranked in O(n_pairs) without sorting.
    """
    n = x_sorted.size
    pearson = np.empty(seeds.size)
    spearman = np.empty(seeds.size)
    for r in numba.prange(seeds.size):
        state = np.uint64(seeds[r])
        wx = np.empty(n, np.uint8)
        wy = np.zeros(n, np.uint8)
        total = 0
        sx = sxx = sxy = 0.0
        for p in range(n):
            state, u = _splitmix64(state)
            w = 0
            while w < poisson_cdf.size - 1 and u > poisson_cdf[w]:
                w += 1
            wx[p] = w
            wy[y_pos_in_x_order[p]] = w
            total += w
            sx += w * x_sorted[p]
            sxx += w * x_sorted[p] * x_sorted[p]
            sxy += w * x_sorted[p] * y_in_x_order[p]
        mid = (total + 1) / 2.0  # centring the ranks keeps their float64 sums exact
        rank_y = np.empty(n, np.float32)  # half-integers below 2^24: exact in float32
        before = 0
        sy = syy = ry = ryy = 0.0
        for p in range(n):
            w = wy[p]
            rank_y[p] = before + (w + 1) / 2.0
            before += w
            c = rank_y[p] - mid
            sy += w * y_sorted[p]
            syy += w * y_sorted[p] * y_sorted[p]
            ry += w * c
            ryy += w * c * c
        before = 0
        rx = rxx = rxy = 0.0
        for p in range(n):
            w = wx[p]
            if w:
                c = before + (w + 1) / 2.0 - mid
                rx += w * c
                rxx += w * c * c
                rxy += w * c * (rank_y[y_pos_in_x_order[p]] - mid)
                before += w
        pearson[r] = _corr_from_sums(total, sx, sy, sxx, syy, sxy)
        spearman[r] = _corr_from_sums(total, rx, ry, rxx, ryy, rxy)
    return pearson, spearman


def _bootstrap(x: np.ndarray, y: np.ndarray, n_boot: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson and Spearman of the pairs' dissimilarities over ``n_boot`` Poisson bootstrap resamples.

    Runs on the CPU (numba, parallel over resamples; each resample has its own seed, so the result does not
    depend on the thread count).
    """
    from scipy.stats import poisson

    if x.size >= 2**24:
        raise InputError(f"expected fewer than {2**24} pairs for the bootstrap, found {x.size}",
                         source="rsa", field="n_pairs")
    ox, oy = np.argsort(x, kind="stable"), np.argsort(y, kind="stable")
    y_pos = np.empty(x.size, np.int32)
    y_pos[oy] = np.arange(x.size, dtype=np.int32)
    xc, yc = x - x.mean(), y - y.mean()
    # Inverse-CDF table of Poisson(1); counts above 20 have probability < 1e-19.
    cdf = poisson.cdf(np.arange(21), 1.0)
    cdf[-1] = 1.0
    seeds = np.random.default_rng([seed, 1]).integers(0, 2**63 - 1, n_boot, dtype=np.int64)
    return _bootstrap_kernel(xc[ox], yc[ox], yc[oy], y_pos[ox], cdf, seeds)


def rdm_agreement(series_a, series_b, *, n_pairs: int = 1_000_000, seed: int = 0, n_boot: int = 1000,
                  device, n_boot_samples: int = 200, n_boot_voxels: int = 200, block_length: int = 0,
                  n_pairs_resampled: int = 20_000, ci: float = 0.95) -> dict:
    """Agreement of two conditions' RDMs over a seeded random sample of voxel pairs, with its intervals.

    The two RDMs are compared on the same pairs: Pearson and Spearman correlation of their correlation
    distances. Pairs (i < j, no self pairs) are drawn uniformly with replacement; if ``n_pairs`` reaches
    the number of distinct pairs, every pair is used once instead (the value is then exact for these voxels
    and test samples).

    Three kinds of uncertainty, reported apart:

    - ``<stat>_ci`` (the headline interval): test samples resampled in circular blocks (``n_boot_samples``
      resamples; block length from the series' autocorrelation unless given), the agreement recomputed per
      resample on a fixed subset of ``n_pairs_resampled`` pairs. The percentile spread is placed around the
      estimate (``estimate + quantiles(resampled - subset value)``).
    - ``<stat>_ci_voxels``: voxels resampled with replacement (:func:`core.rsa.resample.voxel_resamples`) on
      the same subset.
    - ``<stat>_mc_se`` and ``<stat>_ci_pairs``: the Monte-Carlo error of the pair sample, from ``n_boot``
      Poisson bootstrap resamples of the pairs (each pair weighted by an independent Poisson(1) count;
      Spearman re-ranked in every resample); 0 and the point itself when every pair is used.

    Parameters
    ----------
    series_a, series_b : arrays of shape (n_samples, n_voxels)
        Predicted test series of the two conditions on the same voxels (same column order).
    n_pairs : int
        Voxel pairs to sample (the study's scale calls for >= 1e6; at most 2^24 for the bootstrap).
    seed : int
        Seeds the pair sample and every resample.
    n_boot : int
        Poisson bootstrap resamples of the pairs.
    device : torch.device or str
        Where the pairs' dot products run. The resampling runs on the CPU.
    n_boot_samples, n_boot_voxels : int
        Test-sample and voxel resamples (0 = not computed; the ``_ci`` / ``_ci_voxels`` keys are then absent).
    block_length : int
        Test samples per block; 0 = chosen from the data (:func:`core.contrasts.choose_block_length`).
    n_pairs_resampled : int
        Pairs of the fixed subset the resamples use (bounds their cost at any voxel count).
    ci : float
        Coverage of the intervals.

    Returns
    -------
    dict
        ``pearson``, ``spearman`` (float), ``n_pairs`` (int, pairs used), ``all_pairs`` (bool),
        ``pearson_mc_se``, ``spearman_mc_se``, ``pearson_ci_pairs``, ``spearman_ci_pairs``; with resamples
        ``pearson_ci``, ``spearman_ci``, ``pearson_sd_samples``, ``spearman_sd_samples``, ``block_length``,
        ``n_boot_samples``, ``pearson_ci_voxels``, ``spearman_ci_voxels``, ``n_boot_voxels``,
        ``n_pairs_resampled``; ``ci`` (coverage) and ``resamples`` (what each interval resamples).
    """
    from core.contrasts import BLOCK_FACTOR, block_bootstrap_counts, choose_block_length
    from core.rsa import resample

    a = _check_series(series_a, field="series_a")
    b = _check_series(series_b, field="series_b")
    if a.shape[1] != b.shape[1]:
        raise InputError(f"expected the same voxels in both conditions, found {a.shape[1]} and {b.shape[1]} "
                         "columns; select voxels with the 'union' or 'all' rule", source="rsa", field="series_b")
    n_pairs = check_positive_int(n_pairs, field="n_pairs", source="rsa")
    n_boot = check_positive_int(n_boot, field="n_boot", source="rsa")
    for name, v in (("n_boot_samples", n_boot_samples), ("n_boot_voxels", n_boot_voxels),
                    ("block_length", block_length)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise InputError(f"expected 0 or a positive integer, found {v!r}", source="rsa", field=name)
    n_pairs_resampled = check_positive_int(n_pairs_resampled, field="n_pairs_resampled", source="rsa")
    device = resolve_device(device)
    n_all = a.shape[1] * (a.shape[1] - 1) // 2
    i, j = _sample_pairs(a.shape[1], n_pairs, seed)
    x = _pair_dissimilarity(_voxel_major_z(a, device, field="series_a"), i, j)
    y = _pair_dissimilarity(_voxel_major_z(b, device, field="series_b"), i, j)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        raise InputError(f"the {x.size} sampled pairs have constant dissimilarity in one condition; "
                         "a correlation between the RDMs is undefined", source="rsa", field="series")
    from scipy.stats import rankdata
    pearson = float(np.corrcoef(x, y)[0, 1])
    spearman = float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])
    q = [100 * (1 - ci) / 2, 100 * (1 + ci) / 2]
    pct = lambda v: tuple(float(t) for t in np.nanpercentile(v, q))  # noqa: E731
    out = {"pearson": pearson, "spearman": spearman, "n_pairs": int(x.size), "all_pairs": bool(n_pairs >= n_all),
           "ci": float(ci)}
    if out["all_pairs"]:
        out.update(pearson_mc_se=0.0, spearman_mc_se=0.0, pearson_ci_pairs=(pearson, pearson),
                   spearman_ci_pairs=(spearman, spearman))
    else:
        boot_p, boot_s = _bootstrap(x, y, n_boot, seed)
        out.update(pearson_mc_se=float(np.std(boot_p, ddof=1)), spearman_mc_se=float(np.std(boot_s, ddof=1)),
                   pearson_ci_pairs=pct(boot_p), spearman_ci_pairs=pct(boot_s))
    resamples = {"ci_pairs": "voxel pairs (Monte-Carlo error of the pair sample; 0 with every pair)"}
    if n_boot_samples or n_boot_voxels:
        m = min(n_pairs_resampled, x.size)
        sub = np.sort(np.random.default_rng([seed, 17]).choice(x.size, m, replace=False)) if m < x.size \
            else np.arange(x.size)
        si, sj = i[sub], j[sub]
        sub_p, sub_s = resample.pair_agreement(x[sub], y[sub])
        out["n_pairs_resampled"] = int(m)
        shifted = lambda draws, est, at: tuple(est + t - at for t in pct(draws))  # noqa: E731
        if n_boot_samples:
            n = a.shape[0]
            if block_length == 0:
                cols = np.random.default_rng([seed, 19]).choice(a.shape[1], min(a.shape[1], 2000), replace=False)
                block_length = min(BLOCK_FACTOR * choose_block_length(a[:, np.sort(cols)], seed=seed), n // 4)
            counts = block_bootstrap_counts(n, max(1, int(block_length)), n_boot_samples, seed)
            bp, bs = resample.sample_resamples(a, b, si, sj, counts)
            out.update(pearson_ci=shifted(bp, pearson, sub_p), spearman_ci=shifted(bs, spearman, sub_s),
                       pearson_sd_samples=float(np.nanstd(bp, ddof=1)), spearman_sd_samples=float(np.nanstd(bs, ddof=1)),
                       block_length=int(block_length), n_boot_samples=int(n_boot_samples))
            resamples["ci"] = "test samples in circular blocks (pairs and voxels fixed)"
        if n_boot_voxels:
            vp, vs = resample.voxel_resamples(x[sub], y[sub], si, sj, a.shape[1], n_boot_voxels, seed)
            out.update(pearson_ci_voxels=shifted(vp, pearson, sub_p), spearman_ci_voxels=shifted(vs, spearman, sub_s),
                       n_boot_voxels=int(n_boot_voxels))
            resamples["ci_voxels"] = "voxels with replacement (test samples fixed)"
    out["resamples"] = resamples
    return out


def rdm_reference_scales(series: dict, measured, repeats=None, *, n_pairs: int = 200_000, seed: int = 0) -> dict:
    """What the on-vs-off agreement is to be read against, on one seeded sample of voxel pairs.

    - ``uniform_off``: the agreement of the uniform-gain RDM with the off RDM (where ``uniform`` is given):
      how far a gain change without spatial focus moves the RDM.
    - ``measured``: per condition, the agreement of its predicted RDM with the measured-response RDM (from the
      repeat-averaged test responses).
    - ``ceiling`` (with repeats): the split-half reliability of the measured RDM, Spearman-Brown corrected
      (:func:`core.rsa.resample.split_half_ceiling`): the most a predicted RDM can agree with the measured one.

    Parameters
    ----------
    series : dict of condition -> array of shape (n_samples, n_voxels)
        Predicted test series on the same voxels.
    measured : array of shape (n_samples, n_voxels)
    repeats : array of shape (n_repeats, n_samples, n_voxels), optional
    n_pairs, seed : int
        The pair sample (all pairs when there are fewer).

    Returns
    -------
    dict with ``pearson`` / ``spearman`` entries and ``n_pairs``.
    """
    from core.rsa import resample
    measured = _check_series(measured, field="measured")
    n_vox = measured.shape[1]
    for m, s_ in series.items():
        if np.shape(s_) != measured.shape:
            raise InputError(f"expected shape {measured.shape} like the measured series, found {np.shape(s_)}",
                             source="rsa", field=f"series[{m!r}]")
    i, j = _sample_pairs(n_vox, check_positive_int(n_pairs, field="n_pairs", source="rsa"), seed)
    d = {m: resample.rdm_pairs(s_, i, j) for m, s_ in series.items()}
    dm = resample.rdm_pairs(measured, i, j)
    as_dict = lambda ps: {"pearson": ps[0], "spearman": ps[1]}  # noqa: E731
    out: dict = {"n_pairs": int(i.size), "measured": {m: as_dict(resample.pair_agreement(v, dm)) for m, v in d.items()}}
    if "uniform" in d and "off" in d:
        out["uniform_off"] = as_dict(resample.pair_agreement(d["uniform"], d["off"]))
    if repeats is not None:
        R = np.asarray(repeats)
        if R.ndim != 3 or R.shape[1:] != measured.shape or R.shape[0] < 2:
            raise InputError(f"expected shape (n_repeats >= 2, {measured.shape[0]}, {n_vox}), found {R.shape}",
                             source="rsa", field="repeats")
        out["ceiling"] = resample.split_half_ceiling(R, i, j)
    return out
