"""The one colour scale for correlation bins, shared by the flatmaps, the WebGL viewer and the Dash app.

Bins follow the study (0-0.1 / 0.1-0.2 / 0.2-0.3 / >= 0.3) and are coded as int8: 0..3 for a significant
positive r in that bin, -1 for not significant (or excluded), -2 for a significant negative r. The four bin
colours are viridis at 0.25 / 0.5 / 0.75 / 1.0: lightness rises with the bin (so the order survives
greyscale printing, washed-out projectors and every kind of colour blindness) and none is near black or
white, so they stand out on the grey curvature underlay.
"""
from __future__ import annotations

import numpy as np

from core._validation import InputError

__all__ = [
    "BIN_LABELS", "BIN_COLOURS_RGBA", "BIN_HEX", "NS_RGBA", "NS_CSS", "NEGATIVE_RGBA", "NEGATIVE_HEX",
    "NEGATIVE_CODE", "NS_CODE", "bin_to_rgba",
]

BIN_LABELS = ("0-0.1", "0.1-0.2", "0.2-0.3", ">=0.3")

# viridis(0.25), viridis(0.5), viridis(0.75), viridis(1.0) from matplotlib, rounded to 8 bits.
BIN_COLOURS_RGBA = np.array([
    [59, 82, 139, 255],
    [33, 145, 140, 255],
    [94, 201, 98, 255],
    [253, 231, 37, 255],
], dtype=np.uint8)
BIN_COLOURS_RGBA.setflags(write=False)

# Not significant: a faint grey that lets the curvature (or the UMAP's other points) show through.
NS_RGBA = np.array([160, 160, 160, 60], dtype=np.uint8)
NS_RGBA.setflags(write=False)

# Significant negative r: Okabe-Ito vermillion, a hue viridis never takes (blue-yellow axis far from the
# teal/blue low bins, lightness far from the green/yellow high bins), so it cannot pass for a positive bin.
NEGATIVE_RGBA = np.array([213, 94, 0, 255], dtype=np.uint8)
NEGATIVE_RGBA.setflags(write=False)

NEGATIVE_CODE = -2
NS_CODE = -1


def _hex(rgba: np.ndarray) -> str:
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgba[:3]))


BIN_HEX = [_hex(c) for c in BIN_COLOURS_RGBA]
NEGATIVE_HEX = _hex(NEGATIVE_RGBA)
NS_CSS = "rgba({},{},{},{:.3f})".format(*(int(v) for v in NS_RGBA[:3]), NS_RGBA[3] / 255)

# Row k + 2 of this table is the colour of bin code k, so one fancy-index colours every voxel.
_TABLE = np.vstack([NEGATIVE_RGBA, NS_RGBA, BIN_COLOURS_RGBA])


def bin_to_rgba(bins) -> np.ndarray:
    """Colour each voxel by its correlation-bin code.

    Parameters
    ----------
    bins : integer array of shape (n_voxels,)
        Bin codes: 0..3 (significant, bins of ``BIN_LABELS``), -1 (not significant or excluded),
        -2 (significant negative r).

    Returns
    -------
    rgba : uint8 array of shape (n_voxels, 4)
        ``BIN_COLOURS_RGBA[b]`` for bin b, ``NS_RGBA`` for -1, ``NEGATIVE_RGBA`` for -2.
    """
    arr = np.asarray(bins)
    if arr.ndim != 1:
        raise InputError(f"expected a 1-D array of bin codes (n_voxels,), found shape {arr.shape}; "
                         "pass one condition's bins at a time", source="bin_to_rgba", field="bins")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f"expected integer bin codes, found dtype {arr.dtype}; compute bins with the stats "
                         "module (int8 codes -2..3)", source="bin_to_rgba", field="bins")
    bad = (arr < NEGATIVE_CODE) | (arr > len(BIN_LABELS) - 1)
    if bad.any():
        raise InputError(f"expected codes in -2..{len(BIN_LABELS) - 1}, found {int(bad.sum())} outside "
                         f"(first: {arr[bad][0]} at index {int(np.flatnonzero(bad)[0])})",
                         source="bin_to_rgba", field="bins")
    return _TABLE[arr.astype(np.int64) + 2]
