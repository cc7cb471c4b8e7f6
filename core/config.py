"""Typed run configuration: presets, TOML overrides and the hashes that key the cache.

A run is described by one :class:`RunConfig`. Presets (``demo``, ``paper``) fill every field; a TOML file
may override any field (unknown keys are an error that names them). Each pipeline stage hashes only the
fields it depends on (:func:`config_hash`), so a new UMAP seed never refits the ridge models.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import types
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, get_type_hints

from core._validation import InputError
from core.vocabulary import CONDITIONS, DEFAULT_BINS, FEATURE_LAYERS, PAIR, RULES, BinScheme

__all__ = ["DataConfig", "SimulationConfig", "FeatureConfig", "EncodingConfig", "StatsConfig",
           "RSAConfig", "ContrastsConfig", "UMAPConfig", "RunConfig", "PRESETS", "USER_DATA_STATS", "make_config",
           "load_config", "config_hash", "config_to_dict"]


@dataclass(frozen=True)
class DataConfig:
    """Where the stimuli and responses come from (``kind='simulated'`` for the planted-truth default)."""
    kind: str = "simulated"                 # "simulated" | "files"
    # An image folder, .npy/.h5/.mat (N,H,W,3) uint8 (or channels second), a movie file, or a list of
    # arrays / folders (one per run, in order).
    stimuli_train: str | tuple[str, ...] = ""
    stimuli_test: str | tuple[str, ...] = ""
    stimuli_key: str = "stimuli"             # dataset name inside an HDF5 stimulus file
    stimuli_test_key: str = ""               # the test stimuli's, where it differs (vim-2: "st" / "sv")
    responses: str = ""                      # .h5/.hdf/.mat/.npz: Y_train, Y_test[, run_onsets], or vim-2's rt, rv[, rva]
    movie_tr: float = 0.0                    # seconds between samples (the TR) for movies and movie frames
    movie_offset: float = 0.0                # time of the first sample in the movie, seconds
    # Frames per second of stimulus arrays that hold a movie's frames (0: one stimulus per sample); each
    # sample pools stimulus_fps x movie_tr frames by frame_pooling: "mean" (their mean) or "first".
    stimulus_fps: float = 0.0
    frame_pooling: str = "mean"
    # A mapper file (the Gallant lab's Sxx_mappers.hdf): flatmaps and ROIs without a pycortex subject. When
    # set, subject / transform / mask are not used.
    mapper: str = ""
    subject: str = "S1"                      # pycortex subject ("" = no cortex mapping)
    transform: str = "fullhead"
    mask: str = "thick"


@dataclass(frozen=True)
class SimulationConfig:
    """The planted-truth dataset on pycortex S1 (only used when ``data.kind == 'simulated'``)."""
    n_train: int = 7200
    n_test: int = 600
    image_size: int = 224
    n_repeats: int = 4                       # test repeats averaged into Y_test
    n_runs: int = 12                         # training runs of equal length (leave-one-run-out CV folds)
    tr: float = 2.0                          # seconds per sample: the haemodynamic response's sampling
    hrf: bool = True                         # convolve with the canonical double-gamma HRF (needs delays)
    ar_range: tuple[float, ...] = (0.2, 0.7)  # per-voxel AR(1) noise coefficient range; (0, 0) = white
    null_contrast_fraction: float = 0.1      # share of signal voxels planted with equal on and off parts
    n_voxels: int = 0                        # 0 = the whole mask; else a seeded subset of it
    null_fraction: float = 0.25              # share of far-cortex voxels that carry no signal at all
    n_latent: int = 16                       # smooth spatial fields mixing the feature directions
    smoothness_mm: float = 12.0              # spatial scale of the weight fields
    seed: int = 0
    # The simulated subject: 0 the default one; another number plants other weights and noise on the same
    # stimuli (a study's simulated subjects; the stimuli, and so their features, are shared).
    subject: int = 0


@dataclass(frozen=True)
class FeatureConfig:
    weights: str = "auto"                    # "auto" | "random" | path to a checkpoint
    layer: str = "pool"
    input_size: int = 224
    batch_size: int = 0                      # images per forward pass; 0 = auto (32 on the CPU, 128 on CUDA)
    modes: tuple[str, ...] = ("on", "off", "uniform")
    seed: int = 0


@dataclass(frozen=True)
class EncodingConfig:
    alpha_min_log10: float = -2.0
    alpha_max_log10: float = 8.0
    n_alphas: int = 21
    n_folds: int = 5
    # "grid": every alpha scored for every voxel; "refine": a coarse part of the grid, then halving steps around
    # each voxel's best (the grid's alpha wherever the CV curve is unimodal; ~half the CV cost at 21 alphas).
    alpha_search: str = "grid"
    delays: tuple[int, ...] = ()             # FIR delays in samples for movie data, e.g. (1, 2, 3, 4)
    dtype: str = "float32"


@dataclass(frozen=True)
class StatsConfig:
    """Voxelwise significance (docs/inference.md says what each rule assumes and resamples)."""
    # "p": two-sided t-test p <= level, uncorrected: the study's rule (assumes independent test samples);
    # "q": BH-FDR q of the t-test p; "perm": BH-FDR q of the block-permutation p (autocorrelated series).
    rule: str = "p"
    level: float = 0.01
    alternative: str = "two-sided"           # "two-sided" (the study's) | "greater" (r > 0 only)
    bin_edges: tuple[float, ...] = DEFAULT_BINS.edges
    n_permutations: int = 0                  # block permutations (rule "perm" needs >= 100); 0 = none
    block_length: int = 0                    # permutation block in test samples; 0 = chosen from the data
    ceiling_min_ev: float = 0.1              # least explainable variance for a reliable noise ceiling (r_norm)


@dataclass(frozen=True)
class RSAConfig:
    k: int = 15
    voxels: str = "union"                    # "union" | "significant" | "all"
    # Significant negative r in the voxel set too: the study kept every voxel with two-sided p <= 0.01 (the
    # paper presets); otherwise only positive predictions, the encoded voxels, enter the RDM.
    include_negative: bool = False
    n_pairs: int = 1_000_000
    seed: int = 0                            # seed of the voxel-pair sample for the RDM agreement
    n_boot_samples: int = 200                # test-sample (block) and voxel resamples of the agreement
    block_length: int = 0                    # test samples per block of those resamples; 0 = from the data


@dataclass(frozen=True)
class ContrastsConfig:
    """The paired per-voxel tests of r_a - r_b (core.contrasts): circular block bootstrap over test samples."""
    n_boot: int = 1000                       # bootstrap resamples, shared by every voxel and contrast
    block_length: int = 0                    # samples per block; 0 = chosen from the data's autocorrelation
    level: float = 0.05                      # FDR (BH q) level of the helped / hurt outcome
    ci: float = 0.95                         # coverage of the per-voxel interval of the difference
    seed: int = 0


@dataclass(frozen=True)
class JointConfig:
    """The joint model over the attention-on and attention-off features (banded ridge, core.encoding.banded) and
    the partition of its test R^2 into unique-on, unique-off and shared variance."""
    enabled: bool = True
    # Band weights of the on features in steps of 1 / n_steps (0, 0.25, .., 1 with 4): the vertices are the
    # single-feature models of the encoding stage (reused), each inner weight costs one ridge fit of both bands.
    n_steps: int = 4
    # Voxels the inner band weights are fitted on: "predicted", those where the on or the off model has a
    # positive mean validation R^2 (training runs only; the others keep their better single model, a vertex of
    # the grid: no band predicts them, so there is nothing to partition), or "all".
    voxels: str = "predicted"
    # With the uniform-gain condition in features.modes: a second joint model over on + uniform, whose unique-on
    # part is the spatial focus of attention beyond its overall gain.
    uniform: bool = True


@dataclass(frozen=True)
class UMAPConfig:
    n_neighbors: int = 15
    min_dist: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class RunConfig:
    preset: str = "paper"
    device: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    simulation: SimulationConfig = field(default_factory=SimulationConfig)
    features: FeatureConfig = field(default_factory=FeatureConfig)
    encoding: EncodingConfig = field(default_factory=EncodingConfig)
    stats: StatsConfig = field(default_factory=StatsConfig)
    rsa: RSAConfig = field(default_factory=RSAConfig)
    contrasts: ContrastsConfig = field(default_factory=ContrastsConfig)
    joint: JointConfig = field(default_factory=JointConfig)
    umap: UMAPConfig = field(default_factory=UMAPConfig)


# The study's scale on 2 CPU cores is bound by the ridge's validation products: the refined alpha search
# scores 10 of the 21 alphas per voxel (see docs/performance.md, for what it changes).
_PAPER = RunConfig(encoding=EncodingConfig(alpha_search="refine"), rsa=RSAConfig(include_negative=True))
#: FIR delays of the simulated presets, in samples: 2-8 s at the simulation's TR of 2 s, around the
#: haemodynamic response's 5 s peak.
SIM_DELAYS = (1, 2, 3, 4)
# The demo must finish cold in ~5 minutes on 2 CPU cores: the ABN costs ~19 GFLOP per 224-px image for
# three modes, a quarter of that at 112 px, so 1,200 stimuli at 112 px take ~1-2 minutes.
_DEMO = RunConfig(
    preset="demo",
    # Five runs of 200 samples (6.7 min at a TR of 2 s): leave-one-run-out gives the ridge 5 folds, as many
    # as without runs; each further run adds a fold's validation products to the ridge cost.
    simulation=SimulationConfig(n_train=1000, n_test=200, image_size=112, n_runs=5),
    features=FeatureConfig(input_size=112),
    # One alpha per decade instead of two: the per-alpha validation products dominate the ridge cost
    # (~2.7 TFLOP per feature set at 21 alphas x 5 folds x 80k voxels), and alpha is a smooth choice. With
    # 1,000 samples the ridge runs in its kernel form, where the 4 delays only widen the n x n kernel's
    # inner products.
    encoding=EncodingConfig(n_alphas=11, delays=SIM_DELAYS),
)
#: The stats of the demo preset on the user's files (``data.kind = "files"``) where the config names no
#: ``stats.rule``: fMRI test series are autocorrelated (movies above all), where the t-test is anti-conservative,
#: so they get the block permutation test with BH over voxels. The simulated dataset's test stimuli are
#: independent images, where the t-test is exact and resolves p far below the permutations' 1 / 1001.
USER_DATA_STATS = {"rule": "perm", "n_permutations": 1000}
#: The study's scale on simulated data: 7,200 / 600 stimuli at 224 px and the study's 70,933 cortical voxels
#: (a seeded subset of S1's 80,615-voxel thick mask), every other setting as in ``paper``. What
#: ``bench/paper_scale.py`` runs; on one GPU it is meant to finish in about a minute and a half.
PAPER_STUDY_VOXELS = 70_933
#: Twelve runs of 600 samples (20 min at a TR of 2 s), the FIR delays of the demo.
_PAPER_SIM = dataclasses.replace(_PAPER, preset="paper-sim",
                                 simulation=SimulationConfig(n_voxels=PAPER_STUDY_VOXELS, n_runs=12),
                                 encoding=dataclasses.replace(_PAPER.encoding, delays=SIM_DELAYS))
PRESETS: dict[str, RunConfig] = {"paper": _PAPER, "demo": _DEMO, "paper-sim": _PAPER_SIM}


def config_to_dict(cfg) -> dict[str, Any]:
    """Plain JSON-able dict of a config (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def config_hash(cfg, *sections: str, extra: Any = None, length: int = 16) -> str:
    """Stable hash of the named sections (or dotted fields) of ``cfg`` plus ``extra``.

    ``config_hash(cfg, "encoding", "features.layer")`` changes only when those fields change.
    """
    full = config_to_dict(cfg)
    picked: dict[str, Any] = {}
    for name in sections or tuple(full):
        node: Any = full
        for part in name.split("."):
            node = node[part]
        picked[name] = node
    blob = json.dumps({"fields": picked, "extra": extra}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]


def _coerce(value: Any, typ: Any, where: str) -> Any:
    if isinstance(typ, types.UnionType):     # e.g. str | tuple[str, ...]: a path or a list of paths
        (scalar, listed) = typ.__args__
        return _coerce(value, listed if isinstance(value, (list, tuple)) else scalar, where)
    origin = getattr(typ, "__origin__", None)
    if dataclasses.is_dataclass(typ):
        if not isinstance(value, dict):
            raise InputError(f"expected a table of settings, found {value!r}", field=where)
        return _build(typ, value, where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"expected a list, found {value!r}", field=where)
        (inner, _ellipsis) = typ.__args__
        return tuple(_coerce(v, inner, where) for v in value)
    if typ is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if typ in (int, float, str, bool) and (type(value) is not typ):
        raise InputError(f"expected {typ.__name__}, found {type(value).__name__} {value!r}", field=where)
    return value


def _build(cls, values: dict[str, Any], prefix: str, base=None):
    hints = get_type_hints(cls)
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise InputError(
            f"unknown setting(s) {', '.join(prefix + k for k in unknown)}; allowed here: {', '.join(sorted(names))}",
            field=prefix.rstrip(".") or "config")
    base = base if base is not None else cls()
    kwargs = {}
    for name, value in values.items():
        typ = hints[name]
        if dataclasses.is_dataclass(typ):
            kwargs[name] = _build(typ, value, f"{prefix}{name}.", getattr(base, name)) if isinstance(value, dict) \
                else _coerce(value, typ, prefix + name)
        else:
            kwargs[name] = _coerce(value, typ, prefix + name)
    return dataclasses.replace(base, **kwargs)


def _check(cfg: RunConfig) -> RunConfig:
    def bad(fieldname, expected, found):
        raise InputError(f"expected {expected}, found {found!r}", field=fieldname)

    if cfg.data.kind not in ("simulated", "files"):
        bad("data.kind", "'simulated' or 'files'", cfg.data.kind)
    if cfg.data.frame_pooling not in ("mean", "first"):
        bad("data.frame_pooling", "'mean' (the frames of each sample averaged) or 'first' (its first frame)",
            cfg.data.frame_pooling)
    if cfg.data.stimulus_fps < 0:
        bad("data.stimulus_fps", "0 (one stimulus per sample) or the frame rate of the stimulus arrays",
            cfg.data.stimulus_fps)
    if cfg.data.stimulus_fps > 0:
        per = cfg.data.stimulus_fps * cfg.data.movie_tr
        if cfg.data.movie_tr <= 0 or abs(per - round(per)) > 1e-6 or round(per) < 1:
            bad("data.movie_tr", f"the TR in seconds, with data.stimulus_fps = {cfg.data.stimulus_fps:g} making a "
                "whole number of frames per sample", cfg.data.movie_tr)
    if cfg.data.mapper and cfg.data.kind == "simulated":
        bad("data.mapper", "no mapper for the simulated dataset (it lives on the pycortex subject S1)",
            cfg.data.mapper)
    if cfg.stats.rule not in RULES:
        bad("stats.rule", "'p' (t-test, uncorrected: the study's), 'q' (t-test, FDR) or 'perm' (block permutation, "
            "FDR)", cfg.stats.rule)
    if cfg.stats.alternative not in ("two-sided", "greater"):
        bad("stats.alternative", "'two-sided' (the study's) or 'greater' (positive r only)", cfg.stats.alternative)
    if cfg.stats.n_permutations < 0 or (cfg.stats.rule == "perm" and cfg.stats.n_permutations < 100):
        bad("stats.n_permutations", "at least 100 with stats.rule = 'perm' (1000 resolves p to 0.001), else >= 0",
            cfg.stats.n_permutations)
    if cfg.stats.block_length < 0:
        bad("stats.block_length", "0 (chosen from the data) or a block length in test samples",
            cfg.stats.block_length)
    if not -1 < cfg.stats.ceiling_min_ev < 1:
        bad("stats.ceiling_min_ev", "an explainable-variance fraction in (-1, 1), e.g. 0.1", cfg.stats.ceiling_min_ev)
    if not 0 < cfg.stats.level < 1:
        bad("stats.level", "a level between 0 and 1", cfg.stats.level)
    # Count, order and range of the edges, checked here so a bad scheme stops the run before any stage
    # (the cortex stage, which colours the bins, comes after the ridge).
    BinScheme(cfg.stats.bin_edges, field="stats.bin_edges")
    if cfg.rsa.voxels not in ("union", "significant", "all"):
        bad("rsa.voxels", "'union', 'significant' or 'all'", cfg.rsa.voxels)
    for name in ("n_boot_samples", "block_length"):
        v = getattr(cfg.rsa, name)
        if isinstance(v, bool) or v < 0:
            bad(f"rsa.{name}", "0 or a positive integer", v)
    c = cfg.contrasts
    if isinstance(c.n_boot, bool) or c.n_boot < 1:
        bad("contrasts.n_boot", "a positive integer (e.g. 1000)", c.n_boot)
    if isinstance(c.block_length, bool) or c.block_length < 0:
        bad("contrasts.block_length", "0 (auto) or a positive number of samples", c.block_length)
    for name in ("level", "ci"):
        if not 0 < getattr(c, name) < 1:
            bad(f"contrasts.{name}", "a value strictly between 0 and 1", getattr(c, name))
    if isinstance(cfg.joint.n_steps, bool) or not 1 <= cfg.joint.n_steps <= 20:
        bad("joint.n_steps", "an integer from 1 (the single models only) to 20", cfg.joint.n_steps)
    if cfg.joint.voxels not in ("predicted", "all"):
        bad("joint.voxels", '"predicted" (voxels a single model predicts in cross-validation) or "all"',
            cfg.joint.voxels)
    if cfg.umap.n_neighbors > cfg.rsa.k:
        bad("umap.n_neighbors", f"at most rsa.k = {cfg.rsa.k} (UMAP reads the precomputed kNN graph)",
            cfg.umap.n_neighbors)
    if isinstance(cfg.features.batch_size, bool) or cfg.features.batch_size < 0:
        bad("features.batch_size", "0 (auto: 32 on the CPU, 128 on CUDA) or a positive integer",
            cfg.features.batch_size)
    if cfg.features.layer not in FEATURE_LAYERS:
        bad("features.layer", f"one of {', '.join(FEATURE_LAYERS)}", cfg.features.layer)
    if cfg.features.input_size < 64:
        bad("features.input_size", "at least 64 pixels (ResNet-50 downsamples by 32)", cfg.features.input_size)
    for name in ("n_train", "n_test", "image_size", "n_repeats"):
        if getattr(cfg.simulation, name) <= 0:
            bad(f"simulation.{name}", "a positive integer", getattr(cfg.simulation, name))
    sim = cfg.simulation
    if isinstance(sim.subject, bool) or sim.subject < 0:
        bad("simulation.subject", "0 (the default simulated subject) or a positive subject number", sim.subject)
    if not 0 <= sim.null_fraction < 1:
        bad("simulation.null_fraction", "a fraction in [0, 1)", sim.null_fraction)
    if not 0 <= sim.null_contrast_fraction < 1:
        bad("simulation.null_contrast_fraction", "a fraction in [0, 1)", sim.null_contrast_fraction)
    # Each run is a validation fold of the ridge (leave-one-run-out), which needs 2 samples at least.
    if sim.n_runs <= 0 or sim.n_train // sim.n_runs < 2:
        bad("simulation.n_runs", f"a positive number of runs of at least 2 samples each (n_train = {sim.n_train})",
            sim.n_runs)
    if not sim.tr > 0:
        bad("simulation.tr", "a positive number of seconds per sample", sim.tr)
    if len(sim.ar_range) != 2 or not 0 <= sim.ar_range[0] <= sim.ar_range[1] < 1:
        bad("simulation.ar_range", "[low, high] with 0 <= low <= high < 1 (e.g. [0.2, 0.7]; [0, 0] = white noise)",
            list(sim.ar_range))
    if not set(cfg.features.modes) <= set(CONDITIONS) or not set(PAIR) <= set(cfg.features.modes):
        bad("features.modes", "'on' and 'off', optionally 'uniform'", cfg.features.modes)
    if cfg.encoding.dtype not in ("float32", "float64"):
        bad("encoding.dtype", "'float32' or 'float64'", cfg.encoding.dtype)
    if cfg.encoding.alpha_search not in ("grid", "refine"):
        bad("encoding.alpha_search", "'grid' (every alpha) or 'refine' (coarse grid, then refined per voxel)",
            cfg.encoding.alpha_search)
    if cfg.encoding.n_folds < 2:
        bad("encoding.n_folds", "at least 2", cfg.encoding.n_folds)
    return cfg


def make_config(preset: str = "demo", overrides: dict[str, Any] | None = None) -> RunConfig:
    """The preset ``preset`` with ``overrides`` (a nested dict, as read from TOML) applied and checked."""
    if preset not in PRESETS:
        raise InputError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}", field="preset")
    overrides = dict(overrides or {})
    overrides.pop("preset", None)
    cfg = _build(RunConfig, overrides, "", PRESETS[preset])
    stats_given = overrides.get("stats", {}) if isinstance(overrides.get("stats"), dict) else {}
    if preset == "demo" and cfg.data.kind == "files" and "rule" not in stats_given:
        cfg = dataclasses.replace(cfg, stats=dataclasses.replace(
            cfg.stats, rule=USER_DATA_STATS["rule"],
            n_permutations=stats_given.get("n_permutations", USER_DATA_STATS["n_permutations"])))
    return _check(cfg)


def load_config(path: str | Path | None = None, preset: str | None = None) -> RunConfig:
    """Read a TOML config file; its ``preset`` key (or ``preset``) picks the base it overrides."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise InputError("config file not found; check the path given to --config", source=str(path))
        try:
            values = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"not valid TOML ({exc})", source=str(path)) from None
    chosen = preset or values.get("preset", "demo")
    try:
        return make_config(chosen, values)
    except InputError as exc:
        if path is not None and exc.source is None:
            raise InputError(str(exc), source=str(path)) from None
        raise
