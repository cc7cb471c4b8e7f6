"""What the dashboard draws: the per-run arrays it reads once (:class:`DashboardData`), the filter state and
the colour codes it implies, and pure ``make_*_figure`` functions from arrays to ``go.Figure``.

Figures carry their big arrays as numpy (plotly sends them as base64 typed arrays): UMAP coordinates are
quantised to uint16 (UMAP axes carry no meaning) and colours are uint8 codes into a discrete colour scale, so
a filter change re-sends one byte per voxel and a selection only touches small highlight traces.
"""
from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go

from core.vocabulary import BIN_COLOURS_RGBA, DEFAULT_BINS, NEGATIVE_RGBA, NS_RGBA, rgba_css, rgba_hex

from . import ids

__all__ = [
    "UMAP_CODE", "UMAP_COLOURS", "R_CODE", "R_COLOURS", "R_LABELS", "HIGHLIGHT_COLOUR", "SET_COLOUR",
    "JACCARD_COLORSCALE", "FilterState", "UmapView", "FlatmapView", "JaccardMapView", "DashboardData",
    "typed_array", "quantise_coords", "quantise_xy", "jaccard_map_view", "umap_colour_codes", "r_scatter_codes",
    "flatmap_filter_layer", "umap_marker_size", "make_umap_figure", "make_flatmap_figure",
    "make_r_scatter_figure", "make_bin_counts_figure", "make_roi_means_figure", "make_roi_rdm_figure",
    "make_agreement_figure", "make_jaccard_figure", "make_jaccard_map_figure", "make_series_figure",
    "empty_figure", "provenance",
]

# ---------------------------------------------------------------------------------------------- colour codes
#: uint8 colour codes of the UMAP points: 0 hidden, 1 faint (n.s. or filtered out), 2 significant negative r,
#: 3..6 the correlation bins of ``core.vocabulary.DEFAULT_BINS``.
UMAP_CODE = {"hidden": 0, "faint": 1, "negative": 2, "bin0": 3}
UMAP_COLOURS = ["rgba(0,0,0,0)", rgba_css(NS_RGBA), rgba_hex(NEGATIVE_RGBA), *DEFAULT_BINS.hex]

#: uint8 codes of the r_on vs r_off scatter: which conditions a voxel passes the filters in.
R_CODE = {"hidden": 0, "faint": 1, "off": 2, "on": 3, "both": 4}
R_LABELS = ["hidden", "n.s. / filtered out", "off only", "on only", "both"]
# Okabe-Ito sky blue / reddish purple / black: none is a viridis bin colour or the negative vermillion.
R_COLOURS = ["rgba(0,0,0,0)", rgba_css(NS_RGBA), "#56b4e9", "#cc79a7", "#222222"]

#: The selected voxel (a magenta diamond/ring) and the selected set (black rings) in every view.
HIGHLIGHT_COLOUR = "#e6007e"
SET_COLOUR = "#111111"
#: Colour scale of the neighbourhood-change map (Jaccard 0..1): perceptually uniform, sequential, readable
#: with colour-vision deficiencies, and neither the viridis of the r bins nor close to the magenta highlight.
JACCARD_COLORSCALE = "Cividis"
_FONT = dict(family="system-ui, -apple-system, Segoe UI, Roboto, sans-serif", size=12, color="#222")
_TEMPLATE = go.layout.Template(layout=dict(font=_FONT, paper_bgcolor="white", plot_bgcolor="white"))
_RUN_ID_RE = re.compile(r"[^A-Za-z0-9_.-]")


def _discrete_colorscale(colours: list[str]) -> list[list]:
    """Colour scale where integer code i (with ``cmin=-0.5, cmax=len-0.5``) gets exactly ``colours[i]``."""
    n = len(colours)
    scale = []
    for i, c in enumerate(colours):
        scale += [[i / n, c], [(i + 1) / n, c]]
    return scale


def typed_array(arr: np.ndarray) -> dict[str, str]:
    """A numpy array as plotly.js's base64 typed-array spec ``{"dtype", "bdata"}``.

    ``go.Figure`` does this itself; ``dash.Patch`` values are sent as plain JSON, so patches of big arrays
    use this to stay one byte per uint8 code instead of a JSON list.

    Parameters
    ----------
    arr : 1-D array of uint8, int8, uint16, int16, uint32, int32, float32 or float64
    """
    arr = np.ascontiguousarray(arr)
    kinds = {"u1": "u1", "i1": "i1", "u2": "u2", "i2": "i2", "u4": "u4", "i4": "i4", "f4": "f4", "f8": "f8"}
    key = arr.dtype.str[1:]
    if key not in kinds:
        raise TypeError(f"plotly typed arrays hold (u)int8/16/32 or float32/64, not {arr.dtype}")
    # plotly.js reads typed arrays in the platform's (little-endian) byte order.
    return {"dtype": kinds[key], "bdata": base64.b64encode(arr.astype(arr.dtype.newbyteorder("<")).tobytes()
                                                           ).decode("ascii")}


def quantise_coords(coords: np.ndarray) -> np.ndarray:
    """UMAP coordinates to uint16 on one common scale (so the layout's shape is kept).

    Parameters
    ----------
    coords : array of shape (n, 3)

    Returns
    -------
    q : uint16 array of shape (n, 3)
        ``round((coords - min) / max_range * 65535)``, per-axis minimum, the largest axis range for all
        axes; the error is at most half a step, ``max_range / 131070``.
    """
    c = np.asarray(coords, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 3:
        raise ValueError(f"expected UMAP coordinates of shape (n, 3), found {c.shape}")
    return _quantise(c)


def quantise_xy(xy: np.ndarray) -> np.ndarray:
    """Flat-surface positions (n, 2) to uint16 on one common scale, as :func:`quantise_coords` does in 3-D.

    Non-finite rows stay out of the scale and come back as 0 (callers drop them).
    """
    c = np.asarray(xy, dtype=np.float64)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"expected flat positions of shape (n, 2), found {c.shape}")
    ok = np.isfinite(c).all(1)
    out = np.zeros(c.shape, np.uint16)
    out[ok] = _quantise(c[ok])
    return out


def _quantise(c: np.ndarray) -> np.ndarray:
    if c.shape[0] == 0:
        return np.zeros(c.shape, np.uint16)
    lo = c.min(0)
    span = float((c.max(0) - lo).max()) or 1.0
    return np.round((c - lo) / span * 65535).astype(np.uint16)


# ---------------------------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class FilterState:
    """What the filter controls say; every view derives its colours from it.

    Attributes
    ----------
    rule : {"p", "q", "perm"}
        Significance: parametric p, BH-FDR q or block-permutation p, each at the run's level.
    bins : tuple of int
        Bin codes shown: 0..3 (``DEFAULT_BINS.labels``) and -2 (significant negative r).
    rois : tuple of str
        ROI names shown; empty = all.
    hemis : tuple of str
        "L", "R"; empty = both.
    threshold : float
        Minimum |r| in the condition shown.
    ns : {"faint", "hidden"}
        How voxels that are not significant or are filtered out are drawn.
    """
    rule: str = "p"
    bins: tuple[int, ...] = (-2, 0, 1, 2, 3)
    rois: tuple[str, ...] = ()
    hemis: tuple[str, ...] = ("L", "R")
    threshold: float = 0.0
    ns: str = "faint"

    @classmethod
    def from_controls(cls, rule, bins, rois, hemis, threshold, ns) -> "FilterState":
        """Build from the raw values of the filter controls (``None`` for an untouched control)."""
        return cls(rule=str(rule or "p"), bins=tuple(sorted(int(b) for b in (bins or ()))),
                   rois=tuple(sorted(str(r) for r in (rois or ()))), hemis=tuple(sorted(str(h) for h in (hemis or ()))),
                   threshold=float(threshold or 0.0), ns="hidden" if ns == "hidden" else "faint")

    def to_query(self) -> str:
        """URL query string of this state (for the flatmap filter-layer image route)."""
        from urllib.parse import urlencode
        return urlencode({"rule": self.rule, "bins": ",".join(map(str, self.bins)), "rois": ",".join(self.rois),
                          "hemis": ",".join(self.hemis), "thr": f"{self.threshold:g}", "ns": self.ns})

    @classmethod
    def from_query(cls, args) -> "FilterState":
        """Inverse of :meth:`to_query` (``args``: a mapping of query parameters); raises ValueError."""
        def items(name):
            value = args.get(name, "")
            return [s for s in value.split(",") if s] if value else []
        rule = args.get("rule", "p")
        ns = args.get("ns", "faint")
        if ns not in ("faint", "hidden"):
            raise ValueError(f"ns must be 'faint' or 'hidden', not {ns!r}")
        bins = tuple(int(b) for b in items("bins"))
        if any(b not in (-2, 0, 1, 2, 3) for b in bins):
            raise ValueError(f"bins must be among -2, 0..3, not {bins}")
        hemis = tuple(items("hemis"))
        if any(h not in ("L", "R") for h in hemis):
            raise ValueError(f"hemis must be among L, R, not {hemis}")
        thr = float(args.get("thr", "0"))
        if not np.isfinite(thr):
            raise ValueError("thr must be finite")
        return cls(rule=rule, bins=bins, rois=tuple(items("rois")), hemis=hemis, threshold=thr, ns=ns)


# ---------------------------------------------------------------------------------------------- run data
@dataclass
class UmapView:
    """One condition's embedding as the figures use it.

    Attributes
    ----------
    voxels : int64 array of shape (n_emb,)
        Voxel rows of the embedded voxels; trace point i is voxel ``voxels[i]``.
    coords : uint16 array of shape (n_emb, 3)
        Quantised coordinates (see :func:`quantise_coords`).
    position : int32 array of shape (n_voxels,)
        Trace point of each voxel, -1 where the voxel is not embedded.
    """
    voxels: np.ndarray
    coords: np.ndarray
    position: np.ndarray


@dataclass
class FlatmapView:
    """The run's flatmap assets.

    Attributes
    ----------
    folder : Path
        The cortex stage entry folder.
    images : dict of str -> str
        Image file name per condition.
    lookup : int32 array of shape (height, width)
        Voxel row under each pixel (row 0 at the top), -1 where none; memory-mapped.
    centre : float32 array of shape (n_voxels, 2)
        Mean (column, row) of each voxel's pixels; NaN for voxels that own no pixel.
    rois : list of dict
        ROI outlines and label anchors in pixel coordinates (``flatmap_rois.json``).
    """
    folder: Path
    images: dict[str, str]
    lookup: np.ndarray
    centre: np.ndarray
    rois: list[dict] = field(default_factory=list)

    @property
    def height(self) -> int:
        return int(self.lookup.shape[0])

    @property
    def width(self) -> int:
        return int(self.lookup.shape[1])

    def voxel_at(self, x: float, y: float) -> int:
        """Voxel under flatmap-figure coordinates (x = column, y = height - 1 - row), -1 if none."""
        col, row = int(round(x)), self.height - 1 - int(round(y))
        if 0 <= row < self.height and 0 <= col < self.width:
            return int(self.lookup[row, col])
        return -1


@dataclass
class JaccardMapView:
    """The neighbourhood-change map: the embedded voxels at their flatmap positions, one trace per ROI.

    Points are grouped by ROI (so a hover names the ROI without sending a label per point); trace ``g`` holds
    points ``starts[g]:starts[g + 1]``, and the one-point "selected voxel" trace comes after the groups.

    Attributes
    ----------
    voxels : int64 array of shape (n,)
        Voxel row of every point, in trace order (ROI, then voxel id).
    coords : uint16 array of shape (n, 2)
        Quantised flat positions (:func:`quantise_xy` of the dataset stage's ``flat_xy``; y up).
    values : float32 array of shape (n,)
        Jaccard overlap of the voxel's on and off kNN sets (the colour).
    starts : int64 array of shape (n_groups + 1,)
        Trace boundaries.
    names : list of str
        ROI name of each trace.
    position : int32 array of shape (n_voxels,)
        Index into the arrays above of each voxel, -1 where the voxel is not on the map.
    labels : list of (str, float, float)
        ROI label anchors (name with hemisphere, x, y in the quantised frame), for orientation.
    """
    voxels: np.ndarray
    coords: np.ndarray
    values: np.ndarray
    starts: np.ndarray
    names: list[str]
    position: np.ndarray
    labels: list[tuple[str, float, float]] = field(default_factory=list)

    @property
    def highlight_trace(self) -> int:
        """Index of the "selected voxel" trace (after the ROI groups)."""
        return len(self.names)

    def voxel_of(self, trace: int, point: int) -> int | None:
        """Voxel of point ``point`` of ROI trace ``trace`` (None when out of range)."""
        if not 0 <= trace < len(self.names):
            return None
        i = int(self.starts[trace]) + point
        return int(self.voxels[i]) if 0 <= point and i < int(self.starts[trace + 1]) else None


def jaccard_map_view(voxels: np.ndarray, jaccard: np.ndarray, flat_xy: np.ndarray, roi: np.ndarray,
                     roi_names: list[str], hemi: np.ndarray | None = None) -> JaccardMapView:
    """Build the :class:`JaccardMapView` of the RSA stage's embedded voxels.

    Parameters
    ----------
    voxels : int array of shape (n_emb,)
        Embedded voxel rows (the RSA stage's ``voxels_on``, equal to ``voxels_off`` under the union rule).
    jaccard : float array of shape (n_emb,)
        ``knn_jaccard`` of the RSA stage, aligned with ``voxels``.
    flat_xy : float array of shape (n_voxels, 2)
        Flat-surface position of every voxel (dataset stage).
    roi : int array of shape (n_voxels,)
        ROI index of every voxel into ``roi_names``.
    roi_names : list of str
    hemi : int array of shape (n_voxels,) or None
        0 left, 1 right: ROI labels are placed per hemisphere.

    Notes
    -----
    Voxels with a non-finite position or Jaccard value are left off the map.
    """
    voxels = np.asarray(voxels, dtype=np.int64)
    jac = np.asarray(jaccard, dtype=np.float32)
    if voxels.shape != jac.shape:
        raise ValueError(f"{voxels.size} embedded voxels but {jac.size} Jaccard values")
    flat = np.asarray(flat_xy, dtype=np.float64)
    roi = np.asarray(roi, dtype=np.int64)
    n_voxels = flat.shape[0]
    q = quantise_xy(flat)
    finite = np.isfinite(flat).all(1)
    keep = finite[voxels] & np.isfinite(jac)
    voxels, jac = voxels[keep], jac[keep]
    order = np.lexsort((voxels, roi[voxels]))
    voxels, jac = voxels[order], jac[order]
    groups, starts = np.unique(roi[voxels], return_index=True)
    names = [roi_names[g] if 0 <= g < len(roi_names) else str(g) for g in groups]
    position = np.full(n_voxels, -1, dtype=np.int32)
    position[voxels] = np.arange(voxels.size, dtype=np.int32)
    labels = []
    hemis = np.zeros(n_voxels, np.int8) if hemi is None else np.asarray(hemi)
    for g, name in enumerate(roi_names):
        if name in ("", "other"):
            continue
        for h, tag in ((0, "L"), (1, "R")):
            members = np.flatnonzero((roi == g) & (hemis == h) & finite)
            if members.size:
                x, y = np.median(q[members].astype(np.float64), axis=0)
                labels.append((name if hemi is None else f"{name} {tag}", float(x), float(y)))
    return JaccardMapView(voxels=voxels, coords=q[voxels], values=jac,
                          starts=np.append(starts, voxels.size).astype(np.int64), names=names, position=position,
                          labels=labels)


class DashboardData:
    """Everything the app reads from one run, loaded once: per-voxel arrays, embeddings, assets.

    Parameters
    ----------
    results : core.outputs.Results
        An opened run. Large arrays (series, lookup, thumbnails) stay memory-mapped.

    Notes
    -----
    Missing parts are recorded as reasons, not errors: ``flatmap_reason`` when the run has no cortex assets,
    ``umap_reason[m]`` when a condition has no embedding; the layout shows those sentences instead.
    """

    def __init__(self, results):
        import json

        self.results = results
        self.run_id = str(results.run_id)
        self.url_prefix = "/attnbrain/" + (_RUN_ID_RE.sub("_", self.run_id) or "run")
        self.simulated = bool(results.simulated)
        self.conditions = list(results.conditions)
        missing = [m for m in ids.PAIR if m not in self.conditions]
        if missing:
            from core._validation import InputError
            raise InputError(f"the dashboard compares attention off and on, but this run has no {missing} "
                             f"condition (it has {self.conditions}); rerun precompute.py with both modes",
                             source=str(results.run_dir), field="features.modes")
        if not results.has_stage("stats"):
            from core._validation import InputError
            raise InputError("this run has no stats stage; rerun precompute.py to finish it",
                             source=str(results.run_dir))
        self.n_voxels = int(results.n_voxels)
        self.n_test = int(results.n_test)
        cfg_stats = results.config.get("stats", {})
        self.level = float(cfg_stats.get("level", 0.01))
        self.edges = tuple(float(e) for e in cfg_stats.get("bin_edges", (0.0, 0.1, 0.2, 0.3)))
        st = {m: results.stats(m) for m in self.conditions}
        self.rules = ["p", "q"] + (["perm"] if all("p_perm" in st[m] for m in ids.PAIR) else [])
        rule = cfg_stats.get("rule", "p")
        self.default_rule = rule if rule in self.rules else "p"

        self.r = {m: np.asarray(st[m]["r"], dtype=np.float64) for m in self.conditions}
        self.p = {m: np.asarray(st[m]["p"], dtype=np.float64) for m in self.conditions}
        self.q = {m: np.asarray(st[m]["q"], dtype=np.float64) for m in self.conditions}
        self.p_perm = {m: np.asarray(st[m]["p_perm"]) for m in self.conditions if "p_perm" in st[m]}
        self.valid = {m: (np.asarray(st[m]["valid"], dtype=bool) if "valid" in st[m]
                          else np.isfinite(self.r[m])) for m in self.conditions}
        self.stored_bins = {m: np.asarray(st[m]["bin"], dtype=np.int8) for m in self.conditions}
        self.ceiling = {m: np.asarray(st[m]["cc_max"]) for m in self.conditions if "cc_max" in st[m]}
        self.alpha = {m: np.asarray(results.array("encoding", "alpha", m)) for m in self.conditions
                      if results.has_array("encoding", "alpha", m)}
        self.cv = {m: np.asarray(results.array("encoding", "cv", m)) for m in self.conditions
                   if results.has_array("encoding", "cv", m)}
        self._bins_cache: dict[tuple[str, str], np.ndarray] = {}

        self.roi_names = results.roi_names
        geometry = results.geometry()
        self.has_geometry = geometry is not None
        if self.has_geometry:
            self.ijk = np.asarray(geometry["ijk"], dtype=np.int64)
            self.hemi = np.asarray(geometry["hemi"], dtype=np.int8)
            self.roi = np.asarray(geometry["roi"], dtype=np.int64)
            keys = self._ijk_keys(self.ijk)
            self._ijk_order = np.argsort(keys, kind="stable")
            self._ijk_sorted = keys[self._ijk_order]
        else:
            self.ijk = self.hemi = self.roi = None

        self.umap: dict[str, UmapView] = {}
        self.umap_reason: dict[str, str] = {}
        self.knn: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for m in ids.PAIR:
            if results.has_array("umap", "umap", m):
                voxels, coords = results.umap(m)
                position = np.full(self.n_voxels, -1, dtype=np.int32)
                position[voxels] = np.arange(voxels.size, dtype=np.int32)
                self.umap[m] = UmapView(np.asarray(voxels, dtype=np.int64), quantise_coords(coords), position)
            else:
                self.umap_reason[m] = (f"No UMAP for attention {m}: the RSA stage found too few significant voxels "
                                       "to build a kNN graph, or the umap stage was not run.")
            if results.has_array("rsa", "knn_idx", m):
                self.knn[m] = results.knn(m)
        self.jaccard = None
        self.jaccard_map: JaccardMapView | None = None
        if results.has_array("rsa", "knn_jaccard"):
            self.jaccard = (results.embedded_voxels("on"), np.asarray(results.array("rsa", "knn_jaccard")))
            if self.has_geometry:
                self.jaccard_map = jaccard_map_view(*self.jaccard, geometry["flat_xy"], self.roi, self.roi_names,
                                                    self.hemi)
        self.roi_rdm = {m: np.asarray(results.array("rsa", "roi_rdm", m)) for m in ids.PAIR
                        if results.has_array("rsa", "roi_rdm", m)}
        self.roi_counts = np.asarray(results.array("rsa", "roi_counts")) if results.has_array("rsa", "roi_counts") \
            else None
        self.agreement = dict(results.stage("rsa").meta.get("agreement", {})) if results.has_stage("rsa") else {}

        self.flatmap: FlatmapView | None = None
        self.flatmap_reason = ""
        self.viewer_dir: Path | None = None
        folder = results.asset_dir("cortex")
        if folder is None:
            self.flatmap_reason = ("No brain views: this run has no cortex assets (its dataset has no pycortex "
                                   "subject, or the cortex stage was not run), so the flatmaps and the 3-D viewer "
                                   "are hidden.")
        else:
            meta_file = folder / "flatmap_meta.json"
            if meta_file.is_file() and results.has_array("cortex", "flatmap_lookup"):
                fm = json.loads(meta_file.read_text())
                lookup = results.array("cortex", "flatmap_lookup")
                images = {m: name for m, name in fm.get("conditions", {}).items() if (folder / name).is_file()}
                rois_file = folder / fm.get("rois", "flatmap_rois.json")
                rois = json.loads(rois_file.read_text()).get("rois", []) if rois_file.is_file() else []
                self.flatmap = FlatmapView(folder, images, lookup, self._pixel_centres(lookup), rois)
            else:
                self.flatmap_reason = (f"No flatmaps: the cortex assets in {folder.name} have no flatmap images "
                                       "or lookup; rerun the cortex stage of precompute.py.")
            if (folder / "viewer" / "index.html").is_file():
                self.viewer_dir = folder / "viewer"
        self.viewer_reason = "" if self.viewer_dir is not None else (
            "No 3-D viewer: this run has no pycortex static viewer (cortex assets missing).")

        self.thumbs = self.overlays = None
        if results.has_array("thumbnails", "thumbs"):
            self.thumbs, self.overlays = results.array("thumbnails", "thumbs"), results.array("thumbnails", "overlays")
        self._r_axis_cache: dict[str, np.ndarray] = {}

    # ------------------------------------------------------------------ derived per-voxel values
    @staticmethod
    def _ijk_keys(ijk: np.ndarray) -> np.ndarray:
        ijk = np.asarray(ijk, dtype=np.int64)
        return (ijk[:, 0] + 4096) * (8192 ** 2) + (ijk[:, 1] + 4096) * 8192 + (ijk[:, 2] + 4096)

    def voxel_at_ijk(self, i: int, j: int, k: int) -> int:
        """Voxel row with NIfTI indices (i, j, k), -1 if none (or the run has no geometry)."""
        if not self.has_geometry:
            return -1
        key = self._ijk_keys(np.array([[i, j, k]]))[0]
        pos = int(np.searchsorted(self._ijk_sorted, key))
        if pos < self._ijk_sorted.size and self._ijk_sorted[pos] == key:
            return int(self._ijk_order[pos])
        return -1

    def _pixel_centres(self, lookup: np.ndarray) -> np.ndarray:
        """Mean pixel (column, row) of every voxel on the flatmap, NaN for voxels without pixels."""
        centre = np.full((self.n_voxels, 2), np.nan, dtype=np.float32)
        lk = np.asarray(lookup)
        rows, cols = np.nonzero(lk >= 0)
        vox = lk[rows, cols].astype(np.int64)
        keep = vox < self.n_voxels
        vox, rows, cols = vox[keep], rows[keep], cols[keep]
        count = np.bincount(vox, minlength=self.n_voxels)
        has = count > 0
        centre[has, 0] = np.bincount(vox, weights=cols, minlength=self.n_voxels)[has] / count[has]
        centre[has, 1] = np.bincount(vox, weights=rows, minlength=self.n_voxels)[has] / count[has]
        return centre

    def bins(self, condition: str, rule: str) -> np.ndarray:
        """Correlation-bin codes (int8, shape (n_voxels,)) of a condition under a significance rule."""
        key = (condition, rule)
        if key not in self._bins_cache:
            from core.stats import correlation_bins, significance_mask
            if rule == "perm":
                sig = significance_mask(self.p_perm[condition], rule="p", level=self.level)
            elif rule in ("p", "q"):
                sig = significance_mask(self.p[condition], self.q[condition], rule=rule, level=self.level)
            else:
                raise ValueError(f"unknown significance rule {rule!r}; expected one of {self.rules}")
            self._bins_cache[key] = correlation_bins(self.r[condition], sig & self.valid[condition], self.edges)
        return self._bins_cache[key]

    def visible(self, condition: str, state: FilterState) -> np.ndarray:
        """Bool array of shape (n_voxels,): significant under ``state.rule`` and passing every filter."""
        b = self.bins(condition, state.rule)
        keep = (b != -1) & np.isin(b, np.asarray(state.bins, dtype=np.int8))
        if state.threshold > 0:
            keep &= np.abs(self.r[condition]) >= state.threshold
        if self.has_geometry:
            if state.rois:
                wanted = [self.roi_names.index(n) for n in state.rois if n in self.roi_names]
                keep &= np.isin(self.roi, wanted)
            if set(state.hemis) != {"L", "R"}:
                keep &= np.isin(self.hemi, [0 if h == "L" else 1 for h in state.hemis])
        return keep

    def default_filters(self) -> FilterState:
        return FilterState(rule=self.default_rule)

    def pixel_url(self, kind: str, index: int) -> str:
        """URL of a stimulus thumbnail (``kind="thumb"``) or attention overlay (``kind="overlay"``) PNG."""
        return f"{self.url_prefix}/stimulus/{kind}/{int(index)}.png"

    def flatmap_url(self, condition: str) -> str:
        return f"{self.url_prefix}/flatmap/{condition}.png"

    def flatmap_layer_url(self, condition: str, state: FilterState) -> str:
        return f"{self.url_prefix}/flatmap/{condition}/filtered.png?{state.to_query()}"

    @property
    def viewer_url(self) -> str:
        return f"{self.url_prefix}/viewer/index.html"


# ---------------------------------------------------------------------------------------------- codes
def umap_colour_codes(bins: np.ndarray, visible: np.ndarray, ns: str = "faint") -> np.ndarray:
    """uint8 colour code per voxel (see :data:`UMAP_CODE`).

    Parameters
    ----------
    bins : int array of shape (n,)
        Bin codes (-2, -1, 0..3) under the current significance rule.
    visible : bool array of shape (n,)
        Voxels that pass the filters (and are significant).
    ns : {"faint", "hidden"}
        Code of every other voxel.
    """
    b = np.asarray(bins, dtype=np.int16)
    codes = np.full(b.shape, UMAP_CODE["faint"] if ns == "faint" else UMAP_CODE["hidden"], dtype=np.uint8)
    vis = np.asarray(visible, dtype=bool) & (b != -1)
    codes[vis & (b == -2)] = UMAP_CODE["negative"]
    pos = vis & (b >= 0)
    codes[pos] = (b[pos] + UMAP_CODE["bin0"]).astype(np.uint8)
    return codes


def r_scatter_codes(visible_off: np.ndarray, visible_on: np.ndarray, ns: str = "faint") -> np.ndarray:
    """uint8 code per voxel of the r_on vs r_off scatter (see :data:`R_CODE`)."""
    off, on = np.asarray(visible_off, bool), np.asarray(visible_on, bool)
    codes = np.full(off.shape, R_CODE["faint"] if ns == "faint" else R_CODE["hidden"], dtype=np.uint8)
    codes[off & ~on] = R_CODE["off"]
    codes[on & ~off] = R_CODE["on"]
    codes[on & off] = R_CODE["both"]
    return codes


# Filtered-out voxels are painted over with this (the base image keeps the run's own colours).
_VEIL_RGBA = np.array([150, 150, 150, 235], dtype=np.uint8)
_CODE_RGBA = np.vstack([NEGATIVE_RGBA, NS_RGBA, BIN_COLOURS_RGBA])           # row = bin code + 2


def flatmap_filter_layer(lookup: np.ndarray, base_bins: np.ndarray, bins: np.ndarray,
                         visible: np.ndarray) -> np.ndarray:
    """The RGBA layer drawn over a precomputed flatmap image so it shows the current filters.

    The image colours voxels by the run's own bins; this layer paints (a) voxels coloured there but hidden
    now with an opaque grey veil and (b) voxels visible now in a different bin (another significance rule)
    in their current bin colour. Everything else stays transparent.

    Parameters
    ----------
    lookup : int array of shape (height, width)
        Voxel under each pixel, -1 where none.
    base_bins : int array of shape (n_voxels,)
        Bin codes the image was drawn with.
    bins : int array of shape (n_voxels,)
        Bin codes under the current significance rule.
    visible : bool array of shape (n_voxels,)
        Voxels passing the current filters.

    Returns
    -------
    uint8 array of shape (height, width, 4)
    """
    lk = np.asarray(lookup)
    layer = np.zeros(lk.shape + (4,), dtype=np.uint8)
    base = np.asarray(base_bins, dtype=np.int16)
    now = np.asarray(bins, dtype=np.int16)
    vis = np.asarray(visible, dtype=bool)
    # Per-voxel decision first (n_voxels), then one gather over the pixels.
    paint = np.zeros((base.size + 1, 4), dtype=np.uint8)                    # last row: pixels with no voxel
    veil = ~vis & (base != -1)
    recolour = vis & (now != base)
    paint[:-1][veil] = _VEIL_RGBA
    paint[:-1][recolour] = _CODE_RGBA[now[recolour] + 2]
    idx = np.where(lk >= 0, lk, base.size)
    layer[...] = paint[idx]
    return layer


# ---------------------------------------------------------------------------------------------- helpers
def provenance(run_id: str, simulated: bool, condition: str | None = None) -> str:
    """The provenance suffix every figure title carries: condition, run id and the simulated label."""
    parts = []
    if condition:
        parts.append(f"attention {condition}")
    parts.append(f"run {run_id}")
    if simulated:
        parts.append("SIMULATED data")
    return " · ".join(parts)


def _title(text: str, run_id: str, simulated: bool, condition: str | None = None) -> dict:
    return dict(text=f"{text}<br><sup>{provenance(run_id, simulated, condition)}</sup>", x=0.01, xanchor="left",
                font=dict(size=13))


def empty_figure(message: str, height: int = 260) -> go.Figure:
    """A blank figure carrying a sentence (used where a view has no data)."""
    fig = go.Figure(layout=dict(template=_TEMPLATE, height=height, xaxis=dict(visible=False),
                                yaxis=dict(visible=False), margin=dict(l=10, r=10, t=10, b=10)))
    fig.add_annotation(text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper",
                       font=dict(size=13, color="#555"))
    return fig


def _points3d(coords: np.ndarray | None) -> dict[str, Any]:
    if coords is None or len(coords) == 0:
        return dict(x=[], y=[], z=[])
    c = np.asarray(coords)
    return dict(x=c[:, 0], y=c[:, 1], z=c[:, 2])


# ---------------------------------------------------------------------------------------------- figures
def umap_marker_size(n_points: int) -> int:
    """Marker size of the UMAP points: smaller as the cloud gets denser (an integer, so a per-point size
    array that hides points travels as uint8)."""
    return 4 if n_points < 5000 else 3 if n_points < 30000 else 2


def make_umap_figure(coords: np.ndarray, codes: np.ndarray, *, condition: str, run_id: str, simulated: bool,
                     highlight: np.ndarray | None = None, set_coords: np.ndarray | None = None,
                     height: int = 430) -> go.Figure:
    """3-D UMAP scatter of one condition, coloured by correlation bin.

    Parameters
    ----------
    coords : uint16 array of shape (n_emb, 3)
        Quantised coordinates (trace 0, point i = embedded voxel i).
    codes : uint8 array of shape (n_emb,)
        Colour codes (:func:`umap_colour_codes` restricted to the embedded voxels).
    condition, run_id, simulated :
        Provenance for the title.
    highlight : array of shape (1, 3) or None
        Coordinates of the selected voxel (trace 1).
    set_coords : array of shape (n_set, 3) or None
        Coordinates of the selected set (trace 2).

    Returns
    -------
    go.Figure
        Traces: 0 voxels, 1 selected voxel, 2 selected set. Axes hidden (UMAP axes carry no meaning).
    """
    coords = np.asarray(coords)
    codes = np.asarray(codes, dtype=np.uint8)
    if coords.shape[0] != codes.shape[0]:
        raise ValueError(f"{coords.shape[0]} points but {codes.shape[0]} colour codes")
    size = umap_marker_size(coords.shape[0])
    voxels = go.Scatter3d(
        mode="markers", hoverinfo="none", showlegend=False, **_points3d(coords),
        marker=dict(size=size, color=codes, colorscale=_discrete_colorscale(UMAP_COLOURS), cmin=-0.5,
                    cmax=len(UMAP_COLOURS) - 0.5, showscale=False, line=dict(width=0)))
    selected = go.Scatter3d(mode="markers", hoverinfo="skip", showlegend=False, name="selected voxel",
                            **_points3d(highlight),
                            marker=dict(size=7, color=HIGHLIGHT_COLOUR, symbol="diamond",
                                        line=dict(color="black", width=1)))
    chosen = go.Scatter3d(mode="markers", hoverinfo="skip", showlegend=False, name="selected set",
                          **_points3d(set_coords), marker=dict(size=4, color=SET_COLOUR, symbol="circle-open"))
    axis = dict(visible=False, showspikes=False)
    layout = dict(template=_TEMPLATE, height=height, margin=dict(l=0, r=0, t=48, b=0), uirevision="umap",
                  title=_title("UMAP of the voxel RDM (predicted responses)", run_id, simulated, condition),
                  scene=dict(xaxis=axis, yaxis=axis, zaxis=axis, aspectmode="data", dragmode="orbit",
                             camera=dict(eye=dict(x=1.4, y=1.4, z=1.0))))
    return go.Figure(data=[voxels, selected, chosen], layout=layout)


def make_flatmap_figure(*, condition: str, image_url: str, layer_url: str | None, width: int, height: int,
                        rois: list[dict], run_id: str, simulated: bool, highlight: tuple[float, float] | None = None,
                        fig_height: int = 300) -> go.Figure:
    """The precomputed flatmap of one condition as a clickable, lasso-able figure.

    Figure coordinates are image pixels with y upwards: ``x = column``, ``y = height - 1 - row`` (pixel
    centres at integers), so a click converts to a pixel of the lookup by rounding.

    Parameters
    ----------
    condition, run_id, simulated :
        Provenance for the title.
    image_url : str
        URL of the flatmap PNG (layout image 0).
    layer_url : str or None
        URL of the filter layer PNG drawn over it (layout image 1; see :func:`flatmap_filter_layer`).
    width, height : int
        Image size in pixels.
    rois : list of dict
        ``flatmap_rois.json`` entries; their label anchors form trace 0 (hover names, and the selectable
        trace plotly's lasso needs).
    highlight : (column, row) or None
        Pixel of the selected voxel (trace 1).

    Returns
    -------
    go.Figure
        Traces: 0 ROI anchors, 1 selected voxel, 2 selected set.
    """
    images = [dict(source=image_url, xref="x", yref="y", x=-0.5, y=height - 0.5, sizex=width, sizey=height,
                   xanchor="left", yanchor="top", sizing="stretch", layer="below")]
    if layer_url:
        # plotly.js keys layout images by (xref, x, sizex, yref, y, sizey): two images with equal keys are
        # drawn as one, so the layer sits a billionth of a pixel to the right of the base image.
        images.append(dict(images[0], source=layer_url, x=-0.5 + 1e-9))
    if rois:
        ax = np.array([r["label"][0] for r in rois], dtype=np.float32)
        ay = (height - 1) - np.array([r["label"][1] for r in rois], dtype=np.float32)
        names = [f"{r['name']} ({r.get('hemi', '')})" for r in rois]
    else:                                   # corners: plotly only offers lasso/box with a selectable trace
        ax = np.array([0, width - 1], dtype=np.float32)
        ay = np.array([0, height - 1], dtype=np.float32)
        names = ["", ""]
    anchors = go.Scatter(x=ax, y=ay, mode="markers", hovertext=names, hoverinfo="text", showlegend=False,
                         marker=dict(size=10, color="rgba(0,0,0,0)"), name="ROIs")
    hx, hy = ([], []) if highlight is None else ([float(highlight[0])], [float(height - 1 - highlight[1])])
    selected = go.Scatter(x=hx, y=hy, mode="markers", hoverinfo="skip", showlegend=False, name="selected voxel",
                          marker=dict(size=15, symbol="circle-open", color=HIGHLIGHT_COLOUR, line=dict(width=3)))
    # SVG, not WebGL: sets drawn by hand are small, and every WebGL context costs the page a lot where
    # WebGL is emulated in software.
    chosen = go.Scatter(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False, name="selected set",
                        marker=dict(size=6, symbol="circle-open", color=SET_COLOUR))
    layout = dict(template=_TEMPLATE, height=fig_height, margin=dict(l=0, r=0, t=48, b=0), uirevision="flat",
                  title=_title("Flatmap (click a voxel; lasso/box selects a set)", run_id, simulated, condition),
                  images=images, dragmode="zoom", hovermode="closest",
                  xaxis=dict(visible=False, range=[-0.5, width - 0.5], constrain="domain"),
                  yaxis=dict(visible=False, range=[-0.5, height - 0.5], scaleanchor="x", constrain="domain"),
                  newselection=dict(line=dict(color=SET_COLOUR, dash="dot")))
    return go.Figure(data=[anchors, selected, chosen], layout=layout)


def make_r_scatter_figure(r_off: np.ndarray, r_on: np.ndarray, codes: np.ndarray, *, run_id: str,
                          simulated: bool, height: int = 420) -> go.Figure:
    """r_on vs r_off of every voxel (WebGL), the y = x diagonal, and a legend of the colour codes.

    Parameters
    ----------
    r_off, r_on : arrays of shape (n_voxels,)
        Test correlations; trace 0 point i is voxel i.
    codes : uint8 array of shape (n_voxels,)
        :func:`r_scatter_codes`.

    Returns
    -------
    go.Figure
        Traces: 0 voxels, 1 selected voxel, 2 selected set, then legend entries.
    """
    x = np.asarray(r_off, dtype=np.float32)
    y = np.asarray(r_on, dtype=np.float32)
    lo = float(min(x.min(initial=0), y.min(initial=0), -0.1))
    hi = float(max(x.max(initial=0), y.max(initial=0), 0.5))
    voxels = go.Scattergl(x=x, y=y, mode="markers", hoverinfo="none", showlegend=False,
                          marker=dict(size=3, color=np.asarray(codes, dtype=np.uint8),
                                      colorscale=_discrete_colorscale(R_COLOURS), cmin=-0.5,
                                      cmax=len(R_COLOURS) - 0.5, showscale=False))
    selected = go.Scattergl(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False, name="selected voxel",
                            marker=dict(size=13, symbol="diamond", color=HIGHLIGHT_COLOUR,
                                        line=dict(color="black", width=1)))
    chosen = go.Scattergl(x=[], y=[], mode="markers", hoverinfo="skip", showlegend=False, name="selected set",
                          marker=dict(size=6, symbol="circle-open", color=SET_COLOUR))
    legend = [go.Scattergl(x=[None], y=[None], mode="markers", name=R_LABELS[c], hoverinfo="skip",
                           marker=dict(size=8, color=R_COLOURS[c])) for c in (4, 3, 2, 1)]
    layout = dict(template=_TEMPLATE, height=height, margin=dict(l=50, r=10, t=60, b=45), uirevision="rscatter",
                  title=_title("Test r per voxel: attention on vs off (lasso/box selects a set)", run_id, simulated),
                  xaxis=dict(title="r, attention off", range=[lo, hi], zeroline=True, gridcolor="#eee"),
                  yaxis=dict(title="r, attention on", range=[lo, hi], zeroline=True, gridcolor="#eee",
                             scaleanchor="x"),
                  shapes=[dict(type="line", x0=lo, y0=lo, x1=hi, y1=hi, line=dict(color="#888", dash="dash"))],
                  dragmode="lasso", hovermode="closest",
                  legend=dict(orientation="h", y=-0.18, title="passes the filters in"))
    return go.Figure(data=[voxels, selected, chosen, *legend], layout=layout)


def make_bin_counts_figure(counts: dict[str, np.ndarray], *, run_id: str, simulated: bool) -> go.Figure:
    """Significant voxels per correlation bin and condition (bars in the bin colours, off hatched).

    Parameters
    ----------
    counts : dict of str -> int array of shape (5,)
        Per condition: counts of [negative, bin 0, bin 1, bin 2, bin 3].
    """
    labels = ["r < 0", *DEFAULT_BINS.labels]
    colours = [rgba_hex(NEGATIVE_RGBA), *DEFAULT_BINS.hex]
    bars = [go.Bar(x=labels, y=np.asarray(c, dtype=np.int64), name=f"attention {m}",
                   marker=dict(color=colours, pattern=dict(shape="/" if m == "off" else ""),
                               line=dict(color="#333", width=1)),
                   hovertemplate=f"attention {m}<br>%{{x}}: %{{y}} voxels<extra></extra>")
            for m, c in counts.items()]
    return go.Figure(data=bars, layout=dict(
        template=_TEMPLATE, height=300, barmode="group", margin=dict(l=50, r=10, t=60, b=40),
        title=_title("Significant voxels per correlation bin (off hatched)", run_id, simulated),
        yaxis=dict(title="voxels", gridcolor="#eee"), legend=dict(orientation="h", y=1.0, x=1, xanchor="right")))


def make_roi_means_figure(roi_names: list[str], means: dict[str, np.ndarray], counts: np.ndarray, *,
                          run_id: str, simulated: bool) -> go.Figure:
    """Mean test r per ROI, attention off vs on (horizontal grouped bars).

    Parameters
    ----------
    roi_names : list of str
    means : dict of str -> float array of shape (n_rois,)
        Mean r of the ROI's voxels per condition (NaN for an empty ROI).
    counts : int array of shape (n_rois,)
        Voxels per ROI (in the hover).
    """
    colours = {"off": "#56b4e9", "on": "#cc79a7", "uniform": "#999999"}
    bars = [go.Bar(y=roi_names, x=np.asarray(v, dtype=np.float64), orientation="h", name=f"attention {m}",
                   marker_color=colours.get(m, "#777"), customdata=np.asarray(counts, dtype=np.int64),
                   hovertemplate=f"%{{y}} · attention {m}<br>mean r %{{x:.3f}} over %{{customdata}} voxels"
                                 "<extra></extra>")
            for m, v in means.items()]
    return go.Figure(data=bars, layout=dict(
        template=_TEMPLATE, height=max(300, 24 * len(roi_names) + 100), barmode="group",
        margin=dict(l=70, r=10, t=60, b=40), title=_title("Mean test r per ROI (all voxels)", run_id, simulated),
        xaxis=dict(title="mean r", gridcolor="#eee", zeroline=True), yaxis=dict(autorange="reversed"),
        legend=dict(orientation="h", y=1.0, x=1, xanchor="right")))


def make_roi_rdm_figure(rdms: dict[str, np.ndarray], roi_names: list[str], counts: np.ndarray | None, *,
                        run_id: str, simulated: bool) -> go.Figure:
    """ROI x ROI block-mean correlation distance per condition, side by side on one colour scale.

    Parameters
    ----------
    rdms : dict of str -> float array of shape (n_rois, n_rois)
        ``roi_rdm_<m>`` of the RSA stage (NaN where a block has no voxel pairs).
    roi_names : list of str
    counts : int array of shape (n_rois,) or None
        Embedded voxels per ROI; empty ROIs are left out.
    """
    from plotly.subplots import make_subplots
    conds = list(rdms)
    keep = np.arange(len(roi_names)) if counts is None else np.flatnonzero(np.asarray(counts) > 0)
    names = [roi_names[i] for i in keep]
    fig = make_subplots(rows=1, cols=len(conds), subplot_titles=[f"attention {m}" for m in conds],
                        horizontal_spacing=0.12)
    finite = np.concatenate([np.asarray(rdms[m])[np.ix_(keep, keep)].ravel() for m in conds])
    finite = finite[np.isfinite(finite)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    for col, m in enumerate(conds, start=1):
        z = np.asarray(rdms[m], dtype=np.float64)[np.ix_(keep, keep)]
        fig.add_trace(go.Heatmap(z=z, x=names, y=names, coloraxis="coloraxis",
                                 hovertemplate=f"attention {m}<br>%{{y}} – %{{x}}: %{{z:.3f}}<extra></extra>"),
                      row=1, col=col)
        fig.update_yaxes(autorange="reversed", row=1, col=col)
    fig.update_layout(template=_TEMPLATE, height=380, margin=dict(l=60, r=10, t=80, b=60),
                      title=_title("ROI x ROI mean correlation distance (1 - r of predicted responses)", run_id,
                                   simulated),
                      coloraxis=dict(colorscale="Cividis", cmin=lo, cmax=hi,
                                     colorbar=dict(title="1 - r", thickness=12)))
    return fig


def make_agreement_figure(rdms: dict[str, np.ndarray], agreement: dict, *, run_id: str,
                          simulated: bool) -> go.Figure:
    """How much the two conditions' RDMs agree: ROI-block entries off vs on, and the voxel-pair statistics.

    Parameters
    ----------
    rdms : dict with keys "off" and "on" of float arrays of shape (n_rois, n_rois)
    agreement : dict
        The RSA stage's ``agreement`` (``pearson``, ``spearman``, their ``_ci`` and ``n_pairs``) over a
        random sample of voxel pairs; may be empty.
    """
    off, on = np.asarray(rdms["off"], dtype=np.float64), np.asarray(rdms["on"], dtype=np.float64)
    iu = np.triu_indices_from(off)
    x, y = off[iu], on[iu]
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    lo = float(min(x.min(initial=0), y.min(initial=0)))
    hi = float(max(x.max(initial=1), y.max(initial=1)))
    fig = go.Figure(data=[go.Scatter(x=x, y=y, mode="markers", marker=dict(size=7, color="#333"), showlegend=False,
                                     hovertemplate="off %{x:.3f} · on %{y:.3f}<extra>ROI block</extra>")],
                    layout=dict(template=_TEMPLATE, height=380, margin=dict(l=55, r=10, t=80, b=50),
                                title=_title("On vs off RDM agreement", run_id, simulated),
                                xaxis=dict(title="ROI-block distance, attention off", gridcolor="#eee"),
                                yaxis=dict(title="ROI-block distance, attention on", gridcolor="#eee"),
                                shapes=[dict(type="line", x0=lo, y0=lo, x1=hi, y1=hi,
                                             line=dict(color="#888", dash="dash"))]))
    if agreement:
        def ci(name):
            c = agreement.get(f"{name}_ci")
            return f" [{c[0]:.3f}, {c[1]:.3f}]" if c else ""
        text = (f"voxel pairs (n = {int(agreement.get('n_pairs', 0)):,}):<br>"
                f"Pearson {agreement['pearson']:.3f}{ci('pearson')}<br>"
                f"Spearman {agreement['spearman']:.3f}{ci('spearman')}")
    else:
        text = "voxel-pair agreement not computed for this run"
    fig.add_annotation(text=text, xref="paper", yref="paper", x=0.02, y=0.98, xanchor="left", yanchor="top",
                       showarrow=False, align="left", bgcolor="rgba(255,255,255,0.85)", bordercolor="#ccc")
    return fig


def make_jaccard_figure(jaccard: np.ndarray, *, run_id: str, simulated: bool, n_bins: int = 20) -> go.Figure:
    """Distribution of the per-voxel neighbourhood change: Jaccard overlap of the on and off kNN sets.

    Parameters
    ----------
    jaccard : float array of shape (n_emb,)
        ``knn_jaccard`` of the RSA stage (1 = same neighbours, 0 = none in common).
    """
    j = np.asarray(jaccard, dtype=np.float64)
    counts, edges = np.histogram(j, bins=n_bins, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    med = float(np.median(j)) if j.size else float("nan")
    fig = go.Figure(data=[go.Bar(x=centres, y=counts, width=np.diff(edges), marker_color="#555",
                                 hovertemplate="Jaccard %{x:.2f}: %{y} voxels<extra></extra>")],
                    layout=dict(template=_TEMPLATE, height=300, margin=dict(l=50, r=10, t=60, b=45),
                                title=_title("Neighbourhood change: on vs off kNN overlap per voxel", run_id,
                                             simulated),
                                xaxis=dict(title="Jaccard overlap (1 = same neighbours)", range=[0, 1]),
                                yaxis=dict(title="voxels", gridcolor="#eee"), bargap=0.05))
    if j.size:
        fig.add_vline(x=med, line=dict(color=HIGHLIGHT_COLOUR, dash="dash"),
                      annotation=dict(text=f"median {med:.2f}", font=dict(color=HIGHLIGHT_COLOUR)))
    return fig


def make_jaccard_map_figure(view: JaccardMapView, *, run_id: str, simulated: bool,
                            highlight: int | None = None, height: int = 430) -> go.Figure:
    """Neighbourhood change on the cortex: every embedded voxel at its flatmap position, coloured by the
    Jaccard overlap of its on and off kNN sets (WebGL; click a voxel to select it).

    Parameters
    ----------
    view : JaccardMapView
        :func:`jaccard_map_view` of the run.
    highlight : int or None
        Voxel drawn in the "selected voxel" trace.

    Returns
    -------
    go.Figure
        Traces ``0 .. len(view.names) - 1``: the voxels of one ROI each (uint16 x/y, float32 Jaccard as the
        colour on the shared colour axis, int32 voxel ids as customdata for the hover); then the selected voxel
        (``view.highlight_trace``). About 12 bytes per voxel before base64.
    """
    size = 3 if view.voxels.size > 20000 else 4 if view.voxels.size > 3000 else 6
    traces = []
    for g, name in enumerate(view.names):
        s, e = int(view.starts[g]), int(view.starts[g + 1])
        traces.append(go.Scattergl(
            x=view.coords[s:e, 0], y=view.coords[s:e, 1], mode="markers", name=name, showlegend=False,
            customdata=view.voxels[s:e].astype(np.int32),
            marker=dict(size=size, color=view.values[s:e], coloraxis="coloraxis"),
            hovertemplate=f"voxel %{{customdata}}<br>ROI {name}<br>Jaccard %{{marker.color:.2f}}<extra></extra>"))
    pos = -1 if highlight is None else int(view.position[int(highlight)])
    hx, hy = ([int(view.coords[pos, 0])], [int(view.coords[pos, 1])]) if pos >= 0 else ([], [])
    traces.append(go.Scattergl(x=hx, y=hy, mode="markers", hoverinfo="skip", showlegend=False,
                               name="selected voxel",
                               marker=dict(size=15, symbol="circle-open", color=HIGHLIGHT_COLOUR,
                                           line=dict(width=3))))
    labels = [dict(text=name, x=x, y=y, showarrow=False, font=dict(size=10, color="#222"),
                   bgcolor="rgba(255,255,255,0.6)", borderpad=0) for name, x, y in view.labels]
    axis = dict(visible=False, showgrid=False, zeroline=False)
    med = float(np.median(view.values)) if view.values.size else float("nan")
    return go.Figure(data=traces, layout=dict(
        template=_TEMPLATE, height=height, margin=dict(l=0, r=0, t=60, b=0), uirevision="jaccard-map",
        title=_title(f"Neighbourhood change on the flatmap: on vs off kNN overlap per voxel (median {med:.2f}; "
                     "click a voxel)", run_id, simulated),
        xaxis=axis, yaxis=dict(axis, scaleanchor="x"), hovermode="closest", dragmode="zoom",
        annotations=labels,
        coloraxis=dict(colorscale=JACCARD_COLORSCALE, cmin=0.0, cmax=1.0,
                       colorbar=dict(title=dict(text="Jaccard", side="right"), thickness=12, len=0.9,
                                     tickvals=[0, 0.25, 0.5, 0.75, 1],
                                     ticktext=["0 all changed", "0.25", "0.5", "0.75", "1 same"]))))


def make_series_figure(measured: np.ndarray, predicted: dict[str, np.ndarray], r: dict[str, float], *,
                       voxel: int, run_id: str, simulated: bool) -> go.Figure:
    """Measured vs predicted test series of one voxel, both conditions on one plot.

    Parameters
    ----------
    measured : array of shape (n_test,)
    predicted : dict of str -> array of shape (n_test,)
        Predicted series per condition.
    r : dict of str -> float
        Test correlation per condition (in the legend).
    voxel : int

    Notes
    -----
    Every series is drawn z-scored: ridge predictions shrink towards 0, so on raw scales their shape would
    hide; z-scoring changes no correlation.
    """
    colours = {"off": "#56b4e9", "on": "#cc79a7", "uniform": "#999999"}

    def z(a):
        a = np.asarray(a, dtype=np.float64)
        return ((a - a.mean()) / (a.std() or 1.0)).astype(np.float32)
    traces = [go.Scatter(y=z(measured), mode="lines", name="measured", line=dict(color="#222", width=2))]
    for m, pred in predicted.items():
        traces.append(go.Scatter(y=z(pred), mode="lines", name=f"predicted {m} (r = {r[m]:.3f})",
                                 line=dict(color=colours.get(m, "#777"), width=1.5)))
    return go.Figure(data=traces, layout=dict(
        template=_TEMPLATE, height=270, margin=dict(l=45, r=10, t=55, b=75),
        title=_title(f"Voxel {voxel}: measured vs predicted test series", run_id, simulated),
        xaxis=dict(title=dict(text="test sample", standoff=2), gridcolor="#eee"),
        yaxis=dict(title="z-scored response", gridcolor="#eee"),
        legend=dict(orientation="h", y=-0.42, font=dict(size=10))))
