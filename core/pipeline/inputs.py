"""What a run's config points at, opened for the stages: the dataset, the stimuli, the network, the geometry."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from core._validation import InputError
from core.config import RunConfig, config_hash
from core.data.datasets import CortexSpec, Dataset, load_responses, open_stimuli

__all__ = ["check_user_dataset", "load_dataset", "open_run_stimuli", "simulated_dataset_dir", "build_model",
           "run_geometry", "all_stimuli", "feature_batch_size", "decode_workers"]


def _cortex_spec(cfg: RunConfig) -> CortexSpec | None:
    """The pycortex subject of the run, None without one (no cortex, or a mapper file instead)."""
    d = cfg.data
    return CortexSpec(d.subject, d.transform, d.mask) if d.subject and not d.mapper else None


def build_model(cfg: RunConfig):
    from core.model.abn import build_abn
    return build_abn(cfg.features.weights, seed=cfg.features.seed)


def feature_batch_size(cfg: RunConfig, device) -> int:
    """``features.batch_size``, with 0 (auto) meaning 32 images per pass on the CPU and 128 on CUDA, where
    batches of 32 leave the GPU waiting on kernel launches and the per-batch copies back."""
    if cfg.features.batch_size:
        return int(cfg.features.batch_size)
    kind = getattr(device, "type", str(device).split(":")[0])
    return 128 if kind == "cuda" else 32


def decode_workers(images, device) -> int:
    """DataLoader processes that decode a lazy stimulus source (image files, ...) while the network runs.

    None for an in-memory array (a batch is one slice, nothing to decode). On CUDA up to 8: a 224-px PNG or
    JPEG takes ~1-3 ms to decode on one core, and the GPU takes ~6,000 images/s in three modes. On the CPU
    one: the network, at ~6 images/s on 2 cores, is what the run waits for.
    """
    if isinstance(images, np.ndarray):
        return 0
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    kind = getattr(device, "type", str(device).split(":")[0])
    if kind == "cuda":
        return max(1, min(8, cores - 2))
    return 1 if cores >= 2 else 0


def _extract(cfg: RunConfig, model, images, cache_dir: Path, device, modes, progress: bool):
    from core.model.features import extract_features_cached
    return extract_features_cached(model, images, cache_dir=cache_dir / "features", modes=modes,
                                   layer=cfg.features.layer, batch_size=feature_batch_size(cfg, device),
                                   device=device, input_size=cfg.features.input_size,
                                   num_workers=decode_workers(images, device), progress=progress)


class _Concat:
    """Train then test stimuli as one lazily read sequence (one feature pass, one cache entry)."""

    def __init__(self, a, b):
        self.a, self.b = a, b
        self.name = f"{getattr(a, 'name', 'train')}+{getattr(b, 'name', 'test')}"

    def __len__(self):
        return len(self.a) + len(self.b)

    def __getitem__(self, i):
        return self.a[i] if i < len(self.a) else self.b[i - len(self.a)]

    def fingerprint(self) -> str | None:
        """Both parts' fingerprints (see :meth:`core.data.datasets.FolderImages.fingerprint`), or None."""
        parts = [getattr(x, "fingerprint", lambda: None)() for x in (self.a, self.b)]
        return None if None in parts else "+".join(parts)


def all_stimuli(train, test):
    """Train then test stimuli as one sequence (an array when both are arrays)."""
    if hasattr(train, "as_array") and hasattr(test, "as_array"):
        return np.concatenate([train.as_array(), test.as_array()])
    return _Concat(train, test)


def simulated_dataset_dir(cfg: RunConfig, cache_dir: Path) -> Path:
    from core.data.simulate import SIM_FORMAT_VERSION
    key = config_hash(cfg, "simulation", "data.subject", "data.transform", "data.mask", "features.weights",
                      "features.layer", "features.input_size", "features.seed", extra=SIM_FORMAT_VERSION)
    return cache_dir / "datasets" / f"sim-{key}"


def _simulated_folder(cfg: RunConfig, cache_dir: Path | None) -> Path:
    folder = simulated_dataset_dir(cfg, Path(cache_dir))
    json.loads((folder / "dataset.json").read_text())  # fails early if the dataset stage never finished
    return folder


def open_run_stimuli(cfg: RunConfig, cache_dir: Path | None, n_train: int, n_test: int, *, verify: bool = False):
    """The run's (train, test) stimulus sources; ``n_train`` / ``n_test`` samples (a movie is cut to them).

    ``verify`` opens every file of an image folder once to check it is a readable image (the preflight's
    check); the stages, which read stimuli that check has passed, do not.
    """
    if cfg.data.kind == "simulated":
        folder = _simulated_folder(cfg, cache_dir)
        return open_stimuli(folder / "stimuli_train.npy"), open_stimuli(folder / "stimuli_test.npy")
    d = cfg.data
    kw = dict(key=d.stimuli_key, movie_tr=d.movie_tr, movie_offset=d.movie_offset, size=cfg.features.input_size,
              verify=verify, stimulus_fps=d.stimulus_fps, frame_pooling=d.frame_pooling)
    # The test movie starts at its own offset; one TR per sample as for training.
    return (open_stimuli(d.stimuli_train, n_samples=n_train, **kw),
            open_stimuli(d.stimuli_test, n_samples=n_test, **{**kw, "key": d.stimuli_test_key or d.stimuli_key}))


def load_dataset(cfg: RunConfig, cache_dir: Path | None = None, *, train: bool = True,
                 verify: bool = True) -> Dataset:
    """Open the configured dataset (the simulated one must have been generated by the dataset stage).

    ``train=False`` leaves the training responses unread (``responses.Y_train`` is None); ``verify=False``
    skips opening every image file of a stimulus folder (see :func:`open_run_stimuli`).
    """
    if cfg.data.kind == "simulated":
        folder = _simulated_folder(cfg, cache_dir)
        responses = load_responses(folder / "responses.h5", train=train)
        with np.load(folder / "truth.npz") as z:
            truth = {k: z[k] for k in z.files}
        stim_train, stim_test = open_run_stimuli(cfg, cache_dir, responses.n_train, responses.Y_test.shape[0])
        return Dataset(stimuli_train=stim_train, stimuli_test=stim_test, responses=responses,
                       cortex=_cortex_spec(cfg), simulated=True, truth=truth, name=f"simulated:{folder.name}")
    responses = load_responses(cfg.data.responses, train=train)
    stim_train, stim_test = open_run_stimuli(cfg, cache_dir, responses.n_train, responses.Y_test.shape[0],
                                             verify=verify)
    return Dataset(stimuli_train=stim_train, stimuli_test=stim_test, responses=responses, cortex=_cortex_spec(cfg),
                   simulated=False, name=Path(cfg.data.responses).stem, mapper=cfg.data.mapper)


def _input_files_fingerprint(cfg: RunConfig):
    """Path, size and modification time of the user's input files: edited data means a new dataset key."""
    if cfg.data.kind == "simulated":
        from core.data.simulate import SIM_FORMAT_VERSION
        return {"simulation_format": SIM_FORMAT_VERSION}
    out = []
    d = cfg.data
    listed = lambda v: list(v) if isinstance(v, (list, tuple)) else [v]  # noqa: E731
    for p in [d.responses, *listed(d.stimuli_train), *listed(d.stimuli_test)] + ([d.mapper] if d.mapper else []):
        path = Path(p)
        files = sorted(path.iterdir()) if path.is_dir() else [path]
        out.append([(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files if f.exists()])
    return out


#: Fingerprints (paths, sizes, modification times) of user input files fully checked in this process.
_CHECKED_INPUTS: set[str] = set()


def check_user_dataset(cfg: RunConfig) -> None:
    """Every check of the user's files (:func:`~core.data.datasets.validate_dataset`: all responses read and checked,
    every image file opened and verified), once per process for the same files and settings: ``precompute.py``
    runs it before it touches the results folder, and the dataset stage then does not read the ~2.5 GB of a
    study-sized dataset a second time. Files changed in between (size or time) are checked again."""
    from core.config import config_to_dict
    from core.data.datasets import validate_dataset
    key = json.dumps([config_to_dict(cfg), _input_files_fingerprint(cfg)], sort_keys=True, default=str)
    if key not in _CHECKED_INPUTS:
        validate_dataset(load_dataset(cfg))
        _CHECKED_INPUTS.add(key)


def run_geometry(cfg: RunConfig, cache_dir: Path, voxel_index=None, n_file_voxels: int | None = None):
    """The voxel geometry of the run: the mask's, or the simulation's seeded subset of it; a mapper file's
    (:class:`core.cortex.mapper.MapperGeometry`) for the run's voxels ``voxel_index`` of the file's
    ``n_file_voxels`` (None: all); None without a cortex."""
    from core.cortex.geometry import load_geometry
    if cfg.data.mapper:
        from core.cortex.mapper import mapper_geometry
        return mapper_geometry(cfg.data.mapper, voxel_index, n_file_voxels)
    spec = _cortex_spec(cfg)
    if spec is None:
        return None
    geometry = load_geometry(spec.subject, spec.transform, spec.mask, cache_dir / "cortex")
    sim = cfg.simulation
    if cfg.data.kind == "simulated" and sim.n_voxels:
        if sim.n_voxels > geometry.n_voxels:
            raise InputError(f"asked for {sim.n_voxels} simulated voxels but the mask holds "
                             f"{geometry.n_voxels}", field="simulation.n_voxels")
        rng = np.random.default_rng([sim.seed, 7])
        geometry = geometry.subset(np.sort(rng.choice(geometry.n_voxels, sim.n_voxels, replace=False)))
    return geometry


