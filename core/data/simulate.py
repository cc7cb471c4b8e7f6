"""The planted-truth simulated dataset: responses on pycortex S1 planted from the network's own features.

Each voxel of S1/fullhead/thick is driven by a known mix of the attention-on and attention-off features,
seen through a haemodynamic response and measured with autocorrelated noise, in runs (training) and repeats
(test). What is planted per voxel (the signal fraction, the share of attention-on, the variance that only
the on features, only the off features or both explain, the noise's autocorrelation) is saved beside the
data so tests can check recovery and calibration. Everything is labelled "simulated" downstream; the
details are in docs/data.md.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from core._validation import InputError
from core.cortex.geometry import EARLY_VISUAL, OBJECT_SCENE, VoxelGeometry
from core.data.haemodynamics import ar1_noise, convolve_runs, double_gamma_hrf, even_run_onsets
from core.data.scenes import SHAPE_CLASSES, make_scenes, render_scenes

__all__ = ["SHAPE_CLASSES", "make_scenes", "render_scenes", "smooth_fields", "plant_responses", "PlantedResponses",
           "write_simulated_dataset", "SIM_FORMAT_VERSION", "latent_partition"]

SIM_FORMAT_VERSION = 6


def smooth_fields(xy: np.ndarray, n_fields: int, length_scale: float, seed: int) -> np.ndarray:
    """Gaussian random fields with a squared-exponential covariance of scale ``length_scale``.

    Random Fourier features: ``f(x) = sqrt(2/m) sum_j cos(w_j . x + b_j)``, ``w_j ~ N(0, 1/l^2)``. Each
    column has unit variance in expectation and varies smoothly over ``xy``.

    Parameters
    ----------
    xy : array of shape (n_points, d)
    Returns
    -------
    array of shape (n_points, n_fields), float64
    """
    import torch

    rng = np.random.default_rng(seed)
    m = 256
    d = xy.shape[1]
    w = rng.normal(0, 1 / length_scale, (n_fields, m, d))
    b = rng.uniform(0, 2 * np.pi, (n_fields, m))
    # All fields' phases of a block of points in one product, cosines in place: float64 throughout (torch's
    # vectorised cos is ~2x numpy's and uses every core), equal to the per-field numpy loop to ~1e-13.
    x = torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float64))
    wt = torch.from_numpy(np.ascontiguousarray(w.reshape(n_fields * m, d).T))
    bt = torch.from_numpy(b.reshape(n_fields * m))
    out = torch.empty((xy.shape[0], n_fields), dtype=torch.float64)
    block = max(1, (1 << 22) // (n_fields * m))          # ~32 MB of phases at a time
    phase = torch.empty((block, n_fields * m), dtype=torch.float64)
    for lo in range(0, xy.shape[0], block):
        hi = min(lo + block, xy.shape[0])
        ph = phase[:hi - lo]
        torch.addmm(bt, x[lo:hi], wt, out=ph)
        ph.cos_()
        torch.sum(ph.view(hi - lo, n_fields, m), dim=2, out=out[lo:hi])
    return out.numpy() * np.sqrt(2 / m)



@dataclass
class PlantedResponses:
    """The simulated responses, their planted truth, and what rebuilds the noise-free signal.

    Attributes
    ----------
    Y_train : float32 array of shape (n_train, n_voxels)
    Y_test_repeats : float32 array of shape (n_repeats, n_test, n_voxels)
    truth : dict of str to array of shape (n_voxels,)
        See :func:`plant_responses`.
    run_onsets : int64 array of shape (n_runs,)
        Start of each training run.
    hrf : float64 array of shape (n_taps,)
        The haemodynamic response the neural signal was convolved with (``[1]`` without haemodynamics).
    latents : float64 array of shape (n_train + n_test, 2 k)
        The canonical on and off variates ``[a_1..a_k, b_1..b_k]`` (unit variance on the training rows).
    coef : float64 array of shape (n_voxels, 2 k)
        Per voxel, the weights of the latents in the neural signal, scaled so that the haemodynamic signal
        ``convolve_runs(latents, hrf, onsets) @ coef.T`` (centred on the training rows) has variance
        ``signal_fraction`` there.
    rho : float64 array of shape (k,)
        Canonical correlation of each (a_i, b_i) pair on the training rows.
    """
    Y_train: np.ndarray
    Y_test_repeats: np.ndarray
    truth: dict[str, np.ndarray]
    run_onsets: np.ndarray = field(default_factory=lambda: np.zeros(1, np.int64))
    hrf: np.ndarray = field(default_factory=lambda: np.ones(1))
    latents: np.ndarray | None = None
    coef: np.ndarray | None = None
    rho: np.ndarray | None = None

    def signal(self, voxels=slice(None)) -> np.ndarray:
        """The noise-free haemodynamic signal of ``voxels`` as planted (``Y = signal + noise``), float64
        (n_train + n_test, n_selected); the test block starts its own convolution."""
        n_train = self.Y_train.shape[0]
        conv = convolve_runs(self.latents, self.hrf, np.append(self.run_onsets, n_train))
        return (conv - conv[:n_train].mean(0)) @ self.coef[voxels].T

    def neural(self, voxels=slice(None)) -> np.ndarray:
        """The neural signal (before the haemodynamic response) of ``voxels``, unit variance on the training
        rows, float64 (n_train + n_test, n_selected)."""
        w = self.coef[voxels]
        n_train = self.Y_train.shape[0]
        lat = self.latents - self.latents[:n_train].mean(0)
        s = lat @ w.T
        return s / s[:n_train].std(0)


def _zscore_by_train(a: np.ndarray, n_train: int) -> np.ndarray:
    mu = a[:n_train].mean(0)
    sd = a[:n_train].std(0)
    sd[sd == 0] = 1
    return (a - mu) / sd


def _canonical_variates(A: np.ndarray, B: np.ndarray, n_train: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """CCA of two latent blocks on the training rows: variates ``a = A Wa``, ``b = B Wb`` (each orthonormal
    up to sqrt(n) on the training rows, ``a_i . b_j = 0`` for i != j) and their correlations, descending."""
    def whitener(X):
        Xc = X[:n_train] - X[:n_train].mean(0)
        u, s, vt = np.linalg.svd(Xc / math.sqrt(n_train), full_matrices=False)
        keep = s > s[0] * 1e-8
        return vt[keep].T / s[keep], u[:, keep] * math.sqrt(n_train)
    wa, ua = whitener(A)
    wb, ub = whitener(B)
    u, rho, vt = np.linalg.svd(ua.T @ ub / n_train)
    k = min(len(rho), wa.shape[1], wb.shape[1])
    Wa, Wb = wa @ u[:, :k], wb @ vt.T[:, :k]
    a = (A - A[:n_train].mean(0)) @ Wa
    b = (B - B[:n_train].mean(0)) @ Wb
    return a, b, np.clip(rho[:k], 0, 1)


def latent_partition(alpha: np.ndarray, beta: np.ndarray, rho: np.ndarray) -> dict[str, np.ndarray]:
    """The variance partition of ``s = sum_i alpha_i a_i + beta_i b_i`` between the on and off latent spaces.

    With canonical variates (unit variance, ``corr(a_i, b_i) = rho_i``, all other pairs uncorrelated), the
    share of ``var(s)`` that the on space explains is ``R2_on = sum_i (alpha_i + rho_i beta_i)^2 / var(s)``,
    the off space ``R2_off = sum_i (beta_i + rho_i alpha_i)^2 / var(s)``, and both together all of it.

    Parameters
    ----------
    alpha, beta : arrays of shape (n_voxels, k)
    rho : array of shape (k,)

    Returns
    -------
    dict with float64 arrays of shape (n_voxels,): ``r2_on``, ``r2_off``, ``unique_on`` (= 1 - R2_off),
    ``unique_off`` (= 1 - R2_on) and ``shared`` (= R2_on + R2_off - 1), as fractions of var(s).
    """
    var = np.sum(alpha ** 2 + beta ** 2 + 2 * rho * alpha * beta, axis=1)
    r2_on = np.sum((alpha + rho * beta) ** 2, axis=1) / var
    r2_off = np.sum((beta + rho * alpha) ** 2, axis=1) / var
    return {"r2_on": r2_on, "r2_off": r2_off, "unique_on": 1 - r2_off, "unique_off": 1 - r2_on,
            "shared": r2_on + r2_off - 1}


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def plant_responses(features: dict[str, np.ndarray], n_train: int, geometry: VoxelGeometry, *,
                    n_repeats: int = 4, n_latent: int = 16, null_fraction: float = 0.25,
                    length_scale: float = 12.0, seed: int = 0, n_runs: int = 12, tr: float = 2.0,
                    hrf: bool = True, ar_range: tuple[float, float] = (0.2, 0.7),
                    null_contrast_fraction: float = 0.1) -> PlantedResponses:
    """Plant voxel responses from the attention-on and attention-off features.

    Parameters
    ----------
    features : dict with keys "on", "off", arrays of shape (n_train + n_test, n_features)
        Train samples first, one per TR, in scan order. The features the pipeline extracts, so the truth
        is exact.
    n_train : int
    geometry : VoxelGeometry of the voxels to simulate.
    n_repeats : int
        Noisy repeats of the test block (the same stimuli, new noise).
    n_latent : int
        Latent directions ``k`` per feature set.
    null_fraction : float
        Share of the far cortex (the half of the non-visual voxels farthest from V1-V3 and the object/scene
        ROIs) with no signal at all.
    length_scale : float
        Spatial scale of the fields over the flatmap (flat-surface units; the fields use 4x this).
    seed : int
    n_runs : int
        Training runs of equal length; the test block is one more run.
    tr : float
        Seconds per sample: the sampling of the haemodynamic response.
    hrf : bool
        Convolve the neural signal with the canonical double-gamma response (False: no haemodynamics).
    ar_range : (float, float)
        Range of the per-voxel AR(1) coefficient of the noise ((0, 0): white noise).
    null_contrast_fraction : float
        Share of the signal-carrying voxels planted with equal on and off parts (no on/off contrast).

    Returns
    -------
    PlantedResponses
        ``truth`` holds, per voxel (n_voxels,): ``signal_fraction`` (float32: signal share of one trial's
        variance), ``on_share`` (float32 in [0, 1]: the weight of the on latents), ``unique_on``,
        ``unique_off``, ``shared`` (float32: the variance that only the on latents, only the off latents, or
        either explains, as shares of one trial's variance; they sum to ``signal_fraction``), ``delta_r``
        (float32: the planted advantage of on over off, ``sqrt(F) (sqrt(R2_on) - sqrt(R2_off))`` with ``F`` the
        signal share of the repeat-averaged test series: the r difference of ideal on and off models),
        ``ar_phi`` (float32: the noise's lag-1 autocorrelation), ``dominant_on`` (bool: R2_on > R2_off, never
        for a null contrast), ``null`` (bool: no signal), ``null_contrast`` (bool: signal with R2_on = R2_off
        exactly), ``early_visual``, ``object_scene`` (bool: ROI membership).

    Notes
    -----
    Latents: ``A = z_on P``, ``B = z_off P`` for the train-standardised features ``z`` and one random
    projection ``P`` whose channel weights grow with how much attention changes the channel (``(1 -
    corr(on, off))^2`` over the training stimuli; most ABN channels barely change, and with uniform weights
    the two blocks would be nearly the same). Their canonical variates ``a_i``, ``b_i`` (correlation
    ``rho_i``) make the on/off partition of any mixture closed-form (:func:`latent_partition`). Per voxel the
    neural signal is ``s = sum_i sqrt(w) c_i a_i + sqrt(1 - w) c'_i b_i`` with ``c``, ``c'`` smooth unit-norm
    fields and ``w`` the on-share: a smooth field in [0, 1], centred at 0.8 in the object/scene ROIs, 0.2 in
    V1-V3 and 0.5 elsewhere. Null-contrast voxels take ``c' = c`` and ``w = 1/2``: on and off parts are
    mirror images, so R2_on = R2_off. The BOLD signal is ``s`` convolved with the HRF within each run, scaled
    to the voxel's signal fraction; the noise is AR(1) with a smooth coefficient field in ``ar_range``,
    restarted at each run and in each test repeat.
    """
    rng = np.random.default_rng([seed, 1])
    n_total = features["on"].shape[0]
    n_test = n_total - n_train
    n_vox = geometry.n_voxels
    n_feat = features["on"].shape[1]
    lo_phi, hi_phi = (float(v) for v in ar_range)
    if not 0 <= lo_phi <= hi_phi < 1:
        raise InputError(f"expected 0 <= low <= high < 1, found {tuple(ar_range)}", field="simulation.ar_range")
    if not 0 <= null_contrast_fraction < 1:
        raise InputError(f"expected a fraction in [0, 1), found {null_contrast_fraction!r}",
                         field="simulation.null_contrast_fraction")
    onsets = even_run_onsets(n_train, n_runs)
    h = double_gamma_hrf(tr) if hrf else np.ones(1)

    z = {m: _zscore_by_train(features[m].astype(np.float64), n_train) for m in ("on", "off")}
    modulation = np.clip(1 - (z["on"][:n_train] * z["off"][:n_train]).mean(0), 0.02, None) ** 2
    proj = rng.normal(size=(n_feat, n_latent)) * modulation[:, None] / math.sqrt(n_feat)
    a, b, rho = _canonical_variates(z["on"] @ proj, z["off"] @ proj, n_train)
    k = rho.size

    # Hemispheres get independent fields: shift one far away on the flatmap.
    xy = geometry.flat_xy.astype(np.float64) + np.where(geometry.hemi[:, None] == 1, 1e4, 0.0)
    fields = smooth_fields(xy, 2 * k + 3, length_scale * 4, seed)
    c_on = fields[:, :k] / np.linalg.norm(fields[:, :k], axis=1, keepdims=True)
    c_off = fields[:, k:2 * k] / np.linalg.norm(fields[:, k:2 * k], axis=1, keepdims=True)
    f_share, f_rho, f_phi = fields[:, 2 * k], fields[:, 2 * k + 1], fields[:, 2 * k + 2]

    early = geometry.roi_mask(EARLY_VISUAL)
    objects = geometry.roi_mask(OBJECT_SCENE)
    visual = early | objects
    centre = np.where(objects, 0.8, np.where(early, 0.2, 0.5))
    share = _sigmoid(np.log(centre / (1 - centre)) + 1.2 * f_share)

    # Signal fraction of one trial: ~0.1 in the visual ROIs with a smooth spread of x/÷ 1.6, fading with
    # flatmap distance from them to ~0.002 in the far cortex.
    from scipy.spatial import cKDTree
    rho_v = np.full(n_vox, 0.002)
    if visual.any():
        dist, _ = cKDTree(xy[visual]).query(xy)
        rho_v = 0.002 + 0.1 * np.exp(-dist / (length_scale * 2))
    rho_v[early] = 0.3
    rho_v[objects] = 0.25
    rho_v = np.clip(rho_v * np.exp(0.5 * f_rho), 0, 0.5)
    far = ~visual & (rho_v < np.quantile(rho_v[~visual], 0.5)) if (~visual).any() else np.zeros(n_vox, bool)
    far_idx = np.flatnonzero(far)
    null = np.zeros(n_vox, bool)
    null[rng.choice(far_idx, size=int(round(null_fraction * far_idx.size)), replace=False)] = True
    rho_v[null] = 0.0
    live = np.flatnonzero(~null)
    null_contrast = np.zeros(n_vox, bool)
    null_contrast[rng.choice(live, size=int(round(null_contrast_fraction * live.size)), replace=False)] = True
    c_off[null_contrast] = c_on[null_contrast]
    share[null_contrast] = 0.5

    alpha = np.sqrt(share)[:, None] * c_on
    beta = np.sqrt(1 - share)[:, None] * c_off
    part = latent_partition(alpha, beta, rho)
    phi = lo_phi + (hi_phi - lo_phi) * _sci_norm_cdf(f_phi)

    # The BOLD signal is linear in the convolved latents, so its training variance per voxel follows from
    # their covariance: every voxel's scaled signal is one small product per chunk.
    lat = np.concatenate([a, b], axis=1)                                     # (n_total, 2k)
    coef = np.concatenate([alpha, beta], axis=1)
    conv = convolve_runs(lat, h, np.append(onsets, n_train))                 # the test block is its own run
    conv_c = conv - conv[:n_train].mean(0)
    cov = conv_c[:n_train].T @ conv_c[:n_train] / n_train
    sd = np.sqrt(np.einsum("vi,ij,vj->v", coef, cov, coef))
    coef *= (np.sqrt(rho_v) / sd)[:, None]
    noise_sd = np.sqrt(1 - rho_v)

    Y_train = np.empty((n_train, n_vox), np.float32)
    Y_test = np.empty((n_repeats, n_test, n_vox), np.float32)
    test_onsets = np.zeros(1, np.int64)
    chunk = 8192
    for lo in range(0, n_vox, chunk):
        sl = slice(lo, min(lo + chunk, n_vox))
        s = conv_c @ coef[sl].T
        nz = ar1_noise(rng, n_train, phi[sl], onsets)
        nz *= noise_sd[sl]
        nz += s[:n_train]
        Y_train[:, sl] = nz
        for r in range(n_repeats):
            nz = ar1_noise(rng, n_test, phi[sl], test_onsets)
            nz *= noise_sd[sl]
            nz += s[n_train:]
            Y_test[r, :, sl] = nz

    f_avg = rho_v / np.where(rho_v > 0, rho_v + (1 - rho_v) / n_repeats, 1.0)
    delta = np.sqrt(f_avg) * (np.sqrt(part["r2_on"]) - np.sqrt(part["r2_off"]))
    truth = {
        "signal_fraction": rho_v.astype(np.float32),
        "on_share": share.astype(np.float32),
        "unique_on": (rho_v * part["unique_on"]).astype(np.float32),
        "unique_off": (rho_v * part["unique_off"]).astype(np.float32),
        "shared": (rho_v * part["shared"]).astype(np.float32),
        "delta_r": delta.astype(np.float32),
        "ar_phi": phi.astype(np.float32),
        "dominant_on": (delta > 0),
        "null": null,
        "null_contrast": null_contrast,
        "early_visual": early,
        "object_scene": objects,
    }
    return PlantedResponses(Y_train=Y_train, Y_test_repeats=Y_test, truth=truth, run_onsets=onsets, hrf=h,
                            latents=lat, coef=coef, rho=rho)


def _sci_norm_cdf(x):
    from scipy.special import ndtr
    return ndtr(x)


def _atomic_dir(final: Path) -> Path:
    final.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=final.parent, prefix=f".{final.name}.tmp-"))


def write_simulated_dataset(out_dir: str | Path, *, n_train: int, n_test: int, image_size: int,
                            geometry: VoxelGeometry,
                            feature_fn: Callable[[np.ndarray], dict[str, np.ndarray]],
                            seed: int = 0, meta: dict | None = None, plant_seed: int | None = None,
                            **plant) -> Path:
    """Generate stimuli, plant responses from ``feature_fn(images)`` and write the dataset folder.

    ``seed`` makes the stimuli and, unless ``plant_seed`` is given, the planted weights and noise: a simulated
    subject other than the first sees the same stimuli with its own ``plant_seed``.

    ``plant`` holds the keyword arguments of :func:`plant_responses` (``n_repeats``, ``n_runs``, ``tr``, ...).
    The folder holds ``stimuli_train.npy``, ``stimuli_test.npy``, ``responses.h5`` (``Y_train``, ``Y_test``
    with repeats first, ``run_onsets``), ``truth.npz`` and ``dataset.json``. It is written under a temporary
    name and renamed at the end, so an interrupted run never leaves a half-written dataset.
    """
    out_dir = Path(out_dir)
    if (out_dir / "dataset.json").is_file():
        return out_dir
    from core._io import file_lock
    # Runs side by side in one results folder may need the same dataset: one writes it, the others wait.
    with file_lock(out_dir.parent / f"{out_dir.name}.lock"):
        if (out_dir / "dataset.json").is_file():
            return out_dir
        return _write_simulated_dataset(out_dir, n_train=n_train, n_test=n_test, image_size=image_size,
                                        geometry=geometry, feature_fn=feature_fn, seed=seed, meta=meta,
                                        plant_seed=plant_seed, **plant)


def _write_simulated_dataset(out_dir: Path, *, n_train: int, n_test: int, image_size: int, geometry, feature_fn,
                             seed: int, meta: dict | None, plant_seed: int | None = None, **plant) -> Path:
    import h5py
    tmp = _atomic_dir(out_dir)
    try:
        train, train_labels = render_scenes(n_train, image_size, seed, start=0)
        test, test_labels = render_scenes(n_test, image_size, seed, start=10_000_000)
        np.save(tmp / "stimuli_train.npy", train)
        np.save(tmp / "stimuli_test.npy", test)
        feats = feature_fn(np.concatenate([train, test]))
        planted = plant_responses(feats, n_train, geometry, seed=seed if plant_seed is None else plant_seed, **plant)
        with h5py.File(tmp / "responses.h5", "w") as h5:
            h5.create_dataset("Y_train", data=planted.Y_train)
            h5.create_dataset("Y_test", data=planted.Y_test_repeats)
            h5.create_dataset("run_onsets", data=planted.run_onsets)
            h5.attrs["simulated"] = True
        np.savez(tmp / "truth.npz", labels_train=train_labels, labels_test=test_labels, **planted.truth)
        info = {"format_version": SIM_FORMAT_VERSION, "simulated": True, "n_train": n_train, "n_test": n_test,
                "image_size": image_size, "n_voxels": geometry.n_voxels,
                "n_repeats": int(planted.Y_test_repeats.shape[0]), "run_onsets": planted.run_onsets.tolist(),
                "hrf": planted.hrf.tolist(), "canonical_correlations": planted.rho.tolist(),
                "subject": geometry.subject, "transform": geometry.transform, "mask": geometry.mask_name,
                "seed": seed, **{k: (list(v) if isinstance(v, tuple) else v) for k, v in plant.items()},
                **(meta or {})}
        (tmp / "dataset.json").write_text(json.dumps(info, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
