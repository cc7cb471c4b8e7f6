"""The one reader of a results folder: runs, their stage entries, the per-voxel table and series.

Stage arrays are read by stage, field and condition as the results schema declares them
(:mod:`core.pipeline.schema`), never by spelled file names.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from core._validation import InputError
from core.pipeline.schema import GEOMETRY_FIELDS, SCHEMA
from core.pipeline.store import STORE_VERSION, ResultsStore, StageEntry, _read_json

__all__ = ["StageArrays", "Results", "open_results", "list_runs"]


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


class StageArrays:
    """The arrays of a set of stage entries, read by schema field: what every reader of stage outputs uses.

    Parameters
    ----------
    entries : dict of stage name to StageEntry
        Finished entries (a run's, or those the pipeline has just computed).
    label : str
        What they are, for messages (a run id).
    """

    def __init__(self, entries: dict[str, StageEntry], label: str = "these entries"):
        self._entries = dict(entries)
        self._label = label

    def stage(self, name: str) -> StageEntry:
        if name not in self._entries:
            raise KeyError(f"stage {name!r} was not run for {self._label}; stages: {list(self._entries)}")
        return self._entries[name]

    def has_stage(self, name: str) -> bool:
        return name in self._entries

    def has_array(self, stage: str, field: str, condition: str | None = None) -> bool:
        """Whether the stage ran and holds ``field`` (for ``condition``); the field must be declared."""
        key = SCHEMA.name(stage, field, condition)
        return stage in self._entries and key in self._entries[stage].arrays

    def array(self, stage: str, field: str, condition: str | None = None) -> np.ndarray:
        """A stage's array by schema field (memory-mapped, read-only).

        Parameters
        ----------
        stage, field : str
            As declared in :data:`core.pipeline.schema.SCHEMA` (e.g. ``"encoding", "pred"``).
        condition : str, optional
            For a per-condition field: ``"off"``, ``"on"`` or ``"uniform"``.

        Raises
        ------
        core.pipeline.schema.SchemaError
            If the schema does not declare the field (or the condition does not fit it).
        KeyError
            If the stage was not run, or its entry lacks the (optional) array.
        """
        key = SCHEMA.name(stage, field, condition)
        arrays = self.stage(stage).arrays
        if key not in arrays:
            only = SCHEMA.spec(stage, field).only
            raise KeyError(f"stage {stage} holds no array {key!r}" + (f" (present {only})" if only else ""))
        return arrays[key]

    def condition_arrays(self, stage: str, condition: str) -> dict[str, np.ndarray]:
        """The per-condition arrays of ``stage`` that the run holds for ``condition``, by field."""
        return {spec.field: self.array(stage, spec.field, condition) for spec in SCHEMA.stages[stage].arrays
                if spec.per_condition and self.has_array(stage, spec.field, condition)}

    def stats(self, condition: str) -> dict[str, np.ndarray]:
        """The stats stage's per-voxel arrays of a condition by field: ``r``, ``p``, ``q``, ``significant``,
        ``bin``, ``valid`` and, where the run has them, ``significant_negative``, ``n_eff``, ``p_perm``, ``q_perm``,
        ``ev``, ``cc_max``, ``r_norm``, ``ceiling_valid``; each of shape (n_voxels,)."""
        return self.condition_arrays("stats", condition)

    def contrast(self, name: str) -> dict[str, np.ndarray]:
        """The contrasts stage's per-voxel arrays of one contrast (``"on_off"``, ``"on_uniform"``,
        ``"uniform_off"``; :data:`core.vocabulary.CONTRASTS`) by field: ``delta``, ``delta_lo``, ``delta_hi``,
        ``p``, ``q``, ``outcome``, ``valid``; each of shape (n_voxels,)."""
        return self.condition_arrays("contrasts", name)

    def contrast_names(self) -> list[str]:
        """The contrasts this run tested, in :data:`core.vocabulary.CONTRASTS` order."""
        if not self.has_stage("contrasts"):
            return []
        return [c for c in SCHEMA.stages["contrasts"].conditions if self.has_array("contrasts", "delta", c)]

    def geometry(self) -> dict[str, np.ndarray] | None:
        """The dataset's per-voxel geometry by field (``ijk`` (n_voxels, 3), ``flat_xy`` (n_voxels, 2),
        ``hemi``, ``roi``, ``unmapped`` (n_voxels,), ``xyz_mm`` (n_voxels, 3)), None without a cortex mapping."""
        if not self.has_array("dataset", "flat_xy"):
            return None
        return {f: self.array("dataset", f) for f in GEOMETRY_FIELDS if self.has_array("dataset", f)}

    def file_voxel_index(self) -> np.ndarray:
        """Each voxel's column in the response file (the file's numbering): the dataset stage's ``voxel_index``
        where voxels were left out (NaN in every test sample), else 0..n_voxels-1."""
        if self.has_array("dataset", "voxel_index"):
            return np.asarray(self.array("dataset", "voxel_index"), dtype=np.int64)
        return np.arange(self.n_voxels, dtype=np.int64)

    def truth(self) -> dict[str, np.ndarray]:
        """The planted truth of simulated data by field (``truth_null``, ...); empty for other data."""
        if not self.has_stage("dataset"):
            return {}
        return {spec.field: self.array("dataset", spec.field) for spec in SCHEMA.stages["dataset"].arrays
                if spec.field.startswith("truth_") and self.has_array("dataset", spec.field)}

    def predicted(self, condition: str, voxel: int) -> np.ndarray:
        """Predicted test series of one voxel, shape (n_test,): one contiguous read."""
        return np.asarray(self.array("encoding", "pred", condition)[voxel])

    def measured(self, voxel: int) -> np.ndarray:
        """Measured (repeat-averaged) test series of one voxel, shape (n_test,)."""
        return np.asarray(self.array("encoding", "measured")[voxel])

    def embedded_voxels(self, condition: str) -> np.ndarray:
        """Voxel rows of the condition's kNN graph and UMAP, shape (n_embedded,), ascending."""
        return np.asarray(self.array("rsa", "voxels", condition))

    def umap(self, condition: str) -> tuple[np.ndarray, np.ndarray]:
        """``(voxel_index (n,), coords (n, 3))`` of the condition's embedding."""
        return self.embedded_voxels(condition), np.asarray(self.array("umap", "umap", condition))

    def knn(self, condition: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(voxel_index (n,), neighbour rows (n, k) into voxel_index, correlation distances (n, k))``."""
        return self.embedded_voxels(condition), np.asarray(self.array("rsa", "knn_idx", condition)), \
            np.asarray(self.array("rsa", "knn_dist", condition))


class Results(StageArrays):
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
        entries: dict[str, StageEntry] = {}
        for name, key in info["stages"].items():
            path = store.entry_path(name, key)
            if not (path / "meta.json").is_file():
                raise InputError(f"stage entry {path.name} of run {run_id} is missing; rerun precompute.py",
                                 source=str(out))
            entries[name] = store.read(name, key)
        super().__init__(entries, run_id)
        try:
            self.conditions = [m for m in ("off", "on", "uniform") if m in self.config["features"]["modes"]]
        except (KeyError, TypeError):
            raise InputError(f"config has no features.modes; {fix}", source=str(self.run_dir / "run.json"),
                             field="config") from None
        self.simulated = bool(self.summary.get("simulated"))
        self._table = None

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
        """Per-voxel pandas DataFrame: geometry, and r/p/q/significant/bin/alpha/cv (fold-mean CV R^2) per
        condition."""
        if self._table is None:
            import pandas as pd
            # Column names are the CSV's (core.outputs.export.TABLE_COLUMNS), not array names.
            cols: dict[str, Any] = {"voxel": np.arange(self.n_voxels)}
            geo = self.geometry()
            if self.has_array("dataset", "voxel_index"):
                cols["file_voxel"] = self.file_voxel_index()
            if geo is not None:
                if "ijk" in geo:
                    ijk = np.asarray(geo["ijk"])
                    cols.update(i=ijk[:, 0], j=ijk[:, 1], k=ijk[:, 2])
                hemi = np.asarray(geo["hemi"])
                cols["hemi"] = np.where(hemi == 1, "R", np.where(hemi == 0, "L", ""))
                names = np.asarray(self.roi_names, dtype=object)
                cols.update(roi=names[np.asarray(geo["roi"])], flat_x=np.asarray(geo["flat_xy"])[:, 0],
                            flat_y=np.asarray(geo["flat_xy"])[:, 1], unmapped=np.asarray(geo["unmapped"]))
            if self.has_stage("stats"):
                for m in self.conditions:
                    st = self.stats(m)
                    for field in ("r", "p", "q", "significant", "bin"):
                        cols[f"{field}_{m}"] = np.asarray(st[field])
                    cols[f"alpha_{m}"] = np.asarray(self.array("encoding", "alpha", m))
                    cols[f"cv_{m}"] = np.asarray(self.array("encoding", "cv", m))
                    if "r_norm" in st:
                        cols[f"r_norm_{m}"] = np.asarray(st["r_norm"])
                # The ceiling depends on the measured repeats only: the same for every condition.
                if self.has_array("stats", "cc_max", self.conditions[0]):
                    cols["noise_ceiling"] = np.asarray(self.array("stats", "cc_max", self.conditions[0]))
                if {"on", "off"} <= set(self.conditions):
                    cols["delta_r"] = cols["r_on"] - cols["r_off"]
            for c in self.contrast_names():
                a = self.contrast(c)
                for field, col in (("delta", "delta_{c}"), ("delta_lo", "delta_lo_{c}"), ("delta_hi", "delta_hi_{c}"),
                                   ("p", "p_delta_{c}"), ("q", "q_delta_{c}"), ("outcome", "outcome_{c}")):
                    cols[col.format(c=c)] = np.asarray(a[field])
            if self.has_stage("joint") and self.has_array("joint", "unique_on"):
                for field in ("r2_joint", "r2_on", "r2_off", "unique_on", "unique_off", "shared", "p_unique_on",
                              "q_unique_on", "p_unique_off", "q_unique_off", "gamma_on"):
                    cols["joint_gamma_on" if field == "gamma_on" else field] = np.asarray(self.array("joint", field))
                cols["joint_fitted"] = np.asarray(self.array("joint", "fitted"))
            if self.has_stage("joint") and self.has_array("joint", "unique_on_vs_uniform"):
                for field in ("r2_on_uniform", "r2_uniform", "unique_on_vs_uniform", "unique_uniform_vs_on",
                              "p_unique_on_vs_uniform", "q_unique_on_vs_uniform", "gamma_on_uniform"):
                    cols[field] = np.asarray(self.array("joint", field))
            self._table = pd.DataFrame(cols)
        return self._table

    def asset_dir(self, stage: str) -> Path | None:
        return self.stage(stage).path if self.has_stage(stage) else None


def open_results(path: str | Path, run_id: str | None = None) -> Results:
    """Open a results folder (or one run folder inside it) for reading."""
    return Results(path, run_id)
