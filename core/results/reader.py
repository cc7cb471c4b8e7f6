"""The one reader of a results folder: runs, their stage entries, the per-voxel table and series."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core._validation import InputError
from core.pipeline.store import STORE_VERSION, ResultsStore, StageEntry, _read_json

__all__ = ["Results", "open_results", "list_runs"]


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
