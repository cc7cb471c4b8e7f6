"""The bad-input catalogue: every input the tool reads, each way it can be wrong, and the one message it gets.

Each row of :data:`CASES` builds one bad input in a temporary folder and names the surface that reads it:

- ``precompute``: ``precompute.py`` (through :func:`precompute.main`, whose return value is the exit code)
  must print exactly one ``error: ...`` line holding the expected text, exit with code 2, and leave the
  results folder uncreated;
- ``results``: a damaged results folder, opened both by :func:`core.outputs.open_results` (an ``InputError``
  holding the expected text) and by ``python -m dashboard --results`` (one ``error:`` line, exit code 2);
  neither may change a byte of the folder;
- ``bundle``: ``python -m dashboard export-bundle`` (through :func:`dashboard.bundle.main`) with a good results
  folder and one bad input: one ``error:`` line, exit code 2, nothing written (no bundle, no temporary folder
  beside ``--out``, the results folder unchanged);
- ``export``: a :mod:`core.outputs.export` function, which raises a one-line ``InputError``;
- ``scenes``: a scenes file read by the dashboard (``RUN/scenes/scenes.json`` at start through
  :func:`dashboard.scenefile.load_scenes`, an uploaded file through :func:`dashboard.scenefile.import_scenes`): one-line
  ``InputError`` (the dashboard shows it as a notice), the file unchanged;
- ``url``: a page URL's scene state (``?scene=<token>``, ``#voxel=<row>``) read by
  :func:`dashboard.presenting.scene_from_page_url`: never an error, the default for every unusable field and
  a one-line notice.

The bad-input table in docs/reliability.md is generated from the same list: ``python tests/test_bad_inputs.py``
prints it, and :func:`test_readme_table_matches_the_catalogue` fails when the two differ.
"""
from __future__ import annotations

import json
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

N_TRAIN, N_TEST, N_VOX = 20, 6, 5


@dataclass(frozen=True)
class Case:
    id: str
    input: str          # which input (table column)
    problem: str        # what is wrong with it (table column)
    expect: str         # text the one error line must contain (table column)
    surface: str        # "precompute" | "results"
    make: Callable      # (tmp_path) -> argv for precompute, or (results_copy) -> (path, run_id) for results


# ------------------------------------------------------------------------------------------- builders
def _write_responses(path: Path, **override):
    from test_datasets import save_responses
    rng = np.random.default_rng(0)
    arrays = {"Y_train": rng.normal(size=(N_TRAIN, N_VOX)).astype(np.float32),
              "Y_test": rng.normal(size=(N_TEST, N_VOX)).astype(np.float32)}
    arrays.update(override)
    return save_responses(path, {k: v for k, v in arrays.items() if v is not None})


def _with(n: int, at: tuple[int, int], value: float) -> np.ndarray:
    Y = np.random.default_rng(1).normal(size=(n, N_VOX))
    Y[at] = value
    return Y


def _stimuli(path: Path, n: int, shape=(64, 64, 3), dtype=np.uint8):
    np.save(path, np.zeros((n, *shape), dtype))
    return path


def _files_argv(tmp: Path, *, responses=None, train=None, test=None, data_extra: str = "", top: str = "",
                extra_args=(), subject: str = "") -> list[str]:
    """A files-kind config whose every input is good unless overridden; no cortex mapping by default."""
    responses = responses or _write_responses(tmp / "r.h5")
    train = train or _stimuli(tmp / "train.npy", N_TRAIN)
    test = test or _stimuli(tmp / "test.npy", N_TEST)
    cfg = tmp / "study.toml"
    cfg.write_text(f'preset = "demo"\n{top}\n[data]\nkind = "files"\nresponses = "{responses}"\n'
                   f'stimuli_train = "{train}"\nstimuli_test = "{test}"\nsubject = "{subject}"\n{data_extra}\n')
    return ["--config", str(cfg), *extra_args]


def _mapper(path: Path, n_voxels: int, bad_mask: bool = False, bad_curvature: bool = False) -> Path:
    """A small mapper file (core.testing.published); ``bad_mask``: a mask with one True pixel too many;
    ``bad_curvature``: a curvature layer transposed (the flatmap's shape the other way round)."""
    import h5py

    from core.testing.published import write_mapper
    write_mapper(path, n_voxels, width=40, height=24, fsaverage=None)
    if bad_mask:
        with h5py.File(path, "a") as h5:
            mask = h5["flatmap_mask"][()]
            mask[0, 0] = True
            del h5["flatmap_mask"]
            h5.create_dataset("flatmap_mask", data=mask)
    if bad_curvature:
        with h5py.File(path, "a") as h5:
            curv = h5["flatmap_curvature"][()].T
            del h5["flatmap_curvature"]
            h5.create_dataset("flatmap_curvature", data=curv)
    return path


def _toml_argv(tmp: Path, text: str | bytes) -> list[str]:
    cfg = tmp / "c.toml"
    (cfg.write_bytes if isinstance(text, bytes) else cfg.write_text)(text)
    return ["--config", str(cfg)]


def _movie(path: Path, seconds: int, fps: int = 5, size: int = 32) -> Path:
    import av
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        for i in range(seconds * fps):
            frame = av.VideoFrame.from_ndarray(np.full((size, size, 3), 10 * i % 250, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


def _images(folder: Path, n: int, broken: int | None = None) -> Path:
    from PIL import Image
    folder.mkdir()
    for i in range(n):
        if i == broken:
            (folder / f"{i:03d}.png").write_bytes(b"\x89PNG broken")
        else:
            Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / f"{i:03d}.png")
    return folder


def _ckpt_argv(tmp: Path, write: Callable[[Path], None]) -> list[str]:
    ck = tmp / "abn.pth.tar"
    write(ck)
    return _files_argv(tmp, top=f'[features]\nweights = "{ck}"')


def _torch_save(obj):
    def write(path):
        import torch
        torch.save(obj() if callable(obj) else obj, path)
    return write


def _truncated_ckpt(path: Path):
    import torch
    torch.save({"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7)}}, path)
    path.write_bytes(path.read_bytes()[:2000])


class _Evil:
    """An object whose unpickling would run code: ``weights_only`` loading must refuse it."""

    def __reduce__(self):
        return (exec, ("open('/tmp/attnbrain-pwned', 'w').write('x')",))


def _evil_ckpt(path: Path):
    path.write_bytes(pickle.dumps({"state_dict": _Evil()}))


def _tiny_abn_state():
    import torch

    from core.model.abn import ABN
    keys = [k for k in ABN(num_classes=10).state_dict()]
    return {"state_dict": {f"module.{k}": torch.zeros(2) for k in keys}}


# -- results-folder damage: each takes a copy of a good synthetic results folder, returns (path, run_id)
def _run(out: Path) -> tuple[Path, dict]:
    (run_json,) = list(out.glob("*/run.json"))
    return run_json.parent, json.loads(run_json.read_text())


def _entry(out: Path, stage: str) -> Path:
    run_dir, info = _run(out)
    return out / "cache" / "stages" / f"{stage}-{info['stages'][stage]}"


def _damage(fn):
    def make(out: Path):
        run_id = fn(out)
        return out, run_id
    return make


def _rewrite_run_json(out: Path, **changes):
    run_dir, info = _run(out)
    info.update(changes)
    for k, v in changes.items():
        if v is None:
            info.pop(k)
    (run_dir / "run.json").write_text(json.dumps(info))


def _truncate(path: Path, keep: int = 100):
    path.write_bytes(path.read_bytes()[:keep])


def _pickled_array(path: Path):
    np.save(path, np.array([{"a": 1}, None], dtype=object), allow_pickle=True)


def _wrong_dtype(path: Path):
    arr = np.load(path)
    np.save(path, arr.astype(np.float64 if arr.dtype != np.float64 else np.float32))


# -- export-bundle and exports: each takes (tmp, good results folder) and returns the command's argv
def _scenes_file(tmp: Path, results_dir: Path, scenes=None, *, run_id=None, n_voxels=None, text=None) -> Path:
    from dashboard import scenefile as S
    from core.outputs.reader import open_results
    res = open_results(results_dir)
    path = tmp / "talk.json"
    if text is not None:
        (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
        return path
    scenes = [S.default_scene(title="all voxels")] if scenes is None else scenes
    path.write_text(S.export_scenes(scenes, run_id=run_id or res.run_id, n_voxels=n_voxels or res.n_voxels))
    return path


def _bundle_argv(tmp: Path, results_dir: Path, *, results=None, scenes=None, out=None, extra=()) -> list[str]:
    return ["--results", str(results or results_dir), "--scenes", str(scenes or _scenes_file(tmp, results_dir)),
            "--out", str(out or tmp / "talk"), *extra]


def _bad_scene(**filters):
    from dashboard import scenefile as S
    scene = S.default_scene(title="bad")
    scene["filters"].update(filters)
    return [scene]


def _scene_with(**fields):
    from dashboard import scenefile as S
    scene = S.default_scene(title="bad")
    scene.update(fields)
    return [scene]


def _url(scene=None, *, filters=None, cut=False, search=None, hash="") -> tuple[str, str]:
    """(location.search, location.hash) of a page URL holding ``scene`` (default scene with changes)."""
    from dashboard import scenefile as S
    from dashboard.scenelink import scene_to_url
    if search is None:
        s = S.default_scene(title="from a link")
        s.update(scene or {})
        s["filters"].update(filters or {})
        search = scene_to_url(s)
        search = search[: len(search) // 2] if cut else search
    return search, hash


def _a_file(path: Path) -> Path:
    path.write_text("<html></html>")
    return path


def _non_empty(folder: Path) -> Path:
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    return folder


# ------------------------------------------------------------------------------------------- the catalogue
P, R, B, E, S, U = "precompute", "results", "bundle", "export", "scenes", "url"
CASES: list[Case] = [
    # ---- config files and command-line options
    Case("config-missing", "config (--config)", "file does not exist", "config file not found", P,
         lambda t: ["--config", str(t / "nope.toml")]),
    Case("config-syntax", "config (--config)", "TOML syntax error", "not valid TOML", P,
         lambda t: _toml_argv(t, "[features\nlayer = 'pool'\n")),
    Case("config-binary", "config (--config)", "not UTF-8 text (a binary file)", "not valid TOML", P,
         lambda t: _toml_argv(t, b"\xff\xfe\x00binary")),
    Case("config-unknown-key", "config (--config)", "misspelt setting", "unknown setting(s) features.layr", P,
         lambda t: _toml_argv(t, "[features]\nlayr = 'pool'\n")),
    Case("config-wrong-type", "config (--config)", "string where a number belongs",
         "'encoding.n_alphas': expected int, found str", P,
         lambda t: _toml_argv(t, "[encoding]\nn_alphas = 'many'\n")),
    Case("config-not-a-table", "config (--config)", "a section given as a value",
         "'features': expected a table of settings", P, lambda t: _toml_argv(t, "features = 3\n")),
    Case("config-out-of-range", "config (--config)", "value out of range", "'stats.level': expected a level "
         "between 0 and 1, found 2.0", P, lambda t: _toml_argv(t, "[stats]\nlevel = 2\n")),
    Case("config-bin-edges-count", "config (--config)", "five bin edges (the scale has four bins)",
         "'stats.bin_edges': expected 4 lower bin edges", P,
         lambda t: _toml_argv(t, "[stats]\nbin_edges = [0.0, 0.1, 0.2, 0.3, 0.4]\n")),
    Case("config-bin-edges-order", "config (--config)", "bin edges not in increasing order",
         "'stats.bin_edges': expected strictly increasing bin edges, found [0.0, 0.2, 0.1, 0.3]", P,
         lambda t: _toml_argv(t, "[stats]\nbin_edges = [0.0, 0.2, 0.1, 0.3]\n")),
    Case("config-unknown-preset", "config (--config)", "unknown preset", "unknown preset 'huge'", P,
         lambda t: _toml_argv(t, "preset = 'huge'\n")),
    Case("config-inconsistent", "config (--config)", "settings that contradict each other",
         "'umap.n_neighbors': expected at most rsa.k = 15", P,
         lambda t: _toml_argv(t, "[umap]\nn_neighbors = 50\n")),
    Case("config-data-kind", "config (--config)", "unknown data kind", "'data.kind': expected 'simulated' or "
         "'files', found 'csv'", P, lambda t: _toml_argv(t, "[data]\nkind = 'csv'\n")),
    Case("cli-unknown-stage", "--stages", "unknown stage name", "unknown stage 'umapp'", P,
         lambda t: ["--stages", "umapp"]),
    Case("cli-unknown-force", "--force", "unknown stage name", "'--force': unknown stage 'ridge'", P,
         lambda t: ["--force", "ridge"]),
    Case("cli-bad-device", "--device", "unknown device", "expected one of auto, cpu, cuda, cuda:N; found 'tpu'",
         P, lambda t: ["--device", "tpu"]),
    Case("cli-out-is-file", "--out", "a file, not a folder", "expected a folder for the results, found a file",
         P, lambda t: (t / "results").write_text("x") and []),
    # ---- datasets: responses
    Case("responses-missing", "responses file", "does not exist", "response file not found", P,
         lambda t: _files_argv(t, responses=t / "none.h5")),
    Case("responses-not-hdf5", "responses file", "not HDF5 (e.g. a renamed file)", "not a readable HDF5 file", P,
         lambda t: (t / "r.h5").write_bytes(b"not hdf5 at all") and _files_argv(t, responses=t / "r.h5")),
    Case("responses-type", "responses file", "unsupported file type", "unsupported response file type '.csv'", P,
         lambda t: (t / "r.csv").write_text("1,2") and _files_argv(t, responses=t / "r.csv")),
    Case("responses-missing-key", "responses file", "Y_test absent", "field 'Y_test': missing key(s) Y_test", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.h5", Y_test=None))),
    Case("responses-1d", "responses file", "Y_train is 1-D", "'Y_train': expected a 2-D array", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.npz", Y_train=np.ones(N_TRAIN)))),
    Case("responses-voxel-mismatch", "responses file", "train and test voxel counts differ",
         f"Y_test has {N_VOX - 1} voxels but Y_train has {N_VOX}", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.npz", Y_test=np.ones((N_TEST, N_VOX - 1))))),
    Case("responses-nan", "responses file", "NaN in Y_train", "found 1 NaN/inf values (first at index (3, 2))", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.npz", Y_train=_with(N_TRAIN, (3, 2), np.nan)))),
    Case("responses-inf", "responses file", "inf in Y_test", "'Y_test': found 1 NaN/inf values", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.npz", Y_test=_with(N_TEST, (0, 0), np.inf)))),
    Case("responses-constant", "responses file", "constant voxels", "2 voxel(s) are constant", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.npz", Y_train=np.c_[
             np.random.default_rng(3).normal(size=(N_TRAIN, N_VOX - 2)), np.full((N_TRAIN, 2), 3.0)]))),
    Case("responses-dtype", "responses file", "strings instead of numbers", "expected numbers, found dtype <U1", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.npz",
                                                             Y_train=np.full((N_TRAIN, N_VOX), "a")))),
    Case("responses-run-onsets", "responses file", "run_onsets not increasing", "strictly increasing", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "r.h5", run_onsets=np.array([0, 15, 12])))),
    Case("responses-vs-mask", "responses + pycortex mask", "voxel count differs from the mask",
         f"responses have {N_VOX} voxels but mask S1/fullhead/thick holds 80615", P,
         lambda t: _files_argv(t, subject="S1")),
    Case("responses-nan-voxel-vs-mask", "responses + pycortex mask", "a voxel NaN in every test sample",
         "NaN in every test sample, but a pycortex mask needs one finite column per mask voxel", P,
         lambda t: _files_argv(t, subject="S1", responses=_write_responses(
             t / "r.h5", Y_test=np.c_[np.full((N_TEST, 1), np.nan),
                                      np.random.default_rng(4).normal(size=(N_TEST, N_VOX - 1))]))),
    Case("responses-vim2-axes", "responses file (vim-2 layout)", "rt and rv share no length",
         "cannot tell the voxel axis", P,
         lambda t: _files_argv(t, responses=_write_responses(t / "v.h5", Y_train=None, Y_test=None,
                                                             rt=np.ones((N_VOX, N_TRAIN)),
                                                             rv=np.ones((N_VOX + 1, N_TEST))))),
    Case("mapper-voxels", "mapper file (data.mapper)", "maps another number of voxels",
         f"maps 40 voxels but the responses have {N_VOX}", P,
         lambda t: _files_argv(t, data_extra=f'mapper = "{_mapper(t / "m.hdf", 40)}"')),
    Case("mapper-mask", "mapper file (data.mapper)", "mask and matrix disagree",
         "True pixels but voxel_to_flatmap has", P,
         lambda t: _files_argv(t, data_extra=f'mapper = "{_mapper(t / "m.hdf", N_VOX, bad_mask=True)}"')),
    Case("mapper-curvature", "mapper file (data.mapper)", "curvature of another shape than the mask",
         "flatmap_curvature': expected the mask's shape", P,
         lambda t: _files_argv(t, data_extra=f'mapper = "{_mapper(t / "m.hdf", N_VOX, bad_curvature=True)}"')),
    Case("frames-remainder", "stimuli (movie frames)", "a file holds part of a TR",
         "is not a whole number of samples at 2 frames per sample", P,
         lambda t: _files_argv(t, train=_stimuli(t / "f.npy", 2 * N_TRAIN + 1),
                               data_extra="stimulus_fps = 2\nmovie_tr = 1")),
    Case("config-layer", "config [features]", "a layer the network does not have",
         "'features.layer': expected one of layer1, layer2, layer3, layer4, pool, logits", P,
         lambda t: _toml_argv(t, "[features]\nlayer = 'layer9'\n")),
    Case("frames-per-tr", "config [data]", "stimulus_fps x movie_tr not a whole number", "'data.movie_tr'", P,
         lambda t: _files_argv(t, data_extra="stimulus_fps = 1.5\nmovie_tr = 1")),
    Case("cortex-subject", "pycortex subject", "unknown subject", "unknown pycortex subject 'S9'", P,
         lambda t: _files_argv(t, subject="S9")),
    Case("cortex-transform", "pycortex transform", "unknown transform", "unknown transform 'func' for subject S1",
         P, lambda t: _files_argv(t, subject="S1", data_extra='transform = "func"')),
    Case("cortex-mask", "pycortex mask", "unknown mask", "unknown mask 'thickest'", P,
         lambda t: _files_argv(t, subject="S1", data_extra='mask = "thickest"')),
    # ---- datasets: stimuli
    Case("stimuli-missing", "stimuli", "path does not exist", "stimulus file or folder not found", P,
         lambda t: _files_argv(t, train=t / "frames.npy")),
    Case("stimuli-empty-folder", "stimuli (image folder)", "folder holds no images", "holds no images", P,
         lambda t: (t / "imgs").mkdir() or _files_argv(t, train=t / "imgs")),
    Case("stimuli-broken-image", "stimuli (image folder)", "an image cannot be decoded",
         "003.png: image file cannot be read", P,
         lambda t: _files_argv(t, train=_images(t / "imgs", N_TRAIN, broken=3))),
    Case("stimuli-dtype", "stimuli (.npy)", "float pixels", "expected dtype uint8", P,
         lambda t: _files_argv(t, train=_stimuli(t / "f.npy", N_TRAIN, dtype=np.float32))),
    Case("stimuli-grayscale", "stimuli (.npy)", "no colour axis", "shape (N, H, W, 3), found shape (20, 64, 64)", P,
         lambda t: _files_argv(t, train=_stimuli(t / "g.npy", N_TRAIN, shape=(64, 64)))),
    Case("stimuli-not-npy", "stimuli (.npy)", "not a .npy file", "not a readable .npy array", P,
         lambda t: (t / "x.npy").write_bytes(b"garbage") and _files_argv(t, train=t / "x.npy")),
    Case("stimuli-count", "stimuli vs responses", "fewer stimuli than response samples",
         f"{N_TRAIN - 1} train stimuli but Y_train has {N_TRAIN} samples", P,
         lambda t: _files_argv(t, train=_stimuli(t / "s.npy", N_TRAIN - 1))),
    Case("stimuli-movie-short", "stimuli (movie)", "movie shorter than the samples need", "movie is 2.00 s long", P,
         lambda t: _files_argv(t, train=_movie(t / "m.mp4", 2), data_extra="movie_tr = 1.0")),
    Case("stimuli-movie-no-tr", "stimuli (movie)", "movie_tr not set", "positive TR", P,
         lambda t: _files_argv(t, train=_movie(t / "m.mp4", 1))),
    # ---- checkpoints (features.weights)
    Case("ckpt-missing", "checkpoint (features.weights)", "file does not exist", "checkpoint file not found", P,
         lambda t: _files_argv(t, top=f'[features]\nweights = "{t / "none.pth"}"')),
    Case("ckpt-garbage", "checkpoint (features.weights)", "not a PyTorch file",
         "could not be read as a PyTorch checkpoint", P, lambda t: _ckpt_argv(t, lambda p: p.write_bytes(b"x" * 64))),
    Case("ckpt-truncated", "checkpoint (features.weights)", "download cut short",
         "could not be read as a PyTorch checkpoint", P, lambda t: _ckpt_argv(t, _truncated_ckpt)),
    Case("ckpt-code", "checkpoint (features.weights)", "a pickle that would run code when loaded",
         "could not be read as a PyTorch checkpoint", P, lambda t: _ckpt_argv(t, _evil_ckpt)),
    Case("ckpt-not-state-dict", "checkpoint (features.weights)", "holds a list, not a state dict",
         "expected a state dict or a dict with a 'state_dict' entry", P,
         lambda t: _ckpt_argv(t, _torch_save(lambda: [__import__("torch").zeros(2)]))),
    Case("ckpt-architecture", "checkpoint (features.weights)", "another network's weights",
         "does not match the ResNet-50 ABN", P,
         lambda t: _ckpt_argv(t, _torch_save(lambda: {"state_dict": {"encoder.weight": __import__("torch").ones(3)}}))),
    Case("ckpt-shapes", "checkpoint (features.weights)", "right names, wrong tensor shapes",
         "has tensors of the wrong shape", P, lambda t: _ckpt_argv(t, _torch_save(_tiny_abn_state))),
    # ---- results folders (open_results and python -m dashboard --results)
    Case("results-missing", "results folder", "does not exist", "results folder not found", R,
         _damage(lambda o: shutil.rmtree(o))),
    Case("results-is-file", "results folder", "a file, not a folder", "expected a results folder", R,
         _damage(lambda o: shutil.rmtree(o) or o.write_text("x") and None)),
    Case("results-empty", "results folder", "no runs in it", "no finished run in this results folder", R,
         _damage(lambda o: [shutil.rmtree(p) for p in o.iterdir() if p.is_dir()] and None)),
    Case("results-unfinished", "results folder", "the only run was interrupted (no summary.json)",
         "no finished run in this results folder", R,
         _damage(lambda o: (_run(o)[0] / "summary.json").unlink())),
    Case("results-unknown-run", "results folder (--run)", "run id not in the folder", "no finished run 'nope'", R,
         _damage(lambda o: "nope")),
    Case("results-old-version", "results folder", "written by an older store version",
         "results written by store version 0, this tool reads version 1", R,
         _damage(lambda o: _rewrite_run_json(o, store_version=0))),
    Case("results-run-json-corrupt", "run.json", "damaged (not JSON)", "run.json: not valid JSON", R,
         _damage(lambda o: _truncate(_run(o)[0] / "run.json", 30))),
    Case("results-run-json-fields", "run.json", "stage list missing", "field 'stages': expected a JSON object", R,
         _damage(lambda o: _rewrite_run_json(o, stages=None))),
    Case("results-summary-corrupt", "summary.json", "damaged (not JSON)", "summary.json: not valid JSON", R,
         _damage(lambda o: _truncate(_run(o)[0] / "summary.json", 40))),
    Case("results-entry-missing", "stage entry", "entry folder deleted", "is missing; rerun precompute.py", R,
         _damage(lambda o: shutil.rmtree(_entry(o, "rsa")))),
    Case("results-meta-corrupt", "stage entry", "meta.json damaged", "meta.json: not valid JSON", R,
         _damage(lambda o: _truncate(_entry(o, "stats") / "meta.json", 20))),
    Case("results-array-missing", "array file", "an array file deleted", "r_on.npy missing from the stage entry", R,
         _damage(lambda o: (_entry(o, "stats") / "r_on.npy").unlink())),
    Case("results-array-truncated", "array file", "cut short", "is truncated or not a .npy array", R,
         _damage(lambda o: _truncate(_entry(o, "encoding") / "pred_on.npy", 300))),
    Case("results-array-pickle", "array file", "replaced by a pickled object array",
         "holds pickled Python objects, which are never loaded", R,
         _damage(lambda o: _pickled_array(_entry(o, "umap") / "umap_on.npy"))),
    Case("results-array-dtype", "array file", "replaced by an array of another dtype", "expected shape", R,
         _damage(lambda o: _wrong_dtype(_entry(o, "stats") / "p_off.npy"))),
    Case("results-flatmap-lookup", "cortex assets", "flatmap lookup cut short", "is truncated or not a .npy array", R,
         _damage(lambda o: _truncate(_entry(o, "cortex") / "flatmap_lookup.npy", 120))),
    # ---- the offline bundle (python -m dashboard export-bundle) and exports
    Case("bundle-results-missing", "export-bundle --results", "results folder does not exist",
         "results folder not found", B, lambda t, r: _bundle_argv(t, r, results=t / "nope")),
    Case("bundle-scenes-missing", "export-bundle --scenes", "file does not exist", "scenes file not found", B,
         lambda t, r: _bundle_argv(t, r, scenes=t / "nope.json")),
    Case("bundle-scenes-not-json", "export-bundle --scenes", "damaged (not JSON)", "not valid JSON", B,
         lambda t, r: _bundle_argv(t, r, scenes=_scenes_file(t, r, text='{"version": 1, "scenes": [')) ),
    Case("bundle-scenes-binary", "export-bundle --scenes", "not UTF-8 text (a binary file)", "not UTF-8 text", B,
         lambda t, r: _bundle_argv(t, r, scenes=_scenes_file(t, r, text=b"\xff\xfe\x00binary"))),
    Case("bundle-scenes-other-run", "export-bundle --scenes", "scenes of another run with another voxel count",
         "voxel rows would name other voxels", B,
         lambda t, r: _bundle_argv(t, r, scenes=_scenes_file(t, r, run_id="other-run", n_voxels=999))),
    Case("bundle-scenes-unknown-roi", "export-bundle --scenes", "a scene filters an ROI the run does not have",
         "field 'scenes[0].filters.rois': unknown ROI 'FFX'", B,
         lambda t, r: _bundle_argv(t, r, scenes=_scenes_file(t, r, _bad_scene(rois=["FFX"])))),
    Case("bundle-scenes-empty", "export-bundle --scenes", "holds no scenes", "the scenes file holds no scenes", B,
         lambda t, r: _bundle_argv(t, r, scenes=_scenes_file(t, r, []))),
    Case("bundle-out-not-empty", "export-bundle --out", "folder not empty (no --force)",
         "output folder is not empty", B, lambda t, r: _bundle_argv(t, r, out=_non_empty(t / "talk"))),
    Case("bundle-out-is-file", "export-bundle --out", "a file, not a folder",
         "expected a folder for the bundle, found a file", B,
         lambda t, r: _bundle_argv(t, r, out=_a_file(t / "talk.html"))),
    Case("bundle-out-in-results", "export-bundle --out", "inside the results folder",
         "may not be the results folder, inside it or hold it", B,
         lambda t, r: _bundle_argv(t, r, out=r / "talk", extra=("--force",))),
    Case("export-nifti-no-subject", "NIfTI export (core.outputs.export.nifti_map)", "run without a pycortex subject here",
         "NIfTI export needs the run's pycortex subject", E, lambda t, r: (r, "on", "r")),
    Case("export-series-voxel", "series CSV (core.outputs.export.series_csv)", "voxel row out of range",
         "'voxel': expected a voxel row from 0 to 299", E, lambda t, r: (r, 300)),
    # ---- scenes files in the dashboard (RUN/scenes/scenes.json, imports) and the page URL's scene state
    Case("scenes-not-json", "scenes file", "damaged (not JSON)", "not valid JSON", S,
         lambda t, r: _scenes_file(t, r, text='{"version": 1, "run_id": "x", "scenes": [')),
    Case("scenes-version", "scenes file", "another format version", "field 'version': expected scenes file "
         "version 1, found 2", S, lambda t, r: _scenes_file(t, r, text='{"version": 2, "run_id": "x", "scenes": []}')),
    Case("scenes-not-a-list", "scenes file", "scenes not a list", "field 'scenes': expected a list of scenes", S,
         lambda t, r: _scenes_file(t, r, text='{"version": 1, "run_id": "x", "n_voxels": 300, "scenes": {}}')),
    Case("scenes-other-run", "scenes file", "scenes of another run with another voxel count",
         "voxel rows would name other voxels", S, lambda t, r: _scenes_file(t, r, run_id="other-run", n_voxels=999)),
    Case("scenes-voxel-range", "scenes file", "selected voxel out of range",
         "field 'scenes[0].selected': expected a voxel row from 0 to 299, found 300", S,
         lambda t, r: _scenes_file(t, r, _scene_with(selected=300))),
    Case("scenes-set-range", "scenes file", "a set voxel out of range",
         "field 'scenes[0].selected_set[1]': expected a voxel row from 0 to 299, found 5000", S,
         lambda t, r: _scenes_file(t, r, _scene_with(selected_set=[1, 5000]))),
    Case("scenes-unknown-roi", "scenes file", "a scene filters an ROI the run does not have",
         "field 'scenes[0].filters.rois': unknown ROI 'FFX'", S,
         lambda t, r: _scenes_file(t, r, _bad_scene(rois=["FFX"]))),
    Case("scenes-unknown-field", "scenes file", "misspelt scene field", "unknown scene field 'titel'", S,
         lambda t, r: _scenes_file(t, r, _scene_with(titel="x"))),
    Case("scenes-unknown-filter", "scenes file", "misspelt filter", "unknown filter 'treshold'", S,
         lambda t, r: _scenes_file(t, r, _bad_scene(treshold=0.1))),
    Case("scenes-threshold", "scenes file", "|r| threshold out of range",
         "'scenes[0].filters.threshold': expected a number between 0 and 1 (minimum |r|), found 2", S,
         lambda t, r: _scenes_file(t, r, _bad_scene(threshold=2))),
    Case("scenes-rule", "scenes file", "significance rule the run lacks (no permutations)",
         "expected one of 'p', 'q' (the significance rules of this run), found 'perm'", S,
         lambda t, r: _scenes_file(t, r, _bad_scene(rule="perm"))),
    Case("scenes-camera", "scenes file", "camera vector without z", "field 'scenes[0].cameras.off.eye': expected "
         '{"x": number, "y": number, "z": number}', S,
         lambda t, r: _scenes_file(t, r, _scene_with(cameras={"off": {"eye": {"x": 1, "y": 1}, "center": None,
                                                                       "up": None}, "on": None}))),
    Case("url-garbage", "page URL (?scene=)", "not base64url", "its scene state is unreadable (it is not base64url "
         "text)", U, lambda t, r: _url(search="?scene=%25%25not*base64")),
    Case("url-cut-short", "page URL (?scene=)", "link cut short when copied", "it is not a compressed scene", U,
         lambda t, r: _url(cut=True)),
    Case("url-voxel-range", "page URL (?scene=)", "selected voxel out of range (stale link)",
         "selected: expected a voxel row from 0 to 299, found 300", U, lambda t, r: _url({"selected": 300})),
    Case("url-unknown-roi", "page URL (?scene=)", "an ROI the run does not have", "filters.rois: unknown ROI 'FFX'",
         U, lambda t, r: _url(filters={"rois": ["FFX"]})),
    Case("url-bad-threshold", "page URL (?scene=)", "|r| threshold out of range",
         "filters.threshold: expected a number between 0 and 1", U, lambda t, r: _url(filters={"threshold": 7})),
    Case("url-hash-voxel", "page URL (#voxel=)", "voxel link out of range",
         "the link's '#voxel=300' names no voxel of this run (rows 0-299)", U,
         lambda t, r: _url(search="", hash="#voxel=300")),
]


def readme_table() -> str:
    rows = ["| # | Input | Problem | Surface | The one error line contains |", "|---|---|---|---|---|"]
    for i, c in enumerate(CASES, 1):
        surface = {P: "precompute.py, exit 2", R: "open_results / python -m dashboard, exit 2",
                   B: "python -m dashboard export-bundle, exit 2", E: "core.outputs.export, InputError",
                   S: "dashboard scene list (start, import) / dashboard.scenefile, notice", U: "dashboard page URL, "
                   "default view + notice"}[c.surface]
        rows.append(f"| {i} | {c.input} | {c.problem} | {surface} | `{c.expect}` |")
    return "\n".join(rows)


# ------------------------------------------------------------------------------------------- tests
def _one_error_line(err: str, expect: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("error: ") and "Traceback" not in err
    assert expect in lines[0], f"{expect!r} not in {lines[0]!r}"
    return lines[0]


def test_catalogue_is_large_and_unique():
    assert len(CASES) >= 30
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == P], ids=lambda c: c.id)
def test_precompute_bad_input(case, tmp_path, monkeypatch, capsys):
    import precompute
    work = tmp_path / "in"
    work.mkdir()
    monkeypatch.chdir(work)
    argv = case.make(work)
    out = work / "results"
    existed = out.exists()
    code = precompute.main([*argv, "--out", str(out), "--quiet", "--device", "cpu"]
                           if "--device" not in argv else [*argv, "--out", str(out), "--quiet"])
    captured = capsys.readouterr()
    assert code == 2, captured.err
    _one_error_line(captured.err, case.expect)
    assert out.exists() == existed and (not existed or out.is_file()), "the results folder was written"
    assert not Path("/tmp/attnbrain-pwned").exists(), "a checkpoint ran code while loading"


@pytest.fixture(scope="module")
def good_results(tmp_path_factory):
    from core.testing.synthetic import make_synthetic_results
    return make_synthetic_results(tmp_path_factory.mktemp("good"), n_voxels=300, n_test=20, k=5, seed=3,
                                  flatmap_height=48)


def _snapshot(path: Path):
    if not path.exists():
        return None
    if path.is_file():
        return path.read_bytes()
    return {str(p.relative_to(path)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(path.rglob("*"))}


@pytest.mark.parametrize("how", ["open_results", "dashboard"])
@pytest.mark.parametrize("case", [c for c in CASES if c.surface == R], ids=lambda c: c.id)
def test_damaged_results_folder(case, how, good_results, tmp_path, capsys):
    from core._validation import InputError
    from core.outputs.reader import open_results
    from dashboard.app import main as dashboard_main
    out = tmp_path / "results"
    shutil.copytree(good_results, out)
    path, run_id = case.make(out)
    before = _snapshot(path)
    if how == "open_results":
        with pytest.raises(InputError) as exc:
            open_results(path, run_id)
        assert case.expect in str(exc.value) and "\n" not in str(exc.value)
    else:
        argv = ["--results", str(path), "--port", "1"] + (["--run", run_id] if run_id else [])
        assert dashboard_main(argv) == 2
        _one_error_line(capsys.readouterr().err, case.expect)
    assert _snapshot(path) == before, "reading a results folder changed it"


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == B], ids=lambda c: c.id)
def test_bundle_bad_input(case, good_results, tmp_path, capsys):
    """One error line, exit 2, the results folder untouched, nothing written or left beside --out."""
    from dashboard.bundle import main as bundle_main
    work = tmp_path / "in"
    work.mkdir()
    argv = case.make(work, good_results)
    before = _snapshot(good_results), _snapshot(work)
    assert bundle_main(argv) == 2
    _one_error_line(capsys.readouterr().err, case.expect)
    assert (_snapshot(good_results), _snapshot(work)) == before, "a refused export-bundle wrote something"


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == E], ids=lambda c: c.id)
def test_export_bad_input(case, good_results, tmp_path):
    from core.outputs import export
    from core._validation import InputError
    from core.outputs.reader import open_results
    path, *args = case.make(tmp_path, good_results)
    fn = export.nifti_map if len(args) == 2 else export.series_csv
    with pytest.raises(InputError) as exc:
        fn(open_results(path), *args)
    assert case.expect in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == S], ids=lambda c: c.id)
def test_scenes_file_bad_input(case, good_results, tmp_path):
    """Loading (a run's scenes.json) and importing (an upload) refuse it with one line; nothing changes."""
    from core._validation import InputError
    from dashboard.scenefile import import_scenes, load_scenes, scene_context
    from core.outputs.reader import open_results
    path = case.make(tmp_path, good_results)
    before = _snapshot(good_results), path.read_bytes()
    context = scene_context(open_results(good_results))
    for read in (lambda: load_scenes(path, **context), lambda: import_scenes(path.read_bytes(), **context)):
        with pytest.raises(InputError) as exc:
            read()
        assert case.expect in str(exc.value) and "\n" not in str(exc.value)
    assert (_snapshot(good_results), path.read_bytes()) == before


@pytest.fixture(scope="module")
def good_dashboard_data(good_results):
    from core.outputs.reader import open_results
    from dashboard.data import DashboardData
    return DashboardData(open_results(good_results))


@pytest.mark.parametrize("case", [c for c in CASES if c.surface == U], ids=lambda c: c.id)
def test_url_state_bad_input(case, good_dashboard_data, tmp_path):
    """A bad link never fails: a valid scene (the defaults where the link's fields are unusable) and one
    line of notice."""
    from dashboard.scenefile import validate_scene
    from dashboard.presenting import scene_from_page_url, scene_kwargs
    data = good_dashboard_data
    search, url_hash = case.make(tmp_path, None)
    scene, notice = scene_from_page_url(data, search, url_hash)
    assert case.expect in notice and "\n" not in notice
    assert scene is None or validate_scene(scene, **scene_kwargs(data)) == scene


def test_good_results_folder_opens(good_results):
    from core.outputs.reader import open_results
    res = open_results(good_results)
    assert res.n_voxels == 300 and res.table.shape[0] == 300


def test_dashboard_cli_end_to_end_exit_code(tmp_path):
    """The real ``python -m dashboard`` process: one line on stderr and exit status 2."""
    import subprocess
    proc = subprocess.run([sys.executable, "-m", "dashboard", "--results", str(tmp_path / "none")],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 2
    _one_error_line(proc.stderr, "results folder not found")


def test_readme_table_matches_the_catalogue():
    doc = (ROOT / "docs" / "reliability.md").read_text()
    begin, end = "<!-- bad-inputs:begin -->", "<!-- bad-inputs:end -->"
    assert begin in doc and end in doc, "docs/reliability.md has no bad-input table markers"
    table = doc.split(begin)[1].split(end)[0].strip()
    assert table == readme_table(), ("the bad-input table in docs/reliability.md is stale: regenerate it with "
                                     "python tests/test_bad_inputs.py")


if __name__ == "__main__":
    print(readme_table())
