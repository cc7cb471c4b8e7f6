"""Exports of a run for use outside the tool: NIfTI maps, the voxel table and one voxel's series as CSV, the
flatmap images. Pure functions of an opened run (:func:`core.outputs.open_results`); none writes into the
results folder.

NIfTI maps are volumes in the subject's functional space: the reference image of the run's pycortex
transform (its shape and affine), with every voxel of the run at its ``(i, j, k)`` index (NIfTI order,
i = x fastest-varying in the reference, the reverse of pycortex's ``(z, y, x)`` masks). There are two kinds:
per-condition maps (:func:`nifti_map`, fields :data:`NIFTI_FIELDS`) and per-contrast maps of the contrasts
stage (:func:`nifti_contrast_map`, fields :data:`CONTRAST_NIFTI_FIELDS`), both on the same grid and affine.
Voxels outside the run are NaN in the float maps and :data:`BIN_FILL` / :data:`OUTCOME_FILL` in the int16
bin and outcome maps.
"""
from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from core._validation import InputError
from core.vocabulary import DEFAULT_BINS, NEGATIVE_CODE, NS_CODE, BinScheme

__all__ = ["NIFTI_FIELDS", "BIN_FILL", "CONTRAST_NIFTI_FIELDS", "OUTCOME_FILL", "TABLE_COLUMNS", "table_columns",
           "bin_codes_text", "cortex_reference", "nifti_unavailable_reason", "voxel_volume", "nifti_map",
           "nifti_contrast_map", "JOINT_NIFTI_FIELDS", "JOINT_UNIFORM_NIFTI_FIELDS", "joint_nifti_fields",
           "nifti_joint_map", "nifti_bytes", "table_csv", "series_csv", "flatmap_png", "FSAVERAGE_FIELDS",
           "fsaverage_unavailable_reason", "fsaverage_gifti", "gifti_bytes"]

#: The per-voxel maps a NIfTI export can hold (``bin`` = the run's stored correlation-bin codes).
NIFTI_FIELDS = ("r", "p", "q", "bin")
#: Fill of the int16 bin map outside the run's voxels (its codes are those of :func:`bin_codes_text`).
BIN_FILL = -99
#: The per-voxel maps of one contrast a NIfTI export can hold (the contrasts stage's fields; ``outcome`` = its
#: codes +1 a predicts better, -1 b does, 0 no detectable difference, :data:`core.vocabulary.OUTCOME_CODES`).
CONTRAST_NIFTI_FIELDS = ("delta", "delta_lo", "delta_hi", "p", "q", "outcome")
#: Fill of the int16 outcome map outside the run's voxels (not an outcome code; the same value as :data:`BIN_FILL`).
OUTCOME_FILL = BIN_FILL


def bin_codes_text(scheme: BinScheme) -> str:
    """What each bin code of a run means, from its scheme: ``'-2 significant r<0, -1 n.s., 0 0-0.1, ...'``."""
    codes = (NEGATIVE_CODE, NS_CODE, *scheme.codes)
    return ", ".join(f"{c} {scheme.label(c)}" for c in codes)


def table_columns(run=None) -> dict[str, str]:
    """Columns of :func:`table_csv`, in order, with what they hold (``{m}`` = each condition of the run,
    ``{c}`` = each contrast of :data:`core.vocabulary.CONTRASTS` it tested).

    ``run``: an opened run (:class:`core.outputs.Results`), its config (dict or RunConfig) or a
    :class:`~core.vocabulary.BinScheme`; the ``bin_{m}`` entry names that run's bins. None: the default bins.
    """
    if isinstance(run, BinScheme):
        scheme = run
    else:
        scheme = BinScheme.from_config(getattr(run, "config", run))
    return {**_COLUMNS, "bin_{m}": f"correlation-bin code: {bin_codes_text(scheme)}",
            "bin_label_{m}": "the bin code's label, as the dashboard and summary.json name it", **_COLUMNS_AFTER_BIN}


_COLUMNS = {
    "voxel": "voxel row (0-based; the row of every per-voxel array of the run)",
    "file_voxel": "the voxel's column in the response file (runs whose file had voxels left out: NaN in every "
                  "test sample)",
    "i, j, k": "NIfTI voxel indices in the functional reference volume (runs with a pycortex subject)",
    "hemi": "hemisphere, L or R (empty: unknown, a mapper file without a fsaverage mapper)",
    "roi": "ROI name of the subject's overlay or the mapper file's roi_mask_* ('other' = none)",
    "flat_x, flat_y": "flatmap position (pycortex flat-surface units; a mapper file's: pixels, y up)",
    "unmapped": "True where no surface vertex falls in the voxel (nearest vertex used; a mapper file's: no pixel "
                "shows it)",
    "r_{m}": "Pearson r of the predicted and measured test series",
    "p_{m}": "p of r (t-test with n - 2 df; two-sided unless the run's stats.alternative is 'greater')",
    "q_{m}": "Benjamini-Hochberg FDR q of p",
    "significant_{m}": "significant under the run's rule and level with r > 0 (significant negative r: bin -2)",
}
_COLUMNS_AFTER_BIN = {
    "alpha_{m}": "ridge penalty chosen by cross-validation",
    "cv_{m}": "cross-validated R^2 at that penalty (1 - SSE / SST per validation fold, mean over folds; not r)",
    "r_norm_{m}": "r divided by the noise ceiling, unclipped; empty where the ceiling is unreliable (explainable "
                  "variance below stats.ceiling_min_ev or undefined; runs with test repeats)",
    "noise_ceiling": "noise ceiling of the voxel's measured test series (runs with test repeats)",
    "delta_r": "r_on - r_off",
    "delta_{c}": "r_a - r_b of contrast c (on_off, on_uniform, uniform_off; runs with the contrasts stage)",
    "delta_lo_{c}, delta_hi_{c}": "its interval (block bootstrap over test samples, contrasts.ci)",
    "p_delta_{c}": "two-sided p of r_a - r_b = 0 (block bootstrap SE, t reference)",
    "q_delta_{c}": "Benjamini-Hochberg q of that p",
    "outcome_{c}": "+1 a predicts better, -1 b does (q <= contrasts.level), 0 no detectable difference",
    "r2_joint, r2_on, r2_off": "test R^2 of the joint on+off model and of each alone (runs with the joint stage)",
    "unique_on, unique_off, shared": "r2_joint - r2_off, r2_joint - r2_on, r2_on + r2_off - r2_joint (negative "
                                     "estimates kept)",
    "p_unique_on, q_unique_on, p_unique_off, q_unique_off": "one-sided block-bootstrap p of unique variance > 0 and "
                                                            "its BH q",
    "joint_gamma_on": "the joint model's on-band weight chosen by cross-validation",
    "joint_fitted": "True where the joint model's inner band weights were scored (joint.voxels); else it is the "
                    "better single model by cross-validation",
    "r2_on_uniform, r2_uniform": "test R^2 of the on + uniform joint model and of uniform alone (runs with the "
                                 "uniform condition)",
    "unique_on_vs_uniform, unique_uniform_vs_on": "r2_on_uniform - r2_uniform (the spatial focus beyond the gain), "
                                                  "r2_on_uniform - r2_on",
    "p_unique_on_vs_uniform, q_unique_on_vs_uniform": "one-sided block-bootstrap p of unique_on_vs_uniform > 0 and "
                                                      "its BH q",
    "gamma_on_uniform": "the on + uniform model's on-band weight",
}
#: :func:`table_columns` for the default bins (a run with other ``stats.bin_edges``: ``table_columns(results)``).
TABLE_COLUMNS = table_columns(DEFAULT_BINS)


def _fail(message: str, field: str = "", source: str = "export") -> None:
    raise InputError(message, source=source, field=field or None)


def _check_condition(results, condition: str) -> str:
    if condition not in results.conditions:
        _fail(f"expected one of {results.conditions}, found {condition!r}", "condition")
    return condition


def _cortex_spec(results) -> tuple[str, str, str] | None:
    data = results.config.get("data", {}) if isinstance(results.config, dict) else {}
    subject = str(data.get("subject") or "")
    if not subject or data.get("mapper"):
        return None
    return subject, str(data.get("transform") or ""), str(data.get("mask") or "")


def nifti_unavailable_reason(results) -> str | None:
    """Why this run cannot be exported as NIfTI, or None when it can.

    NIfTI needs the voxels' places in a volume: a pycortex subject, transform and mask in the run's config
    (installed on this machine) and the dataset stage's ``ijk`` indices.
    """
    data = results.config.get("data", {}) if isinstance(results.config, dict) else {}
    if data.get("mapper"):
        return ("NIfTI export needs the voxels' places in a volume, and this run's cortex is a mapper file (flatmap "
                "and ROIs only); import the subject into pycortex for a volume, or export the CSV table")
    spec = _cortex_spec(results)
    if spec is None:
        return ("NIfTI export needs a cortex mapping, and this run's dataset has none (data.subject is empty): "
                "its voxels have no place in a volume; export the CSV table instead")
    if not results.has_array("dataset", "ijk"):
        return "NIfTI export needs the voxels' volume indices (ijk), which this run's dataset stage lacks"
    try:
        cortex_reference(*spec)
    except InputError as exc:
        return f"NIfTI export needs the run's pycortex subject on this machine: {exc}"
    return None


def cortex_reference(subject: str, transform: str, mask: str) -> tuple[np.ndarray, np.ndarray]:
    """The pycortex mask and the functional reference affine of ``subject/transform/mask``.

    Returns
    -------
    mask : bool array of shape (nz, ny, nx)
        pycortex's mask, in its ``(z, y, x)`` order.
    affine : float64 array of shape (4, 4)
        The transform's reference image affine (voxel ``(i, j, k)`` = ``(x, y, z)`` to world mm).

    Raises
    ------
    InputError
        If pycortex does not know the subject, transform or mask.
    """
    import cortex
    spec = f"{subject}/{transform}/{mask}"
    try:
        xfm = cortex.db.get_xfm(subject, transform)
        reference = xfm.reference
        mask_zyx = np.asarray(cortex.db.get_mask(subject, transform, mask), dtype=bool)
    except (OSError, KeyError, ValueError, AttributeError, IndexError) as exc:
        raise InputError(f"pycortex has no {spec} on this machine ({type(exc).__name__}: {exc}); install the "
                         "subject into pycortex's filestore", source="export", field="data.subject") from None
    if tuple(reference.shape[:3]) != mask_zyx.shape[::-1]:
        raise InputError(f"pycortex reference of {spec} has shape {reference.shape[:3]} but its mask "
                         f"{mask_zyx.shape[::-1]} (x, y, z); the subject's files disagree",
                         source="export", field="data.mask")
    return mask_zyx, np.asarray(reference.affine, dtype=np.float64)


def voxel_volume(values, ijk, shape_xyz, *, fill, dtype) -> np.ndarray:
    """Put per-voxel values into a volume at their ``(i, j, k)`` indices.

    Parameters
    ----------
    values : array of shape (n_voxels,)
    ijk : int array of shape (n_voxels, 3)
        NIfTI-order indices (i = x, j = y, k = z).
    shape_xyz : tuple of 3 int
        Volume shape in NIfTI order.
    fill : scalar
        Value of every voxel not listed in ``ijk``.
    dtype : numpy dtype
        dtype of the volume (``values`` are cast to it).

    Returns
    -------
    array of shape ``shape_xyz``
    """
    values = np.asarray(values)
    ijk = np.asarray(ijk, dtype=np.int64)
    if ijk.ndim != 2 or ijk.shape[1] != 3 or ijk.shape[0] != values.shape[0]:
        raise InputError(f"expected ijk of shape ({values.shape[0]}, 3), found {ijk.shape}", source="export",
                         field="ijk")
    shape = tuple(int(s) for s in shape_xyz)
    if ijk.size and ((ijk < 0).any() or (ijk >= np.array(shape)).any()):
        raise InputError(f"voxel indices fall outside the volume {shape}", source="export", field="ijk")
    vol = np.full(shape, fill, dtype=dtype)
    vol[ijk[:, 0], ijk[:, 1], ijk[:, 2]] = values
    return vol


def _field_values(results, condition: str, field: str) -> np.ndarray:
    if field not in NIFTI_FIELDS:
        _fail(f"expected one of {', '.join(NIFTI_FIELDS)}, found {field!r}", "field")
    if not results.has_stage("stats"):
        _fail("this run has no stats stage (r, p, q, bins); rerun precompute.py to finish it", "stats")
    return np.asarray(results.array("stats", field, condition))


def _volume_image(results, values: np.ndarray, descrip: str, *, integer: bool, fill, intent: str = ""):
    """Per-voxel ``values`` of a run as a NIfTI image on its pycortex reference grid (the checks and the
    header that :func:`nifti_map` and :func:`nifti_contrast_map` share).

    ``integer``: an int16 volume with ``fill`` outside the run's voxels; else float32 with NaN there.
    """
    import nibabel as nib
    reason = nifti_unavailable_reason(results)
    if reason:
        _fail(reason, "data.subject", source=str(results.run_dir))
    subject, transform, mask_name = _cortex_spec(results)
    mask_zyx, affine = cortex_reference(subject, transform, mask_name)
    ijk = np.asarray(results.array("dataset", "ijk"), dtype=np.int64)
    if ijk.shape[0] != values.shape[0]:
        _fail(f"{ijk.shape[0]} voxel indices but {values.shape[0]} values", "ijk", source=str(results.run_dir))
    inside = mask_zyx.transpose(2, 1, 0)[ijk[:, 0], ijk[:, 1], ijk[:, 2]] if ijk.size else np.ones(0, bool)
    if not inside.all():
        _fail(f"{int((~inside).sum())} voxel(s) of the run lie outside mask {subject}/{transform}/{mask_name}; "
              "the run was computed for another mask", "ijk", source=str(results.run_dir))
    if integer:
        vol = voxel_volume(values, ijk, mask_zyx.shape[::-1], fill=fill, dtype=np.int16)
    else:
        vol = voxel_volume(values, ijk, mask_zyx.shape[::-1], fill=np.nan, dtype=np.float32)
    img = nib.Nifti1Image(vol, affine)
    img.set_qform(affine, code=2)
    img.set_sform(affine, code=2)
    img.header["descrip"] = descrip.encode("ascii", "replace")[:79]
    if intent:
        img.header["intent_name"] = intent.encode("ascii", "replace")[:15]
    return img


def nifti_map(results, condition: str, field: str):
    """One condition's per-voxel map as a NIfTI image in the subject's functional space.

    Parameters
    ----------
    results : core.outputs.Results
    condition : str
        One of ``results.conditions``.
    field : {"r", "p", "q", "bin"}
        ``r``, ``p``, ``q``: float32, NaN outside the run's voxels. ``bin``: int16 bin codes (the run's,
        see :func:`bin_codes_text`), :data:`BIN_FILL` outside.

    Returns
    -------
    nibabel.Nifti1Image
        Shape and affine of the pycortex transform's reference image (qform and sform set, code 2 = aligned
        to that anatomy); ``descrip`` is ``attnbrain <run> <field>_<condition>``.

    Raises
    ------
    InputError
        When the run has no cortex mapping (see :func:`nifti_unavailable_reason`), an unknown condition or
        field, or a run whose voxels do not lie in the pycortex mask.
    """
    _check_condition(results, condition)
    values = _field_values(results, condition, field)
    return _volume_image(results, values, f"attnbrain {results.run_id} {field}_{condition}",
                         integer=field == "bin", fill=BIN_FILL, intent="bin codes" if field == "bin" else "")


def _contrast_values(results, contrast: str, field: str) -> np.ndarray:
    if field not in CONTRAST_NIFTI_FIELDS:
        _fail(f"expected one of {', '.join(CONTRAST_NIFTI_FIELDS)}, found {field!r}", "field")
    names = results.contrast_names()
    if not names:
        _fail("this run has no contrasts stage (delta, p, q, outcome per contrast); rerun precompute.py to "
              "finish it", "contrasts")
    if contrast not in names:
        _fail(f"expected one of the run's contrasts {', '.join(names)}, found {contrast!r}", "contrast")
    arrays = results.contrast(contrast)
    values = np.asarray(arrays[field])
    if field == "outcome":
        return values
    return np.where(np.asarray(arrays["valid"], dtype=bool), values.astype(np.float32), np.float32(np.nan))


def nifti_contrast_map(results, contrast: str, field: str):
    """One contrast's per-voxel map (the contrasts stage) as a NIfTI image in the subject's functional space,
    on the same grid and affine as :func:`nifti_map`.

    Parameters
    ----------
    results : core.outputs.Results
    contrast : str
        One of ``results.contrast_names()`` (``"on_off"``, ``"on_uniform"``, ``"uniform_off"``:
        :data:`core.vocabulary.CONTRASTS`, r of the first condition minus r of the second).
    field : {"delta", "delta_lo", "delta_hi", "p", "q", "outcome"}
        ``delta`` (r_a - r_b), ``delta_lo`` / ``delta_hi`` (its interval), ``p``, ``q``: float32, NaN
        outside the run's voxels and at voxels where the contrast is undefined (``valid`` False).
        ``outcome``: int16 codes as stored (+1 a predicts better, -1 b does, 0 no detectable difference;
        undefined voxels hold 0), :data:`OUTCOME_FILL` outside the run's voxels.

    Returns
    -------
    nibabel.Nifti1Image
        Shape and affine of the pycortex transform's reference image (qform and sform code 2);
        ``descrip`` is ``attnbrain <run> <field>_<contrast>``; the outcome map's ``intent_name`` is
        ``outcome codes``.

    Raises
    ------
    InputError
        When the run has no cortex mapping (see :func:`nifti_unavailable_reason`) or no contrasts stage, an
        unknown contrast (the message lists the run's) or field, or a run whose voxels do not lie in the
        pycortex mask.
    """
    values = _contrast_values(results, contrast, field)
    return _volume_image(results, values, f"attnbrain {results.run_id} {field}_{contrast}",
                         integer=field == "outcome", fill=OUTCOME_FILL,
                         intent="outcome codes" if field == "outcome" else "")


#: The joint stage's maps :func:`nifti_joint_map` writes (float32); the uniform ones where the run has them.
JOINT_NIFTI_FIELDS = ("unique_on", "unique_off", "shared", "r2_joint", "p_unique_on", "q_unique_on", "p_unique_off",
                      "q_unique_off", "gamma_on")
JOINT_UNIFORM_NIFTI_FIELDS = ("unique_on_vs_uniform", "p_unique_on_vs_uniform", "q_unique_on_vs_uniform",
                              "r2_on_uniform")


def joint_nifti_fields(results) -> tuple[str, ...]:
    """The joint-stage maps this run can export (none without the joint stage's partition)."""
    if not (results.has_stage("joint") and results.has_array("joint", "unique_on")):
        return ()
    extra = JOINT_UNIFORM_NIFTI_FIELDS if results.has_array("joint", "unique_on_vs_uniform") else ()
    return JOINT_NIFTI_FIELDS + extra


def nifti_joint_map(results, field: str):
    """One map of the joint stage (the variance partition, its tests, the on-band weight; with the uniform
    condition, the spatial focus beyond the gain) as a NIfTI image on the grid and affine of :func:`nifti_map`.

    Parameters
    ----------
    results : core.outputs.Results
    field : str
        One of :func:`joint_nifti_fields` (``unique_on``, ``unique_off``, ``shared``: differences of test R^2,
        negative estimates kept; ``p_*``, ``q_*``: the one-sided unique-variance tests; ``gamma_on``: the chosen
        on-band weight; ``unique_on_vs_uniform`` ...). float32, NaN outside the run's voxels and where the test
        R^2 is undefined.

    Raises
    ------
    InputError
        When the run has no joint stage, an unknown field (the message lists the run's), or the reasons of
        :func:`nifti_map`.
    """
    fields = joint_nifti_fields(results)
    if not fields:
        _fail("this run has no joint stage (the variance partition); rerun precompute.py with joint.enabled and "
              "both the on and off conditions", "joint")
    if field not in fields:
        _fail(f"expected one of the run's joint maps {', '.join(fields)}, found {field!r}", "field")
    values = np.asarray(results.array("joint", field), dtype=np.float32)
    return _volume_image(results, values, f"attnbrain {results.run_id} {field}_joint", integer=False, fill=np.nan)


def nifti_bytes(image) -> bytes:
    """A NIfTI image as the bytes of a ``.nii.gz`` file."""
    return gzip.compress(image.to_bytes(), compresslevel=6, mtime=0)


#: The per-voxel maps an fsaverage (GIfTI) export can hold: test r per condition.
FSAVERAGE_FIELDS = ("r",)


def fsaverage_unavailable_reason(results) -> str | None:
    """Why this run cannot be projected onto fsaverage, or None: it needs a mapper file (``data.mapper``) with a
    ``voxel_to_fsaverage`` mapper, readable here."""
    data = results.config.get("data", {}) if isinstance(results.config, dict) else {}
    path = data.get("mapper") or ""
    if not path:
        return ("fsaverage export projects the voxels through a mapper file's voxel_to_fsaverage, and this run has "
                "no mapper file (data.mapper)")
    from core.cortex.mapper import load_mapper
    try:
        mapper = load_mapper(path)
    except InputError as exc:
        return f"fsaverage export needs the run's mapper file: {exc}"
    if not mapper.fsaverage:
        return f"the mapper file {path} has no voxel_to_fsaverage mapper"
    return None


def fsaverage_gifti(results, condition: str, field: str = "r") -> dict:
    """One condition's per-voxel map on fsaverage, a GIfTI image per hemisphere (``{"lh": img, "rh": img}``),
    through the mapper file's ``voxel_to_fsaverage``: each vertex the weighted sum of the voxels mapping to it,
    NaN where no voxel maps or a voxel it takes is not in the run (left out for having no data).

    Raises
    ------
    InputError
        When :func:`fsaverage_unavailable_reason` says why not, or an unknown condition or field.
    """
    import nibabel as nib

    from core.cortex.mapper import load_mapper, to_fsaverage
    reason = fsaverage_unavailable_reason(results)
    if reason:
        _fail(reason, "data.mapper", source=str(results.run_dir))
    _check_condition(results, condition)
    if field not in FSAVERAGE_FIELDS:
        _fail(f"expected one of {', '.join(FSAVERAGE_FIELDS)}, found {field!r}", "field")
    mapper = load_mapper(results.config["data"]["mapper"])
    values = np.full(mapper.n_voxels, np.nan)
    values[results.file_voxel_index()] = np.asarray(results.array("stats", field, condition), dtype=np.float64)
    covered = to_fsaverage(mapper, np.ones(mapper.n_voxels))
    projected = to_fsaverage(mapper, values)
    out = {}
    for hemi, side in (("lh", "CortexLeft"), ("rh", "CortexRight")):
        v = np.where(covered[hemi] > 0, projected[hemi], np.nan).astype(np.float32)
        array = nib.gifti.GiftiDataArray(v, intent="NIFTI_INTENT_NONE", datatype="NIFTI_TYPE_FLOAT32",
                                         meta=nib.gifti.GiftiMetaData({"Name": f"{field}_{condition}"}))
        out[hemi] = nib.gifti.GiftiImage(darrays=[array], meta=nib.gifti.GiftiMetaData({
            "AnatomicalStructurePrimary": side,
            "Description": f"attnbrain {results.run_id} {field}_{condition} on fsaverage"}))
    return out


def gifti_bytes(image) -> bytes:
    """A GIfTI image as the bytes of a ``.func.gii`` file."""
    return image.to_bytes()


def table_csv(results) -> str:
    """The per-voxel table (:attr:`core.outputs.Results.table`) as CSV text, one row per voxel.

    Columns are those of :func:`table_columns` present in the run (``table_columns(results)`` says what this
    run's bin codes mean); floats are written with the shortest text that reads back to the same value
    (float64 columns exactly, float32 columns to float32).
    """
    table = results.table
    scheme = BinScheme.from_config(results.config)
    labels = np.array([scheme.label(c) for c in range(NEGATIVE_CODE, scheme.n_bins)], dtype=object)
    out = table.copy(deep=False)
    for m in results.conditions:
        if f"bin_{m}" in table:
            at = out.columns.get_loc(f"bin_{m}") + 1
            out.insert(at, f"bin_label_{m}", labels[table[f"bin_{m}"].to_numpy().astype(np.int64) - NEGATIVE_CODE])
    return out.to_csv(index=False, lineterminator="\n")


def series_csv(results, voxel: int) -> str:
    """One voxel's test series as CSV text.

    Columns ``sample`` (0-based test sample), ``measured`` (repeat-averaged measured response) and
    ``predicted_{m}`` for every condition of the run.
    """
    if isinstance(voxel, (bool, np.bool_)) or not isinstance(voxel, (int, np.integer)) \
            or not 0 <= int(voxel) < results.n_voxels:
        _fail(f"expected a voxel row from 0 to {results.n_voxels - 1}, found {voxel!r}", "voxel")
    if not results.has_stage("encoding"):
        _fail("this run has no encoding stage (no series); rerun precompute.py to finish it", "encoding")
    import pandas as pd
    v = int(voxel)
    cols = {"sample": np.arange(results.n_test), "measured": results.measured(v)}
    for m in results.conditions:
        cols[f"predicted_{m}"] = results.predicted(m, v)
    return pd.DataFrame(cols).to_csv(index=False, lineterminator="\n")


def flatmap_png(results, condition: str) -> Path:
    """Path of the condition's flatmap image (PNG at the pycortex flatmap resolution, as the cortex stage
    stored it). Copy it; never write to it."""
    import json
    _check_condition(results, condition)
    folder = results.asset_dir("cortex")
    if folder is None:
        _fail("this run has no cortex assets (no pycortex subject, or the cortex stage was not run), so no "
              "flatmaps", "cortex", source=str(results.run_dir))
    try:
        meta = json.loads((folder / "flatmap_meta.json").read_text())
        name = meta["conditions"][condition]
    except (OSError, ValueError, KeyError, TypeError):
        _fail(f"the cortex assets have no flatmap for {condition!r}; rerun the cortex stage", "cortex",
              source=str(folder))
    path = folder / str(name)
    if not path.is_file() or path.parent != folder:
        _fail(f"flatmap image {name!r} is missing; rerun the cortex stage", "cortex", source=str(folder))
    return path

