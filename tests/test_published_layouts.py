"""Public voxelwise datasets as published, end to end on small files written in their exact layouts
(core.testing.published; no downloads): shortclips (sample-major responses with repeats and run onsets, a mapper
file for the cortex, stimuli as one frame file per run pooled per TR) and vim-2 (MATLAB v7.3 voxel-major
responses with NaN voxels, channel-first frames at 15 fps, TR 1 s), and a run with no cortex at all."""
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core._validation import InputError
from core.config import load_config
from core.data.datasets import load_responses, open_stimuli
from core.testing.published import (
    feature_latents,
    planted_frames,
    planted_responses,
    planted_weights,
    write_matlab_v73,
    write_mapper,
    write_shortclips_responses,
    write_vim2_responses,
)

pytestmark = pytest.mark.slow

_TINY_MODEL = """
[features]
input_size = 64
batch_size = 30
[encoding]
n_alphas = 7
n_folds = 3
[stats]
n_permutations = 1000
[rsa]
k = 8
n_pairs = 5000
[umap]
n_neighbors = 8
[contrasts]
n_boot = 200
"""


def _precompute(cfg_file: Path, out: Path, *stages: str):
    """precompute.py as a user runs it (its run log and summary.json are the CLI's); the opened results."""
    import os
    import subprocess
    import sys

    from core.outputs.reader import open_results
    extra = ["--stages", ",".join(stages)] if stages else []
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve().parents[1] / "precompute.py"), "--config",
                           str(cfg_file), "--out", str(out), "--device", "cpu", "--quiet", *extra],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return open_results(out)


# ------------------------------------------------------------------------------------------ shortclips
N_VOX = 240


@pytest.fixture(scope="module")
def shortclips(tmp_path_factory):
    """Mapper file, responses (3 runs of 80 TRs, 2 test repeats) and one frame file per run at 2 frames/s,
    TR 2 s (4 frames per sample), run end to end."""
    root = tmp_path_factory.mktemp("shortclips")
    rng = np.random.default_rng(0)
    mapper = write_mapper(root / "S01_mappers.hdf", N_VOX)
    frames_train, _ = planted_frames(240, 4, 64, rng)
    frames_test, _ = planted_frames(40, 4, 64, rng)
    pooled = [np.rint(f.reshape(-1, 4, *f.shape[1:]).mean(1)).astype(np.uint8) for f in (frames_train, frames_test)]
    lat_train, lat_test = feature_latents(*pooled)
    runs = []
    for k in range(3):
        runs.append(root / f"train_{k:02d}.npy")
        np.save(runs[-1], frames_train[k * 320:(k + 1) * 320])
    np.save(root / "test.npy", frames_test)
    w = planted_weights(lat_train.shape[1], N_VOX, rng)
    write_shortclips_responses(root / "S01_responses.hdf",
                               planted_responses(lat_train, w, rng, noise=0.5, run_onsets=(0, 80, 160)),
                               planted_responses(lat_test, w, rng, n_repeats=2, noise=0.5), np.array([0, 80, 160]))
    cfg = root / "shortclips.toml"
    cfg.write_text(f'preset = "demo"\n[data]\nkind = "files"\nresponses = "{root / "S01_responses.hdf"}"\n'
                   f'stimuli_train = [{", ".join(f"{chr(34)}{p}{chr(34)}" for p in runs)}]\n'
                   f'stimuli_test = "{root / "test.npy"}"\nstimulus_fps = 2\nmovie_tr = 2\n'
                   f'mapper = "{root / "S01_mappers.hdf"}"\n' + _TINY_MODEL)
    results = _precompute(cfg, root / "out")
    return {"root": root, "cfg": cfg, "mapper": mapper, "results": results, "frames_train": frames_train}


def test_frames_are_pooled_per_tr_across_the_run_files(shortclips):
    """Sample k of the training stimuli is the mean of its 4 frames (rounded), run files in order."""
    cfg = load_config(shortclips["cfg"])
    d = cfg.data
    stim = open_stimuli(d.stimuli_train, stimulus_fps=d.stimulus_fps, movie_tr=d.movie_tr)
    frames = shortclips["frames_train"]
    assert len(stim) == 240
    for k in (0, 79, 80, 239):
        expected = np.rint(frames[4 * k:4 * k + 4].astype(np.float64).mean(0)).astype(np.uint8)
        np.testing.assert_array_equal(stim[k], expected)
    first = open_stimuli(d.stimuli_train, stimulus_fps=2, movie_tr=2, frame_pooling="first")
    np.testing.assert_array_equal(first[81], frames[324])


def test_a_shortclips_run_has_flatmaps_and_rois_from_the_mapper(shortclips):
    import scipy.sparse  # noqa: F401  (the mapper's matrix is a scipy CSR matrix)

    from core.vocabulary import NS_CODE, BinScheme
    res, planted = shortclips["results"], shortclips["mapper"]
    assert res.n_voxels == N_VOX
    assert set(res.roi_names) == {"other", "V1", "VIS", "FFA"}
    geo = res.geometry()
    assert "ijk" not in geo
    np.testing.assert_array_equal(np.asarray(geo["hemi"]), planted["hemi"])
    # The lookup is scipy's row argmax of the mapper's matrix (every weight differs here), in image order.
    M = planted["M"]
    argmax = np.asarray(M.argmax(axis=1)).ravel()
    grid = np.full(planted["mask"].shape, -1)
    grid[planted["mask"]] = argmax
    lookup = np.asarray(res.array("cortex", "flatmap_lookup"))
    np.testing.assert_array_equal(lookup, grid.T[::-1])
    # Each flatmap image, pixel for pixel: the bin colour of the voxel under the pixel, where it is significant.
    scheme = BinScheme.from_config(res.config)
    folder = res.asset_dir("cortex")
    for m in ("on", "off"):
        img = np.asarray(Image.open(folder / f"flatmap_{m}.png").convert("RGBA"))
        codes = np.asarray(res.array("stats", "bin", m))
        hit = lookup >= 0
        shown = np.zeros(lookup.shape, bool)
        shown[hit] = codes[lookup[hit]] != NS_CODE
        assert shown.sum() > 0
        expected = scheme.to_rgba(codes[lookup[shown]])
        # The ROI drawing of the file (one white column) composites over the voxels: compare elsewhere.
        clean = shown & (np.asarray(Image.open(folder / f"flatmap_{m}.png"))[..., :3] != 255).any(-1)
        np.testing.assert_array_equal(img[clean][:, :3], scheme.to_rgba(codes[lookup[clean]])[:, :3])
        assert expected.shape[0] >= clean.sum()


def test_the_dashboard_shows_the_mapper_flatmap_and_says_why_there_is_no_viewer(shortclips):
    from dashboard.app import create_app
    from dashboard.data import DashboardData
    from dashboard.flatmaps import voxel_from_flat_click
    res = shortclips["results"]
    data = DashboardData(res)
    assert data.flatmap is not None and data.has_geometry and not data.has_volume and data.has_hemispheres
    lookup = np.asarray(data.flatmap.lookup)
    h = lookup.shape[0]
    for r, c in np.argwhere(lookup >= 0)[:: max(1, int((lookup >= 0).sum()) // 25)]:
        assert voxel_from_flat_click(data, {"x": float(c), "y": float(h - 1 - r)}) == lookup[r, c]
    assert "mapper file" in data.viewer_reason and "pycortex" in data.viewer_reason
    layout = create_app(res).server.test_client().get("/_dash-layout").data.decode()
    assert '"flat-on"' in layout and '"viewer-frame"' not in layout and "mapper file" in layout
    # ROI labels on the flatmap come from the mapper's masks.
    assert {r["name"] for r in data.flatmap.rois} == {"V1", "VIS", "FFA"}


def test_the_shortclips_responses_load_as_published(shortclips):
    r = load_responses(shortclips["root"] / "S01_responses.hdf")
    assert r.Y_train.shape == (240, N_VOX) and r.Y_test_repeats.shape == (2, 40, N_VOX)
    np.testing.assert_array_equal(r.run_onsets, [0, 80, 160])
    assert r.voxel_index is None and r.n_excluded == 0


# ------------------------------------------------------------------------------------------ vim-2
def _vim2_files(root: Path, rng, n_vox=150, nan_voxels=(3, 50, 51, 149)):
    """vim-2 as MATLAB v7.3 writes it: rt (n_vox, 60), rv (n_vox, 20), rva (n_vox, 3, 20) in MATLAB's order,
    NaN voxels; stimuli st / sv (64, 64, 3, frames) at 15 fps, TR 1 s."""
    frames_train, _ = planted_frames(60, 15, 64, rng)
    frames_test, _ = planted_frames(20, 15, 64, rng)
    pooled = [np.rint(f.reshape(-1, 15, *f.shape[1:]).mean(1)).astype(np.uint8) for f in (frames_train, frames_test)]
    lat_train, lat_test = feature_latents(*pooled)
    w = planted_weights(lat_train.shape[1], n_vox, rng)
    Y_train = planted_responses(lat_train, w, rng, noise=0.5)
    reps = planted_responses(lat_test, w, rng, n_repeats=3, noise=0.5)
    Y_train[:, list(nan_voxels)] = np.nan
    reps[:, :, list(nan_voxels)] = np.nan
    write_matlab_v73(root / "VoxelResponses_subject1.mat",
                     {"rt": Y_train.T, "rv": reps.mean(0).T, "rva": np.transpose(reps, (2, 0, 1))})
    write_matlab_v73(root / "Stimuli.mat", {"st": np.transpose(frames_train, (1, 2, 3, 0)),
                                            "sv": np.transpose(frames_test, (1, 2, 3, 0))})
    return Y_train, reps, frames_train, np.asarray(nan_voxels)


@pytest.fixture(scope="module")
def vim2(tmp_path_factory):
    root = tmp_path_factory.mktemp("vim2")
    rng = np.random.default_rng(1)
    Y_train, reps, frames_train, nan_voxels = _vim2_files(root, rng)
    cfg = root / "vim2.toml"
    cfg.write_text(f'preset = "demo"\n[data]\nkind = "files"\nresponses = "{root / "VoxelResponses_subject1.mat"}"\n'
                   f'stimuli_train = "{root / "Stimuli.mat"}"\nstimuli_test = "{root / "Stimuli.mat"}"\n'
                   'stimuli_key = "st"\nstimuli_test_key = "sv"\nstimulus_fps = 15\nmovie_tr = 1\nsubject = ""\n'
                   + _TINY_MODEL)
    return {"root": root, "cfg": cfg, "Y_train": Y_train, "reps": reps, "frames": frames_train,
            "nan_voxels": nan_voxels, "results": _precompute(cfg, root / "out")}


def test_vim2_responses_are_read_voxel_major_without_the_nan_voxels(vim2, tmp_path):
    r = load_responses(vim2["root"] / "VoxelResponses_subject1.mat")
    keep = np.setdiff1d(np.arange(150), vim2["nan_voxels"])
    assert r.layout == "vim2" and r.n_excluded == 4 and r.n_file_voxels == 150
    np.testing.assert_array_equal(r.voxel_index, keep)
    np.testing.assert_array_equal(r.Y_train, vim2["Y_train"][:, keep])
    np.testing.assert_array_equal(r.Y_test_repeats, vim2["reps"][:, :, keep])
    # The voxel-major file as a reader that keeps MATLAB's axis order writes it: the same arrays.
    write_vim2_responses(tmp_path / "plain.h5", vim2["Y_train"], vim2["reps"], nan_voxels=vim2["nan_voxels"])
    plain = load_responses(tmp_path / "plain.h5")
    np.testing.assert_array_equal(plain.Y_train, r.Y_train)
    np.testing.assert_array_equal(plain.Y_test, r.Y_test)
    # Only the test responses: the same voxels kept, the same shape known.
    t = load_responses(vim2["root"] / "VoxelResponses_subject1.mat", train=False)
    assert t.Y_train is None and t.train_shape == (60, 146)
    np.testing.assert_array_equal(t.voxel_index, keep)


def test_vim2_stimuli_are_matlab_order_frames_pooled_per_tr(vim2):
    stim = open_stimuli(vim2["root"] / "Stimuli.mat", key="st", stimulus_fps=15, movie_tr=1)
    assert len(stim) == 60
    f = vim2["frames"]
    np.testing.assert_array_equal(stim[7], np.rint(f[105:120].astype(np.float64).mean(0)).astype(np.uint8))


def test_a_vim2_run_reports_the_nan_voxels_and_keeps_the_file_numbering(vim2):
    import json
    res = vim2["results"]
    keep = np.setdiff1d(np.arange(150), vim2["nan_voxels"])
    assert res.n_voxels == 146
    np.testing.assert_array_equal(res.file_voxel_index(), keep)
    np.testing.assert_array_equal(np.asarray(res.table["file_voxel"]), keep)
    assert res.geometry() is None
    meta = res.stage("dataset").meta
    assert meta["n_excluded"] == 4 and meta["n_file_voxels"] == 150 and meta["response_layout"] == "vim2"
    summary = json.loads(Path(res.run_dir, "summary.json").read_text())
    assert summary["voxels_excluded"]["n_excluded"] == 4
    assert "4 of the 150 voxels" in Path(res.run_dir, "run.log").read_text()


def test_a_run_without_a_cortex_hides_the_brain_views_and_says_what_would_give_them(vim2):
    from dashboard.app import create_app
    from dashboard.data import DashboardData
    res = vim2["results"]
    data = DashboardData(res)
    assert data.flatmap is None and not data.has_geometry and not data.has_hemispheres
    assert "pycortex subject" in data.flatmap_reason and "mapper file" in data.flatmap_reason
    layout = create_app(res).server.test_client().get("/_dash-layout").data.decode()
    assert "no cortex mapping" in layout and '"flat-on"' not in layout


# ------------------------------------------------------------------------------------------ bad inputs
def test_mismatches_stop_before_any_heavy_work(shortclips, tmp_path):
    """Each a one-line InputError from the config check or the preflight, before any stage."""
    from core.pipeline.inputs import check_user_dataset
    root = shortclips["root"]
    text = shortclips["cfg"].read_text()
    # A mapper of another voxel count.
    write_mapper(tmp_path / "other.hdf", 100)
    bad = tmp_path / "a.toml"
    bad.write_text(text.replace(str(root / "S01_mappers.hdf"), str(tmp_path / "other.hdf")))
    with pytest.raises(InputError, match=f"maps 100 voxels but the responses have {N_VOX}"):
        check_user_dataset(load_config(bad))
    # Frames that are not whole TRs: 3 frames per sample into 120-frame files.
    bad.write_text(text.replace("stimulus_fps = 2", "stimulus_fps = 1.5"))
    with pytest.raises(InputError, match="320 frames is not a whole number of samples at 3 frames per sample"):
        check_user_dataset(load_config(bad))
    # fps x TR not a whole number of frames: a config error.
    bad.write_text(text.replace("stimulus_fps = 2", "stimulus_fps = 1.3"))
    with pytest.raises(InputError, match="data.movie_tr"):
        load_config(bad)


def test_fsaverage_gifti_export_projects_r_through_the_mapper(shortclips):
    """The GIfTI maps equal voxel_to_fsaverage @ r computed here with scipy (NaN where no voxel maps), and the
    dashboard serves them."""
    import nibabel as nib

    from core.outputs import export
    from dashboard.app import create_app
    from dashboard.data import DashboardData
    from dashboard.downloads import export_urls
    res = shortclips["results"]
    assert export.fsaverage_unavailable_reason(res) is None
    imgs = export.fsaverage_gifti(res, "on")
    import h5py
    import scipy.sparse
    with h5py.File(shortclips["root"] / "S01_mappers.hdf") as h5:
        F = scipy.sparse.csr_matrix((h5["voxel_to_fsaverage_data"][()], h5["voxel_to_fsaverage_indices"][()],
                                     h5["voxel_to_fsaverage_indptr"][()]), shape=tuple(h5["voxel_to_fsaverage_shape"][()]))
    r = np.asarray(res.array("stats", "r", "on"), dtype=np.float64)
    full = F @ r
    covered = np.asarray(F.sum(axis=1)).ravel() > 0
    expected = np.where(covered, full, np.nan).astype(np.float32)
    got = np.concatenate([nib.GiftiImage.from_bytes(export.gifti_bytes(imgs[h])).darrays[0].data
                          for h in ("lh", "rh")])
    np.testing.assert_array_equal(got, expected)
    urls = export_urls(DashboardData(res))
    client = create_app(res).server.test_client()
    resp = client.get(urls["gifti:on:r:rh"])
    assert resp.status_code == 200
    np.testing.assert_array_equal(nib.GiftiImage.from_bytes(resp.data).darrays[0].data, expected[163_842:])
    # The NIfTI maps need a volume: the downloads say why, and the route answers 404 with the reason.
    reason = export.nifti_unavailable_reason(res)
    assert "mapper file" in reason


def test_the_search_box_finds_a_voxel_by_its_column_in_the_response_file(vim2, shortclips):
    from dashboard.data import DashboardData
    from dashboard.selection import parse_voxel_query
    data = DashboardData(vim2["results"])
    keep = np.setdiff1d(np.arange(150), vim2["nan_voxels"])
    row = 60
    assert parse_voxel_query(data, f"file {keep[row]}") == (row, f"voxel {row} (column {keep[row]} of the response "
                                                                "file)")
    v, message = parse_voxel_query(data, "column 3")            # a NaN voxel of the file: left out
    assert v is None and "not in this run" in message
    inspector_facts = __import__("dashboard.inspector", fromlist=["x"]).inspector_children(data, row)
    assert f"column {keep[row]} of the response file" in str(inspector_facts)
    # Without voxels left out, the file's column is the row.
    assert parse_voxel_query(DashboardData(shortclips["results"]), "file 7")[0] == 7
