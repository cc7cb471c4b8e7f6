"""Correlation-distance kNN graph and RDM summaries against float64 brute force, rsatoolbox and scipy."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import rankdata

from core._validation import InputError
from core.rsa import (
    SELECTION_RULES,
    knn_correlation,
    knn_jaccard,
    knn_tile_shape,
    rdm_agreement,
    roi_block_rdm,
    select_voxels,
    zscore_series,
)

K = 15
# float32 products of unit vectors over a few hundred samples are off by ~1e-7 typically and 2e-5 at the
# rigorous worst case (n_samples * 2^-24); the issue asks for 1e-5, which leaves ~100x headroom on typical data.
DIST_TOL = 1e-5


def clustered_series(rng, n_voxels, n_samples=300, n_latent=12, noise=1.0):
    """Predicted-series stand-in: each voxel follows one of ``n_latent`` time series plus mixing and noise."""
    latent = rng.standard_normal((n_samples, n_latent))
    mix = 0.3 * rng.standard_normal((n_latent, n_voxels))
    mix[rng.integers(0, n_latent, n_voxels), np.arange(n_voxels)] += 1.0
    return (latent @ mix + noise * rng.standard_normal((n_samples, n_voxels))).astype(np.float32)


def brute_force_distances(series):
    """Full correlation-distance matrix in float64 (the reference the kNN must reproduce)."""
    return 1.0 - np.corrcoef(np.asarray(series, dtype=np.float64).T)


def brute_force_knn(dist, k):
    """Self first, then (distance, index) order, from the dense float64 matrix."""
    d = dist.copy()
    np.fill_diagonal(d, -np.inf)
    index = np.broadcast_to(np.arange(d.shape[0]), d.shape)
    return np.lexsort((index, d), axis=1)[:, :k]


@pytest.fixture(scope="module")
def data_2000():
    rng = np.random.default_rng(2000)
    series = clustered_series(rng, 2000)
    dist = brute_force_distances(series)
    return series, dist, brute_force_knn(dist, K)


def assert_matches_brute_force(idx, dist, ref_dist, ref_idx):
    n, k = ref_idx.shape
    assert idx.shape == dist.shape == (n, k)
    assert idx.dtype == np.int64 and dist.dtype == np.float32
    rows = np.arange(n)[:, None]
    # Returned distances are the true (float64) distances of the returned neighbours...
    np.testing.assert_allclose(dist[:, 1:], ref_dist[rows, idx][:, 1:], atol=DIST_TOL, rtol=0)
    # ...and the sorted k-nearest distances equal the reference's.
    np.testing.assert_allclose(dist[:, 1:], ref_dist[rows, ref_idx][:, 1:], atol=DIST_TOL, rtol=0)
    # Same neighbour sets, except where float32 rounding may swap voxels tied (within DIST_TOL) at the k-th place.
    kth = ref_dist[np.arange(n), ref_idx[:, -1]]
    for i in np.flatnonzero((np.sort(idx, 1) != np.sort(ref_idx, 1)).any(1)):
        swapped = np.setxor1d(idx[i], ref_idx[i])
        assert np.all(np.abs(ref_dist[i, swapped] - kth[i]) <= DIST_TOL), f"voxel {i}: {swapped}"


@pytest.mark.parametrize("chunk", [None, 1, 7, 333, 2000], ids=lambda c: f"chunk={c}")
def test_knn_equals_float64_brute_force(data_2000, chunk):
    series, ref_dist, ref_idx = data_2000
    idx, dist = knn_correlation(series, k=K, chunk=chunk, device="cpu")
    assert_matches_brute_force(idx, dist, ref_dist, ref_idx)
    assert np.array_equal(idx[:, 0], np.arange(series.shape[1])) and np.all(dist[:, 0] == 0)
    assert np.all(np.diff(dist, axis=1) >= 0)


def test_knn_column_blocks_narrower_than_strips_change_nothing(data_2000):
    series, ref_dist, ref_idx = data_2000
    # 500 x 512 tiles: every strip spans several column blocks, the last one ragged.
    budget = 500 * 512 * 4 * 1.25 / 1e9
    assert knn_tile_shape(2000, memory_budget_gb=budget, chunk=500) == (500, 512)
    idx, dist = knn_correlation(series, k=K, chunk=500, device="cpu", memory_budget_gb=budget)
    assert_matches_brute_force(idx, dist, ref_dist, ref_idx)


def test_knn_ties_between_duplicated_voxels_go_to_lower_index(rng):
    base = rng.standard_normal((200, 60))
    # 20 copies of each series at scattered columns: more tied voxels (distance 0) than k.
    copy_of = rng.permutation(np.repeat(np.arange(60), 20))
    series = base[:, copy_of]
    first, _ = knn_correlation(series, k=K, chunk=333, device="cpu")
    for v in range(series.shape[1]):
        twins = np.flatnonzero(copy_of == copy_of[v])
        assert np.array_equal(first[v], np.concatenate([[v], twins[twins != v][: K - 1]]))
    # Deterministic across tilings: identical output.
    again, dist = knn_correlation(series, k=K, chunk=64, device="cpu")
    assert np.array_equal(first, again) and np.all(dist == 0)


def test_knn_ties_across_duplicate_groups_match_brute_force(rng):
    # Few distinct series, so k spans several groups of duplicates: the float64 reference's
    # (distance, index) order must be reproduced exactly, as duplicates tie exactly.
    for n_distinct, copies, k in ((3, 10, 15), (5, 4, 19), (1, 20, 5)):
        series = rng.standard_normal((50, n_distinct))[:, rng.permutation(np.repeat(np.arange(n_distinct), copies))]
        idx, _ = knn_correlation(series, k=k, device="cpu")
        # BLAS may round identical columns differently at different positions (one ulp, ~2e-16),
        # so the reference is rounded to 1e-12: exact ties tie again, and distinct groups
        # (distances apart by > 1e-3 here) keep their order.
        reference = np.round(brute_force_distances(series), 12)
        assert np.array_equal(idx, brute_force_knn(reference, k))


def test_memory_budget_sets_tile_size(data_2000):
    series, ref_dist, ref_idx = data_2000
    for budget in (1e-4, 1e-3, 0.05, 1.0, 8.0):
        rows, cols = knn_tile_shape(80_615, memory_budget_gb=budget)
        # The similarity tile (float32) plus 25 % for temporaries stays within the budget...
        assert rows * cols * 4 * 1.25 <= budget * 1e9
        assert rows <= cols <= 80_615 and rows % 64 == 0 and (cols % 64 == 0 or cols == 80_615)
    # ...and a small budget means small tiles (64 x 64 at 20 kB), 4096 query rows at 1 GB.
    assert knn_tile_shape(80_615, memory_budget_gb=2e-5) == (64, 64)
    assert knn_tile_shape(80_615, memory_budget_gb=1.0)[0] == 4096
    idx, dist = knn_correlation(series, k=K, device="cpu", memory_budget_gb=2e-5)
    assert_matches_brute_force(idx, dist, ref_dist, ref_idx)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_knn_cuda_matches_cpu(data_2000):
    series, ref_dist, ref_idx = data_2000
    idx, dist = knn_correlation(series, k=K, device="cuda")
    assert_matches_brute_force(idx, dist, ref_dist, ref_idx)


def test_zscore_dot_products_are_pearson(rng):
    series = clustered_series(rng, 300, n_samples=120)
    z = zscore_series(series)
    assert z.shape == series.shape and z.dtype == np.float32
    # float32 storage of unit vectors: each entry rounded to 2^-24 relative, sums of 120 products stay < 1e-6.
    np.testing.assert_allclose(z.T.astype(np.float64) @ z, np.corrcoef(series.T.astype(np.float64)), atol=1e-6)


@pytest.mark.parametrize("bad, match", [
    (np.zeros(50), "1-D"),
    (np.ones((1, 40)), "at least 2 samples"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
], ids=["1-D", "one-sample", "strings"])
def test_bad_series_raise(bad, match):
    with pytest.raises(InputError, match=match):
        knn_correlation(bad, k=2, device="cpu")


def test_nan_constant_and_k_raise(rng):
    series = rng.standard_normal((40, 30))
    nan = series.copy()
    nan[3, 7] = np.nan
    with pytest.raises(InputError, match=r"NaN.*\(3, 7\)"):
        knn_correlation(nan, k=5, device="cpu")
    const = series.copy()
    const[:, 11] = 2.5
    with pytest.raises(InputError, match="constant voxel series.*column 11"):
        knn_correlation(const, k=5, device="cpu")
    with pytest.raises(InputError, match="constant"):
        zscore_series(const)
    with pytest.raises(InputError, match="k < n_voxels = 30"):
        knn_correlation(series, k=30, device="cpu")
    with pytest.raises(InputError, match="positive integer"):
        knn_correlation(series, k=0, device="cpu")


def test_select_voxels_rules():
    sig = {"on": np.array([1, 0, 1, 0, 0], bool), "off": np.array([0, 0, 1, 1, 0], bool)}
    assert set(SELECTION_RULES) == {"union", "significant", "all"}
    assert select_voxels(sig).tolist() == [0, 2, 3]  # default: union
    assert select_voxels(sig, rule="significant", condition="on").tolist() == [0, 2]
    assert select_voxels(sig, rule="significant", condition="off").tolist() == [2, 3]
    assert select_voxels({"on": sig["on"]}, rule="significant").tolist() == [0, 2]
    assert select_voxels(sig, rule="all").tolist() == [0, 1, 2, 3, 4]
    assert select_voxels(sig).dtype == np.int64
    with pytest.raises(InputError, match="condition= one of"):
        select_voxels(sig, rule="significant")
    with pytest.raises(InputError, match="expected one of union"):
        select_voxels(sig, rule="both")
    with pytest.raises(InputError, match="one voxel count"):
        select_voxels({"on": sig["on"], "off": np.zeros(4, bool)})
    with pytest.raises(InputError, match="bool array"):
        select_voxels({"on": np.array([0.01, 0.5])})


def test_roi_block_means_equal_rsatoolbox(rng):
    from rsatoolbox.data import Dataset
    from rsatoolbox.rdm import calc_rdm

    series = clustered_series(rng, 1000, n_samples=200)
    labels = rng.integers(0, 6, 1000)
    labels[labels == 5] = 4
    labels[17] = 5  # a single-voxel ROI; ROI 6 stays empty
    block, counts = roi_block_rdm(series, labels, n_rois=7)
    # rsatoolbox correlates its patterns (rows): voxels are the patterns, samples the channels.
    rdm = calc_rdm(Dataset(series.T.astype(np.float64)), method="correlation").get_matrices()[0]
    assert counts.tolist() == np.bincount(labels, minlength=7).tolist()
    for a in range(6):
        for b in range(6):
            sub = rdm[np.ix_(labels == a, labels == b)]
            if a == b:
                sub = sub[~np.eye(len(sub), dtype=bool)]  # the RDM's off-diagonal entries of the block
            if sub.size == 0:
                assert np.isnan(block[a, b])
            else:
                # Both are float64; our sums of ~1e5 unit-norm products agree to rounding (~1e-13).
                np.testing.assert_allclose(block[a, b], sub.mean(), rtol=0, atol=1e-10)
    assert np.isnan(block[5, 5]) and np.all(np.isnan(block[6])) and np.all(np.isnan(block[:, 6]))
    np.testing.assert_allclose(block, block.T, atol=1e-12)


def test_roi_labels_validated(rng):
    series = rng.standard_normal((20, 10))
    with pytest.raises(InputError, match="10 integer ROI labels"):
        roi_block_rdm(series, np.zeros(9, int))
    with pytest.raises(InputError, match="labels below n_rois = 2"):
        roi_block_rdm(series, np.arange(10) % 3, n_rois=2)
    with pytest.raises(InputError, match=">= 0"):
        roi_block_rdm(series, np.arange(10) - 1)


def _two_conditions(rng, n_voxels, n_samples=150):
    """on/off stand-ins: shared latent structure, condition-specific mixing and noise (RDM r ~ 0.5)."""
    latent = rng.standard_normal((n_samples, 10))
    shared = rng.standard_normal((10, n_voxels))
    make = lambda: latent @ (shared + 0.8 * rng.standard_normal((10, n_voxels))) \
        + 2.0 * rng.standard_normal((n_samples, n_voxels))  # noqa: E731
    return make(), make()


def test_rdm_agreement_matches_full_matrices_within_ci(rng):
    a, b = _two_conditions(rng, 3000)
    iu = np.triu_indices(3000, k=1)
    da, db = brute_force_distances(a)[iu], brute_force_distances(b)[iu]
    full_pearson = np.corrcoef(da, db)[0, 1]
    full_spearman = np.corrcoef(rankdata(da), rankdata(db))[0, 1]
    res = rdm_agreement(a, b, n_pairs=200_000, seed=3, n_boot=300, device="cpu", n_boot_samples=0, n_boot_voxels=0)
    assert res["n_pairs"] == 200_000 and not res["all_pairs"]
    for name, full in (("pearson", full_pearson), ("spearman", full_spearman)):
        lo, hi = res[f"{name}_ci_pairs"]
        assert lo <= full <= hi, (name, full, lo, hi)
        assert lo <= res[name] <= hi
        # Not vacuous: 200k pairs pin the RDM correlation to about +-0.003.
        assert hi - lo < 0.02


def test_rdm_agreement_ci_width_matches_sampling_spread(rng):
    # The bootstrap must reproduce how much the estimate moves between independent pair samples.
    a, b = _two_conditions(rng, 600)
    runs = [rdm_agreement(a, b, n_pairs=5_000, seed=s, n_boot=200, device="cpu", n_boot_samples=0, n_boot_voxels=0)
            for s in range(30)]
    for name in ("pearson", "spearman"):
        spread = np.std([r[name] for r in runs], ddof=1)
        half_width = np.mean([(r[f"{name}_ci_pairs"][1] - r[f"{name}_ci_pairs"][0]) / 2 for r in runs]) / 1.96
        # The Monte-Carlo SE is the same spread, stated directly.
        assert spread / 1.5 < np.mean([r[f"{name}_mc_se"] for r in runs]) < spread * 1.5
        # 30 repeats estimate a standard deviation to about +-13 %; a factor 1.5 leaves room for that.
        assert spread / 1.5 < half_width < spread * 1.5, (name, spread, half_width)


def test_rdm_agreement_uses_all_pairs_when_asked_for_more(rng):
    a, b = _two_conditions(rng, 80)
    iu = np.triu_indices(80, k=1)
    da, db = brute_force_distances(a)[iu], brute_force_distances(b)[iu]
    res = rdm_agreement(a, b, n_pairs=10_000, n_boot=50, device="cpu", n_boot_samples=20, n_boot_voxels=20)
    assert res["n_pairs"] == 80 * 79 // 2 and res["all_pairs"]
    # Every pair used: no pair-sampling error, but the test-sample interval does not collapse with it.
    assert res["pearson_mc_se"] == 0 and res["pearson_ci_pairs"] == (res["pearson"], res["pearson"])
    assert res["pearson_ci"][1] - res["pearson_ci"][0] > 0.01
    # Every pair once: equal to the full-matrix values up to float32 z-scores (~1e-7 per distance).
    assert res["pearson"] == pytest.approx(np.corrcoef(da, db)[0, 1], abs=1e-6)
    assert res["spearman"] == pytest.approx(np.corrcoef(rankdata(da), rankdata(db))[0, 1], abs=1e-6)
    with pytest.raises(InputError, match="same voxels"):
        rdm_agreement(a, b[:, :70], device="cpu")


def test_rdm_agreement_is_seeded(rng):
    a, b = _two_conditions(rng, 300)
    kw = dict(n_pairs=20_000, n_boot=100, device="cpu", n_boot_samples=20, n_boot_voxels=20, n_pairs_resampled=2000)
    first = rdm_agreement(a, b, seed=7, **kw)
    assert first == rdm_agreement(a, b, seed=7, **kw)
    assert first != rdm_agreement(a, b, seed=8, **kw)


def test_knn_jaccard():
    a = np.array([[0, 1, 2, 3], [1, 0, 2, 3], [2, 5, 6, 7]])
    assert np.array_equal(knn_jaccard(a, a), np.ones(3, np.float32))
    b = np.array([[0, 4, 5, 6], [1, 4, 5, 6], [2, 0, 1, 3]])
    assert np.array_equal(knn_jaccard(a, b), np.zeros(3, np.float32))
    # Self is ignored wherever it sits: {1,2,3} vs {1,2,4} share 2 of 4; {0,2,3} vs {0,2,5} share 2 of 4;
    # {5,6,7} vs {5,6,1} share 2 of 4.
    c = np.array([[1, 2, 0, 4], [1, 0, 2, 5], [2, 5, 6, 1]])
    np.testing.assert_array_equal(knn_jaccard(a, c), np.full(3, 0.5, np.float32))
    assert knn_jaccard(a, c).dtype == np.float32
    with pytest.raises(InputError, match="repeated index"):
        knn_jaccard(a, np.array([[0, 1, 1, 3], [1, 0, 2, 3], [2, 5, 6, 7]]))
    with pytest.raises(InputError, match="same voxels"):
        knn_jaccard(a, a[:2])
    with pytest.raises(InputError, match="2-D"):
        knn_jaccard(a[0], a[0])


def test_knn_jaccard_of_knn_graphs(rng):
    # Graphs of the same series agree; graphs of unrelated series share (almost) nothing.
    a, _ = _two_conditions(rng, 500)
    idx_a, _ = knn_correlation(a, k=K, device="cpu")
    idx_noise, _ = knn_correlation(rng.standard_normal(a.shape), k=K, device="cpu")
    assert np.all(knn_jaccard(idx_a, idx_a) == 1)
    # Two random 14-sets out of 499 voxels share 0.4 voxels on average: Jaccard ~0.015.
    assert knn_jaccard(idx_a, idx_noise).mean() < 0.05
