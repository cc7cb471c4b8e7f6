"""The dataset contract: loaders for every stimulus/response format, and a clear early error for each bad input.

Each bad-input test asserts that the message names the file or field, what was expected and what was found.
"""
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from core._validation import InputError
from core.data.datasets import (
    ArrayImages,
    CortexSpec,
    Dataset,
    FolderImages,
    check_cortex_spec,
    load_responses,
    open_stimuli,
    validate_dataset,
)

ROOT = Path(__file__).resolve().parents[1]


def _responses(path, n_train=20, n_test=6, n_vox=5, repeats=0, rng=None, **extra):
    rng = rng or np.random.default_rng(0)
    Y_test = rng.normal(size=(repeats, n_test, n_vox) if repeats else (n_test, n_vox)).astype(np.float32)
    arrays = {"Y_train": rng.normal(size=(n_train, n_vox)).astype(np.float32), "Y_test": Y_test, **extra}
    return save_responses(path, arrays)


def save_responses(path, arrays: dict) -> Path:
    """``arrays`` as a responses file: NPZ when the name ends in .npz, HDF5 otherwise."""
    if str(path).endswith(".npz"):
        np.savez(path, **arrays)
    else:
        with h5py.File(path, "w") as h5:
            for k, v in arrays.items():
                h5.create_dataset(k, data=v)
    return path


# ------------------------------------------------------------------------------------------ good inputs

def test_hdf5_and_npz_load_the_same(tmp_path):
    a = load_responses(_responses(tmp_path / "r.h5"))
    b = load_responses(_responses(tmp_path / "r.npz"))
    np.testing.assert_array_equal(a.Y_train, b.Y_train)
    assert a.Y_train.shape == (20, 5) and a.Y_test.shape == (6, 5) and a.Y_test_repeats is None


def test_repeats_are_averaged(tmp_path):
    r = load_responses(_responses(tmp_path / "r.h5", repeats=3))
    assert r.Y_test_repeats.shape == (3, 6, 5)
    np.testing.assert_allclose(r.Y_test, r.Y_test_repeats.mean(0), rtol=1e-6)  # float32 mean of 3 values


def test_run_onsets_are_read(tmp_path):
    r = load_responses(_responses(tmp_path / "r.h5", run_onsets=np.array([0, 10])))
    assert r.run_onsets.tolist() == [0, 10]



@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_test_responses_alone_match_the_full_read(tmp_path, suffix):
    # What the statistics stage reads: Y_test, its repeats and the run onsets as the full read gives them,
    # the training responses left unread but their shape known (from the HDF5 dataset / the .npy header).
    path = _responses(tmp_path / f"r{suffix}", repeats=3, run_onsets=np.array([0, 12]))
    full, test_only = load_responses(path), load_responses(path, train=False)
    assert test_only.Y_train is None and full.Y_train is not None
    assert (test_only.n_train, test_only.n_voxels) == (full.n_train, full.n_voxels) == (20, 5)
    np.testing.assert_array_equal(test_only.Y_test, full.Y_test)
    np.testing.assert_array_equal(test_only.Y_test_repeats, full.Y_test_repeats)
    assert test_only.run_onsets.tolist() == [0, 12]


@pytest.mark.parametrize("suffix", [".h5", ".npz"])
def test_test_responses_alone_still_check_shapes(tmp_path, suffix):
    rng = np.random.default_rng(0)
    p = save_responses(tmp_path / f"r{suffix}", {"Y_train": rng.normal(size=(20, 5, 2)),
                                                   "Y_test": rng.normal(size=(6, 5))})
    with pytest.raises(InputError, match=r"'Y_train': expected a 2-D array \(n_train, n_voxels\), found a 3-D"):
        load_responses(p, train=False)
    p = save_responses(tmp_path / f"s{suffix}", {"Y_train": rng.normal(size=(20, 5)),
                                                   "Y_test": rng.normal(size=(6, 4))})
    with pytest.raises(InputError, match="Y_test has 4 voxels but Y_train has 5"):
        load_responses(p, train=False)

def test_image_folder_sorted_and_rgb(tmp_path):
    for name, value in (("b.png", 200), ("a.png", 100), ("c.jpg", 50)):
        Image.fromarray(np.full((8, 9), value, np.uint8)).save(tmp_path / name)  # grayscale files
    src = open_stimuli(tmp_path)
    assert isinstance(src, FolderImages) and len(src) == 3
    assert [f.name for f in src.files] == ["a.png", "b.png", "c.jpg"]
    assert src[0].shape == (8, 9, 3) and src[0].dtype == np.uint8 and src[0][0, 0, 0] == 100


def test_npy_and_hdf5_stimuli(tmp_path):
    arr = np.random.default_rng(0).integers(0, 255, (4, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "s.npy", arr)
    with h5py.File(tmp_path / "s.h5", "w") as h5:
        h5.create_dataset("frames", data=arr)
    np.testing.assert_array_equal(open_stimuli(tmp_path / "s.npy")[2], arr[2])
    np.testing.assert_array_equal(open_stimuli(tmp_path / "s.h5", key="frames")[3], arr[3])


def _write_movie(path, seconds=4, fps=10, size=32):
    """A movie whose frame colour encodes its time: red channel = 20 * second, green = 10 * frame-in-second."""
    import av
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = 4_000_000
        for i in range(seconds * fps):
            img = np.zeros((size, size, 3), np.uint8)
            img[..., 0] = 20 * (i // fps) + 30
            img[..., 1] = 10 * (i % fps) + 30
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def test_movie_frames_cut_at_tr(tmp_path):
    movie = tmp_path / "m.mp4"
    _write_movie(movie)
    src = open_stimuli(movie, movie_tr=1.0, movie_offset=0.5, n_samples=3)
    assert len(src) == 3
    for i in range(3):
        frame = src[i].astype(int)
        # Sample i is on screen at 0.5 + i s: second i, frame 5 of that second. Codec error of a few levels.
        assert abs(frame[..., 0].mean() - (20 * i + 30)) < 6
        assert abs(frame[..., 1].mean() - (10 * 5 + 30)) < 6


# ------------------------------------------------------------------------------------------ bad inputs

def test_bad_movie_too_short(tmp_path):
    movie = tmp_path / "m.mp4"
    _write_movie(movie, seconds=2)
    with pytest.raises(InputError, match=r"m.mp4: movie is 2.00 s long but 5 samples at TR 1 s .* up to 4.00 s"):
        open_stimuli(movie, movie_tr=1.0, n_samples=5)


def test_bad_movie_without_tr(tmp_path):
    movie = tmp_path / "m.mp4"
    _write_movie(movie, seconds=1)
    with pytest.raises(InputError, match="movie_tr.*positive TR"):
        open_stimuli(movie, movie_tr=0.0, n_samples=2)


def test_bad_missing_key(tmp_path):
    p = tmp_path / "r.h5"
    with h5py.File(p, "w") as h5:
        h5.create_dataset("Y_train", data=np.ones((3, 2)))
        h5.create_dataset("Ytest", data=np.ones((3, 2)))
    with pytest.raises(InputError, match=r"r.h5, field 'Y_test': missing key\(s\) Y_test; found \['Y_train', 'Ytest'\]"):
        load_responses(p)


def test_bad_1d_array(tmp_path):
    p = _responses(tmp_path / "r.npz")
    np.savez(p, Y_train=np.ones(20), Y_test=np.ones((6, 5)))
    with pytest.raises(InputError, match=r"'Y_train': expected a 2-D array .*found a 1-D array"):
        load_responses(p)


def test_bad_voxel_count_between_train_and_test(tmp_path):
    p = tmp_path / "r.npz"
    rng = np.random.default_rng(0)
    np.savez(p, Y_train=rng.normal(size=(20, 5)), Y_test=rng.normal(size=(6, 4)))
    with pytest.raises(InputError, match="Y_test has 4 voxels but Y_train has 5"):
        load_responses(p)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_bad_nan_or_inf(tmp_path, bad):
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(20, 5))
    Y[3, 2] = bad
    p = tmp_path / "r.npz"
    np.savez(p, Y_train=Y, Y_test=rng.normal(size=(6, 5)))
    with pytest.raises(InputError, match=r"'Y_train': found 1 NaN/inf values \(first at index \(3, 2\)\)"):
        load_responses(p)


def test_bad_constant_voxels(tmp_path):
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(20, 5))
    Y[:, [1, 4]] = 3.0
    p = tmp_path / "r.npz"
    np.savez(p, Y_train=Y, Y_test=rng.normal(size=(6, 5)))
    with pytest.raises(InputError, match=r"2 voxel\(s\) are constant.*\[1, 4\]"):
        load_responses(p)



def test_bad_constant_voxels_exactly_even_where_a_float32_std_is_not_zero(tmp_path):
    # A float32 column of 7,200 copies of 123.456 has a numpy std of ~4e-3 (the float32 mean is not exactly
    # the value), so a std == 0 test lets it through; the check compares min and max instead.
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(7200, 4)).astype(np.float32)
    Y[:, 2] = np.float32(123.456)
    assert Y[:, 2].std() > 0   # the premise: what the std-based check missed
    p = tmp_path / "r.h5"
    save_responses(p, {"Y_train": Y, "Y_test": rng.normal(size=(6, 4)).astype(np.float32)})
    with pytest.raises(InputError, match=r"1 voxel\(s\) are constant.*\[2\]"):
        load_responses(p)


def test_finite_check_does_not_mistake_a_sum_overflow_for_inf(tmp_path):
    # The finite check first sums the array (NaN/inf survive a sum); finite values whose float32 sum
    # overflows must still pass, through the element-wise check.
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(20, 5)).astype(np.float32)
    Y[:10, 0] = np.float32(3e38)
    with np.errstate(over="ignore"):
        assert not np.isfinite(Y.sum(dtype=np.float32))
    p = tmp_path / "r.npz"
    np.savez(p, Y_train=Y, Y_test=rng.normal(size=(6, 5)).astype(np.float32))
    np.testing.assert_array_equal(load_responses(p).Y_train, Y)

def test_bad_non_numeric_dtype(tmp_path):
    p = tmp_path / "r.npz"
    np.savez(p, Y_train=np.array([["a"] * 3] * 20), Y_test=np.ones((6, 3)))
    with pytest.raises(InputError, match="'Y_train': expected numbers, found dtype <U1"):
        load_responses(p)


def test_bad_run_onsets(tmp_path):
    p = _responses(tmp_path / "r.h5", run_onsets=np.array([0, 15, 12]))
    with pytest.raises(InputError, match=r"run_onsets.*strictly increasing.*\[0, 15, 12\]"):
        load_responses(p)


def test_bad_response_file_missing_or_unreadable(tmp_path):
    with pytest.raises(InputError, match="response file not found"):
        load_responses(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="junk.h5: not a readable HDF5 file"):
        load_responses(tmp_path / "junk.h5")
    (tmp_path / "r.csv").write_text("1,2")
    with pytest.raises(InputError, match=r"unsupported response file type '.csv'"):
        load_responses(tmp_path / "r.csv")


def test_bad_empty_folder(tmp_path):
    with pytest.raises(InputError, match="holds no images.*it is empty"):
        FolderImages(tmp_path)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="holds no images.*found e.g. notes.txt"):
        FolderImages(tmp_path)


def test_bad_unreadable_image(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(InputError, match=r"b.png: image file cannot be read"):
        open_stimuli(tmp_path)


def test_bad_missing_stimulus_path(tmp_path):
    with pytest.raises(InputError, match="stimulus file or folder not found"):
        open_stimuli(tmp_path / "frames.npy")


def test_bad_stimulus_dtype_and_shape(tmp_path):
    np.save(tmp_path / "f.npy", np.zeros((3, 8, 8, 3), np.float32))
    with pytest.raises(InputError, match="expected dtype uint8.*found float32.*np.clip"):
        open_stimuli(tmp_path / "f.npy")
    np.save(tmp_path / "g.npy", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(InputError, match=r"shape \(N, H, W, 3\), found shape \(3, 8, 8\).*grayscale"):
        open_stimuli(tmp_path / "g.npy")


def test_bad_sample_count_mismatch(tmp_path):
    r = load_responses(_responses(tmp_path / "r.h5"))
    imgs = ArrayImages(np.zeros((19, 8, 8, 3), np.uint8), name="train.npy")
    ds = Dataset(stimuli_train=imgs, stimuli_test=ArrayImages(np.zeros((6, 8, 8, 3), np.uint8)),
                 responses=r, cortex=None)
    with pytest.raises(InputError, match="train.npy.*19 train stimuli but Y_train has 20 samples"):
        validate_dataset(ds)


def test_bad_cortex_subject_transform_mask():
    with pytest.raises(InputError, match="unknown pycortex subject 'S9'.*\\['S1'\\]"):
        check_cortex_spec(CortexSpec("S9", "fullhead", "thick"))
    with pytest.raises(InputError, match="unknown transform 'func' for subject S1; available: .*'fullhead'"):
        check_cortex_spec(CortexSpec("S1", "func", "thick"))
    with pytest.raises(InputError, match="unknown mask 'thickest'"):
        check_cortex_spec(CortexSpec("S1", "fullhead", "thickest"))


def test_bad_voxel_count_vs_mask():
    with pytest.raises(InputError, match="responses have 100 voxels but mask S1/fullhead/thick holds 80615"):
        check_cortex_spec(CortexSpec("S1", "fullhead", "thick"), 100)



def _files_config(tmp_path, data_extra: str = ""):
    """A files-kind config of 20 + 6 blank 64-px stimuli and 7-voxel responses (no mask holds 7 voxels)."""
    _responses(tmp_path / "r.h5", n_vox=7)
    np.save(tmp_path / "train.npy", np.zeros((20, 64, 64, 3), np.uint8))
    np.save(tmp_path / "test.npy", np.zeros((6, 64, 64, 3), np.uint8))
    cfg = tmp_path / "study.toml"
    cfg.write_text(f'preset = "demo"\n[data]\nkind = "files"\nresponses = "{tmp_path / "r.h5"}"\n{data_extra}'
                   f'stimuli_train = "{tmp_path / "train.npy"}"\nstimuli_test = "{tmp_path / "test.npy"}"\n')
    return cfg

def test_cli_bad_input_exits_2_and_writes_nothing(tmp_path):
    """The CLI prints one readable line on stderr, exits 2, and leaves the results folder untouched."""
    cfg = _files_config(tmp_path)
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out", str(out)],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "responses have 7 voxels but mask S1/fullhead/thick holds 80615" in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out.exists()


def test_cli_unknown_config_key_exits_2(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text("[features]\nlayr = 'pool'\n")
    proc = subprocess.run([sys.executable, str(ROOT / "precompute.py"), "--config", str(cfg), "--out",
                           str(tmp_path / "o")], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 2 and "unknown setting(s) features.layr" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_user_files_are_checked_once_per_process_and_again_when_changed(tmp_path, monkeypatch):
    """precompute.py checks the user's files before it writes anything; the dataset stage then does not read
    them all again, unless they changed. Through the Pipeline API (no preflight) the stage itself checks."""
    import core.data.datasets
    import core.pipeline.inputs
    from core.config import load_config
    cfg = load_config(_files_config(tmp_path, 'subject = ""\n'))
    calls = []
    real = core.data.datasets.validate_dataset
    monkeypatch.setattr(core.data.datasets, "validate_dataset", lambda ds: (calls.append(1), real(ds)))
    monkeypatch.setattr(core.pipeline.inputs, "_CHECKED_INPUTS", set())
    core.pipeline.inputs.check_user_dataset(cfg)
    core.pipeline.inputs.check_user_dataset(cfg)
    assert len(calls) == 1
    # The responses replaced by a bad file (a new modification time): checked again.
    save_responses(tmp_path / "r.h5", {"Y_train": np.ones((20, 7), np.float32),
                                       "Y_test": np.ones((6, 7), np.float32) * 2})
    with pytest.raises(InputError, match="constant"):
        core.pipeline.inputs.check_user_dataset(cfg)
    assert len(calls) == 1   # load_responses raised before the cross-checks
    # The dataset stage without a preflight (the Pipeline API): it checks, and the error stops it.
    from core.pipeline.runner import Pipeline
    with pytest.raises(InputError, match="constant"):
        Pipeline(cfg, tmp_path / "out", device="cpu", progress=False).run(["dataset"], parallel=1)
