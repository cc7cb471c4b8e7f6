"""The haemodynamic response and autocorrelated noise of the simulated BOLD series, both restarting per run.

A scan is a sequence of runs; the series of one run never carries over into the next (the scanner stops
between runs), so the convolution with the haemodynamic response and the AR(1) noise both start afresh at
every run onset, and in the test block.
"""
from __future__ import annotations

import math

import numpy as np

from core._validation import InputError

__all__ = ["double_gamma_hrf", "run_slices", "convolve_runs", "ar1_noise", "even_run_onsets"]


def double_gamma_hrf(tr: float, duration: float = 32.0) -> np.ndarray:
    """The canonical double-gamma haemodynamic response (SPM's) sampled every ``tr`` seconds.

    ``h(t) = t^5 e^-t / 5! - t^15 e^-t / (6 * 15!)``: a peak at 5 s, an undershoot a sixth as deep at 15 s.

    Parameters
    ----------
    tr : float
        Seconds between samples.
    duration : float
        Length of the kernel in seconds (the response is ~0 after 32 s).

    Returns
    -------
    h : float64 array of shape (floor(duration / tr) + 1,)
        ``h[k]`` is the response ``k * tr`` seconds after a unit impulse, scaled to unit sum of squares (so
        convolving white unit-variance input gives unit-variance output).
    """
    if not (isinstance(tr, (int, float)) and tr > 0):
        raise InputError(f"expected a positive TR in seconds, found {tr!r}", field="simulation.tr")
    t = np.arange(int(math.floor(duration / tr)) + 1) * float(tr)
    h = t ** 5 * np.exp(-t) / math.factorial(5) - t ** 15 * np.exp(-t) / (6 * math.factorial(15))
    return h / np.sqrt(np.sum(h ** 2))


def even_run_onsets(n_samples: int, n_runs: int) -> np.ndarray:
    """Start index of each of ``n_runs`` runs of (nearly) equal length, int64 of shape (n_runs,)."""
    if n_runs < 1 or n_samples < n_runs:
        raise InputError(f"expected 1 to {n_samples} runs, found {n_runs}", field="simulation.n_runs")
    sizes = np.array([len(a) for a in np.array_split(np.arange(n_samples), n_runs)], np.int64)
    return np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)


def run_slices(onsets: np.ndarray, n_samples: int) -> list[slice]:
    """The row slice of every run given its onsets (0 first, increasing)."""
    ends = np.append(np.asarray(onsets[1:], np.int64), n_samples)
    return [slice(int(a), int(b)) for a, b in zip(onsets, ends)]


def convolve_runs(x: np.ndarray, h: np.ndarray, onsets: np.ndarray) -> np.ndarray:
    """Causal convolution of every column of ``x`` with ``h``, restarted at each run onset.

    ``out[t] = sum_k h[k] x[t - k]`` over ``t - k`` in the run of ``t`` (samples of earlier runs count as 0).

    Parameters
    ----------
    x : array of shape (n_samples, n_columns)
    h : array of shape (n_taps,)
    onsets : int array of shape (n_runs,)

    Returns
    -------
    float64 array of shape (n_samples, n_columns)
    """
    x = np.asarray(x, np.float64)
    out = np.zeros_like(x)
    for run in run_slices(onsets, x.shape[0]):
        seg = x[run]
        n = seg.shape[0]
        for k in range(min(len(h), n)):
            out[run.start + k:run.stop] += h[k] * seg[:n - k]
    return out


def ar1_noise(rng: np.random.Generator, n_samples: int, phi: np.ndarray, onsets: np.ndarray,
              out: np.ndarray | None = None) -> np.ndarray:
    """Unit-variance AR(1) noise per column, ``e_t = phi e_{t-1} + sqrt(1 - phi^2) u_t``, restarted per run.

    Each run starts from the stationary distribution (``e_0 ~ N(0, 1)``), independent of the previous run,
    so every sample has variance 1 and lag-1 autocorrelation ``phi`` within a run and 0 across runs.

    Parameters
    ----------
    rng : numpy Generator
        The innovations are drawn as one ``standard_normal((n_samples, n_columns))`` call.
    n_samples : int
    phi : array of shape (n_columns,)
        Lag-1 autocorrelation of each column, in [0, 1).
    onsets : int array of shape (n_runs,)
    out : float64 array of shape (n_samples, n_columns), optional
        Filled in place.

    Returns
    -------
    float64 array of shape (n_samples, n_columns)
    """
    phi = np.asarray(phi, np.float64)
    if out is None:
        out = np.empty((n_samples, phi.size))
    rng.standard_normal(out=out)
    innov = np.sqrt(1 - phi ** 2)
    starts = set(int(o) for o in onsets)
    for t in range(1, n_samples):
        if t in starts:
            continue
        row = out[t]
        row *= innov
        row += phi * out[t - 1]
    return out
