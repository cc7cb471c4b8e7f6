"""The results store: stage entries on disk, indexed with diskcache, and the read API for the dashboard.

Layout of a results folder ``OUT``::

    OUT/cache/index/                 diskcache index: stage entry -> meta (the entry exists only once indexed)
    OUT/cache/stages/<stage>-<key>/  one finished stage: arrays as .npy (memory-mappable), files, meta.json
    OUT/cache/{features,datasets,cortex}/  caches shared by runs (features, simulated data, pycortex)
    OUT/<run_id>/run.json            which stage entries make up the run, its config
    OUT/<run_id>/summary.json        the run's summary (see core.pipeline.summary)

Entries are written into a temporary folder, fsynced, renamed, and only then indexed: an interrupted run
leaves no entry that could be mistaken for a finished one. Before anything is written, a commit is checked
against the results schema (:mod:`core.pipeline.schema`). :func:`open_results` only reads.
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core._io import json_default, write_json_atomic
from core._validation import InputError
from core.pipeline.schema import SCHEMA, Schema

__all__ = ["StageEntry", "ResultsStore", "STORE_VERSION", "RunBusy", "writer_session", "clean_if_alone"]

STORE_VERSION = 1


from core.pipeline.faults import fault_point


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
    """Write side of a results folder (used by the pipeline; the dashboard never writes).

    Parameters
    ----------
    out : path of the results folder
    schema : Schema
        What each stage's entry may hold (default: this pipeline's :data:`~core.pipeline.schema.SCHEMA`).
    """

    def __init__(self, out: str | Path, schema: Schema = SCHEMA):
        self.out = Path(out)
        self.schema = schema
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

    @property
    def locks_dir(self) -> Path:
        return self.cache_dir / "locks"

    def entry_lock(self, name: str, key: str):
        """The lock a writer holds while it computes and commits the entry ``name-key`` (a context manager:
        an ``flock``, waited for; released by the holder's exit or death). Runs side by side in one folder, on
        one host or several on a filesystem with working ``flock``, so compute each entry once: the second finds
        it committed when it gets the lock."""
        from core._io import file_lock
        return file_lock(self.locks_dir / f"{name}-{key}.lock")

    def has(self, name: str, key: str) -> bool:
        # The folder check comes first: opening the index would create it, and a dry run or a rejected
        # input must leave the results folder untouched.
        return (self.entry_path(name, key) / "meta.json").is_file() and f"stage:{name}:{key}" in self.index

    def new_workdir(self, name: str, key: str) -> Path:
        """A temporary folder for a stage to write files into; :meth:`commit` turns it into the entry."""
        self.stages_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(dir=self.stages_dir, prefix=f".{name}-{key}.tmp-"))

    def commit(self, workdir: Path, name: str, key: str, arrays: dict[str, np.ndarray], meta: dict[str, Any], *,
               inputs: dict[str, StageEntry] | None = None, dims: dict[str, int] | None = None,
               conditions: tuple[str, ...] | None = None) -> StageEntry:
        """Turn ``workdir`` (with ``arrays`` and ``meta`` written into it) into the entry ``name-key``.

        Parameters
        ----------
        workdir : Path
            From :meth:`new_workdir`; it may already hold files of the stage (``.npy`` files among them
            are arrays of the entry too). Removed whatever happens.
        name, key : str
            The stage and its cache key.
        arrays : dict of str to ndarray
            Named as the schema declares them (:func:`core.pipeline.schema.name`).
        meta : dict
            JSON-serialisable metadata.
        inputs : dict of str to StageEntry, optional
            The entries the stage read: they fix dimensions (n_voxels, the embedded voxels, ...).
        dims : dict of str to int, optional
            Dimensions the config fixes (:func:`core.pipeline.schema.run_dims`).
        conditions : tuple of str, optional
            The run's conditions: each needs its per-condition arrays.

        Raises
        ------
        core.pipeline.schema.SchemaError
            When an array is not declared for the stage, has another dtype or shape, or a declared one is
            missing; nothing is written then.
        TypeError
            For an array of Python objects (the store never pickles).
        """
        final = self.entry_path(name, key)
        manifest = {}
        try:
            found = _npy_headers(name, workdir)
            for aname, arr in arrays.items():
                arr = np.asarray(arr)
                if arr.dtype.hasobject:
                    raise TypeError(f"stage {name}: array {aname!r} holds Python objects; the store keeps plain "
                                    "numeric arrays only (never pickles)")
                if aname in found:
                    raise InputError(f"array {aname!r} is both a file in the stage's folder and a returned array",
                                     source=f"stage {name}")
                found[aname] = (arr.shape, arr.dtype)
            self.schema.check(name, found, known=self.schema.known_dims(inputs or {}, dims), conditions=conditions,
                              meta=meta)
            for i, (aname, arr) in enumerate(arrays.items()):
                arr = np.ascontiguousarray(arr)
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
        """Remove what :meth:`temporaries` lists; only call it while no other writer is active (see
        :func:`writer_session`)."""
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


class RunBusy(Exception):
    """Another process is computing the same run in this results folder."""


def _clean_when_alone(store: ResultsStore, writers) -> int:
    """With ``writers`` (the open ``writers.lock``) taken exclusively at once, so no writer is active: remove the
    interrupted writers' temporaries; else leave them (they may be in use). How many were removed."""
    import fcntl
    try:
        fcntl.flock(writers, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0
    return store.clean_temporaries()


def clean_if_alone(store: ResultsStore) -> int:
    """Remove interrupted writers' temporaries if no writer is active in the folder (else leave them); how
    many were removed."""
    store.locks_dir.mkdir(parents=True, exist_ok=True)
    with open(store.locks_dir / "writers.lock", "a+") as writers:
        return _clean_when_alone(store, writers)


@contextlib.contextmanager
def writer_session(store: ResultsStore, run_id: str, *, wait: bool = False):
    """What a writer holds for its whole run: an exclusive lock on the run (``cache/locks/run-<id>.lock``: one
    writer per run; :class:`RunBusy` at once if another has it) and a shared lock on ``cache/locks/writers.lock``.
    Whoever gets the writers' lock exclusively, alone in the folder, first removes the temporaries interrupted
    writers left (:meth:`ResultsStore.clean_temporaries`); with others writing, the cleaning waits for a run
    that is alone. Several runs (processes, hosts) then write side by side, each stage entry under its own lock
    (:meth:`ResultsStore.entry_lock`). ``wait``: wait for the run's lock instead (a study's retry of a run whose
    killed attempt is still going away)."""
    import fcntl
    store.locks_dir.mkdir(parents=True, exist_ok=True)
    run_fh = open(store.locks_dir / f"run-{run_id}.lock", "a+")
    try:
        try:
            fcntl.flock(run_fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise RunBusy(run_id) from None
        with open(store.locks_dir / "writers.lock", "a+") as writers:
            _clean_when_alone(store, writers)
            fcntl.flock(writers, fcntl.LOCK_SH)
            yield
    finally:
        run_fh.close()


def _npy_headers(stage: str, folder: Path) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of the ``.npy`` files a stage wrote into its folder itself, from their headers."""
    out = {}
    for p in sorted(folder.glob("*.npy")):
        try:
            with open(p, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                    np.lib.format.read_array_header_2_0
                shape, _, dtype = read(fh)
        except (OSError, ValueError) as exc:
            raise InputError(f"is not a readable .npy array ({exc})", source=f"stage {stage}: {p.name}") from None
        out[p.stem] = (shape, dtype)
    return out


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


