"""The planted-truth simulation: scenes, the HRF and AR(1) noise per run, the planted partition, null voxels and
null contrasts, ROI-dependent signal, smoothness over the cortex, determinism."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from scipy import stats

from core.data.haemodynamics import ar1_noise, convolve_runs, double_gamma_hrf, even_run_onsets
from core.data.simulate import (SHAPE_CLASSES, latent_partition, make_scenes, plant_responses, render_scenes,
                                smooth_fields)


def test_scenes_deterministic_and_disjoint():
    a, la = make_scenes(6, 64, seed=3)
    b, lb = make_scenes(6, 64, seed=3)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(la, lb)
    c, _ = make_scenes(6, 64, seed=4)
    assert not np.array_equal(a, c)
    # Image i depends on (seed, start + i): a shifted window regenerates the same images.
    d, _ = make_scenes(3, 64, seed=3, start=3)
    np.testing.assert_array_equal(a[3:], d)
    assert a.dtype == np.uint8 and a.shape == (6, 64, 64, 3)


def test_parallel_rendering_is_bit_identical_to_serial():
    """Two spawned workers, uneven chunks, a non-zero start: the same pixels and labels as one serial pass."""
    serial, ls = make_scenes(23, 48, seed=5, start=100)
    parallel, lp = render_scenes(23, 48, seed=5, start=100, workers=2)
    np.testing.assert_array_equal(parallel, serial)
    np.testing.assert_array_equal(lp, ls)


def test_scenes_cover_all_shape_classes():
    _, labels = make_scenes(120, 48, seed=0)
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))


def test_smooth_fields_are_smooth_and_unit_variance(rng):
    xy = rng.uniform(0, 400, (4000, 2))
    f = smooth_fields(xy, 8, length_scale=40.0, seed=1)
    # Unit variance in expectation; 8 fields x 4000 correlated points: allow 25 %.
    assert abs(f.var(axis=0).mean() - 1) < 0.25
    tree = cKDTree(xy)
    near = np.array([(i, j) for i, j in tree.query_pairs(4.0)][:2000])
    far_i = rng.integers(0, 4000, 2000)
    far_j = rng.integers(0, 4000, 2000)
    far = np.linalg.norm(xy[far_i] - xy[far_j], axis=1) > 200
    r_near = np.mean([np.corrcoef(f[near[:, 0], k], f[near[:, 1], k])[0, 1] for k in range(8)])
    r_far = np.mean([np.corrcoef(f[far_i[far], k], f[far_j[far], k])[0, 1] for k in range(8)])
    # Squared-exponential covariance exp(-d^2 / 2l^2): ~0.995 at d = 4, ~0 beyond 5 l.
    assert r_near > 0.95
    assert abs(r_far) < 0.1


# ----------------------------------------------------------------------------------------------------------
# Haemodynamics and noise

def test_double_gamma_hrf_shape():
    h = double_gamma_hrf(1.0)
    assert h.shape == (33,) and abs(np.sum(h ** 2) - 1) < 1e-12
    assert int(np.argmax(h)) == 5                       # SPM's canonical response peaks at 5 s
    assert int(np.argmin(h)) in (15, 16) and h.min() < 0  # and undershoots around 15 s
    h2 = double_gamma_hrf(2.0)
    assert h2.shape == (17,) and int(np.argmax(h2)) in (2, 3)  # 4-6 s at a TR of 2 s


def test_even_run_onsets():
    np.testing.assert_array_equal(even_run_onsets(1000, 5), [0, 200, 400, 600, 800])
    np.testing.assert_array_equal(even_run_onsets(10, 3), [0, 4, 7])   # numpy.array_split's lengths 4, 3, 3


def test_convolve_runs_equals_numpy_convolution_per_run(rng):
    x = rng.standard_normal((150, 7))
    h = double_gamma_hrf(2.0)
    onsets = np.array([0, 40, 41, 97])                 # a one-sample run and runs shorter than the kernel
    got = convolve_runs(x, h, onsets)
    want = np.zeros_like(x)
    ends = list(onsets[1:]) + [150]
    for a, b in zip(onsets, ends):
        for j in range(x.shape[1]):
            want[a:b, j] = np.convolve(x[a:b, j], h)[:b - a]     # full convolution, cut to the run
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    # Restarting means the first sample of a run sees only its own input.
    np.testing.assert_allclose(got[40], h[0] * x[40], atol=1e-15)


def _lag1(e, onsets):
    """Per column lag-1 autocorrelation over the within-run pairs (mean 0 known): sum e_t e_t+1 / sum e_t^2,
    whose standard error for an AR(1) is sqrt((1 - phi^2) / n) (Bartlett); and n, the pairs per column."""
    keep = np.ones(e.shape[0] - 1, bool)
    keep[np.asarray(onsets[1:], np.int64) - 1] = False                    # pairs that straddle a boundary
    x = e[:-1][keep]
    return (x * e[1:][keep]).sum(0) / (x * x).sum(0), int(keep.sum())


def test_ar1_noise_recovers_phi_and_restarts_at_runs():
    rng = np.random.default_rng(3)
    n_col = 2000
    phi = np.linspace(0.0, 0.8, n_col)
    onsets = even_run_onsets(3000, 6)
    e = ar1_noise(rng, 3000, phi, onsets)
    # Unit variance: 3000 correlated samples per column, averaged over 2000 columns: ~1 within 1 %.
    assert abs(e.var(axis=0).mean() - 1) < 0.01
    r1, n = _lag1(e, onsets)
    # The share of the 2000 columns beyond 2.576 standard errors must be in the 99% binomial interval of 1 %.
    z = (r1 - phi) / np.sqrt((1 - phi ** 2) / n)
    lo, hi = stats.binom.ppf([0.005, 0.995], n_col, 0.01)
    assert lo <= np.sum(np.abs(z) > 2.576) <= hi
    assert abs(z.mean()) < 4 / np.sqrt(n_col)              # no bias beyond 4 SE of the mean z
    # Across a boundary the noise is independent: 5 boundaries x 2000 columns of pairs, correlation ~N(0, 1e-4).
    pairs = np.concatenate([e[o - 1] * e[o] for o in onsets[1:]])
    assert abs(pairs.mean()) < 4 / np.sqrt(pairs.size)
    # The same pairs inside a run carry phi.
    inside = np.concatenate([e[o - 2] * e[o - 1] for o in onsets[1:]])
    assert abs(inside.mean() - phi.mean()) < 4 / np.sqrt(inside.size) * 1.5


# ----------------------------------------------------------------------------------------------------------
# The planted responses, on 8,000 S1 voxels

N_TRAIN, N_TOTAL, N_RUNS = 600, 800, 3


def _features(rng, n=N_TOTAL, p=64):
    shared = rng.normal(size=(n, p))
    return {"off": shared, "on": shared + 0.8 * rng.normal(size=(n, p))}


@pytest.fixture(scope="module")
def small_geometry(s1_geometry):
    idx = np.sort(np.random.default_rng(0).choice(s1_geometry.n_voxels, 8000, replace=False))
    return s1_geometry.subset(idx)


@pytest.fixture(scope="module")
def planted(small_geometry):
    rng = np.random.default_rng(7)
    feats = _features(rng)
    return feats, plant_responses(feats, N_TRAIN, small_geometry, n_repeats=2, n_runs=N_RUNS, seed=5)


def test_planted_shapes_runs_and_determinism(small_geometry, planted):
    feats, p = planted
    assert p.Y_train.shape == (N_TRAIN, small_geometry.n_voxels) and p.Y_train.dtype == np.float32
    assert p.Y_test_repeats.shape == (2, N_TOTAL - N_TRAIN, small_geometry.n_voxels)
    np.testing.assert_array_equal(p.run_onsets, [0, 200, 400])
    again = plant_responses(feats, N_TRAIN, small_geometry, n_repeats=2, n_runs=N_RUNS, seed=5)
    np.testing.assert_array_equal(p.Y_train, again.Y_train)
    np.testing.assert_array_equal(p.Y_test_repeats, again.Y_test_repeats)
    for k in p.truth:
        np.testing.assert_array_equal(p.truth[k], again.truth[k], err_msg=k)
    other = plant_responses(feats, N_TRAIN, small_geometry, n_repeats=2, n_runs=N_RUNS, seed=6)
    assert not np.array_equal(p.Y_train, other.Y_train)
    assert not np.array_equal(p.truth["ar_phi"], other.truth["ar_phi"])


def test_signal_is_the_hrf_convolution_restarted_per_run(planted):
    _, p = planted
    vox = np.flatnonzero(p.truth["early_visual"])[:50]
    sig = p.signal(vox)
    # Brute force: the neural signal of each voxel convolved with the HRF by numpy within each run and the
    # test block, then scaled like the planted signal.
    neural = (p.latents - p.latents[:N_TRAIN].mean(0)) @ p.coef[vox].T
    want = np.zeros_like(neural)
    for a, b in ((0, 200), (200, 400), (400, 600), (600, N_TOTAL)):
        for j in range(len(vox)):
            want[a:b, j] = np.convolve(neural[a:b, j], p.hrf)[:b - a]
    want -= want[:N_TRAIN].mean(0)                           # the planted signal is centred on the training rows
    np.testing.assert_allclose(sig, want, rtol=0, atol=1e-9)
    # Scaled to the planted signal fraction on the training rows.
    np.testing.assert_allclose(sig[:N_TRAIN].var(0), p.truth["signal_fraction"][vox], rtol=1e-5)


def test_noise_is_ar1_with_the_planted_phi_and_restarts(planted):
    _, p = planted
    t = p.truth
    live = np.flatnonzero(~t["null"])[:3000]
    null = np.flatnonzero(t["null"])
    vox = np.concatenate([live, null])
    sd = np.sqrt(1 - t["signal_fraction"][vox].astype(np.float64))
    e = (p.Y_train[:, vox] - p.signal(vox)[:N_TRAIN]) / sd          # the unit-variance AR(1) noise
    # What is left after the planted signal is noise of unit variance (600 AR samples x 3,000+ voxels: the
    # mean variance within 2 %); any other signal (unconvolved, not restarted) would leave more.
    assert abs(e.var(axis=0).mean() - 1) < 0.02
    r1, n = _lag1(e, p.run_onsets)
    phi = t["ar_phi"][vox].astype(np.float64)
    assert 0.2 <= phi.min() and phi.max() <= 0.7 and phi.max() - phi.min() > 0.2
    z = (r1 - phi) / np.sqrt((1 - phi ** 2) / n)
    lo, hi = stats.binom.ppf([0.005, 0.995], vox.size, 0.01)     # as in test_ar1_noise_recovers_phi...
    assert lo <= np.sum(np.abs(z) > 2.576) <= hi
    pairs = np.concatenate([e[o - 1] * e[o] for o in p.run_onsets[1:]])
    assert abs(pairs.mean()) < 4 / np.sqrt(pairs.size)            # independent across run boundaries
    # The test repeats have their own noise of the same process, independent of each other.
    et = (p.Y_test_repeats[:, :, vox] - p.signal(vox)[N_TRAIN:]) / sd
    r1t = np.stack([_lag1(x, [0])[0] for x in et]).mean(0)
    assert abs(np.mean(r1t - phi)) < 0.02                         # 200 samples x 2 repeats x 3,000+ voxels
    assert abs(np.mean(et[0] * et[1])) < 4 / np.sqrt(et[0].size)


def _ols_r2(X, y):
    X = X - X.mean(0)
    y = y - y.mean(0)
    beta, *_ = np.linalg.lstsq(X, y, rcond=None)
    return 1 - ((y - X @ beta) ** 2).sum(0) / (y ** 2).sum(0)


def test_planted_partition_matches_the_empirical_decomposition(planted):
    _, p = planted
    t = p.truth
    k = p.latents.shape[1] // 2
    vox = np.flatnonzero(~t["null"])[:2000]
    s = p.neural(vox)[:N_TRAIN]
    A, B = p.latents[:N_TRAIN, :k], p.latents[:N_TRAIN, k:]
    r2a, r2b, r2ab = _ols_r2(A, s), _ols_r2(B, s), _ols_r2(np.hstack([A, B]), s)
    np.testing.assert_allclose(r2ab, 1, atol=1e-10)               # the neural signal lies in the latents' span
    rho = t["signal_fraction"][vox].astype(np.float64)
    # On the training rows the canonical variates are exactly orthogonal, so the closed form is the in-sample
    # OLS partition; the truth is stored in float32 (relative error ~1e-7 of values <= 0.5).
    np.testing.assert_allclose(t["unique_on"][vox], rho * (r2ab - r2b), atol=1e-6)
    np.testing.assert_allclose(t["unique_off"][vox], rho * (r2ab - r2a), atol=1e-6)
    np.testing.assert_allclose(t["shared"][vox], rho * (r2a + r2b - r2ab), atol=1e-6)
    total = t["unique_on"] + t["unique_off"] + t["shared"]
    np.testing.assert_allclose(total, t["signal_fraction"], atol=1e-6)
    # Both unique parts are planted, in varying amounts.
    assert np.median(t["unique_on"][vox] / rho) > 0.1 and np.median(t["unique_off"][vox] / rho) > 0.1
    # The test rows follow the same partition up to sampling (200 rows, 32 regressors): within 0.1 of var(s).
    st = p.neural(vox)[N_TRAIN:]
    At, Bt = p.latents[N_TRAIN:, :k], p.latents[N_TRAIN:, k:]
    err = np.abs((_ols_r2(np.hstack([At, Bt]), st) - _ols_r2(Bt, st)) - t["unique_on"][vox] / rho)
    assert np.median(err) < 0.1


def test_latent_partition_closed_form(rng):
    """latent_partition against OLS on explicit variates with the given canonical correlations."""
    n, k = 20000, 3
    rho = np.array([0.8, 0.4, 0.0])
    a = rng.standard_normal((n, k))
    b = rho * a + np.sqrt(1 - rho ** 2) * rng.standard_normal((n, k))
    alpha, beta = rng.standard_normal((5, k)), rng.standard_normal((5, k))
    got = latent_partition(alpha, beta, rho)
    s = a @ alpha.T + b @ beta.T
    # 20,000 samples: sample correlations within ~0.01 of the population's, so R2 within ~0.03.
    np.testing.assert_allclose(got["r2_on"], _ols_r2(a, s), atol=0.03)
    np.testing.assert_allclose(got["r2_off"], _ols_r2(b, s), atol=0.03)


def test_null_contrast_voxels_have_equal_on_and_off_parts(planted):
    _, p = planted
    t = p.truth
    nc = t["null_contrast"]
    live = ~t["null"]
    # 10 % of the signal voxels, none of them null.
    assert not (nc & t["null"]).any() and abs(nc.sum() / live.sum() - 0.1) < 0.01
    # By construction (mirror-image on and off weights): equal unique parts, no planted advantage.
    np.testing.assert_array_equal(t["unique_on"][nc], t["unique_off"][nc])
    assert (t["delta_r"][nc] == 0).all() and not t["dominant_on"][nc].any()
    k = p.latents.shape[1] // 2
    vox = np.flatnonzero(nc)[:500]
    s = p.neural(vox)[:N_TRAIN]
    r2a, r2b = _ols_r2(p.latents[:N_TRAIN, :k], s), _ols_r2(p.latents[:N_TRAIN, k:], s)
    np.testing.assert_allclose(r2a, r2b, atol=1e-10)
    # Elsewhere the advantage is continuous and of both signs.
    other = live & ~nc
    assert (t["delta_r"][other] > 0).mean() > 0.2 and (t["delta_r"][other] < 0).mean() > 0.2
    assert np.abs(t["delta_r"][other & t["early_visual"]]).max() > 0.1
    np.testing.assert_array_equal(t["dominant_on"][other], t["delta_r"][other] > 0)


def test_planted_attention_share_is_continuous_and_roi_dependent(planted):
    _, p = planted
    t = p.truth
    share = t["on_share"]
    assert ((share >= 0) & (share <= 1)).all()
    early, objects = t["early_visual"], t["object_scene"]
    assert early.sum() > 200 and objects.sum() > 100
    nc = t["null_contrast"]
    # Centred at 0.8 and 0.2; the smooth field covers each ROI with a few independent values, so its ROI mean
    # can stray by ~0.1-0.15 from the centre.
    assert share[objects & ~nc].mean() > 0.6 and share[early & ~nc].mean() < 0.45
    # Spread, not pushed to the ends: a logistic field of SD 1.2 around its ROI's centre.
    other = ~(early | objects | nc)
    assert share[other].std() > 0.15 and np.mean((share[other] > 0.2) & (share[other] < 0.8)) > 0.6
    assert np.mean((share[other] < 0.05) | (share[other] > 0.95)) < 0.1
    # Dominance follows the share (with the same few-values caveat): mostly on in the object/scene ROIs,
    # mostly off in V1-V3.
    assert t["dominant_on"][objects & ~nc].mean() > 0.6 and t["dominant_on"][early & ~nc].mean() < 0.5


def test_planted_snr_matches_repeat_reliability(planted):
    """Two test repeats share the signal only: their correlation estimates the planted signal fraction."""
    _, p = planted
    a, b = p.Y_test_repeats
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    reliability = (a * b).mean(0)
    rho = p.truth["signal_fraction"]
    for roi in ("early_visual", "object_scene"):
        sel = p.truth[roi]
        # Mean over >100 voxels of a 200-sample correlation of AR(1) series: SE ~ 0.1 / sqrt(100) = 0.01; the
        # signal's test-set variance differs from its train-set variance by sampling, so allow 0.06.
        assert abs(reliability[sel].mean() - rho[sel].mean()) < 0.06
    assert abs(reliability[p.truth["null"]].mean()) < 0.02
    visual = p.truth["early_visual"] | p.truth["object_scene"]
    # Most far-cortex voxels carry almost nothing; the visual ROIs a lot.
    assert np.median(rho[~visual]) < 0.03 and np.median(rho[p.truth["early_visual"]]) > 0.15


def test_null_voxels_are_uncorrelated_with_features(planted):
    feats, p = planted
    null = p.truth["null"]
    assert 0.05 < null.mean() < 0.3
    assert (p.truth["signal_fraction"][null] == 0).all() and not p.truth["null_contrast"][null].any()
    X = feats["on"][:N_TRAIN]
    X = (X - X.mean(0)) / X.std(0)
    Y = p.Y_train[:, null][:, :2000]
    Y = (Y - Y.mean(0)) / Y.std(0)
    r = X.T @ Y / N_TRAIN
    # Pure noise against features that are independent from sample to sample: r ~ N(0, 1/n) whatever the
    # noise's autocorrelation; the 99.9th percentile of |r| stays < 4/sqrt(n).
    assert abs(r.mean()) < 0.005
    assert np.quantile(np.abs(r), 0.999) < 4 / np.sqrt(N_TRAIN)


def test_white_noise_without_haemodynamics_is_a_parameter(small_geometry):
    rng = np.random.default_rng(1)
    feats = _features(rng)
    p = plant_responses(feats, N_TRAIN, small_geometry, n_repeats=1, n_runs=2, seed=5, hrf=False,
                        ar_range=(0.0, 0.0))
    assert (p.truth["ar_phi"] == 0).all() and p.hrf.tolist() == [1.0]
    vox = np.flatnonzero(p.truth["null"])
    r1, n = _lag1(p.Y_train[:, vox] / p.Y_train[:, vox].std(0), p.run_onsets)
    assert abs(r1.mean()) < 4 / np.sqrt(n * vox.size)


def test_planted_weights_vary_smoothly_over_the_surface(small_geometry, planted):
    _, p = planted
    share = p.truth["on_share"]
    xy = small_geometry.flat_xy.astype(float) + np.where(small_geometry.hemi[:, None] == 1, 1e4, 0)
    other = np.flatnonzero(~(p.truth["early_visual"] | p.truth["object_scene"] | p.truth["null_contrast"]))
    tree = cKDTree(xy[other])
    d, j = tree.query(xy[other], k=2)
    close = d[:, 1] < 5
    # Neighbouring voxels (< 5 flat-map units apart) carry nearly the same on-share; random pairs do not.
    r_near = np.corrcoef(share[other][close], share[other][j[close, 1]])[0, 1]
    rng = np.random.default_rng(0)
    r_rand = np.corrcoef(share[other], share[other][rng.permutation(other.size)])[0, 1]
    assert r_near > 0.9 and abs(r_rand) < 0.05


# ----------------------------------------------------------------------------------------------------------
# The vectorised random-feature fields against the per-field loop.

def _reference_smooth_fields(xy, n_fields, length_scale, seed):
    rng = np.random.default_rng(seed)
    m = 256
    w = rng.normal(0, 1 / length_scale, (n_fields, m, xy.shape[1]))
    b = rng.uniform(0, 2 * np.pi, (n_fields, m))
    out = np.empty((xy.shape[0], n_fields))
    for f in range(n_fields):
        out[:, f] = np.sqrt(2 / m) * np.cos(xy @ w[f].T + b[f]).sum(axis=1)
    return out


def test_smooth_fields_equal_reference(rng):
    xy = rng.uniform(-200, 200, (3001, 2))
    xy[1500:] += 1e4                       # the far-shifted second hemisphere of plant_responses
    for n_fields, scale in ((1, 40.0), (34, 48.0)):
        got = smooth_fields(xy, n_fields, scale, seed=3)
        want = _reference_smooth_fields(xy, n_fields, scale, seed=3)
        assert got.shape == want.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


