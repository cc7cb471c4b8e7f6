"""The words every part of the tool shares: conditions, significance rules and the correlation-bin scheme.

Names, codes, labels and colours come from here and nowhere else: the stages, the flatmaps and the WebGL
viewer, summary.json, the exports, the scenes and the dashboard (which passes :meth:`BinScheme.to_json` to the
page, so the clientside JS never retypes them).

Bins follow the study's Fig. 3 (0-0.1 / 0.1-0.2 / 0.2-0.3 / >= 0.3 by default, ``stats.bin_edges`` in the
config). A voxel's bin code is an int8: ``0 .. n_bins - 1`` for a significant positive r in that bin,
:data:`NS_CODE` (-1) for not significant (or excluded), :data:`NEGATIVE_CODE` (-2) for a significant r below
the first edge. The four bin colours are viridis at 0.25 / 0.5 / 0.75 / 1.0: lightness rises with the bin (so
the order survives greyscale printing, washed-out projectors and every kind of colour blindness) and none is
near black or white, so they stand out on the grey curvature underlay.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core._validation import InputError

__all__ = [
    "FEATURE_LAYERS", "SHARED_LAYERS", "CONDITIONS", "PAIR", "CONDITION_LABELS", "CONTRASTS", "CONTRAST_LABELS", "OUTCOME_CODES", "OUTCOME_RGBA",
    "CEILING_EDGES", "CEILING_LABELS", "CEILING_RGBA", "ADDS_CODES", "ADDS_RGBA", "COLOURINGS", "BIN_SETS", "RULES",
    "RULE_LABELS", "NEGATIVE_CODE", "NS_CODE", "N_BINS",
    "BIN_COLOURS_RGBA", "NS_RGBA", "NEGATIVE_RGBA", "BinScheme", "DEFAULT_BINS", "rgba_hex", "rgba_css",
]

#: The ABN layers features can be read from. The first three come from the trunk, before attention acts: the
#: same features in every condition (a study's built-in negative control).
SHARED_LAYERS = ("layer1", "layer2", "layer3")
FEATURE_LAYERS = (*SHARED_LAYERS, "layer4", "pool", "logits")

#: Feature sets (ABN perception modes), in display order: off = g, on = g * (1 + M), uniform = g * (1 + mean(M)).
CONDITIONS = ("off", "on", "uniform")
#: The two conditions compared side by side (left to right) and embedded for RSA / UMAP.
PAIR = ("off", "on")
CONDITION_LABELS = {"off": "attention off", "on": "attention on", "uniform": "uniform gain"}

#: Paired contrasts of the per-voxel prediction accuracy: name -> (a, b), the difference r_a - r_b.
CONTRASTS = {"on_off": ("on", "off"), "on_uniform": ("on", "uniform"), "uniform_off": ("uniform", "off")}
CONTRAST_LABELS = {name: f"{a} - {b}" for name, (a, b) in CONTRASTS.items()}
#: Outcome codes of a contrast per voxel (int8): a helps, b helps (a hurts), no detectable difference.
OUTCOME_CODES = {1: "helps", -1: "hurts", 0: "no detectable difference"}

#: Colour of each outcome code: Okabe-Ito blue where a predicts better ("helps"), reddish purple where b does,
#: a dark neutral grey for no detectable difference (darker than the flatmap's curvature and the faint grey of
#: filtered-out points, so "tested, no difference" never reads as "not shown"). Blue and purple differ in
#: lightness and keep apart for every kind of colour blindness; none is a viridis bin colour or the negative-r
#: vermillion.
OUTCOME_RGBA = {1: np.array([0, 114, 178, 255], dtype=np.uint8), -1: np.array([204, 121, 167, 255], dtype=np.uint8),
                0: np.array([50, 50, 50, 255], dtype=np.uint8)}
for _c in OUTCOME_RGBA.values():
    _c.setflags(write=False)

#: Steps of r / noise ceiling (``r_norm``) when the views colour by it: lower edges, labels and plasma colours
#: (at 0.1 / 0.3 / 0.5 / 0.7 / 0.9, matplotlib): lightness rises with the step, as the bins' viridis does.
CEILING_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8)
CEILING_LABELS = ("<0.2", "0.2-0.4", "0.4-0.6", "0.6-0.8", ">=0.8")
CEILING_RGBA = np.array([[65, 4, 157, 255], [143, 13, 164, 255], [204, 71, 120, 255], [242, 132, 75, 255],
                         [252, 206, 37, 255]], dtype=np.uint8)
CEILING_RGBA.setflags(write=False)

#: What the joint on+off model finds per voxel (the joint stage's unique-variance tests at BH q <= level):
#: 1 the on features add variance the off features do not explain, 2 the off features add variance beyond on,
#: 3 both, 0 neither (what is explained is shared). Colours: on blue and off reddish purple as in the on - off
#: contrast, both Okabe-Ito yellow, neither the dark grey of "no detectable difference".
ADDS_CODES = {1: "on adds", 2: "off adds", 3: "both add", 0: "neither: shared only"}
ADDS_RGBA = np.array([[50, 50, 50, 255], [0, 114, 178, 255], [204, 121, 167, 255], [240, 228, 66, 255]],
                     dtype=np.uint8)
ADDS_RGBA.setflags(write=False)

#: How the views colour voxels: by their correlation bin (the study's Fig. 3), by a contrast's outcome, by
#: r / noise ceiling (voxels with a reliable ceiling only), or by what the joint model finds attention adds.
COLOURINGS = {"bins": "r bins", "contrast": "contrast outcome", "ceiling": "r / noise ceiling",
              "adds": "what attention adds"}
#: Which voxels get a bin: significant ones only (the study's figures), or every voxel with a defined r.
BIN_SETS = {"significant": "significant voxels", "all": "all voxels"}

#: Significance rules: t-test p uncorrected (the study's), BH-FDR q of the t-test p, BH-FDR q of the block-permutation p.
RULES = ("p", "q", "perm")
RULE_LABELS = {"p": "p (uncorrected)", "q": "q (FDR)", "perm": "block-permutation q (FDR)"}

NEGATIVE_CODE = -2
NS_CODE = -1

# viridis(0.25), viridis(0.5), viridis(0.75), viridis(1.0) from matplotlib, rounded to 8 bits.
BIN_COLOURS_RGBA = np.array([
    [59, 82, 139, 255],
    [33, 145, 140, 255],
    [94, 201, 98, 255],
    [253, 231, 37, 255],
], dtype=np.uint8)
BIN_COLOURS_RGBA.setflags(write=False)
#: Bins a scheme has: one per colour above (the study's four).
N_BINS = len(BIN_COLOURS_RGBA)

# Not significant: a faint grey that lets the curvature (or the UMAP's other points) show through.
NS_RGBA = np.array([160, 160, 160, 60], dtype=np.uint8)
NS_RGBA.setflags(write=False)

# Significant negative r: Okabe-Ito vermillion, a hue viridis never takes (blue-yellow axis far from the
# teal/blue low bins, lightness far from the green/yellow high bins), so it cannot pass for a positive bin.
NEGATIVE_RGBA = np.array([213, 94, 0, 255], dtype=np.uint8)
NEGATIVE_RGBA.setflags(write=False)


def rgba_hex(rgba) -> str:
    """``[r, g, b, a]`` (uint8) -> ``'#rrggbb'`` (alpha dropped)."""
    return "#{:02x}{:02x}{:02x}".format(*(int(v) for v in rgba[:3]))


def rgba_css(rgba) -> str:
    """``[r, g, b, a]`` (uint8) -> ``'rgba(r,g,b,a)'`` with alpha in 0..1."""
    return "rgba({},{},{},{:.3f})".format(*(int(v) for v in rgba[:3]), rgba[3] / 255)


# Row code + 2 of this table is the colour of bin code ``code``, so one fancy-index colours every voxel.
_TABLE = np.vstack([NEGATIVE_RGBA, NS_RGBA, BIN_COLOURS_RGBA])
_TABLE.setflags(write=False)


@dataclass(frozen=True)
class BinScheme:
    """Correlation bins made from their lower edges: codes, labels and colours.

    Parameters
    ----------
    edges : sequence of float
        :data:`N_BINS` strictly increasing lower edges in [0, 1); bin k holds ``edges[k] <= r < edges[k + 1]``,
        the last bin ``r >= edges[-1]``.
    field : str
        The config field the edges came from, named in the error.
    """
    edges: tuple[float, ...]

    def __init__(self, edges, *, field: str = "stats.bin_edges"):
        try:
            e = tuple(float(x) for x in edges)
        except (TypeError, ValueError):
            raise InputError(f"expected {N_BINS} numbers (lower bin edges), found {edges!r}", field=field) from None
        if len(e) != N_BINS:
            raise InputError(f"expected {N_BINS} lower bin edges (one per colour of the bin scale, as the study's "
                             f"0 / 0.1 / 0.2 / 0.3), found {len(e)}: {list(e)}", field=field)
        if not all(np.isfinite(e)) or any(b <= a for a, b in zip(e, e[1:])):
            raise InputError(f"expected strictly increasing bin edges, found {list(e)}", field=field)
        if e[0] < 0 or e[-1] >= 1:
            raise InputError(f"expected bin edges in [0, 1) (correlations; significant r below the first edge get "
                             f"their own negative code), found {list(e)}", field=field)
        object.__setattr__(self, "edges", e)

    @classmethod
    def from_config(cls, cfg) -> "BinScheme":
        """The scheme of a run from its config's ``stats.bin_edges``.

        Parameters
        ----------
        cfg : RunConfig, dict or None
            A :class:`core.config.RunConfig`, its dict form (``run.json``'s ``config``, ``Results.config``),
            or None. A config without ``stats.bin_edges`` (or None) gives :data:`DEFAULT_BINS`.
        """
        # Duck-typed rather than importing core.config: the config check builds a BinScheme, so the
        # vocabulary must stay importable without it.
        if cfg is None:
            return DEFAULT_BINS
        if isinstance(cfg, dict):
            stats = cfg.get("stats")
            edges = stats.get("bin_edges") if isinstance(stats, dict) else None
        else:
            edges = getattr(getattr(cfg, "stats", None), "bin_edges", None)
        return DEFAULT_BINS if edges is None else cls(edges)

    @property
    def n_bins(self) -> int:
        return len(self.edges)

    @property
    def codes(self) -> tuple[int, ...]:
        """Codes of the positive bins, ``0 .. n_bins - 1``."""
        return tuple(range(self.n_bins))

    @property
    def filter_codes(self) -> tuple[int, ...]:
        """Codes a bin filter can choose: the negative category, then the positive bins (n.s. is not a bin)."""
        return (NEGATIVE_CODE, *self.codes)

    @property
    def labels(self) -> tuple[str, ...]:
        """``(0, 0.1, 0.2, 0.3)`` -> ``('0-0.1', '0.1-0.2', '0.2-0.3', '>=0.3')``."""
        e = self.edges
        return tuple(f"{a:g}-{b:g}" for a, b in zip(e, e[1:])) + (f">={e[-1]:g}",)

    @property
    def negative_label(self) -> str:
        return f"significant r<{self.edges[0]:g}"

    def label(self, code: int) -> str:
        """The label of any code: a bin's, the negative category's or ``'n.s.'``."""
        if code == NEGATIVE_CODE:
            return self.negative_label
        if code == NS_CODE:
            return "n.s."
        return self.labels[code]

    @property
    def rgba(self) -> np.ndarray:
        """uint8 array of shape (n_bins, 4): the positive bins' colours."""
        return BIN_COLOURS_RGBA[: self.n_bins]

    @property
    def hex(self) -> list[str]:
        return [rgba_hex(c) for c in self.rgba]

    def to_rgba(self, bins) -> np.ndarray:
        """Colour each voxel by its bin code.

        Parameters
        ----------
        bins : integer array of shape (n_voxels,)
            Codes ``0 .. n_bins - 1``, :data:`NS_CODE` or :data:`NEGATIVE_CODE`.

        Returns
        -------
        rgba : uint8 array of shape (n_voxels, 4)
        """
        arr = np.asarray(bins)
        if arr.ndim != 1:
            raise InputError(f"expected a 1-D array of bin codes (n_voxels,), found shape {arr.shape}; "
                             "pass one condition's bins at a time", source="bin colours", field="bins")
        if arr.size and not np.issubdtype(arr.dtype, np.integer):
            raise InputError(f"expected integer bin codes, found dtype {arr.dtype}; compute bins with the stats "
                             "module (int8 codes)", source="bin colours", field="bins")
        bad = (arr < NEGATIVE_CODE) | (arr > self.n_bins - 1)
        if bad.any():
            raise InputError(f"expected codes in {NEGATIVE_CODE}..{self.n_bins - 1}, found {int(bad.sum())} outside "
                             f"(first: {arr[bad][0]} at index {int(np.flatnonzero(bad)[0])})",
                             source="bin colours", field="bins")
        return _TABLE[arr.astype(np.int64) + 2]

    def to_json(self) -> dict:
        """Everything the page needs to label and colour bins (for the dashboard's and the bundle's JS)."""
        return {"edges": list(self.edges), "codes": list(self.codes), "labels": list(self.labels),
                "colours": self.hex, "negative": {"code": NEGATIVE_CODE, "label": self.negative_label,
                                                  "colour": rgba_hex(NEGATIVE_RGBA)},
                "ns": {"code": NS_CODE, "label": "n.s.", "colour": rgba_css(NS_RGBA)}}


#: The study's bins: 0-0.1 / 0.1-0.2 / 0.2-0.3 / >= 0.3.
DEFAULT_BINS = BinScheme((0.0, 0.1, 0.2, 0.3))
