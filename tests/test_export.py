"""Exports (core.outputs.export and the dashboard's download routes) against independent references.

NIfTI maps are checked against pycortex itself: its mask says where each voxel lies and its own
``Volume.save_nii`` writes the reference volume; CSVs are read back and compared with the stage arrays on
disk. A small synthetic run is moved onto pycortex's S1 (its voxel indices replaced by a seeded subset of
the S1/fullhead/thick mask) so the whole path from a results folder runs in seconds.
"""
from __future__ import annotations

import gzip
import io
import json
import re
import shutil

import numpy as np
import pandas as pd
import pytest

from core.outputs import export
from core._validation import InputError
from core.outputs.reader import open_results
from core.testing.synthetic import make_synthetic_results
from core.vocabulary import CONTRAST_LABELS, CONTRASTS

SUBJECT, TRANSFORM, MASK = "S1", "fullhead", "thick"


@pytest.fixture(scope="module")
def s1_mask():
    import cortex
    return np.asarray(cortex.db.get_mask(SUBJECT, TRANSFORM, MASK), dtype=bool)


@pytest.fixture(scope="module")
def synthetic_dir(tmp_path_factory):
    return make_synthetic_results(tmp_path_factory.mktemp("synthetic"), n_voxels=300, n_test=20, k=5, seed=3,
                                  flatmap_height=48)


def _retarget(src, dst, *, subject: str, ijk: np.ndarray | None):
    """Copy a results folder, pointing its config at ``subject`` and (given) replacing the voxels' ijk."""
    shutil.copytree(src, dst)
    (run_json,) = list(dst.glob("*/run.json"))
    info = json.loads(run_json.read_text())
    info["config"]["data"].update(subject=subject, transform=TRANSFORM if subject else "",
                                  mask=MASK if subject else "")
    run_json.write_text(json.dumps(info))
    if ijk is not None:
        path = dst / "cache" / "stages" / f"dataset-{info['stages']['dataset']}" / "ijk.npy"
        old = np.load(path)
        np.save(path, ijk.astype(old.dtype))
    return dst


@pytest.fixture(scope="module")
def s1_run(synthetic_dir, s1_mask, tmp_path_factory):
    """``(results, rows)``: the synthetic run's 300 voxels at mask rows ``rows`` of S1/fullhead/thick."""
    rows = np.sort(np.random.default_rng(7).choice(int(s1_mask.sum()), 300, replace=False))
    zyx = np.argwhere(s1_mask)[rows]            # C order of the (z, y, x) mask = pycortex's voxel order
    out = _retarget(synthetic_dir, tmp_path_factory.mktemp("s1") / "results", subject=SUBJECT,
                    ijk=zyx[:, ::-1])
    return open_results(out), rows


def _pycortex_reference(tmp_path, s1_mask, values_in_mask_order: np.ndarray) -> np.ndarray:
    """pycortex's own NIfTI of a masked volume, as an (x, y, z) array."""
    import cortex
    import nibabel as nib
    vol = cortex.Volume(values_in_mask_order.astype(np.float32), SUBJECT, TRANSFORM, mask=s1_mask)
    path = tmp_path / "pycortex.nii.gz"
    vol.save_nii(str(path))
    return np.asarray(nib.load(path).dataobj)[..., 0]


# ------------------------------------------------------------------------------------------------ NIfTI
def test_whole_mask_volume_matches_pycortex(s1_mask, tmp_path):
    """Every voxel of the mask, placed by its ijk, lands where pycortex's save_nii puts it."""
    n = int(s1_mask.sum())
    values = np.random.default_rng(0).normal(size=n).astype(np.float32)
    ijk = np.argwhere(s1_mask)[:, ::-1]
    mask, affine = export.cortex_reference(SUBJECT, TRANSFORM, MASK)
    ours = export.voxel_volume(values, ijk, mask.shape[::-1], fill=np.nan, dtype=np.float32)
    reference = _pycortex_reference(tmp_path, s1_mask, values)
    assert ours.shape == reference.shape == (100, 100, 31)
    inside = s1_mask.transpose(2, 1, 0)
    assert np.array_equal(ours[inside], reference[inside])
    assert np.isnan(ours[~inside]).all()
    assert np.array_equal(ours.transpose(2, 1, 0)[s1_mask], values)      # masked with pycortex's mask
    import cortex
    assert np.array_equal(affine, cortex.db.get_xfm(SUBJECT, TRANSFORM).reference.affine)


@pytest.mark.parametrize("field", ["r", "p", "q"])
def test_nifti_round_trip_of_a_run(s1_run, s1_mask, field, tmp_path):
    import nibabel as nib
    results, rows = s1_run
    stored = np.asarray(results.stage("stats").arrays[f"{field}_on"])
    path = tmp_path / "map.nii.gz"
    path.write_bytes(export.nifti_bytes(export.nifti_map(results, "on", field)))
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert img.get_data_dtype() == np.float32 and data.shape == (100, 100, 31)
    # Masked with the pycortex mask: the run's voxels at their mask rows, NaN everywhere else.
    in_mask = data.transpose(2, 1, 0)[s1_mask]
    assert np.array_equal(in_mask[rows], stored.astype(np.float32), equal_nan=True)
    others = np.setdiff1d(np.arange(in_mask.size), rows)
    assert np.isnan(in_mask[others]).all() and np.isnan(data[~s1_mask.transpose(2, 1, 0)]).all()
    # One voxel by hand: the (z, y, x) position the pycortex mask gives its row holds its value at [x, y, z].
    z, y, x = np.argwhere(s1_mask)[rows[17]]
    assert data[x, y, z] == np.float32(stored[17])
    # Same placement as pycortex's own NIfTI writer.
    full = np.full(int(s1_mask.sum()), np.nan, np.float32)
    full[rows] = stored
    reference = _pycortex_reference(tmp_path, s1_mask, full)
    inside = s1_mask.transpose(2, 1, 0)                  # pycortex writes 0 outside its mask, we NaN
    assert np.array_equal(data[inside], reference[inside], equal_nan=True)
    import cortex
    assert np.allclose(img.affine, cortex.db.get_xfm(SUBJECT, TRANSFORM).reference.affine)
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 2
    assert results.run_id in img.header["descrip"].item().decode()


def test_bin_map_is_int16_with_the_documented_fill(s1_run, s1_mask):
    results, rows = s1_run
    img = export.nifti_map(results, "off", "bin")
    data = np.asarray(img.dataobj)
    assert data.dtype == np.int16 and img.get_data_dtype() == np.int16
    in_mask = data.transpose(2, 1, 0)[s1_mask]
    assert np.array_equal(in_mask[rows], np.asarray(results.stage("stats").arrays["bin_off"]))
    assert (np.delete(in_mask, rows) == export.BIN_FILL).all()
    assert (data[~s1_mask.transpose(2, 1, 0)] == export.BIN_FILL).all()


def test_no_nifti_without_a_cortex_mapping(synthetic_dir, tmp_path):
    no_subject = open_results(_retarget(synthetic_dir, tmp_path / "none", subject="", ijk=None))
    reason = export.nifti_unavailable_reason(no_subject)
    assert "has none" in reason and "CSV" in reason
    with pytest.raises(InputError, match="NIfTI export needs a cortex mapping") as exc:
        export.nifti_map(no_subject, "on", "r")
    assert "\n" not in str(exc.value)
    unknown = open_results(synthetic_dir)                     # subject "synthetic": not a pycortex subject
    assert "pycortex" in export.nifti_unavailable_reason(unknown)


def test_nifti_bad_inputs(s1_run, s1_mask, synthetic_dir, tmp_path):
    results, _ = s1_run
    with pytest.raises(InputError, match=r"'condition': expected one of \['off', 'on', 'uniform'\], found 'of'"):
        export.nifti_map(results, "of", "r")
    with pytest.raises(InputError, match="'field': expected one of r, p, q, bin, found 'z'"):
        export.nifti_map(results, "on", "z")
    # Voxel indices that are not in the mask (a run made for another mask).
    outside = np.argwhere(~s1_mask)[:300][:, ::-1]
    wrong = open_results(_retarget(synthetic_dir, tmp_path / "wrong", subject=SUBJECT, ijk=outside))
    with pytest.raises(InputError, match="300 voxel\\(s\\) of the run lie outside mask S1/fullhead/thick"):
        export.nifti_map(wrong, "on", "r")
    with pytest.raises(InputError, match="fall outside the volume"):
        export.voxel_volume(np.zeros(1), [[100, 0, 0]], (100, 100, 31), fill=0, dtype=np.float32)


# ------------------------------------------------------------------------------------------------ contrast NIfTI
def _stage_file(run_dir, stage: str, name: str):
    info = json.loads((run_dir / "run.json").read_text())
    return run_dir.parent / "cache" / "stages" / f"{stage}-{info['stages'][stage]}" / f"{name}.npy"


@pytest.fixture(scope="module")
def s1_contrast_run(synthetic_dir, s1_run, tmp_path_factory):
    """``(results, invalid)``: the S1 run with planted contrast outcomes (-1, 0, +1) and undefined voxels
    ``invalid`` in on_off (the small synthetic run itself has neither)."""
    ijk = np.asarray(s1_run[0].array("dataset", "ijk"))
    out = _retarget(synthetic_dir, tmp_path_factory.mktemp("s1c") / "results", subject=SUBJECT, ijk=ijk)
    (run_dir,) = [p.parent for p in out.glob("*/run.json")]
    rng = np.random.default_rng(11)
    invalid = np.sort(rng.choice(300, 25, replace=False))
    valid = np.ones(300, bool)
    valid[invalid] = False
    outcome = rng.choice(np.array([-1, 0, 1], np.int8), 300)
    outcome[invalid] = 0
    delta = np.load(_stage_file(run_dir, "contrasts", "delta_on_off"))
    delta[invalid] = 0.5                          # a finite value the map must not show
    np.save(_stage_file(run_dir, "contrasts", "valid_on_off"), valid)
    np.save(_stage_file(run_dir, "contrasts", "outcome_on_off"), outcome)
    np.save(_stage_file(run_dir, "contrasts", "delta_on_off"), delta)
    return open_results(out), invalid


@pytest.mark.parametrize("field", ["delta", "delta_lo", "delta_hi", "p", "q"])
@pytest.mark.parametrize("contrast", list(CONTRASTS))
def test_contrast_map_holds_the_stored_arrays(s1_contrast_run, s1_mask, contrast, field, tmp_path):
    import nibabel as nib
    results, invalid = s1_contrast_run
    arrays = results.contrast(contrast)
    stored, valid = np.asarray(arrays[field]), np.asarray(arrays["valid"])
    if contrast == "on_off":
        assert not valid[invalid].any() and valid.sum() == 275
    path = tmp_path / "c.nii.gz"
    path.write_bytes(export.nifti_bytes(export.nifti_contrast_map(results, contrast, field)))
    img = nib.load(path)
    data = np.asarray(img.dataobj)
    assert img.get_data_dtype() == np.float32 and data.shape == (100, 100, 31)
    ijk = np.asarray(results.array("dataset", "ijk"))
    # Voxel by voxel (a seeded sample and every undefined voxel): the value at its (i, j, k).
    sample = np.union1d(np.random.default_rng(1).choice(300, 60, replace=False), np.flatnonzero(~valid))
    for v in sample:
        i, j, k = ijk[v]
        if valid[v]:
            assert data[i, j, k] == np.float32(stored[v]), (v, field)
        else:
            assert np.isnan(data[i, j, k]), (v, field)
    # NaN everywhere but at the valid voxels of the run.
    finite = np.zeros(data.shape, bool)
    finite[tuple(ijk[valid].T)] = True
    assert np.array_equal(np.isfinite(data), finite)
    # Same grid and affine as the per-condition maps.
    per_condition = export.nifti_map(results, "on", "r")
    assert np.array_equal(img.affine, per_condition.affine) and img.shape == per_condition.shape
    assert int(img.header["sform_code"]) == 2 and int(img.header["qform_code"]) == 2
    assert img.header["descrip"].item().decode() == f"attnbrain {results.run_id} {field}_{contrast}"


@pytest.mark.parametrize("field", ["unique_on", "unique_off", "shared", "q_unique_on", "gamma_on",
                                   "unique_on_vs_uniform", "p_unique_on_vs_uniform"])
def test_joint_map_holds_the_stored_arrays(s1_contrast_run, field):
    results, _ = s1_contrast_run
    img = export.nifti_joint_map(results, field)
    data = np.asarray(img.dataobj)
    stored = np.asarray(results.array("joint", field), dtype=np.float32)
    ijk = np.asarray(results.array("dataset", "ijk"))
    assert data.dtype == np.float32
    # Every voxel of the run at its (i, j, k), NaN wherever the run has no voxel.
    np.testing.assert_array_equal(data[tuple(ijk.T)], stored)
    inside = np.zeros(data.shape, bool)
    inside[tuple(ijk.T)] = True
    assert np.isnan(data[~inside]).all()
    assert np.array_equal(img.affine, export.nifti_map(results, "on", "r").affine)
    assert img.header["descrip"].item().decode() == f"attnbrain {results.run_id} {field}_joint"


def test_joint_nifti_bad_inputs(s1_contrast_run, synthetic_dir, tmp_path):
    results, _ = s1_contrast_run
    with pytest.raises(InputError, match="'field': expected one of the run's joint maps unique_on, .*found 'pred'"):
        export.nifti_joint_map(results, "pred")
    out = _retarget(synthetic_dir, tmp_path / "nojoint", subject=SUBJECT,
                    ijk=np.asarray(results.array("dataset", "ijk")))
    (run_json,) = list(out.glob("*/run.json"))
    info = json.loads(run_json.read_text())
    del info["stages"]["joint"]
    run_json.write_text(json.dumps(info))
    bare = open_results(out)
    assert export.joint_nifti_fields(bare) == ()
    with pytest.raises(InputError, match="'joint': this run has no joint stage"):
        export.nifti_joint_map(bare, "unique_on")


def test_contrast_outcome_map_codes(s1_contrast_run, s1_mask):
    results, invalid = s1_contrast_run
    img = export.nifti_contrast_map(results, "on_off", "outcome")
    data = np.asarray(img.dataobj)
    assert data.dtype == np.int16 and img.get_data_dtype() == np.int16
    outcome = np.asarray(results.contrast("on_off")["outcome"])
    assert set(np.unique(outcome)) == {-1, 0, 1}
    ijk = np.asarray(results.array("dataset", "ijk"))
    for v in range(300):
        assert data[tuple(ijk[v])] == outcome[v], v
    assert (data[tuple(ijk[invalid].T)] == 0).all()                # undefined: stored 0
    outside = np.ones(data.shape, bool)
    outside[tuple(ijk.T)] = False
    assert (data[outside] == export.OUTCOME_FILL).all() and export.OUTCOME_FILL not in (-1, 0, 1)
    assert img.header["intent_name"].item() == b"outcome codes"
    assert np.array_equal(img.affine, export.nifti_map(results, "off", "bin").affine)


def test_contrast_nifti_bad_inputs(s1_contrast_run, synthetic_dir, tmp_path):
    results, _ = s1_contrast_run
    with pytest.raises(InputError, match="'contrast': expected one of the run's contrasts on_off, on_uniform, "
                                         "uniform_off, found 'on_of'"):
        export.nifti_contrast_map(results, "on_of", "delta")
    with pytest.raises(InputError, match="'field': expected one of delta, delta_lo, delta_hi, p, q, outcome, "
                                         "found 'r'"):
        export.nifti_contrast_map(results, "on_off", "r")
    with pytest.raises(InputError, match="'field'"):
        export.nifti_contrast_map(results, "on_off", "valid")
    # A run without the contrasts stage.
    out = _retarget(synthetic_dir, tmp_path / "nocontrasts", subject=SUBJECT,
                    ijk=np.asarray(results.array("dataset", "ijk")))
    (run_json,) = list(out.glob("*/run.json"))
    info = json.loads(run_json.read_text())
    del info["stages"]["contrasts"]
    run_json.write_text(json.dumps(info))
    bare = open_results(out)
    assert bare.contrast_names() == []
    with pytest.raises(InputError, match="'contrasts': this run has no contrasts stage.*rerun precompute.py"):
        export.nifti_contrast_map(bare, "on_off", "delta")
    # No cortex mapping: the same reason as the per-condition maps.
    no_subject = open_results(_retarget(synthetic_dir, tmp_path / "none", subject="", ijk=None))
    with pytest.raises(InputError, match="NIfTI export needs a cortex mapping"):
        export.nifti_contrast_map(no_subject, "on_off", "delta")


# ------------------------------------------------------------------------------------------------ CSV
def test_table_csv_holds_the_stored_arrays(s1_run):
    results, _ = s1_run
    back = pd.read_csv(io.StringIO(export.table_csv(results)))
    # The table's columns, each bin code followed by its label.
    expected = []
    for c in results.table.columns:
        expected += [c, f"bin_label_{c[4:]}"] if c.startswith("bin_") else [c]
    assert list(back.columns) == expected
    assert len(back) == results.n_voxels and np.array_equal(back["voxel"], np.arange(results.n_voxels))
    stats, enc = results.stage("stats").arrays, results.stage("encoding").arrays
    ds = results.stage("dataset").arrays
    for m in results.conditions:
        for field in ("r", "p", "q"):
            stored = np.asarray(stats[f"{field}_{m}"])
            assert np.array_equal(back[f"{field}_{m}"].to_numpy().astype(stored.dtype), stored, equal_nan=True)
        assert np.array_equal(back[f"bin_{m}"], np.asarray(stats[f"bin_{m}"]))
        labels = {-2: "significant r<0", -1: "n.s.", 0: "0-0.1", 1: "0.1-0.2", 2: "0.2-0.3", 3: ">=0.3"}
        assert list(back[f"bin_label_{m}"]) == [labels[b] for b in np.asarray(stats[f"bin_{m}"])]
        assert np.array_equal(back[f"significant_{m}"], np.asarray(stats[f"significant_{m}"]))
        alpha = np.asarray(enc[f"alpha_{m}"])
        assert np.array_equal(back[f"alpha_{m}"].to_numpy().astype(alpha.dtype), alpha)
    assert np.array_equal(back[["i", "j", "k"]].to_numpy(), np.asarray(ds["ijk"]))
    names = np.asarray(results.roi_names)[np.asarray(ds["roi"])]
    assert list(back["roi"]) == list(names)
    assert list(back["hemi"]) == ["R" if h == 1 else "L" for h in np.asarray(ds["hemi"])]


def test_table_columns_are_documented(s1_run):
    results, _ = s1_run
    patterns = []
    for key in export.TABLE_COLUMNS:
        for name in key.split(", "):
            name = name.replace("{m}", "(" + "|".join(results.conditions) + ")")
            patterns.append(re.compile("^" + name.replace("{c}", "(" + "|".join(CONTRASTS) + ")") + "$"))
    undocumented = [c for c in results.table.columns if not any(p.match(c) for p in patterns)]
    assert undocumented == []


def test_series_csv(s1_run):
    results, _ = s1_run
    back = pd.read_csv(io.StringIO(export.series_csv(results, 42)))
    assert list(back.columns) == ["sample", "measured"] + [f"predicted_{m}" for m in results.conditions]
    assert np.array_equal(back["sample"], np.arange(results.n_test))
    measured = np.asarray(results.stage("encoding").arrays["measured"][42])
    assert np.array_equal(back["measured"].to_numpy().astype(measured.dtype), measured)
    for m in results.conditions:
        pred = np.asarray(results.stage("encoding").arrays[f"pred_{m}"][42])
        assert np.array_equal(back[f"predicted_{m}"].to_numpy().astype(pred.dtype), pred)


@pytest.mark.parametrize("voxel", [-1, 300, True, 2.0, "3"])
def test_series_csv_bad_voxel(s1_run, voxel):
    with pytest.raises(InputError, match="'voxel': expected a voxel row from 0 to 299"):
        export.series_csv(s1_run[0], voxel)


def test_flatmap_png_is_the_stored_image(s1_run):
    results, _ = s1_run
    path = export.flatmap_png(results, "on")
    assert path.parent == results.asset_dir("cortex") and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(InputError, match="expected one of"):
        export.flatmap_png(results, "sideways")


# ------------------------------------------------------------------------------------------------ dashboard
def _snapshot(folder):
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def test_download_routes(s1_run):
    import nibabel as nib

    from dashboard.app import create_app
    from dashboard.downloads import export_urls, series_url
    results, rows = s1_run
    before = _snapshot(results.out)
    app = create_app(results)
    data = app.attnbrain_data
    client = app.server.test_client()
    urls = export_urls(data)
    resp = client.get(urls["table"])
    assert resp.status_code == 200 and resp.mimetype == "text/csv"
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.data.decode() == export.table_csv(results)
    resp = client.get(urls["nifti:on:r"])
    assert resp.status_code == 200
    img = nib.Nifti1Image.from_bytes(gzip.decompress(resp.data))
    expected = export.nifti_map(results, "on", "r")
    assert np.array_equal(np.asarray(img.dataobj), np.asarray(expected.dataobj), equal_nan=True)
    resp = client.get(urls["flatmap:off"])
    assert resp.status_code == 200 and resp.data == export.flatmap_png(results, "off").read_bytes()
    resp = client.get(series_url(data, 5))
    assert resp.status_code == 200 and resp.data.decode() == export.series_csv(results, 5)
    for bad in (series_url(data, 300), urls["nifti:on:r"].replace("_r_on", "_z_on"),
                urls["nifti:on:r"].replace("_on.", "_sideways."), urls["table"].replace(".csv", ".tsv"),
                urls["flatmap:off"].replace("_off", "_x"), urls["table"].replace("export/", "export/../")):
        assert client.get(bad).status_code == 404, bad
    for method in ("post", "put", "delete"):
        assert getattr(client, method)(urls["table"]).status_code == 405
    assert _snapshot(results.out) == before, "a download wrote into the results folder"


def test_contrast_download_routes(s1_contrast_run):
    """One link line per contrast; each file name resolves to its own map although contrasts (on_off) and
    fields (delta_lo) hold underscores; names of no map answer 404."""
    import nibabel as nib

    from dashboard.app import create_app
    from dashboard.downloads import export_urls, nifti_files
    results, _ = s1_contrast_run
    before = _snapshot(results.out)
    app = create_app(results)
    data = app.attnbrain_data
    client = app.server.test_client()
    urls = export_urls(data)
    assert sorted(k for k in urls if k.startswith("nifti_contrast:")) == sorted(
        f"nifti_contrast:{c}:{f}" for c in CONTRASTS for f in export.CONTRAST_NIFTI_FIELDS)
    joint_fields = export.JOINT_NIFTI_FIELDS + export.JOINT_UNIFORM_NIFTI_FIELDS
    assert export.joint_nifti_fields(results) == joint_fields
    assert len(nifti_files(data)) == 3 * 4 + 3 * 6 + len(joint_fields)
    for f in joint_fields:
        url = urls[f"nifti_joint:joint:{f}"]
        assert url.endswith(f"_{f}_joint.nii.gz") and url in json.dumps(app.layout.to_plotly_json(), default=str)
        resp = client.get(url)
        assert resp.status_code == 200 and resp.mimetype == "application/gzip", url
        img = nib.Nifti1Image.from_bytes(gzip.decompress(resp.data))
        assert np.array_equal(np.asarray(img.dataobj), np.asarray(export.nifti_joint_map(results, f).dataobj),
                              equal_nan=True)
    for c in CONTRASTS:
        for f in export.CONTRAST_NIFTI_FIELDS:
            url = urls[f"nifti_contrast:{c}:{f}"]
            assert url.endswith(f"_{f}_{c}.nii.gz")
            resp = client.get(url)
            assert resp.status_code == 200 and resp.mimetype == "application/gzip", url
            assert resp.data[:2] == b"\x1f\x8b"                        # gzip
            img = nib.Nifti1Image.from_bytes(gzip.decompress(resp.data))
            assert img.header["descrip"].item().decode() == f"attnbrain {results.run_id} {f}_{c}"
            expected = np.asarray(export.nifti_contrast_map(results, c, f).dataobj)
            assert np.array_equal(np.asarray(img.dataobj), expected, equal_nan=True)
    # p of a condition and p of a contrast that starts with it are different files.
    cond = nib.Nifti1Image.from_bytes(gzip.decompress(client.get(urls["nifti:on:p"]).data))
    assert cond.header["descrip"].item().decode().endswith(" p_on")
    # The panel has one line per contrast with its six links.
    layout = json.dumps(app.layout.to_plotly_json(), default=str)
    for c in CONTRASTS:
        assert f"NIfTI, contrast {CONTRAST_LABELS[c]}: " in layout
        assert all(urls[f"nifti_contrast:{c}:{f}"] in layout for f in export.CONTRAST_NIFTI_FIELDS)
    base = urls["nifti_contrast:on_off:delta"]
    for bad in (base.replace("_on_off.", "_on_of."), base.replace("_delta_on_off", "_bin_on_off"),
                base.replace("_delta_on_off", "_valid_on_off"), base.replace("_delta_on_off", "_outcome_on"),
                base.replace("_delta_on_off", "_delta_lo_hi_on_off"), base.replace("_delta_on_off", "_delta_off_on"),
                base.replace("_delta_on_off", "_delta_on_off_on"), base.replace("/attnbrain_", "/")):
        assert client.get(bad).status_code == 404, bad
    assert _snapshot(results.out) == before, "a download wrote into the results folder"


def test_nifti_route_without_cortex_mapping_says_why(synthetic_dir, tmp_path):
    from dashboard.app import create_app
    from dashboard.downloads import export_urls
    app = create_app(open_results(_retarget(synthetic_dir, tmp_path / "none", subject="", ijk=None)))
    resp = app.server.test_client().get(export_urls(app.attnbrain_data)["nifti:on:r"])
    assert resp.status_code == 404 and b"needs a cortex mapping" in resp.data
    layout = json.dumps(app.layout.to_plotly_json(), default=str)
    assert "NIfTI maps: not available" in layout


def test_figure_configs():
    from dashboard.plotting import PNG_SCALE, figure_config
    png = figure_config("r-scatter")
    assert png["toImageButtonOptions"] == {"format": "png", "filename": "r-scatter", "scale": PNG_SCALE}
    svg = figure_config("r-scatter", "svg")
    assert svg["toImageButtonOptions"] == {"format": "svg", "filename": "r-scatter"}
    assert figure_config("umap-on", "svg", three_d=True)["toImageButtonOptions"]["format"] == "png"
    with pytest.raises(ValueError):
        figure_config("x", "jpeg")


def test_format_switch_and_series_link(s1_run):
    from dash import html

    from dashboard.app import create_app
    from dashboard.downloads import FIGURE_FORMAT, SERIES_LINK, figure_configs, series_link, two_d_graphs
    app = create_app(s1_run[0])
    data = app.attnbrain_data
    graphs = two_d_graphs(data)
    assert list(figure_configs(data, "svg")) == graphs
    assert all(c["toImageButtonOptions"] == {"format": "svg", "filename": g}
               for g, c in figure_configs(data, "svg").items())
    assert all(c["toImageButtonOptions"]["format"] == "png" for c in figure_configs(data, None).values())
    # dcc.Graph redraws (taking a new config) only with a new figure: the switch sends a patch of layout.meta.
    from dashboard.downloads import format_patch
    ops = format_patch("svg").to_plotly_json()["operations"]
    assert ops == [{"operation": "Assign", "location": ["layout", "meta"], "params": {"value": {"image_format": "svg"}}}]
    link = series_link(data, 7)
    assert isinstance(link, html.A) and link.href.endswith("_voxel7_series.csv")
    assert series_link(data, None) == series_link(data, 300) == series_link(data, True) == \
        "select a voxel to download its series"
    # Both callbacks are registered on the app, and the layout holds their components.
    outputs = " ".join(app.callback_map)
    assert f"{SERIES_LINK}.children" in outputs and all(f"{g}.config" in outputs for g in graphs)
    layout = json.dumps(app.layout.to_plotly_json(), default=str)
    assert FIGURE_FORMAT in layout and "Downloads" in layout


# ------------------------------------------------------------------------------------------------ bundle
def test_bundle_files_hold_the_run(s1_run, tmp_path):
    """The offline bundle's data equal the dashboard's arrays; --force replaces atomically; results untouched."""
    from dashboard import scenefile as S
    from core.cortex.flatmap import flat_to_pixel
    from dashboard.bundle import main as bundle_main
    from dashboard.data import DashboardData
    results, _ = s1_run
    data = DashboardData(results)
    centre = data.flatmap.centre
    owner, orphan = int(np.flatnonzero(np.isfinite(centre[:, 0]))[0]), int(np.flatnonzero(np.isnan(centre[:, 0]))[0])
    scenes = [S.default_scene(title="one"), S.default_scene(title="two")]
    scenes[0]["selected"], scenes[1]["selected"] = owner, orphan
    scenes[1]["filters"].update(rule="q", ns_mode="hidden")
    scenes_file = tmp_path / "talk.json"
    scenes_file.write_text(S.export_scenes(scenes, run_id=results.run_id, n_voxels=results.n_voxels))
    out = tmp_path / "talk"
    out.mkdir()
    (out / "old.txt").write_text("an earlier bundle")
    before = _snapshot(results.out)
    argv = ["--results", str(results.out), "--scenes", str(scenes_file), "--out", str(out), "--force"]
    assert bundle_main(argv) == 0
    assert not (out / "old.txt").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["talk", "talk.json"]
    assert _snapshot(results.out) == before
    doc = json.loads((out / "data" / "bundle.json").read_text())
    raw = (out / "data" / "arrays.bin").read_bytes()

    def array(name):
        spec = doc["arrays"]["index"][name]
        return np.frombuffer(raw, dtype=np.dtype(spec["dtype"]).newbyteorder("<"), count=spec["length"],
                             offset=spec["offset"]).reshape(spec["shape"])
    from dashboard.umap_view import umap_figure
    for m in ("off", "on"):
        assert np.array_equal(array(f"umap_voxels_{m}"), data.umap[m].voxels)
        assert np.array_equal(array(f"umap_coords_{m}"), data.umap[m].coords)
        # The player opens each cloud in the scene the dashboard fits to it (ranges, aspect, camera).
        fitted = umap_figure(data, m, data.default_filters()).layout.scene.to_plotly_json()
        assert doc["umap"][m]["figure"]["layout"]["scene"] == json.loads(json.dumps(fitted))
        assert np.array_equal(array(f"r_{m}"), data.r[m], equal_nan=True)
        for rule in data.rules:
            assert np.array_equal(array(f"bins_{rule}_{m}"), data.bins(m, rule))
    assert np.array_equal(array("roi"), data.roi) and np.array_equal(array("hemi"), data.hemi)
    assert [s["title"] for s in doc["scenes"]] == ["one", "two"]
    assert doc["voxels"][str(owner)]["flat_px"] == pytest.approx(centre[owner].tolist())
    meta = json.loads((data.flatmap.folder / "flatmap_meta.json").read_text())
    expected = flat_to_pixel(results.stage("dataset").arrays["flat_xy"][orphan], extents=meta["extents"],
                             height=data.flatmap.height, width=data.flatmap.width)[0]
    assert doc["voxels"][str(orphan)]["flat_px"] == pytest.approx(expected.tolist())
    assert doc["flatmap"]["layers"][0] != doc["flatmap"]["layers"][1]
    assert all((out / name).is_file() for layer in doc["flatmap"]["layers"] for name in layer.values())
    assert (out / "viewer" / "index.html").is_file() and (out / "plotly.min.js").stat().st_size > 1_000_000
