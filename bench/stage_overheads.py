"""What the pipeline spends around its arithmetic, at the study's scale, measurable without a GPU.

On one GPU the ABN pass and the ridge take seconds; what is left of a paper-scale run is CPU work around them:
reading and checking the responses, hashing the stimuli for the feature cache, thumbnails, statistics, the
pycortex assets. This runs the pipeline in-process at the ``paper-sim`` scale (7,200 + 600 stimuli at 224 px,
70,933 voxels, three feature sets) with the two heavy computations replaced by stand-ins of the right shapes
(the ABN pass by seeded random features, each ridge fit by one random projection, timed and subtracted), so
every other line of the stages runs as in a real run, and prints each stage's seconds.

``--files`` adds what a user with stimuli on disk pays before any stage runs: a files dataset (7,800 PNGs
of 224 px and a responses file over the whole 80,615-voxel thick mask, made once in the work folder), then
``precompute.py --stages dataset`` on it in a fresh results folder (start-up, the preflight checks, the
dataset stage: the wall time) and the stimulus hash of the two folders.

``--root`` times another checkout's ``core`` (e.g. a ``git worktree`` of an earlier commit), so two versions
compare side by side on one machine with one work folder:

    .venv/bin/python bench/stage_overheads.py --workdir /tmp/overheads --files
    .venv/bin/python bench/stage_overheads.py --workdir /tmp/overheads --files --root /tmp/old-checkout

The first call makes the simulated dataset (~90 s on 2 cores) and the files (~70 s); later calls reuse them and
force every measured stage. Last line: ``RESULT features_s=... thumbnails_s=... encoding_overhead_s=...
stats_s=... cortex_warm_s=... [files_dataset_wall_s=... folder_hash_s=...] root=...``.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parents[1]
FILES_VOXELS = 80_615     # S1 / fullhead / thick: a files run maps its responses onto a whole mask


def _stand_ins(F, E, fit_seconds: list):
    """Replace the ABN pass and the ridge fit (module objects F = core.model.features, E = core.encoding)."""
    def extract_features(model, images, *, modes, layer="pool", batch_size=32, device, input_size=None,
                         num_workers=0, progress=False):
        n = len(images)
        rng = np.random.default_rng(n)
        size, _ = F._resolve_input(images, input_size)
        feats = {m: rng.standard_normal((n, 2048), dtype=np.float32) for m in modes}
        return F.FeatureSet(features=feats, attention=rng.random((n, 14, 14), dtype=np.float32), layer=layer,
                            input_size=size)

    class Ridge:
        def __init__(self, alphas, **kw):
            self.alphas = alphas

        def fit(self, X, Y):
            t0 = time.perf_counter()
            v = Y.shape[1]
            self.W = np.random.default_rng(0).standard_normal((X.shape[1], v), dtype=np.float32) * 0.01
            self.best_alphas_, self.cv_scores_ = np.ones(v), np.zeros((len(self.alphas), v), np.float32)
            self.cv_path_ = self.solver_ = "stand-in"
            fit_seconds.append(time.perf_counter() - t0)
            return self

        def predict(self, X):
            t0 = time.perf_counter()
            out = X @ self.W
            fit_seconds.append(time.perf_counter() - t0)
            return out

    F.extract_features = extract_features
    E.VoxelRidgeCV = Ridge


def run_stages(workdir: Path) -> dict:
    import torch

    import core.encoding as E
    import core.model.features as F
    from core.config import PRESETS
    from core.pipeline.runner import Pipeline
    fit_seconds: list[float] = []
    _stand_ins(F, E, fit_seconds)
    cfg = dataclasses.replace(PRESETS["paper-sim"], device="cpu")
    pipe = Pipeline(cfg, workdir / "results", device=torch.device("cpu"), progress=False)
    measured = ("features", "thumbnails", "encoding", "stats", "cortex")
    # The first call also builds the dataset and pycortex's caches: a warm-up run, then the timed one.
    if any(reason != "cached" for _, reason in pipe.plan(["dataset", "cortex"])):
        print("first call: simulating the dataset and building the pycortex caches (not timed)", flush=True)
        pipe.run(["dataset", "thumbnails", "cortex"], parallel=1)
    seconds = {}
    fit_seconds.clear()
    pipe.run(list(measured), force=measured, parallel=1,
             on_stage=lambda name, e: seconds.__setitem__(name, round(e.seconds or 0.0, 2)))
    out = {f"{k}_s": seconds[k] for k in ("features", "thumbnails", "stats")}
    out["encoding_overhead_s"] = round(seconds["encoding"] - sum(fit_seconds), 2)
    out["encoding_stand_in_s"] = round(sum(fit_seconds), 2)
    out["cortex_warm_s"] = seconds["cortex"]
    return out


def make_files(workdir: Path) -> Path:
    """The files dataset (once): 7,200 + 600 PNGs of smooth noise, responses of the whole thick mask."""
    import h5py
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from paper_scale import export_stimuli
    root = workdir / "files"
    if (root / "done").exists():
        return root
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    n_train, n_test, repeats = 7200, 600, 4
    with h5py.File(root / "responses.h5", "w") as h5:
        d = h5.create_dataset("Y_train", (n_train, FILES_VOXELS), np.float32)
        for i in range(0, n_train, 600):
            d[i:i + 600] = rng.standard_normal((600, FILES_VOXELS), dtype=np.float32)
        h5.create_dataset("Y_test", data=rng.standard_normal((repeats, n_test, FILES_VOXELS), dtype=np.float32))
    for part, n in (("train", n_train), ("test", n_test)):
        npy = root / f"{part}.npy"
        arr = np.lib.format.open_memmap(npy, "w+", np.uint8, (n, 224, 224, 3))
        for i in range(0, n, 100):
            k = min(100, n - i)
            arr[i:i + k] = rng.integers(0, 226, (k, 28, 28, 3), dtype=np.uint8).repeat(8, 1).repeat(8, 2)
            arr[i:i + k] += rng.integers(0, 30, (k, 224, 224, 3), dtype=np.uint8)
        arr.flush()
        del arr
        export_stimuli(npy, root / part)
        npy.unlink()
    (root / "done").touch()
    return root


def run_files(workdir: Path, root: Path) -> dict:
    import shutil
    files = make_files(workdir)
    toml = workdir / "files.toml"
    toml.write_text("\n".join(['preset = "paper"', 'device = "cpu"', "[data]", 'kind = "files"',
                               f'stimuli_train = "{files / "train"}"', f'stimuli_test = "{files / "test"}"',
                               f'responses = "{files / "responses.h5"}"']) + "\n")
    out = workdir / "results-files"
    shutil.rmtree(out, ignore_errors=True)
    # The voxel geometry comes from the simulated run's cache (computing it is pycortex's, not the files').
    (out / "cache" / "cortex").mkdir(parents=True)
    for f in (workdir / "results" / "cache" / "cortex").glob("geometry_*.npz"):
        shutil.copy(f, out / "cache" / "cortex" / f.name)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(root / "precompute.py"), "--config", str(toml), "--out", str(out),
                    "--stages", "dataset", "--quiet"], cwd=root, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - t0
    from core.data.datasets import FolderImages
    from core.model.features import _images_hash
    from core.pipeline.inputs import _Concat
    stimuli = _Concat(FolderImages(files / "train", verify=False), FolderImages(files / "test", verify=False))
    t0 = time.perf_counter()
    _images_hash(stimuli)
    return {"files_dataset_wall_s": round(wall, 2), "folder_hash_s": round(time.perf_counter() - t0, 2)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", default=str(HERE), help="checkout whose core/ and precompute.py are timed")
    p.add_argument("--workdir", required=True, help="work folder, kept between calls (datasets, caches)")
    p.add_argument("--files", action="store_true", help="also time a files dataset's preflight + dataset stage")
    args = p.parse_args(argv)
    root = Path(args.root).resolve()
    sys.path.insert(0, str(root))
    os.chdir(root)
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    report = run_stages(workdir)
    if args.files:
        report.update(run_files(workdir, root))
    report["root"] = str(root)
    print(json.dumps(report, indent=1), flush=True)
    print("RESULT " + " ".join(f"{k}={v}" for k, v in report.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
