"""Cross-validation folds that respect run boundaries, and FIR delays within runs."""
from __future__ import annotations

__all__ = ["make_folds", "make_delayed"]


import numpy as np
import torch

from core._validation import InputError, check_ndim

# --------------------------------------------------------------------------------------------------------------
# Folds and delays
# --------------------------------------------------------------------------------------------------------------

def _check_onsets(run_onsets, n_samples: int, *, field: str = "run_onsets") -> np.ndarray | None:
    """Validate run start indices (0 first, strictly increasing, below n_samples); return them as int64."""
    if run_onsets is None:
        return None
    onsets = np.asarray(run_onsets.cpu() if isinstance(run_onsets, torch.Tensor) else run_onsets)
    if onsets.ndim != 1 or onsets.size == 0 or not np.issubdtype(onsets.dtype, np.integer):
        raise InputError(f"expected a non-empty 1-D array of integer run start indices, found dtype {onsets.dtype} "
                         f"and shape {onsets.shape}", field=field)
    onsets = onsets.astype(np.int64)
    if onsets[0] != 0 or np.any(np.diff(onsets) <= 0) or onsets[-1] >= n_samples:
        raise InputError(f"expected strictly increasing run starts beginning at 0 and below n_samples = "
                         f"{n_samples}, found {onsets[:10].tolist()}", field=field)
    return onsets


def _run_slices(onsets: np.ndarray | None, n_samples: int) -> list[slice]:
    if onsets is None:
        return [slice(0, n_samples)]
    ends = np.append(onsets[1:], n_samples)
    return [slice(int(a), int(b)) for a, b in zip(onsets, ends)]


def make_folds(n_samples: int, n_folds: int = 5, run_onsets=None) -> list[tuple[np.ndarray, np.ndarray]]:
    """Cross-validation folds that respect the time structure of fMRI data (never shuffled).

    Parameters
    ----------
    n_samples : int
        Number of training samples.
    n_folds : int
        Number of contiguous blocks when no runs are given. The first ``n_samples % n_folds`` blocks hold one
        sample more, exactly as ``sklearn.model_selection.KFold(n_folds)`` (and hence himalaya with ``cv=int``).
    run_onsets : array of shape (n_runs,) or None
        Start index of each run. With two or more runs, each run is one validation fold (leave-one-run-out)
        and ``n_folds`` is ignored; a single run falls back to contiguous blocks.

    Returns
    -------
    folds : list of (train_idx, val_idx)
        int64 index arrays; each sample is in exactly one validation set.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise InputError(f"expected an integer number of samples >= 2, found {n_samples!r}", field="n_samples")
    onsets = _check_onsets(run_onsets, int(n_samples))
    all_idx = np.arange(n_samples, dtype=np.int64)
    if onsets is not None and onsets.size >= 2:
        blocks = [all_idx[s] for s in _run_slices(onsets, n_samples)]
    else:
        if isinstance(n_folds, bool) or not isinstance(n_folds, (int, np.integer)) or n_folds < 2:
            raise InputError(f"expected an integer number of folds >= 2, found {n_folds!r}", field="n_folds")
        if n_samples < 2 * n_folds:
            raise InputError(f"{n_samples} samples are too few for {n_folds} folds: each validation block needs at "
                             f"least 2 samples (n_samples >= {2 * n_folds}); lower n_folds or add samples",
                             field="n_samples")
        blocks = np.array_split(all_idx, n_folds)
    folds = []
    for block in blocks:
        keep = np.ones(n_samples, bool)
        keep[block] = False
        folds.append((all_idx[keep], block))
    return folds


def make_delayed(X, delays, run_onsets=None):
    """Stack time-shifted copies of the features (finite impulse response model of the haemodynamics).

    Parameters
    ----------
    X : array or tensor of shape (n_samples, n_features)
        Features, one row per time point.
    delays : sequence of int
        Shifts in samples; ``d > 0`` uses the features ``d`` samples in the past (``out[t] = X[t - d]``),
        ``d < 0`` the future, ``0`` the present.
    run_onsets : array of shape (n_runs,) or None
        Start index of each run. Shifts never cross a run boundary: samples whose source lies in another run
        (or before the start / after the end) are zero.

    Returns
    -------
    X_delayed : array or tensor of shape (n_samples, n_features * n_delays)
        Same type (numpy or torch), dtype and device as ``X``. Block ``i`` of ``n_features`` columns is ``X``
        shifted by ``delays[i]`` (delay-major order, like the Gallant lab's ``Delayer``).
    """
    is_torch = isinstance(X, torch.Tensor)
    if not is_torch:
        X = np.asarray(X)
    check_ndim(X, (2,), source="make_delayed", field="X", layout="(n_samples, n_features)")
    delays = _check_delays(delays)
    n, p = X.shape
    onsets = _check_onsets(run_onsets, n)
    out = (torch.zeros((n, p * len(delays)), dtype=X.dtype, device=X.device) if is_torch
           else np.zeros((n, p * len(delays)), dtype=X.dtype))
    for i, d in enumerate(delays):
        cols = slice(i * p, (i + 1) * p)
        for run in _run_slices(onsets, n):
            length = run.stop - run.start
            if abs(d) >= length:
                continue
            if d >= 0:
                out[run.start + d:run.stop, cols] = X[run.start:run.stop - d]
            else:
                out[run.start:run.stop + d, cols] = X[run.start - d:run.stop]
    return out


def _check_delays(delays) -> list[int]:
    values = list(np.atleast_1d(np.asarray(delays)).tolist()) if delays is not None else []
    if not values or not all(isinstance(d, int) and not isinstance(d, bool) for d in values):
        raise InputError(f"expected a non-empty sequence of integer delays in samples (e.g. [1, 2, 3, 4]), "
                         f"found {delays!r}", field="delays")
    if len(set(values)) != len(values):
        raise InputError(f"expected distinct delays, found duplicates in {values}", field="delays")
    return values


