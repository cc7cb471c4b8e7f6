"""The run as the dashboard reads it: :class:`DashboardData` (every per-voxel array, embedding and asset of
one run, loaded once), the views it builds of embeddings and flatmaps, and the :class:`FilterState` it is
queried with.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from core.vocabulary import (ADDS_CODES, ADDS_RGBA, BIN_SETS, CEILING_EDGES, CEILING_RGBA, COLOURINGS, CONTRASTS,
                             DEFAULT_BINS, OUTCOME_CODES, OUTCOME_RGBA, PAIR, BinScheme)

from .plotting import quantise_coords, quantise_xy

__all__ = ["FilterState", "UmapView", "FlatmapView", "JaccardMapView", "jaccard_map_view", "DashboardData"]

_RUN_ID_RE = re.compile(r"[^A-Za-z0-9_.-]")


# ---------------------------------------------------------------------------------------------- filters
@dataclass(frozen=True)
class FilterState:
    """What the filter controls say; every view derives its colours from it.

    Attributes
    ----------
    rule : {"p", "q", "perm"}
        Significance: parametric p, BH-FDR q or block-permutation p, each at the run's level.
    bins : tuple of int
        Bin codes shown: the positive bins and the negative category, among ``BinScheme.filter_codes`` (every
        scheme has the same codes; only its edges, hence its labels, differ).
    rois : tuple of str
        ROI names shown; empty = all.
    hemis : tuple of str
        "L", "R"; empty = both.
    threshold : float
        Minimum |r| in the condition shown.
    ns : {"faint", "hidden"}
        How voxels that are not significant or are filtered out are drawn.
    colour : {"bins", "contrast", "ceiling", "adds"}
        Colour the shown voxels by their r bin, by the outcome of ``contrast``, by r / noise ceiling (then
        only voxels with a reliable ceiling are shown), or by what the joint model finds attention adds.
    contrast : str
        The contrast (:data:`core.vocabulary.CONTRASTS`) whose outcome colours and filters the voxels.
    outcomes : tuple of int
        Outcome codes of ``contrast`` shown (+1 helps, -1 hurts, 0 no detectable difference); a filter only
        while ``colour == "contrast"``.
    bin_set : {"significant", "all"}
        Bin only voxels significant under ``rule`` (the views' default), or every voxel with a defined r (the
        study's Fig. 3 bins, whose lowest one no significant voxel can reach at short test lengths).
    adds : tuple of int
        Codes of :data:`core.vocabulary.ADDS_CODES` shown; a filter only while ``colour == "adds"``.
    """
    rule: str = "p"
    bins: tuple[int, ...] = DEFAULT_BINS.filter_codes
    rois: tuple[str, ...] = ()
    hemis: tuple[str, ...] = ("L", "R")
    threshold: float = 0.0
    ns: str = "faint"
    colour: str = "bins"
    contrast: str = "on_off"
    outcomes: tuple[int, ...] = (-1, 0, 1)
    bin_set: str = "significant"
    adds: tuple[int, ...] = (0, 1, 2, 3)

    @classmethod
    def from_controls(cls, rule, bins, rois, hemis, threshold, ns, colour=None, contrast=None, outcomes=None,
                      bin_set=None, adds=None) -> "FilterState":
        """Build from the raw values of the filter controls (``None`` for an untouched control)."""
        return cls(rule=str(rule or "p"), bins=tuple(sorted(int(b) for b in (bins or ()))),
                   rois=tuple(sorted(str(r) for r in (rois or ()))), hemis=tuple(sorted(str(h) for h in (hemis or ()))),
                   threshold=float(threshold or 0.0), ns="hidden" if ns == "hidden" else "faint",
                   colour=str(colour) if colour in COLOURINGS else "bins",
                   contrast=str(contrast) if contrast in CONTRASTS else "on_off",
                   outcomes=(-1, 0, 1) if outcomes is None else tuple(sorted(int(o) for o in outcomes)),
                   bin_set="all" if bin_set == "all" else "significant",
                   adds=(0, 1, 2, 3) if adds is None else tuple(sorted(int(a) for a in adds)))

    def to_query(self) -> str:
        """URL query string of this state (for the flatmap filter-layer image route)."""
        from urllib.parse import urlencode
        return urlencode({"rule": self.rule, "bins": ",".join(map(str, self.bins)), "rois": ",".join(self.rois),
                          "hemis": ",".join(self.hemis), "thr": f"{self.threshold:g}", "ns": self.ns,
                          "colour": self.colour, "contrast": self.contrast,
                          "outcomes": ",".join(map(str, self.outcomes)), "set": self.bin_set,
                          "adds": ",".join(map(str, self.adds))})

    @classmethod
    def from_query(cls, args) -> "FilterState":
        """Inverse of :meth:`to_query` (``args``: a mapping of query parameters); raises ValueError."""
        def items(name):
            value = args.get(name, "")
            return [s for s in value.split(",") if s] if value else []

        def choice(name, allowed, default):
            value = args.get(name, default)
            if value not in allowed:
                raise ValueError(f"{name} must be one of {', '.join(allowed)}, not {value!r}")
            return value
        rule = args.get("rule", "p")
        ns = choice("ns", ("faint", "hidden"), "faint")
        bins = tuple(int(b) for b in items("bins"))
        if any(b not in DEFAULT_BINS.filter_codes for b in bins):
            raise ValueError(f"bins must be among {DEFAULT_BINS.filter_codes}, not {bins}")
        hemis = tuple(items("hemis"))
        if any(h not in ("L", "R") for h in hemis):
            raise ValueError(f"hemis must be among L, R, not {hemis}")
        thr = float(args.get("thr", "0"))
        if not np.isfinite(thr):
            raise ValueError("thr must be finite")
        outcomes = tuple(int(o) for o in items("outcomes")) if "outcomes" in args else (-1, 0, 1)
        if any(o not in OUTCOME_CODES for o in outcomes):
            raise ValueError(f"outcomes must be among -1, 0, 1, not {outcomes}")
        adds = tuple(int(a) for a in items("adds")) if "adds" in args else (0, 1, 2, 3)
        if any(a not in ADDS_CODES for a in adds):
            raise ValueError(f"adds must be among 0, 1, 2, 3, not {adds}")
        return cls(rule=rule, bins=bins, rois=tuple(items("rois")), hemis=hemis, threshold=thr, ns=ns, adds=adds,
                   colour=choice("colour", tuple(COLOURINGS), "bins"), contrast=choice("contrast", tuple(CONTRASTS),
                                                                                       "on_off"),
                   outcomes=outcomes, bin_set=choice("set", tuple(BIN_SETS), "significant"))


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

    def __init__(self, results, mount: str = ""):
        import json

        self.results = results
        self.run_id = str(results.run_id)
        # Routes live under route_prefix; pages reach them at url_prefix, which adds where the app is mounted
        # (a study's dashboard serves each run under /run/<run_id>, see dashboard.study_app).
        self.route_prefix = "/attnbrain/" + (_RUN_ID_RE.sub("_", self.run_id) or "run")
        self.mount = mount.rstrip("/")
        self.url_prefix = self.mount + self.route_prefix
        self.simulated = bool(results.simulated)
        self.conditions = list(results.conditions)
        missing = [m for m in PAIR if m not in self.conditions]
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
        st = {m: results.stats(m) for m in self.conditions}
        self.rules = ["p", "q"] + (["perm"] if all("q_perm" in st[m] for m in PAIR) else [])
        rule = cfg_stats.get("rule", "p")
        self.default_rule = rule if rule in self.rules else "p"

        self.r = {m: np.asarray(st[m]["r"], dtype=np.float64) for m in self.conditions}
        self.p = {m: np.asarray(st[m]["p"], dtype=np.float64) for m in self.conditions}
        self.q = {m: np.asarray(st[m]["q"], dtype=np.float64) for m in self.conditions}
        self.p_perm = {m: np.asarray(st[m]["p_perm"]) for m in self.conditions if "p_perm" in st[m]}
        self.q_perm = {m: np.asarray(st[m]["q_perm"]) for m in self.conditions if "q_perm" in st[m]}
        self.valid = {m: (np.asarray(st[m]["valid"], dtype=bool) if "valid" in st[m]
                          else np.isfinite(self.r[m])) for m in self.conditions}
        self.stored_bins = {m: np.asarray(st[m]["bin"], dtype=np.int8) for m in self.conditions}
        self.ceiling = {m: np.asarray(st[m]["cc_max"]) for m in self.conditions if "cc_max" in st[m]}
        self.alpha = {m: np.asarray(results.array("encoding", "alpha", m)) for m in self.conditions
                      if results.has_array("encoding", "alpha", m)}
        self.cv = {m: np.asarray(results.array("encoding", "cv", m)) for m in self.conditions
                   if results.has_array("encoding", "cv", m)}
        self.r_norm = {m: np.asarray(st[m]["r_norm"]) for m in self.conditions if "r_norm" in st[m]}
        self.ceiling_valid = {m: np.asarray(st[m]["ceiling_valid"], dtype=bool) for m in self.conditions
                              if "ceiling_valid" in st[m]}
        self._bins_cache: dict[tuple[str, str, str], np.ndarray] = {}

        # The paired on-vs-off tests (contrasts stage): per contrast its per-voxel arrays and run/ROI summaries.
        self.contrasts: dict[str, dict[str, np.ndarray]] = {c: results.contrast(c) for c in results.contrast_names()}
        cmeta = results.stage("contrasts").meta if self.contrasts else {}
        self.contrast_meta: dict[str, dict] = dict(cmeta.get("contrasts", {}))
        self.contrast_test = {k: cmeta[k] for k in ("block_length", "block_length_auto", "n_boot", "ci", "level",
                                                     "test") if k in cmeta}
        # The joint on+off model (joint stage): test R^2, the partition, the unique-variance tests.
        self.joint: dict[str, np.ndarray] = {}
        self.joint_test: dict = {}
        if results.has_stage("joint") and results.has_array("joint", "unique_on"):
            from core.pipeline.schema import SCHEMA
            self.joint = {spec.field: np.asarray(results.array("joint", spec.field))
                          for spec in SCHEMA.stages["joint"].arrays
                          if spec.field != "pred" and results.has_array("joint", spec.field)}
            self.joint_test = dict(results.stage("joint").meta.get("test", {}))

        self.roi_names = results.roi_names
        geometry = results.geometry()
        # A cortex (flat positions, ROIs, hemispheres) and, with a pycortex subject, a volume (ijk); a mapper
        # file's cortex has no volume and may not know the hemispheres (hemi -1).
        self.has_geometry = geometry is not None
        self.has_volume = self.has_geometry and "ijk" in geometry
        self.file_voxel = results.file_voxel_index() if results.has_array("dataset", "voxel_index") else None
        self.ijk = None
        if self.has_geometry:
            self.hemi = np.asarray(geometry["hemi"], dtype=np.int8)
            self.roi = np.asarray(geometry["roi"], dtype=np.int64)
        else:
            self.hemi = self.roi = None
        self.has_hemispheres = self.has_geometry and bool(np.all(self.hemi >= 0))
        if self.has_volume:
            self.ijk = np.asarray(geometry["ijk"], dtype=np.int64)
            keys = self._ijk_keys(self.ijk)
            self._ijk_order = np.argsort(keys, kind="stable")
            self._ijk_sorted = keys[self._ijk_order]

        self.umap: dict[str, UmapView] = {}
        self.umap_reason: dict[str, str] = {}
        self.knn: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for m in PAIR:
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
                                                    self.hemi if self.has_hemispheres else None)
        self.roi_rdm = {m: np.asarray(results.array("rsa", "roi_rdm", m)) for m in PAIR
                        if results.has_array("rsa", "roi_rdm", m)}
        self.roi_counts = np.asarray(results.array("rsa", "roi_counts")) if results.has_array("rsa", "roi_counts") \
            else None
        self.agreement = dict(results.stage("rsa").meta.get("agreement", {})) if results.has_stage("rsa") else {}

        self.flatmap: FlatmapView | None = None
        self.flatmap_reason = ""
        self.viewer_dir: Path | None = None
        folder = results.asset_dir("cortex")
        data_cfg = results.config.get("data", {}) if isinstance(results.config, dict) else {}
        no_cortex = not data_cfg.get("mapper") and not data_cfg.get("subject")
        if no_cortex:
            self.flatmap_reason = ("No brain views: this run's dataset has no cortex mapping (no pycortex subject, "
                                   "data.subject, and no mapper file, data.mapper), so there are no flatmaps, 3-D "
                                   "viewer or ROI filters. A pycortex subject gives all three; a mapper file "
                                   "(Sxx_mappers.hdf) gives flatmaps and ROIs.")
        elif folder is None:
            self.flatmap_reason = ("No brain views: the cortex stage of this run was not run; run precompute.py "
                                   "with its cortex stage (--stages cortex) for the flatmaps.")
        if folder is not None and not no_cortex:
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
        if self.viewer_dir is not None:
            self.viewer_reason = ""
        elif data_cfg.get("mapper"):
            self.viewer_reason = ("No 3-D viewer: it draws the subject's cortical surfaces, which only a pycortex "
                                  "subject has; this run's cortex is a mapper file (flatmap and ROIs). Import the "
                                  "subject into pycortex (cortex.freesurfer.import_subj) and set data.subject for "
                                  "the viewer.")
        elif no_cortex:
            self.viewer_reason = self.flatmap_reason
        else:
            self.viewer_reason = "No 3-D viewer: this run has no pycortex static viewer (cortex assets missing)."

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
        """Voxel row with NIfTI indices (i, j, k), -1 if none (or the run has no volume)."""
        if not self.has_volume:
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

    def bins(self, condition: str, rule: str, bin_set: str = "significant") -> np.ndarray:
        """Correlation-bin codes (int8, shape (n_voxels,)) of a condition under a significance rule.

        ``bin_set="all"`` bins every voxel with a defined r (the rule is then not used): r below the first edge
        gets the negative code."""
        key = (condition, rule, bin_set)
        if key not in self._bins_cache:
            from core.stats import correlation_bins, significance_mask
            if bin_set == "all":
                sig = np.ones(self.n_voxels, dtype=bool)
            elif rule == "perm":   # as the stats stage applies it: BH over voxels of the block-permutation p
                sig = significance_mask(self.q_perm[condition], rule="p", level=self.level)
            elif rule in ("p", "q"):
                sig = significance_mask(self.p[condition], self.q[condition], rule=rule, level=self.level)
            else:
                raise ValueError(f"unknown significance rule {rule!r}; expected one of {self.rules}")
            self._bins_cache[key] = correlation_bins(self.r[condition], sig & self.valid[condition], self.bin_scheme.edges)
        return self._bins_cache[key]

    def state_bins(self, condition: str, state: FilterState) -> np.ndarray:
        """:meth:`bins` under a filter state's rule and bin set."""
        return self.bins(condition, state.rule, state.bin_set)

    def outcome(self, state: FilterState) -> np.ndarray | None:
        """Outcome codes (int8, shape (n_voxels,)) of the state's contrast where the views colour by contrast
        (0 where the contrast is undefined), else None."""
        if state.colour != "contrast" or state.contrast not in self.contrasts:
            return None
        c = self.contrasts[state.contrast]
        return np.where(c["valid"], c["outcome"], 0).astype(np.int8)

    def ceiling_bins(self, condition: str) -> np.ndarray:
        """Step of r / noise ceiling per voxel (int8, :data:`core.vocabulary.CEILING_EDGES`; below the first edge
        counts as the first step), -1 where the ceiling is unreliable or the run has none (no test repeats)."""
        if condition not in self.r_norm:
            return np.full(self.n_voxels, -1, dtype=np.int8)
        x = np.asarray(self.r_norm[condition], dtype=np.float64)
        ok = np.isfinite(x) & self.ceiling_valid.get(condition, np.isfinite(x))
        steps = np.clip(np.searchsorted(CEILING_EDGES, np.where(ok, x, 0.0), side="right") - 1, 0,
                        len(CEILING_EDGES) - 1)
        return np.where(ok, steps, -1).astype(np.int8)

    def adds_codes(self) -> np.ndarray:
        """:data:`core.vocabulary.ADDS_CODES` per voxel (int8) from the joint stage's unique-variance tests at
        their level; -1 where the joint model's test R^2 is undefined or the run has no joint stage."""
        if not self.joint:
            return np.full(self.n_voxels, -1, dtype=np.int8)
        level = float(self.joint_test.get("level", 0.05))
        on = (self.joint["q_unique_on"] <= level) & (self.joint["unique_on"] > 0)
        off = (self.joint["q_unique_off"] <= level) & (self.joint["unique_off"] > 0)
        code = on.astype(np.int8) + 2 * off.astype(np.int8)
        return np.where(np.isfinite(self.joint["r2_joint"]), code, -1).astype(np.int8)

    def visible(self, condition: str, state: FilterState) -> np.ndarray:
        """Bool array of shape (n_voxels,): binned under ``state`` (significant, unless its bin set is all) and
        passing every filter, the contrast outcome's included when the views colour by contrast."""
        b = self.state_bins(condition, state)
        keep = (b != -1) & np.isin(b, np.asarray(state.bins, dtype=np.int8))
        if state.threshold > 0:
            keep &= np.abs(self.r[condition]) >= state.threshold
        outcome = self.outcome(state)
        if outcome is not None:
            keep &= np.isin(outcome, np.asarray(state.outcomes, dtype=np.int8))
        if state.colour == "ceiling":
            keep &= self.ceiling_bins(condition) >= 0
        if state.colour == "adds":
            keep &= np.isin(self.adds_codes(), np.asarray(state.adds, dtype=np.int8))
        if self.has_geometry:
            if state.rois:
                wanted = [self.roi_names.index(n) for n in state.rois if n in self.roi_names]
                keep &= np.isin(self.roi, wanted)
            if self.has_hemispheres and set(state.hemis) != {"L", "R"}:
                keep &= np.isin(self.hemi, [0 if h == "L" else 1 for h in state.hemis])
        return keep

    def voxel_rgba(self, condition: str, state: FilterState) -> np.ndarray:
        """uint8 array of shape (n_voxels, 4): each voxel's colour under ``state`` where it is shown (its bin's,
        its contrast outcome's or its r / ceiling step's); what filtered-out voxels look like is each view's
        business."""
        if state.colour == "ceiling":
            return CEILING_RGBA[np.maximum(self.ceiling_bins(condition), 0)]
        if state.colour == "adds":
            return ADDS_RGBA[np.maximum(self.adds_codes(), 0)]
        outcome = self.outcome(state)
        if outcome is None:
            return self.bin_scheme.to_rgba(self.state_bins(condition, state))
        table = np.stack([OUTCOME_RGBA[-1], OUTCOME_RGBA[0], OUTCOME_RGBA[1]])
        return table[outcome.astype(np.int64) + 1]

    def critical_r(self, rule: str) -> dict[str, float | None]:
        """Smallest |r| significant under ``rule`` per condition (None where no voxel is), from the data: the
        threshold the rule puts on r at this test length."""
        out = {}
        for m in self.conditions:
            b = self.bins(m, rule)
            sig = (b != -1) & (self.r[m] > 0)
            out[m] = float(np.min(self.r[m][sig])) if sig.any() else None
        return out

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

    # ------------------------------------------------------------------ vocabulary
    @cached_property
    def bin_scheme(self) -> BinScheme:
        """The run's correlation bins (``stats.bin_edges`` of its config): codes, labels and colours."""
        return BinScheme.from_config(self.results.config)
