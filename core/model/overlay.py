"""Attention-map overlays: a stimulus with its ABN attention map M drawn on top in the JET colormap.

Used for the stimulus thumbnails of the dashboard; the look follows the official ABN visualisations.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from core._validation import InputError

__all__ = ["attention_overlay", "jet", "save_overlay_png"]


def jet(values: np.ndarray) -> np.ndarray:
    """Map values in [0, 1] to RGB with the JET colormap (blue -> cyan -> yellow -> red).

    The piecewise-linear definition of matplotlib's ``jet``: 0 is dark blue (0, 0, 0.5), 1 is dark red
    (0.5, 0, 0); values outside [0, 1] are clipped.

    Parameters
    ----------
    values : array of any shape

    Returns
    -------
    array of shape values.shape + (3,), float64 in [0, 1]
    """
    v = np.clip(np.asarray(values, dtype=np.float64), 0.0, 1.0)
    # Each channel is a trapezoid; these are matplotlib's _jet_data breakpoints.
    r = np.interp(v, [0.0, 0.35, 0.66, 0.89, 1.0], [0.0, 0.0, 1.0, 1.0, 0.5])
    g = np.interp(v, [0.0, 0.125, 0.375, 0.64, 0.91, 1.0], [0.0, 0.0, 1.0, 1.0, 0.0, 0.0])
    b = np.interp(v, [0.0, 0.11, 0.34, 0.65, 1.0], [0.5, 1.0, 1.0, 0.0, 0.0])
    return np.stack([r, g, b], axis=-1)


def _upsample(M: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a 2-D float map to (height, width), pixel centres aligned as in torch/PIL."""
    h, w = size
    return np.asarray(Image.fromarray(M.astype(np.float32), mode="F").resize((w, h), Image.BILINEAR),
                      dtype=np.float64)


def attention_overlay(image: np.ndarray, M: np.ndarray, alpha: float = 0.4) -> np.ndarray:
    """Blend a JET-coloured attention map over an image.

    M is min-max scaled to [0, 1] (a constant map becomes all 0, i.e. uniformly blue), upsampled bilinearly
    to the image size, coloured with :func:`jet`, and blended: ``(1 - alpha) * image + alpha * colour``.

    Parameters
    ----------
    image : uint8 array of shape (height, width, 3)
        The RGB stimulus.
    M : array of shape (h, w)
        Attention map (any range; e.g. ``FeatureSet.attention[i]``).
    alpha : float
        Opacity of the attention colours, in [0, 1].

    Returns
    -------
    uint8 array of shape (height, width, 3)
    """
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"expected a uint8 array of shape (height, width, 3), found shape {image.shape} and "
                         f"dtype {image.dtype}", field="image")
    M = np.asarray(M, dtype=np.float64)
    if M.ndim != 2 or not np.all(np.isfinite(M)):
        raise InputError(f"expected a finite 2-D attention map (h, w), found shape {M.shape}", field="M")
    if not 0.0 <= float(alpha) <= 1.0:
        raise InputError(f"expected alpha in [0, 1], found {alpha!r}", field="alpha")
    lo, hi = M.min(), M.max()
    scaled = (M - lo) / (hi - lo) if hi > lo else np.zeros_like(M)
    heat = jet(np.clip(_upsample(scaled, image.shape[:2]), 0.0, 1.0)) * 255.0
    out = (1.0 - alpha) * image.astype(np.float64) + alpha * heat
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def save_overlay_png(path: str | os.PathLike, image: np.ndarray, M: np.ndarray, alpha: float = 0.4) -> Path:
    """Write :func:`attention_overlay` of ``image`` and ``M`` as a PNG file (parent folders created).

    Parameters
    ----------
    path : str or path-like
    image : uint8 array of shape (height, width, 3)
    M : array of shape (h, w)
    alpha : float

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(attention_overlay(image, M, alpha)).save(path, format="PNG")
    return path
