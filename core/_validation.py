"""User-facing input errors and the small checks that raise them.

Every problem with what a user hands us (files, configs, arrays, checkpoints) is raised as
:class:`InputError` with one readable sentence: which source, which field, what was expected, what was
found and how to fix it. The CLI prints that sentence alone and exits with code 2.
"""
from __future__ import annotations

import numpy as np

__all__ = ["InputError", "check_finite", "check_ndim", "check_positive_int"]


class InputError(ValueError):
    """A problem with user input, reported before any heavy work starts."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ""
        if source and field:
            where = f"{source}, field '{field}': "
        elif source:
            where = f"{source}: "
        elif field:
            where = f"'{field}': "
        super().__init__(where + message)


def check_ndim(arr: np.ndarray, ndims: tuple[int, ...], *, source: str, field: str, layout: str) -> None:
    """Raise if ``arr.ndim`` is not one of ``ndims``; ``layout`` names the expected axes."""
    if arr.ndim not in ndims:
        raise InputError(
            f"expected a {' or '.join(f'{d}-D' for d in ndims)} array {layout}, found a {arr.ndim}-D array "
            f"of shape {tuple(arr.shape)}" + (" (reshape a single voxel/sample to 2-D)" if arr.ndim == 1 else ""),
            source=source, field=field,
        )


def check_finite(arr: np.ndarray, *, source: str, field: str) -> None:
    """Raise if ``arr`` holds NaN or inf, naming how many and the first position."""
    if np.issubdtype(arr.dtype, np.floating):
        # NaN and inf survive a sum, so a finite sum proves every value finite in one pass without the
        # array-sized mask below (0.5 GB at the study's scale); only a non-finite sum (or an overflow) looks
        # closer.
        with np.errstate(over="ignore", invalid="ignore"):
            total = arr.sum(dtype=np.float64 if arr.dtype.itemsize > 4 else np.float32)
        if arr.size and np.isfinite(total):
            return
        bad = ~np.isfinite(arr)
        n_bad = int(bad.sum())
        if n_bad:
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise InputError(
                f"found {n_bad} NaN/inf values (first at index {first}); expected finite numbers. "
                "Remove or impute those samples/voxels before running.",
                source=source, field=field,
            )


def check_positive_int(value, *, field: str, source: str = "config") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise InputError(f"expected a positive integer, found {value!r}", source=source, field=field)
    return int(value)
