"""The results schema: per stage, the arrays its entry holds, with dtype and shape in named dimensions.

One table serves everything that names a stage array: the stages and the synthetic writer name what they
write with :func:`name`, the store refuses a commit that does not match (:meth:`Schema.check`), and
:class:`core.outputs.Results` reads by stage, field and condition. The names are the file names on disk
(``<name>.npy`` in the stage's entry folder).

Dimensions of a shape:

========================  ======================================================================
``n_voxels``              voxels of the run (the dataset stage's meta)
``n_train``, ``n_test``   training and test samples (the dataset stage's meta)
``n_rois``                ROI names of the cortex mapping (the dataset stage's ``roi_names``)
``k``                     neighbours per voxel in the kNN graph, the voxel itself included (``rsa.k``)
``n_embedded_<m>``        voxels in condition m's kNN graph and UMAP (the rsa stage's ``voxels_<m>``)
``thumb_size``            side of the stimulus thumbnails in pixels (the thumbnails stage's meta)
``flatmap_height/width``  the flatmap images' size in pixels
``*``                     free (a feature width, an attention map's grid)
========================  ======================================================================

A dimension that nothing fixes beforehand is taken from the first array that has it and must agree in
the others.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from core._validation import InputError
from core.vocabulary import CONTRASTS

__all__ = ["CONDITIONS", "GEOMETRY_FIELDS", "ArraySpec", "StageSchema", "Dims", "Schema", "SchemaError", "SCHEMA",
           "name", "run_dims", "markdown_table"]

#: Feature conditions, in the order stages and readers walk them.
CONDITIONS = ("off", "on", "uniform")
_PAIR = ("off", "on")                  # the conditions the kNN graphs and UMAPs compare

# When optional arrays are present. Arrays of a stage with the same text are written together (per condition
# for per-condition arrays).
_CORTEX = "with a cortex mapping (a pycortex subject, data.subject, or a mapper file, data.mapper)"
_VOLUME = "with a pycortex subject (data.subject set, no data.mapper): voxels in a volume"
_EXCLUDED = "with voxels of the response file left out (NaN in every test sample)"
_TRUTH = "simulated data only: the planted truth"
_LABELS = "data simulated by the pipeline: the scene label of each stimulus"
_PERM = "with permutations (stats.n_permutations > 0)"
_REPEATS = "with test repeats (the noise ceiling)"
_GRAPH = "for a condition with more voxels than k (else too few for a kNN graph)"
_ROI_RDM = "with a cortex mapping, for a condition with a kNN graph"
_JOINT = "with joint.enabled and both the on and off conditions"
_JOINT_UNIFORM = "with joint.enabled, joint.uniform and the on and uniform conditions"
_JACCARD = "with one voxel set for both graphs (rsa.voxels not 'significant') and both graphs built"


@dataclass(frozen=True)
class ArraySpec:
    """One array of a stage entry.

    Attributes
    ----------
    field : str
        What it holds; the file name, followed by ``_<condition>`` when ``per_condition``.
    dtype : str
        numpy dtype name (``"float32"``, ``"int64"``, ``"bool"``, ...).
    shape : tuple of str or int
        Dimension names (see the module docstring; ``{condition}`` in a name is the array's condition),
        sums of them (``"n_train+n_test"``), ``"*"`` for a free dimension, or fixed sizes.
    per_condition : bool
        One array per feature condition of the stage.
    only : str
        Empty when every entry of the stage holds it; else when it is present.
    description : str
        One line for people (docs/formats.md).
    """
    field: str
    dtype: str
    shape: tuple[str | int, ...]
    per_condition: bool = False
    only: str = ""
    description: str = ""

    def name(self, condition: str | None = None) -> str:
        return f"{self.field}_{condition}" if self.per_condition else self.field


@dataclass(frozen=True)
class StageSchema:
    """The arrays of one stage's entry.

    Attributes
    ----------
    arrays : tuple of ArraySpec
    conditions : tuple of str
        The conditions its per-condition arrays take (those of the run's among them).
    meta_dims : tuple of (dimension, meta key)
        Dimensions its own meta records (a list's length for a list).
    """
    arrays: tuple[ArraySpec, ...]
    conditions: tuple[str, ...] = CONDITIONS
    meta_dims: tuple[tuple[str, str], ...] = ()


class Dims(dict):
    """Dimension name -> size, and in ``sources`` where each size came from (for the messages)."""

    def __init__(self, values: Mapping[str, int] | None = None, sources: Mapping[str, str] | None = None):
        super().__init__(values or {})
        self.sources = {d: (sources or {}).get(d, "the caller") for d in self}


class SchemaError(InputError):
    """A stage's arrays do not match the schema: names the stage, the array, what was expected and found."""

    def __init__(self, stage: str, array: str | None, message: str):
        where = f"stage {stage}" + (f", array '{array}'" if array else "")
        super().__init__(f"{where}: {message}")
        self.stage, self.array, self.detail = stage, array, message

    def __reduce__(self):
        # Raised in a spawned stage process too, and sent back to the run.
        return SchemaError, (self.stage, self.array, self.detail)


A = ArraySpec
_N = ("n_voxels",)
_SEL = ("n_embedded_{condition}",)

_STAGES: dict[str, StageSchema] = {
    "dataset": StageSchema((
        A("ijk", "int16", ("n_voxels", 3), only=_VOLUME,
          description="NIfTI-order voxel indices (i, j, k) in the functional reference volume"),
        A("flat_xy", "float32", ("n_voxels", 2), only=_CORTEX,
          description="flatmap position (flat-surface units; a mapper's: pixels, y up, NaN where unmapped)"),
        A("hemi", "int8", _N, only=_CORTEX, description="hemisphere: 0 left, 1 right (-1 unknown: a mapper file "
          "without a fsaverage mapper)"),
        A("roi", "int16", _N, only=_CORTEX, description="index into the dataset meta's roi_names (0 = other)"),
        A("unmapped", "bool", _N, only=_CORTEX, description="no surface vertex in the voxel (nearest one used; a "
          "mapper's: no flatmap pixel shows it)"),
        A("xyz_mm", "float32", ("n_voxels", 3), only=_VOLUME, description="voxel centre in world space (mm)"),
        A("voxel_index", "int64", _N, only=_EXCLUDED,
          description="the voxel's column in the response file (absent: row = column)"),
        A("truth_signal_fraction", "float32", _N, only=_TRUTH,
          description="planted signal share of one trial's variance (unique_on + unique_off + shared)"),
        A("truth_on_share", "float32", _N, only=_TRUTH, description="planted weight of the attention-on features, "
          "in [0, 1]"),
        A("truth_unique_on", "float32", _N, only=_TRUTH,
          description="planted variance only the on latents explain (share of one trial's variance)"),
        A("truth_unique_off", "float32", _N, only=_TRUTH,
          description="planted variance only the off latents explain (share of one trial's variance)"),
        A("truth_shared", "float32", _N, only=_TRUTH,
          description="planted variance either latent set explains (share of one trial's variance)"),
        A("truth_delta_r", "float32", _N, only=_TRUTH,
          description="planted on-minus-off advantage: r_on - r_off of ideal latent models on the test average"),
        A("truth_ar_phi", "float32", _N, only=_TRUTH, description="planted lag-1 autocorrelation of the noise"),
        A("truth_dominant_on", "bool", _N, only=_TRUTH,
          description="attention on planted as the dominant condition (delta_r > 0)"),
        A("truth_null", "bool", _N, only=_TRUTH, description="planted without signal"),
        A("truth_null_contrast", "bool", _N, only=_TRUTH,
          description="planted with signal and equal on/off explained variance (no on/off contrast)"),
        A("truth_early_visual", "bool", _N, only=_TRUTH, description="in V1-V3"),
        A("truth_object_scene", "bool", _N, only=_TRUTH, description="in an object or scene ROI"),
        A("truth_labels_train", "int16", ("n_train",), only=_LABELS, description="scene label of each train stimulus"),
        A("truth_labels_test", "int16", ("n_test",), only=_LABELS, description="scene label of each test stimulus"),
    ), conditions=(), meta_dims=(("n_voxels", "n_voxels"), ("n_train", "n_train"), ("n_test", "n_test"),
                                 ("n_rois", "roi_names"))),
    "features": StageSchema((
        A("X", "float32", ("n_train+n_test", "*"), per_condition=True,
          description="ABN features of every stimulus, train rows then test rows"),
        A("attention_test", "float32", ("n_test", "*", "*"), description="ABN attention map of each test stimulus"),
    ), meta_dims=(("n_train", "n_train"),)),
    "thumbnails": StageSchema((
        A("thumbs", "uint8", ("n_test", "thumb_size", "thumb_size", 3), description="test stimuli, RGB thumbnails"),
        A("overlays", "uint8", ("n_test", "thumb_size", "thumb_size", 3),
          description="the thumbnails with their attention map overlaid (JET, alpha 0.4)"),
    ), conditions=(), meta_dims=(("thumb_size", "size"), ("n_test", "n"))),
    "encoding": StageSchema((
        A("measured", "float32", ("n_voxels", "n_test"), description="measured test series (repeat average)"),
        A("pred", "float32", ("n_voxels", "n_test"), per_condition=True, description="predicted test series"),
        A("alpha", "float32", _N, per_condition=True, description="ridge penalty chosen by cross-validation"),
        A("cv", "float32", _N, per_condition=True,
          description="cross-validated R^2 at that penalty (1 - SSE / SST per validation fold, mean over folds)"),
    )),
    "stats": StageSchema((
        A("r", "float64", _N, per_condition=True, description="Pearson r of predicted and measured (0 if invalid)"),
        A("p", "float64", _N, per_condition=True,
          description="t-test p of r (n - 2 df; two-sided or r > 0 as stats.alternative)"),
        A("q", "float64", _N, per_condition=True, description="Benjamini-Hochberg FDR q of p"),
        A("p_perm", "float64", _N, per_condition=True, only=_PERM,
          description="block-permutation p (predicted blocks shuffled; +1 correction)"),
        A("q_perm", "float64", _N, per_condition=True, only=_PERM, description="FDR q of the permutation p"),
        A("significant", "bool", _N, per_condition=True,
          description="significant under the run's rule and level, with r > 0 (the RSA voxel set)"),
        A("significant_negative", "bool", _N, per_condition=True,
          description="significant under the run's rule and level, with r < 0 (its own category)"),
        A("n_eff", "float64", _N, per_condition=True,
          description="Bayley-Hammersley effective samples of r (0 if invalid)"),
        A("bin", "int8", _N, per_condition=True, description="-2 significant r < 0, -1 n.s., 0.. correlation bin"),
        A("valid", "bool", _N, per_condition=True, description="r is defined (non-constant, finite series)"),
        A("ev", "float64", _N, per_condition=True, only=_REPEATS, description="explainable variance of the voxel"),
        A("cc_max", "float64", _N, per_condition=True, only=_REPEATS,
          description="noise ceiling of r (0 if undefined)"),
        A("r_norm", "float64", _N, per_condition=True, only=_REPEATS,
          description="r / cc_max, unclipped; NaN where ceiling_valid is False"),
        A("ceiling_valid", "bool", _N, per_condition=True, only=_REPEATS,
          description="ceiling reliable: r valid, cc_max defined, ev >= stats.ceiling_min_ev"),
    )),
    "rsa": StageSchema((
        A("voxels", "int64", _SEL, per_condition=True, description="voxel rows in the kNN graph, ascending"),
        A("knn_idx", "int64", ("n_embedded_{condition}", "k"), per_condition=True, only=_GRAPH,
          description="neighbours of each graph voxel, rows into voxels_<m>, nearest (itself) first"),
        A("knn_dist", "float32", ("n_embedded_{condition}", "k"), per_condition=True, only=_GRAPH,
          description="their correlation distances 1 - r"),
        A("roi_rdm", "float64", ("n_rois", "n_rois"), per_condition=True, only=_ROI_RDM,
          description="mean correlation distance between and within ROIs (NaN for an empty block)"),
        A("roi_counts", "int64", ("n_rois",), only=_ROI_RDM, description="graph voxels per ROI"),
        A("knn_jaccard", "float32", ("n_embedded_on",), only=_JACCARD,
          description="overlap of each voxel's on and off neighbour sets"),
    ), conditions=_PAIR),
    # Per contrast (core.vocabulary.CONTRASTS: <c> = on_off, on_uniform, uniform_off) in place of a condition.
    "contrasts": StageSchema((
        A("delta", "float32", _N, per_condition=True, description="r_a - r_b of the contrast (0 if undefined)"),
        A("delta_lo", "float32", _N, per_condition=True,
          description="lower end of its interval (block bootstrap over test samples, contrasts.ci)"),
        A("delta_hi", "float32", _N, per_condition=True, description="upper end of that interval"),
        A("p", "float64", _N, per_condition=True, description="two-sided p of r_a - r_b = 0 (1 if undefined)"),
        A("q", "float64", _N, per_condition=True, description="Benjamini-Hochberg q of p over the valid voxels"),
        A("outcome", "int8", _N, per_condition=True,
          description="+1 a predicts better (q <= contrasts.level), -1 b does, 0 no detectable difference"),
        A("valid", "bool", _N, per_condition=True, description="both correlations are defined"),
    ), conditions=tuple(CONTRASTS)),
    # The joint on+off model (joint.enabled, both conditions run); its test R^2 beside the single models'.
    "joint": StageSchema((
        A("pred", "float32", ("n_voxels", "n_test"), only=_JOINT, description="joint model's predicted test series"),
        A("gamma_on", "float32", _N, only=_JOINT,
          description="band weight of the on features chosen by cross-validation (off: 1 - gamma_on)"),
        A("alpha", "float32", _N, only=_JOINT, description="penalty chosen with it (per band: alpha / weight)"),
        A("cv", "float32", _N, only=_JOINT, description="mean validation R^2 at that choice"),
        A("r2_joint", "float32", _N, only=_JOINT, description="test R^2 of the joint model (NaN: constant series)"),
        A("r2_on", "float32", _N, only=_JOINT, description="test R^2 of the on model alone"),
        A("r2_off", "float32", _N, only=_JOINT, description="test R^2 of the off model alone"),
        A("unique_on", "float32", _N, only=_JOINT, description="r2_joint - r2_off (negative values kept)"),
        A("unique_off", "float32", _N, only=_JOINT, description="r2_joint - r2_on (negative values kept)"),
        A("shared", "float32", _N, only=_JOINT, description="r2_on + r2_off - r2_joint"),
        A("p_unique_on", "float64", _N, only=_JOINT,
          description="one-sided block-bootstrap p of unique_on > 0 (1 where the joint model is the off model)"),
        A("p_unique_off", "float64", _N, only=_JOINT, description="the same for unique_off > 0"),
        A("q_unique_on", "float64", _N, only=_JOINT, description="BH q of p_unique_on over the valid voxels"),
        A("q_unique_off", "float64", _N, only=_JOINT, description="BH q of p_unique_off"),
        A("fitted", "bool", _N, only=_JOINT,
          description="inner band weights scored here (joint.voxels); else the better single model by CV"),
        # The second joint model, on + uniform gain: what the spatial focus adds beyond the gain.
        A("gamma_on_uniform", "float32", _N, only=_JOINT_UNIFORM,
          description="band weight of the on features in the on + uniform model (uniform: 1 - it)"),
        A("r2_on_uniform", "float32", _N, only=_JOINT_UNIFORM, description="test R^2 of the on + uniform model"),
        A("r2_uniform", "float32", _N, only=_JOINT_UNIFORM, description="test R^2 of the uniform model alone"),
        A("unique_on_vs_uniform", "float32", _N, only=_JOINT_UNIFORM,
          description="r2_on_uniform - r2_uniform: the spatial focus beyond the gain (negative values kept)"),
        A("unique_uniform_vs_on", "float32", _N, only=_JOINT_UNIFORM, description="r2_on_uniform - r2_on"),
        A("p_unique_on_vs_uniform", "float64", _N, only=_JOINT_UNIFORM,
          description="one-sided block-bootstrap p of unique_on_vs_uniform > 0"),
        A("q_unique_on_vs_uniform", "float64", _N, only=_JOINT_UNIFORM,
          description="BH q of p_unique_on_vs_uniform over the valid voxels"),
        A("fitted_uniform", "bool", _N, only=_JOINT_UNIFORM,
          description="inner band weights of the on + uniform model scored here (joint.voxels)"),
    ), conditions=()),
    "umap": StageSchema((
        A("umap", "float32", ("n_embedded_{condition}", 3), per_condition=True, only="for a condition with a kNN graph",
          description="3-D UMAP coordinates of the graph's voxels (rows of voxels_<m>)"),
    ), conditions=_PAIR),
    "cortex": StageSchema((
        A("flatmap_lookup", "int32", ("flatmap_height", "flatmap_width"), only=_CORTEX,
          description="voxel row under each flatmap pixel, -1 where none"),
    ), conditions=()),
}
del A
#: The dataset stage's per-voxel geometry (runs with a cortex mapping): fields of core.cortex.geometry.VoxelGeometry.
GEOMETRY_FIELDS = tuple(s.field for s in _STAGES["dataset"].arrays if s.only in (_CORTEX, _VOLUME))


def _meta_value(value) -> int | None:
    if isinstance(value, (list, tuple)):
        return len(value)
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    return None


class Schema:
    """The stages' array declarations and the checks made against them.

    Parameters
    ----------
    stages : dict of str to StageSchema
    """

    def __init__(self, stages: Mapping[str, StageSchema]):
        self.stages = dict(stages)
        self._names: dict[str, dict[str, tuple[ArraySpec, str | None]]] = {}
        for stage, st in self.stages.items():
            names = {}
            for spec in st.arrays:
                for c in (st.conditions if spec.per_condition else (None,)):
                    if spec.name(c) in names:
                        raise ValueError(f"schema of stage {stage}: array name {spec.name(c)!r} declared twice")
                    names[spec.name(c)] = (spec, c)
            self._names[stage] = names

    def _stage(self, stage: str) -> StageSchema:
        if stage not in self.stages:
            raise SchemaError(stage, None, f"not a stage of the results schema (stages: {', '.join(self.stages)})")
        return self.stages[stage]

    def spec(self, stage: str, field: str) -> ArraySpec:
        """The declaration of ``field`` in ``stage``; :class:`SchemaError` if it has none."""
        for spec in self._stage(stage).arrays:
            if spec.field == field:
                return spec
        raise SchemaError(stage, field, "not declared in the results schema (fields: "
                          f"{', '.join(s.field for s in self.stages[stage].arrays)})")

    def name(self, stage: str, field: str, condition: str | None = None) -> str:
        """The array name (its file name without ``.npy``) of ``field`` in ``stage``, for ``condition``.

        Raises
        ------
        SchemaError
            If the field is not declared, or a condition is missing, not one of the stage's or given to a
            field that has none.
        """
        spec = self.spec(stage, field)
        if not spec.per_condition:
            if condition is not None:
                raise SchemaError(stage, field, f"has one array for all conditions, but condition {condition!r} "
                                  "was given")
            return spec.name()
        if condition not in self.stages[stage].conditions:
            raise SchemaError(stage, field, f"expected a condition of {self.stages[stage].conditions}, "
                              f"found {condition!r}")
        return spec.name(condition)

    def parse(self, stage: str, array: str) -> tuple[ArraySpec, str | None] | None:
        """``(spec, condition)`` of an array name of ``stage``, None if the schema does not declare it."""
        self._stage(stage)
        return self._names[stage].get(array)

    # ----------------------------------------------------------------------------------------- checks
    def meta_dims(self, stage: str, meta: Mapping[str, Any]) -> dict[str, int]:
        """The dimensions a stage's meta records (e.g. the dataset's n_voxels)."""
        if stage not in self.stages:
            return {}
        out = {}
        for dim, key in self.stages[stage].meta_dims:
            value = _meta_value(meta.get(key)) if isinstance(meta, Mapping) else None
            if value is not None:
                out[dim] = value
        return out

    def known_dims(self, entries: Mapping[str, Any], dims: Mapping[str, int] | None = None) -> Dims:
        """The dimensions committed stage entries fix: from their meta and their arrays' shapes.

        Parameters
        ----------
        entries : dict of stage name to an entry with ``arrays`` and ``meta`` (:class:`StageEntry`)
        dims : dict of str to int, optional
            Dimensions known otherwise (from the config: :func:`run_dims`).

        Raises
        ------
        SchemaError
            If two entries disagree on a dimension.
        """
        known = Dims(dims, {d: "the run's config" for d in dims or {}})
        sources = known.sources
        for stage, entry in entries.items():
            if stage not in self.stages:
                continue
            for dim, value in self.meta_dims(stage, entry.meta).items():
                self._bind(stage, None, dim, value, known, sources, f"the {stage} stage's meta")
            for array in self._in_order(stage, entry.arrays):
                self._unify(stage, array, self.parse(stage, array), tuple(np.shape(entry.arrays[array])), known,
                            sources)
        return known

    def check(self, stage: str, found: Mapping[str, tuple[tuple[int, ...], Any]], *,
              known: Mapping[str, int] | None = None, conditions: Sequence[str] | None = None,
              meta: Mapping[str, Any] | None = None) -> Dims:
        """Check a stage's arrays against its declaration.

        Parameters
        ----------
        stage : str
        found : dict of array name to ``(shape, dtype)``
        known : dict of str to int, optional
            Dimensions fixed beforehand (:meth:`known_dims`).
        conditions : sequence of str, optional
            The run's conditions: every one the stage takes must have its per-condition arrays. Without
            it, the conditions the arrays name.
        meta : dict, optional
            The stage's own meta (dimensions it records, :attr:`StageSchema.meta_dims`).

        Returns
        -------
        Dims
            Every dimension, resolved.

        Raises
        ------
        SchemaError
            For an array the stage does not declare, a dtype or shape other than declared, or a declared
            array missing.
        """
        st = self._stage(stage)
        known = Dims(known, getattr(known, "sources", None))
        sources = known.sources
        for dim, value in self.meta_dims(stage, meta or {}).items():
            self._bind(stage, None, dim, value, known, sources, "its meta")
        parsed = {}
        for array, (shape, dtype) in found.items():
            p = self.parse(stage, array)
            if p is None:
                raise SchemaError(stage, array, "not declared in the results schema; declared: "
                                  f"{', '.join(s.name('<m>') for s in st.arrays)}")
            parsed[array] = p
            want = np.dtype(p[0].dtype)
            if np.dtype(dtype) != want:
                raise SchemaError(stage, array, f"expected dtype {want}, found {np.dtype(dtype)} "
                                  f"(shape {tuple(shape)})")
        for array in self._in_order(stage, parsed):
            self._unify(stage, array, parsed[array], tuple(found[array][0]), known, sources)
        seen = {c for _, c in parsed.values() if c is not None}
        conds = [c for c in st.conditions if c in (seen if conditions is None else set(conditions))]
        present = {(spec.field, c) for spec, c in parsed.values()}
        for spec in st.arrays:
            for c in (conds if spec.per_condition else [None]):
                if (spec.field, c) in present:
                    continue
                if not spec.only:
                    raise SchemaError(stage, spec.name(c), f"missing: every {stage} entry holds it "
                                      f"({spec.description})")
                # A condition's optional arrays come with each other; one for all conditions comes with any.
                partners = sorted(s.name(pc) for s in st.arrays if s.only == spec.only
                                  for f, pc in present if f == s.field and (c is None or pc == c))
                if partners:
                    raise SchemaError(stage, spec.name(c), f"missing although {', '.join(partners)} "
                                      f"{'is' if len(partners) == 1 else 'are'} present: they come together "
                                      f"({spec.only})")
        return known

    def _in_order(self, stage: str, arrays) -> list[str]:
        """The declared names among ``arrays`` in declaration order: a dimension is taken from the array that
        defines it (voxels_<m> for the embedded voxels), and a mismatch blames the arrays that follow."""
        return [a for a in self._names[stage] if a in arrays]

    def _bind(self, stage, array, dim, value, known, sources, source):
        if dim in known and known[dim] != value:
            raise SchemaError(stage, array, f"{dim} = {value} from {source}, but {known[dim]} from {sources[dim]}")
        known.setdefault(dim, value)
        sources.setdefault(dim, source)

    def _unify(self, stage, array, parsed, shape, known, sources) -> None:
        spec, condition = parsed
        dims = [d.format(condition=condition) if isinstance(d, str) else d for d in spec.shape]

        def size(d):
            terms = d.split("+") if isinstance(d, str) else []
            return sum(known[t] for t in terms) if terms and all(t in known for t in terms) else None

        def expected():
            return "(" + ", ".join(str(d) if size(d) is None else f"{d}={size(d)}" for d in dims) + ")"
        if len(shape) != len(dims):
            raise SchemaError(stage, array, f"expected shape {expected()} dtype {spec.dtype}, found shape {shape}")
        for d, n in zip(dims, shape):
            if d == "*":
                continue
            want = d if isinstance(d, int) else size(d)
            if want is None:
                if "+" not in d:            # a sum is checked once its terms are known
                    known[d], sources[d] = int(n), f"array '{array}' of the {stage} stage"
                continue
            if int(n) != want:
                why = "" if isinstance(d, int) or "+" in d else f" ({d} from {sources[d]})"
                raise SchemaError(stage, array, f"expected shape {expected()} dtype {spec.dtype}, found shape "
                                  f"{shape}{why}")

    def check_entries(self, entries: Mapping[str, Any], *, conditions: Sequence[str] | None = None,
                      dims: Mapping[str, int] | None = None) -> None:
        """Check committed entries (each with ``arrays`` and ``meta``) against the schema, together."""
        known = self.known_dims(entries, dims)
        for stage, entry in entries.items():
            self.check(stage, {a: (tuple(np.shape(x)), np.asarray(x).dtype) for a, x in entry.arrays.items()},
                       known=known, conditions=conditions, meta=entry.meta)


#: The schema of this pipeline's results.
SCHEMA = Schema(_STAGES)


def name(stage: str, field: str, condition: str | None = None) -> str:
    """Array name of ``field`` in ``stage`` for ``condition`` under :data:`SCHEMA` (see :meth:`Schema.name`)."""
    return SCHEMA.name(stage, field, condition)


def run_dims(cfg) -> tuple[dict[str, int], tuple[str, ...]]:
    """What a run's config fixes before any stage runs: the dimensions (``k``) and the conditions.

    Parameters
    ----------
    cfg : core.config.RunConfig
    """
    return {"k": int(cfg.rsa.k)}, tuple(cfg.features.modes)


def markdown_table(schema: Schema = SCHEMA) -> str:
    """The schema as the Markdown table of docs/formats.md (``<m>`` = each condition of the stage)."""
    rows = ["| stage | array | dtype | shape | present | what |", "|---|---|---|---|---|---|"]
    for stage, st in schema.stages.items():
        for spec in st.arrays:
            shape = ", ".join(str(d).replace("{condition}", "<m>") for d in spec.shape)
            shape = f"({shape},)" if len(spec.shape) == 1 else f"({shape})"
            rows.append(f"| {stage} | `{spec.name('<m>')}` | {spec.dtype} | {shape} | {spec.only or 'always'} "
                        f"| {spec.description} |")
    return "\n".join(rows) + "\n"
