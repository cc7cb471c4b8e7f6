"""The planted-truth simulation: determinism, smoothness over the cortex, ROI-dependent SNR, null voxels."""
import numpy as np
import pytest
from scipy.spatial import cKDTree

from core.data.simulate import SHAPE_CLASSES, make_scenes, plant_responses, render_scenes, smooth_fields


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


def _features(rng, n=400, p=64):
    shared = rng.normal(size=(n, p))
    return {"off": shared, "on": shared + 0.8 * rng.normal(size=(n, p))}


@pytest.fixture(scope="module")
def planted(s1_geometry):
    rng = np.random.default_rng(7)
    feats = _features(rng)
    return feats, plant_responses(feats, 300, s1_geometry, n_repeats=2, seed=5)


def test_planted_shapes_and_determinism(s1_geometry, planted):
    feats, p = planted
    assert p.Y_train.shape == (300, s1_geometry.n_voxels)
    assert p.Y_test_repeats.shape == (2, 100, s1_geometry.n_voxels)
    again = plant_responses(feats, 300, s1_geometry, n_repeats=2, seed=5)
    np.testing.assert_array_equal(p.Y_train, again.Y_train)
    np.testing.assert_array_equal(p.Y_test_repeats, again.Y_test_repeats)


def test_planted_dominance_by_roi(s1_geometry, planted):
    _, p = planted
    t = p.truth
    assert t["early_visual"].sum() > 1000 and t["object_scene"].sum() > 1000
    assert not t["dominant_on"][t["early_visual"]].any()      # V1-V3: attention-off dominant
    assert t["dominant_on"][t["object_scene"]].all()          # FFA/OFA/EBA/PPA/OPA/RSC: attention-on
    other = ~(t["early_visual"] | t["object_scene"])
    assert 0.2 < t["dominant_on"][other].mean() < 0.8          # elsewhere a smooth mixture of both


def test_planted_snr_matches_repeat_reliability(s1_geometry, planted):
    """Two test repeats share the signal only: their correlation estimates the planted signal fraction."""
    _, p = planted
    a, b = p.Y_test_repeats
    a = (a - a.mean(0)) / a.std(0)
    b = (b - b.mean(0)) / b.std(0)
    reliability = (a * b).mean(0)
    rho = p.truth["signal_fraction"]
    for roi in ("early_visual", "object_scene"):
        sel = p.truth[roi]
        # Mean over >1000 voxels of a 100-sample correlation: standard error ~0.1/sqrt(1000) = 0.003; the
        # signal's test-set variance differs from its train-set variance by sampling, so allow 0.05.
        assert abs(reliability[sel].mean() - rho[sel].mean()) < 0.05
    far = p.truth["null"]
    assert abs(reliability[far].mean()) < 0.01
    assert rho[p.truth["early_visual"]].mean() > 3 * np.median(rho[~(p.truth["early_visual"] | p.truth["object_scene"])])


def test_null_voxels_are_uncorrelated_with_features(s1_geometry, planted):
    feats, p = planted
    null = p.truth["null"]
    assert 0.05 < null.mean() < 0.3
    assert (p.truth["signal_fraction"][null] == 0).all()
    X = feats["on"][:300]
    X = (X - X.mean(0)) / X.std(0)
    Y = p.Y_train[:, null][:, :2000]
    Y = (Y - Y.mean(0)) / Y.std(0)
    r = X.T @ Y / 300
    # Pure noise: correlations are N(0, 1/n); the 99.9th percentile of |r| over 128k pairs stays < 4/sqrt(n).
    assert abs(r.mean()) < 0.005
    assert np.quantile(np.abs(r), 0.999) < 4 / np.sqrt(300)
    signal = ~null & p.truth["early_visual"]
    Ys = p.Y_train[:, signal][:, :2000]
    Ys = (Ys - Ys.mean(0)) / Ys.std(0)
    assert np.quantile(np.abs(X.T @ Ys / 300), 0.999) > 4 / np.sqrt(300)


def test_planted_weights_vary_smoothly_over_the_surface(s1_geometry, planted):
    _, p = planted
    share = p.truth["on_share"]
    xy = s1_geometry.flat_xy.astype(float) + np.where(s1_geometry.hemi[:, None] == 1, 1e4, 0)
    other = np.flatnonzero(~(p.truth["early_visual"] | p.truth["object_scene"]))
    tree = cKDTree(xy[other])
    d, j = tree.query(xy[other], k=2)
    close = d[:, 1] < 3
    # Neighbouring voxels (< 3 flat-map units apart) carry nearly the same on-share; random pairs do not.
    r_near = np.corrcoef(share[other][close], share[other][j[close, 1]])[0, 1]
    rng = np.random.default_rng(0)
    r_rand = np.corrcoef(share[other], share[other][rng.permutation(other.size)])[0, 1]
    assert r_near > 0.9 and abs(r_rand) < 0.05


# ----------------------------------------------------------------------------------------------------------
# The vectorised simulation against the straightforward per-field / per-chunk implementation it replaced
# (SIM_FORMAT_VERSION 4; with version 5's squared channel weights): same planted truth exactly, same responses
# to float32 rounding.

def _reference_smooth_fields(xy, n_fields, length_scale, seed):
    rng = np.random.default_rng(seed)
    m = 256
    w = rng.normal(0, 1 / length_scale, (n_fields, m, xy.shape[1]))
    b = rng.uniform(0, 2 * np.pi, (n_fields, m))
    out = np.empty((xy.shape[0], n_fields))
    for f in range(n_fields):
        out[:, f] = np.sqrt(2 / m) * np.cos(xy @ w[f].T + b[f]).sum(axis=1)
    return out


def _reference_plant(features, n_train, geometry, *, n_repeats, n_latent=16, null_fraction=0.25,
                     length_scale=12.0, seed=0):
    import math

    from core.cortex.geometry import EARLY_VISUAL, OBJECT_SCENE
    from core.data.simulate import _zscore_by_train
    rng = np.random.default_rng([seed, 1])
    n_total, n_feat = features["on"].shape
    n_test = n_total - n_train
    n_vox = geometry.n_voxels
    z = {m: _zscore_by_train(features[m].astype(np.float64), n_train) for m in ("on", "off")}
    modulation = np.clip(1 - (z["on"][:n_train] * z["off"][:n_train]).mean(0), 0.02, None) ** 2
    proj = rng.normal(size=(n_feat, n_latent)) * modulation[:, None] / math.sqrt(n_feat)
    latent = {m: _zscore_by_train(z[m] @ proj, n_train) for m in ("on", "off")}
    xy = geometry.flat_xy.astype(np.float64) + np.where(geometry.hemi[:, None] == 1, 1e4, 0.0)
    fields = _reference_smooth_fields(xy, 2 * n_latent + 2, length_scale * 4, seed)
    c_on = fields[:, :n_latent]
    c_off = fields[:, n_latent:2 * n_latent]
    c_on /= np.linalg.norm(c_on, axis=1, keepdims=True)
    c_off /= np.linalg.norm(c_off, axis=1, keepdims=True)
    early = geometry.roi_mask(EARLY_VISUAL)
    objects = geometry.roi_mask(OBJECT_SCENE)
    share = 0.5 + 0.45 * np.tanh(6 * fields[:, -2])
    share[objects] = 0.9
    share[early] = 0.1
    visual = early | objects
    dist, _ = cKDTree(xy[visual]).query(xy)
    rho = 0.005 + 0.3 * np.exp(-dist / (length_scale * 3))
    rho[early] = 0.35
    rho[objects] = 0.3
    rho *= np.exp(0.25 * fields[:, -1])
    rho = np.clip(rho, 0, 0.6)
    far = ~visual & (rho < np.quantile(rho[~visual], 0.5))
    far_idx = np.flatnonzero(far)
    null = np.zeros(n_vox, bool)
    null[rng.choice(far_idx, size=int(round(null_fraction * far_idx.size)), replace=False)] = True
    rho[null] = 0.0
    Y_train = np.empty((n_train, n_vox), np.float32)
    Y_test = np.empty((n_repeats, n_test, n_vox), np.float32)
    chunk = 8192
    for lo in range(0, n_vox, chunk):
        sl = slice(lo, min(lo + chunk, n_vox))
        s = (np.sqrt(share[sl]) * (latent["on"] @ c_on[sl].T)
             + np.sqrt(1 - share[sl]) * (latent["off"] @ c_off[sl].T))
        sd = s[:n_train].std(0)
        s = (s - s[:n_train].mean(0)) / sd
        a = np.sqrt(rho[sl])
        b = np.sqrt(1 - rho[sl])
        Y_train[:, sl] = a * s[:n_train] + b * rng.standard_normal((n_train, s.shape[1]))
        for r in range(n_repeats):
            Y_test[r, :, sl] = a * s[n_train:] + b * rng.standard_normal((n_test, s.shape[1]))
    truth = {"signal_fraction": rho.astype(np.float32), "on_share": share.astype(np.float32),
             "dominant_on": share > 0.5, "null": null, "early_visual": early, "object_scene": objects}
    return Y_train, Y_test, truth


def test_smooth_fields_equal_reference(rng):
    xy = rng.uniform(-200, 200, (3001, 2))
    xy[1500:] += 1e4                       # the far-shifted second hemisphere of plant_responses
    for n_fields, scale in ((1, 40.0), (34, 48.0)):
        got = smooth_fields(xy, n_fields, scale, seed=3)
        want = _reference_smooth_fields(xy, n_fields, scale, seed=3)
        assert got.shape == want.shape and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)


def test_plant_responses_equal_reference(s1_geometry):
    # 20,000 voxels: two full 8192-voxel chunks and a partial one.
    rng = np.random.default_rng(11)
    geom = s1_geometry.subset(np.sort(rng.choice(s1_geometry.n_voxels, 20_000, replace=False)))
    feats = _features(rng, n=250, p=48)
    got = plant_responses(feats, 200, geom, n_repeats=3, seed=2)
    Y_train, Y_test, truth = _reference_plant(feats, 200, geom, n_repeats=3, seed=2)
    assert set(got.truth) == set(truth)
    for k in truth:
        np.testing.assert_array_equal(got.truth[k], truth[k], err_msg=k)
    for a, b in ((got.Y_train, Y_train), (got.Y_test_repeats, Y_test)):
        assert a.dtype == np.float32 and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
        assert (a != b).mean() < 1e-3      # nearly every value bit-identical
