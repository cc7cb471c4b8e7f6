"""A study file (``study.toml``): a base config as for one run plus the axes it varies, expanded into runs.

::

    preset = "demo"                      # the base: every section of a run's config
    [simulation]
    n_voxels = 3000

    [study]
    layers = ["layer3", "pool"]          # features.layer of each run (default: the base's)
    weights = ["auto"]                   # features.weights of each run (default: the base's)
    retries = 2                          # attempts after the first for a run that fails (not for bad input)

    [[study.subjects]]                   # default: one subject, the base's [data]
    label = "S01"
    [study.subjects.data]                # this subject's [data] table, over the base's
    responses = "S01_responses.hdf"
    mapper = "S01_mappers.hdf"

    [[study.subjects]]                   # simulated subjects: S1 with other planted weights and noise on the
    label = "sim-2"                      # same stimuli (simulation.subject = seed)
    seed = 2

Each (subject, layer, weights) is one run, the same run ``precompute.py --config`` of its expanded config
computes; runs that share an input share its cached stage entries in the study's results folder.
"""
from __future__ import annotations

import itertools
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core._validation import InputError
from core.config import RunConfig, config_to_dict, make_config

__all__ = ["StudyRun", "Study", "load_study", "expand_study", "to_toml"]

_LABEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_STUDY_KEYS = {"subjects", "layers", "weights", "retries", "name"}
_SUBJECT_KEYS = {"label", "data", "seed"}


@dataclass(frozen=True)
class StudyRun:
    """One run of a study: its axes' values and the full config ``precompute.py`` runs."""
    subject: str
    layer: str
    weights: str
    cfg: RunConfig
    simulated: bool

    @property
    def label(self) -> str:
        weights = Path(self.weights).stem if self.weights not in ("auto", "random") else self.weights
        return f"{self.subject}/{self.layer}/{weights}"


@dataclass(frozen=True)
class Study:
    """A study file, expanded: its runs in order (subjects, then layers, then weights)."""
    path: str
    name: str
    runs: tuple[StudyRun, ...]
    retries: int = 2
    cluster: dict[str, Any] = field(default_factory=dict)


def _bad(message: str, where: str, source: str):
    raise InputError(message, source=source, field=where)


def load_study(path: str | Path) -> Study:
    """Read and expand a study file; every run's config is checked as ``precompute.py --config`` checks one.

    Raises
    ------
    InputError
        A missing or invalid file, an unknown key in ``[study]`` or a subject, a bad axis value, two runs with
        the same label, or any run's config error (named with the run).
    """
    p = Path(path)
    source = str(p)
    if not p.is_file():
        raise InputError("study file not found", source=source)
    try:
        doc = tomllib.loads(p.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"not valid TOML ({exc})", source=source) from None
    return expand_study(doc, source=source)


def expand_study(doc: dict[str, Any], *, source: str = "study") -> Study:
    """The runs of a study document (the parsed TOML; see the module docstring)."""
    doc = dict(doc)
    study = doc.pop("study", None)
    cluster = doc.pop("cluster", {}) or {}
    if not isinstance(study, dict):
        _bad("a study file needs a [study] table (subjects, layers, weights)", "study", source)
    unknown = sorted(set(study) - _STUDY_KEYS)
    if unknown:
        _bad(f"unknown setting(s) {', '.join('study.' + k for k in unknown)}; allowed: "
             f"{', '.join(sorted(_STUDY_KEYS))}", "study", source)
    if not isinstance(cluster, dict):
        _bad("expected a [cluster] table", "cluster", source)
    preset = doc.get("preset", "demo")
    base = make_config(preset, doc)                     # the base alone must be a valid run config
    layers = study.get("layers", [base.features.layer])
    weights = study.get("weights", [base.features.weights])
    for name, values in (("layers", layers), ("weights", weights)):
        if not isinstance(values, list) or not values or not all(isinstance(v, str) and v for v in values):
            _bad(f"expected a non-empty list of names, found {values!r}", f"study.{name}", source)
        if len(set(values)) != len(values):
            _bad(f"a value is listed twice: {values}", f"study.{name}", source)
    retries = study.get("retries", 2)
    if isinstance(retries, bool) or not isinstance(retries, int) or not 0 <= retries <= 10:
        _bad(f"expected 0..10 retries, found {retries!r}", "study.retries", source)
    subjects = study.get("subjects", [{"label": "sim-1" if base.data.kind == "simulated" else "subject"}])
    if not isinstance(subjects, list) or not subjects:
        _bad("expected a list of subject tables ([[study.subjects]] with a label)", "study.subjects", source)
    runs = []
    seen_labels = set()
    for i, subj in enumerate(subjects):
        where = f"study.subjects[{i}]"
        if not isinstance(subj, dict):
            _bad(f"expected a table, found {subj!r}", where, source)
        unknown = sorted(set(subj) - _SUBJECT_KEYS)
        if unknown:
            _bad(f"unknown key(s) {', '.join(unknown)}; a subject has label, data (its [data] table) and, for "
                 "simulated data, seed", where, source)
        label = subj.get("label")
        if not isinstance(label, str) or not _LABEL_RE.match(label):
            _bad(f"expected a label of letters, digits, '_', '.', '-', found {label!r}", f"{where}.label", source)
        if label in seen_labels:
            _bad(f"subject {label!r} is listed twice", f"{where}.label", source)
        seen_labels.add(label)
        over: dict[str, Any] = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
        if "data" in subj:
            if not isinstance(subj["data"], dict):
                _bad("expected a table of [data] settings", f"{where}.data", source)
            over["data"] = {**over.get("data", {}), **subj["data"]}
        if "seed" in subj:
            if base.data.kind != "simulated" and over.get("data", {}).get("kind", base.data.kind) != "simulated":
                _bad("seed makes a simulated subject (S1 with other weights and noise); this study's data are "
                     "files: give the subject's [data] instead", f"{where}.seed", source)
            seed = subj["seed"]
            if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
                _bad(f"expected a non-negative integer seed, found {seed!r}", f"{where}.seed", source)
            over["simulation"] = {**over.get("simulation", {}), "subject": seed}
        for layer, w in itertools.product(layers, weights):
            run_over = {**over, "features": {**over.get("features", {}), "layer": layer, "weights": w}}
            try:
                cfg = make_config(preset, run_over)
            except InputError as exc:
                raise InputError(f"run {label}/{layer}/{w}: {exc}", source=source) from None
            runs.append(StudyRun(subject=label, layer=layer, weights=w, cfg=cfg,
                                 simulated=cfg.data.kind == "simulated"))
    if len({r.label for r in runs}) != len(runs):
        _bad("two runs get the same label (weights files with the same name?); rename one", "study.weights", source)
    name = study.get("name") or Path(source).stem
    return Study(path=source, name=str(name), runs=tuple(runs), retries=retries, cluster=dict(cluster))


def to_toml(cfg: RunConfig) -> str:
    """A run's full config as TOML text that :func:`core.config.load_config` reads back to the same config."""
    d = config_to_dict(cfg)
    top = {k: v for k, v in d.items() if not isinstance(v, dict)}
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items()]
    for section, values in d.items():
        if isinstance(values, dict):
            lines.append(f"[{section}]")
            lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
    return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    import json
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v)            # a JSON string is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to TOML")

