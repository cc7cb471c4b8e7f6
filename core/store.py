"""The results store: stage entries on disk, indexed with diskcache, and the read API for the dashboard.

Layout of a results folder ``OUT``::

    OUT/cache/index/                 diskcache index: stage entry -> meta (the entry exists only once indexed)
    OUT/cache/stages/<stage>-<key>/  one finished stage: arrays as .npy (memory-mappable), files, meta.json
    OUT/cache/{features,datasets,cortex}/  caches shared by runs (features, simulated data, pycortex)
    OUT/<run_id>/run.json            which stage entries make up the run, its config
    OUT/<run_id>/summary.json        the run's summary (see core.summary)

Entries are written into a temporary folder, fsynced, renamed, and only then indexed: an interrupted run
leaves no entry that could be mistaken for a finished one. :func:`open_results` only reads.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ._io import json_default, write_json_atomic
from ._validation import InputError

__all__ = ["fault_point", "StageEntry", "ResultsStore", "Results", "open_results", "list_runs", "STORE_VERSION"]

STORE_VERSION = 1


#: Every fault point the pipeline passes, per stage (``<stage>:<point>``) and per run (``run:<point>``).
STAGE_FAULT_POINTS = ("start", "during", "mid-write", "before-rename", "before-index")
RUN_FAULT_POINTS = ("run:before-register", "run:before-summary", "run:mid-summary")


def fault_point(name: str) -> None:
    """Crash-test hook (tests only), driven by the ``ATTNBRAIN_FAULT`` environment variable.

    ``ATTNBRAIN_FAULT=<name>`` kills the process here with SIGKILL; ``ATTNBRAIN_FAULT=enospc@<name>`` raises
    ``OSError(ENOSPC)`` here instead, as a full disk would in the write that follows. Names:
    ``<stage>:start``, ``<stage>:during`` (see :func:`arm_during_fault`), ``<stage>:mid-write`` (second array
    file not yet flushed), ``<stage>:before-rename``, ``<stage>:before-index``, and per run
    ``run:before-register`` (stages done, run.json not yet written), ``run:before-summary`` (run.json
    written) and ``run:mid-summary`` (summary.json's temporary file written, not yet renamed).
    """
    wanted = os.environ.get("ATTNBRAIN_FAULT")
    if not wanted:
        return
    if wanted == name:
        import signal
        os.kill(os.getpid(), signal.SIGKILL)
    if wanted == f"enospc@{name}":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC) + " (injected by ATTNBRAIN_FAULT)")


def arm_during_fault(stage: str):
    """For ``ATTNBRAIN_FAULT=<stage>:during``: SIGKILL the process ``ATTNBRAIN_FAULT_DELAY`` seconds (default
    0.5) into the stage's computation, or when the stage finishes computing if that comes first (so the kill
    always lands inside the stage). Returns a callable that fires the kill at the stage's end, or None."""
    if os.environ.get("ATTNBRAIN_FAULT") != f"{stage}:during":
        return None
    import signal
    import threading
    timer = threading.Timer(float(os.environ.get("ATTNBRAIN_FAULT_DELAY", "0.5")),
                            lambda: os.kill(os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
    return lambda: os.kill(os.getpid(), signal.SIGKILL)


@dataclass
class StageEntry:
    """A finished stage: arrays (memory-mapped) and JSON metadata; ``path`` may hold other files."""
    name: str
    key: str
    path: Path
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    cached: bool = True
    seconds: float = 0.0


def _fsync_tree(root: Path) -> None:
    for p in [*root.rglob("*"), root]:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class ResultsStore:
    """Write side of a results folder (used by the pipeline; the dashboard never writes)."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.cache_dir = self.out / "cache"
        self.stages_dir = self.cache_dir / "stages"
        self._index = None

    @property
    def index(self):
        if self._index is None:
            import diskcache
            self._index = diskcache.Cache(str(self.cache_dir / "index"))
        return self._index

    def entry_path(self, name: str, key: str) -> Path:
        return self.stages_dir / f"{name}-{key}"

    def has(self, name: str, key: str) -> bool:
        # The folder check comes first: opening the index would create it, and a dry run or a rejected
        # input must leave the results folder untouched.
        return (self.entry_path(name, key) / "meta.json").is_file() and f"stage:{name}:{key}" in self.index

    def new_workdir(self, name: str, key: str) -> Path:
        """A temporary folder for a stage to write files into; :meth:`commit` turns it into the entry."""
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.stages_dir, prefix=f".{name}-{key}.tmp-"))

    def commit(self, workdir: Path, name: str, key: str, arrays: dict[str, np.ndarray],
               meta: dict[str, Any]) -> StageEntry:
        final = self.entry_path(name, key)
        manifest = {}
        try:
            for i, (aname, arr) in enumerate(arrays.items()):
                arr = np.ascontiguousarray(arr)
                if arr.dtype.hasobject:
                    raise TypeError(f"stage {name}: array {aname!r} holds Python objects; the store keeps plain "
                                    "numeric arrays only (never pickles)")
                manifest[aname] = {"shape": list(arr.shape), "dtype": arr.dtype.str}
                with open(workdir / f"{aname}.npy", "wb") as fh:
                    np.save(fh, arr, allow_pickle=False)
                    if i == 1:  # this file's tail may still sit in the write buffer
                        fault_point(f"{name}:mid-write")
            meta = {**meta, "store_arrays": manifest}
            (workdir / "meta.json").write_text(json.dumps(meta, indent=2, default=json_default))
            _fsync_tree(workdir)
            fault_point(f"{name}:before-rename")
            if final.exists():  # a renamed-but-never-indexed leftover of an interrupted run
                shutil.rmtree(final)
            os.replace(workdir, final)
        finally:
            if workdir.exists():
                shutil.rmtree(workdir, ignore_errors=True)
        fault_point(f"{name}:before-index")
        # Index values are JSON text (diskcache stores str natively): reading the index never unpickles.
        self.index.set(f"stage:{name}:{key}", json.dumps({"written": time.time(), "meta": meta},
                                                         default=json_default))
        entry = self.read(name, key)
        entry.cached = False
        return entry

    def read(self, name: str, key: str) -> StageEntry:
        """Open a finished entry, its arrays memory-mapped (never unpickled).

        Raises
        ------
        InputError
            If ``meta.json`` is missing or not valid JSON, an array file listed in it is missing, truncated,
            holds pickled objects or has another shape or dtype than was written.
        """
        path = self.entry_path(name, key)
        fix = f"rerun precompute.py on this folder (with --force {name} if it says cached)"
        meta = _read_json(path / "meta.json", f"stage entry {name}: {fix}")
        if not isinstance(meta, dict):
            raise InputError(f"expected a JSON object, found {type(meta).__name__}; {fix}",
                             source=str(path / "meta.json"))
        manifest = meta.get("store_arrays")
        files = {p.stem: p for p in sorted(path.glob("*.npy"))}
        if isinstance(manifest, dict):
            missing = sorted(set(manifest) - set(files))
            if missing:
                raise InputError(f"array file(s) {', '.join(m + '.npy' for m in missing)} missing from the stage "
                                 f"entry; {fix}", source=str(path))
        arrays = {}
        for aname, p in files.items():
            try:
                arr = np.load(p, mmap_mode="r", allow_pickle=False)
            except ValueError as exc:
                pickled = "pickle" in str(exc) or "Python objects" in str(exc)
                what = ("holds pickled Python objects, which are never loaded (untrusted data could run code)"
                        if pickled else f"is truncated or not a .npy array ({exc})")
                raise InputError(f"{what}; {fix}", source=str(p)) from None
            except OSError as exc:
                raise InputError(f"cannot be read ({exc.strerror or exc}); {fix}", source=str(p)) from None
            want = manifest.get(aname) if isinstance(manifest, dict) else None
            if want and (list(arr.shape) != list(want["shape"]) or arr.dtype.str != want["dtype"]):
                raise InputError(f"expected shape {tuple(want['shape'])} dtype {want['dtype']}, found shape "
                                 f"{arr.shape} dtype {arr.dtype.str}; {fix}", source=str(p))
            arrays[aname] = arr
        return StageEntry(name=name, key=key, path=path, arrays=arrays, meta=meta)

    def temporaries(self) -> list[Path]:
        """Temporary files and folders that interrupted writes can leave: ``.<name>.tmp-*`` stage and dataset
        folders, ``.<name>.*.tmp`` atomic-write files (run folders, caches)."""
        found: list[Path] = []
        if not self.out.is_dir():
            return found
        roots = [self.stages_dir, *(self.cache_dir / sub for sub in ("datasets", "features"))]
        for root in roots:
            if root.is_dir():
                found += list(root.glob(".*.tmp-*"))
        for pattern in ("*/.*.tmp", "cache/*/.*.tmp", "cache/*/*/.*.tmp", "cache/*/*/*/.*.tmp"):
            found += list(self.out.glob(pattern))
        return sorted(set(found))

    def clean_temporaries(self) -> int:
        """Remove what :meth:`temporaries` lists (none is in use: runs hold the results lock)."""
        found = self.temporaries()
        for p in found:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
        return len(found)

    def register_run(self, run_id: str, cfg_dict: dict, stage_keys: dict[str, str]) -> Path:
        run_dir = self.out / run_id
        run_dir.mkdir(parents=True, exist_ok=True)
        write_json_atomic(run_dir / "run.json", {"store_version": STORE_VERSION, "run_id": run_id,
                                                  "created": time.time(), "config": cfg_dict,
                                                  "stages": stage_keys})
        return run_dir

    def close(self):
        if self._index is not None:
            self._index.close()
            self._index = None


def _read_json(path: Path, fix: str):
    """Parse a JSON file of a results folder, or raise :class:`InputError` naming the file and ``fix``."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise InputError(f"file missing; {fix}", source=str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot be read ({exc}); {fix}", source=str(path)) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg} at line {exc.lineno}), the file is damaged or was cut "
                         f"short; {fix}", source=str(path)) from None


def list_runs(out: str | Path) -> list[dict[str, Any]]:
    """Runs in a results folder, newest first: ``[{run_id, created, preset, config, complete, path}]``.

    A run whose ``run.json`` cannot be read is listed with ``complete=False`` and its problem in ``error``.
    """
    out = Path(out)
    runs = []
    for f in out.glob("*/run.json"):
        try:
            info = json.loads(f.read_text())
            if not isinstance(info, dict):
                raise ValueError(f"expected a JSON object, found {type(info).__name__}")
        except (OSError, ValueError) as exc:
            runs.append({"run_id": f.parent.name, "created": f.stat().st_mtime, "preset": None, "config": {},
                         "complete": False, "path": str(f.parent), "error": f"{type(exc).__name__}: {exc}"})
            continue
        config = info.get("config") if isinstance(info.get("config"), dict) else {}
        runs.append({"run_id": info.get("run_id", f.parent.name), "created": info.get("created", 0),
                     "preset": config.get("preset"), "config": config,
                     "complete": (f.parent / "summary.json").is_file(), "path": str(f.parent)})
    return sorted(runs, key=lambda r: -r["created"])


class Results:
    """Read-only view of one run: the per-voxel table, series, embeddings, assets and provenance.

    Parameters
    ----------
    out : path of the results folder
    run_id : which run (default: the newest complete one)
    """

    def __init__(self, out: str | Path, run_id: str | None = None):
        out = Path(out)
        if (out / "run.json").is_file():           # a run folder was given
            run_id, out = out.name, out.parent
        if out.exists() and not out.is_dir():
            raise InputError("expected a results folder (written by precompute.py --out DIR), found a file",
                             source=str(out))
        if not out.is_dir():
            raise InputError("results folder not found; run precompute.py --out DIR first", source=str(out))
        fix = "rerun precompute.py --out on this folder to rewrite it"
        listed = list_runs(out)
        broken = {r["run_id"]: r for r in listed if "error" in r}
        if run_id in broken:
            _read_json(out / run_id / "run.json", fix)          # raises with the parse error
        runs = [r for r in listed if r["complete"]]
        if not runs:
            if broken:
                name = next(iter(broken))
                _read_json(out / name / "run.json", fix)
            raise InputError("no finished run in this results folder (no <run>/summary.json); run precompute.py "
                             "--out on it first", source=str(out))
        if run_id is None:
            run_id = runs[0]["run_id"]
        elif run_id not in {r["run_id"] for r in runs}:
            raise InputError(f"no finished run {run_id!r}; available: {[r['run_id'] for r in runs]}",
                             source=str(out))
        self.out = out
        self.run_id = run_id
        self.runs = runs
        self.run_dir = out / run_id
        info = _read_json(self.run_dir / "run.json", fix)
        if info.get("store_version") != STORE_VERSION:
            raise InputError(f"results written by store version {info.get('store_version')}, this tool reads "
                             f"version {STORE_VERSION}; rerun precompute.py to refresh them",
                             source=str(self.run_dir / "run.json"))
        for field, typ in (("config", dict), ("stages", dict)):
            if not isinstance(info.get(field), typ):
                raise InputError(f"expected a JSON object, found {info.get(field)!r}; {fix}",
                                 source=str(self.run_dir / "run.json"), field=field)
        self.config = info["config"]
        self.summary = _read_json(self.run_dir / "summary.json", fix)
        if not isinstance(self.summary, dict) or not {"n_voxels", "n_test"} <= set(self.summary):
            raise InputError(f"expected a summary with n_voxels and n_test; {fix}",
                             source=str(self.run_dir / "summary.json"))
        store = ResultsStore(out)
        self._entries: dict[str, StageEntry] = {}
        for name, key in info["stages"].items():
            path = store.entry_path(name, key)
            if not (path / "meta.json").is_file():
                raise InputError(f"stage entry {path.name} of run {run_id} is missing; rerun precompute.py",
                                 source=str(out))
            self._entries[name] = store.read(name, key)
        try:
            self.conditions = [m for m in ("off", "on", "uniform") if m in self.config["features"]["modes"]]
        except (KeyError, TypeError):
            raise InputError(f"config has no features.modes; {fix}", source=str(self.run_dir / "run.json"),
                             field="config") from None
        self.simulated = bool(self.summary.get("simulated"))
        self._table = None

    def stage(self, name: str) -> StageEntry:
        if name not in self._entries:
            raise KeyError(f"stage {name!r} was not run for {self.run_id}; stages: {list(self._entries)}")
        return self._entries[name]

    def has_stage(self, name: str) -> bool:
        return name in self._entries

    @property
    def n_voxels(self) -> int:
        return int(self.summary["n_voxels"])

    @property
    def n_test(self) -> int:
        return int(self.summary["n_test"])

    @property
    def roi_names(self) -> list[str]:
        return list(self.stage("dataset").meta.get("roi_names", []))

    @property
    def table(self):
        """Per-voxel pandas DataFrame: geometry, and r/p/q/significant/bin/alpha/cv per condition."""
        if self._table is None:
            import pandas as pd
            cols: dict[str, Any] = {"voxel": np.arange(self.n_voxels)}
            ds = self.stage("dataset").arrays
            if "ijk" in ds:
                ijk = np.asarray(ds["ijk"])
                cols.update(i=ijk[:, 0], j=ijk[:, 1], k=ijk[:, 2], hemi=np.where(np.asarray(ds["hemi"]) == 1,
                                                                                     "R", "L"))
                names = np.asarray(self.roi_names, dtype=object)
                cols.update(roi=names[np.asarray(ds["roi"])], flat_x=np.asarray(ds["flat_xy"])[:, 0],
                            flat_y=np.asarray(ds["flat_xy"])[:, 1], unmapped=np.asarray(ds["unmapped"]))
            if self.has_stage("stats"):
                st, enc = self.stage("stats").arrays, self.stage("encoding").arrays
                for m in self.conditions:
                    for field in ("r", "p", "q", "significant", "bin"):
                        cols[f"{field}_{m}"] = np.asarray(st[f"{field}_{m}"])
                    cols[f"alpha_{m}"] = np.asarray(enc[f"alpha_{m}"])
                    cols[f"cv_{m}"] = np.asarray(enc[f"cv_{m}"])
                    if f"r_norm_{m}" in st:
                        cols[f"r_norm_{m}"] = np.asarray(st[f"r_norm_{m}"])
                # The ceiling depends on the measured repeats only: the same for every condition.
                if f"cc_max_{self.conditions[0]}" in st:
                    cols["noise_ceiling"] = np.asarray(st[f"cc_max_{self.conditions[0]}"])
                if {"on", "off"} <= set(self.conditions):
                    cols["delta_r"] = cols["r_on"] - cols["r_off"]
            self._table = pd.DataFrame(cols)
        return self._table

    def predicted(self, condition: str, voxel: int) -> np.ndarray:
        """Predicted test series of one voxel, shape (n_test,): one contiguous read."""
        return np.asarray(self.stage("encoding").arrays[f"pred_{condition}"][voxel])

    def measured(self, voxel: int) -> np.ndarray:
        """Measured (repeat-averaged) test series of one voxel, shape (n_test,)."""
        return np.asarray(self.stage("encoding").arrays["measured"][voxel])

    def embedded_voxels(self, condition: str) -> np.ndarray:
        return np.asarray(self.stage("rsa").arrays[f"voxels_{condition}"])

    def umap(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """``(voxel_index (n,), coords (n, 3))`` of the condition's embedding."""
        return self.embedded_voxels(condition), np.asarray(self.stage("umap").arrays[f"umap_{condition}"])

    def knn(self, condition: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(voxel_index (n,), neighbour rows (n, k) into voxel_index, correlation distances (n, k))``."""
        a = self.stage("rsa").arrays
        return self.embedded_voxels(condition), np.asarray(a[f"knn_idx_{condition}"]), \
            np.asarray(a[f"knn_dist_{condition}"])

    def asset_dir(self, stage: str) -> Path | None:
        return self.stage(stage).path if self.has_stage(stage) else None


def open_results(path: str | Path, run_id: str | None = None) -> Results:
    """Open a results folder (or one run folder inside it) for reading."""
    return Results(path, run_id)
