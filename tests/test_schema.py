"""The results schema: what a stage writes is declared, the store refuses what does not match before anything
lands in the results folder, and Results reads every declared array by stage, field and condition."""
from __future__ import annotations

import json

import numpy as np
import pytest

from core.config import make_config
from core.pipeline.runner import Pipeline
from core.pipeline.schema import CONDITIONS, SCHEMA, SchemaError, name
from core.pipeline.stage import Stage
from core.pipeline.store import ResultsStore
from core.outputs import StageArrays, open_results

N_VOXELS, N_TEST, N_TRAIN = 5, 4, 6


def _dataset(ctx):
    return {}, {"n_voxels": N_VOXELS, "n_test": N_TEST, "n_train": N_TRAIN, "simulated": False}


def _encoding_arrays(modes, **override):
    rng = np.random.default_rng(0)
    arrays = {name("encoding", "measured"): rng.standard_normal((N_VOXELS, N_TEST)).astype(np.float32)}
    for m in modes:
        arrays[name("encoding", "pred", m)] = rng.standard_normal((N_VOXELS, N_TEST)).astype(np.float32)
        arrays[name("encoding", "alpha", m)] = np.full(N_VOXELS, 10.0, np.float32)
        arrays[name("encoding", "cv", m)] = rng.random(N_VOXELS).astype(np.float32)
    arrays.update(override)
    return {k: v for k, v in arrays.items() if v is not None}


def _tiny_pipeline(out, **override):
    """dataset -> encoding with the real schema: the dataset's meta fixes n_voxels and n_test."""
    cfg = make_config("demo")

    def encoding(ctx):
        return _encoding_arrays(cfg.features.modes, **override), {}
    stages = {"dataset": Stage("dataset", _dataset, (), ("data",)),
              "encoding": Stage("encoding", encoding, ("dataset",), ("encoding",))}
    return Pipeline(cfg, out, stages=stages, device="cpu", progress=False)


def _entries_on_disk(out):
    return sorted(p.name.split("-")[0] for p in (out / "cache" / "stages").iterdir())


def test_an_array_a_stage_writes_is_read_through_its_schema_name(tmp_path):
    pipe = _tiny_pipeline(tmp_path / "out")
    run = StageArrays(pipe.run())
    want = _encoding_arrays(pipe.cfg.features.modes)
    for m in pipe.cfg.features.modes:
        np.testing.assert_array_equal(run.array("encoding", "pred", m), want[f"pred_{m}"])
        np.testing.assert_array_equal(run.predicted(m, 2), want[f"pred_{m}"][2])
    np.testing.assert_array_equal(run.measured(1), want["measured"][1])
    assert not run.has_array("stats", "r", "on")                  # a stage not run: absent, not an error
    with pytest.raises(SchemaError, match="stage encoding, array 'prediction': not declared"):
        run.array("encoding", "prediction", "on")                 # the reader checks names against the schema
    with pytest.raises(SchemaError, match="stage umap, array 'umap': expected a condition of"):
        run.has_array("umap", "umap", "uniform")                  # UMAPs compare off and on only


@pytest.mark.parametrize("override, match", [
    ({"pred_on": np.zeros((N_VOXELS, N_TEST + 1), np.float32)},
     r"stage encoding, array 'pred_on': expected shape \(n_voxels=5, n_test=4\) dtype float32, found shape "
     r"\(5, 5\) \(n_test from the dataset stage's meta\)"),
    ({"pred_on": np.zeros((N_VOXELS, N_TEST), np.float64)},
     r"stage encoding, array 'pred_on': expected dtype float32, found float64"),
    ({"pred_extra": np.zeros((N_VOXELS, N_TEST), np.float32)},
     r"stage encoding, array 'pred_extra': not declared in the results schema"),
    ({"alpha_off": None}, r"stage encoding, array 'alpha_off': missing: every encoding entry holds it"),
], ids=["shape", "dtype", "undeclared", "missing"])
def test_a_commit_that_does_not_match_is_refused_and_leaves_nothing(tmp_path, override, match):
    out = tmp_path / "out"
    with pytest.raises(SchemaError, match=match):
        _tiny_pipeline(out, **override).run()
    store = ResultsStore(out)
    assert _entries_on_disk(out) == ["dataset"]                   # the refused stage left no entry ...
    assert store.temporaries() == []                              # ... and no temporary folder
    assert not store.has("encoding", _tiny_pipeline(out).keys["encoding"])


def test_a_stage_file_written_into_its_folder_is_checked_too(tmp_path):
    """Arrays a stage saves into its folder itself (the cortex stage's flatmap lookup) are arrays of the entry."""
    store = ResultsStore(tmp_path)
    workdir = store.new_workdir("cortex", "k")
    np.save(workdir / "flatmap_lookup.npy", np.zeros((4, 6), np.int64))
    with pytest.raises(SchemaError, match="stage cortex, array 'flatmap_lookup': expected dtype int32, found int64"):
        store.commit(workdir, "cortex", "k", {}, {})
    workdir = store.new_workdir("cortex", "k")
    np.save(workdir / "lookup.npy", np.zeros((4, 6), np.int32))
    with pytest.raises(SchemaError, match="array 'lookup': not declared"):
        store.commit(workdir, "cortex", "k", {}, {})
    assert store.temporaries() == [] and not store.stages_dir.joinpath("cortex-k").exists()


def test_dimensions_come_from_the_entries_a_stage_read(tmp_path):
    """A UMAP has one row per voxel of the rsa stage's graph, and knows it from the rsa entry it read."""
    store = ResultsStore(tmp_path)
    k = 3
    idx = np.tile(np.arange(k), (7, 1))
    rsa = {name("rsa", "voxels", m): np.arange(7, dtype=np.int64) for m in ("off", "on")}
    rsa.update({name("rsa", f, m): a for m in ("off", "on") for f, a in
                (("knn_idx", idx), ("knn_dist", np.zeros((7, k), np.float32)))})
    entry = store.commit(store.new_workdir("rsa", "r"), "rsa", "r", rsa, {}, dims={"k": k})
    umap = {name("umap", "umap", "off"): np.zeros((7, 3), np.float32),
            name("umap", "umap", "on"): np.zeros((6, 3), np.float32)}
    with pytest.raises(SchemaError, match=r"array 'umap_on': expected shape \(n_embedded_on=7, 3\).*from array "
                                          r"'voxels_on' of the rsa stage"):
        store.commit(store.new_workdir("umap", "u"), "umap", "u", umap, {}, inputs={"rsa": entry})
    with pytest.raises(SchemaError, match=r"array 'knn_idx_off': expected shape \(n_embedded_off=7, k=4\)"):
        store.commit(store.new_workdir("rsa", "r2"), "rsa", "r2", rsa, {}, dims={"k": 4})
    assert store.temporaries() == []


def test_optional_arrays_come_together():
    known = {"n_voxels": 3}
    found = {name("stats", f, "on"): ((3,), dt) for f, dt in
             (("r", "f8"), ("p", "f8"), ("q", "f8"), ("significant", "?"), ("significant_negative", "?"),
              ("n_eff", "f8"), ("bin", "i1"), ("valid", "?"))}
    SCHEMA.check("stats", found, known=known, conditions=["on"])
    with pytest.raises(SchemaError, match=r"array 'ev_on': missing although r_norm_on is present: they come together "
                                          r"\(with test repeats"):
        SCHEMA.check("stats", {**found, "r_norm_on": ((3,), "f8")}, known=known, conditions=["on"])
    with pytest.raises(SchemaError, match=r"array 'r_off': missing"):
        SCHEMA.check("stats", found, known=known, conditions=["on", "off"])


def test_schema_errors_survive_the_trip_back_from_a_spawned_stage():
    import pickle
    err = pickle.loads(pickle.dumps(SchemaError("rsa", "voxels_on", "missing")))
    assert str(err) == "stage rsa, array 'voxels_on': missing" and err.stage == "rsa"


def test_names_are_unique_and_each_field_names_its_file():
    for stage, st in SCHEMA.stages.items():
        for spec in st.arrays:
            for c in (st.conditions if spec.per_condition else (None,)):
                assert SCHEMA.parse(stage, name(stage, spec.field, c)) == (spec, c)
            np.dtype(spec.dtype)
            assert spec.description, (stage, spec.field)
    assert name("encoding", "pred", "on") == "pred_on" and name("stats", "p_perm", "off") == "p_perm_off"
    assert name("dataset", "ijk") == "ijk"
    with pytest.raises(SchemaError, match="has one array for all conditions"):
        name("dataset", "ijk", "on")
    with pytest.raises(SchemaError, match="not a stage of the results schema"):
        name("ridge", "pred", "on")


def test_docs_formats_lists_the_schema():
    from pathlib import Path

    from core.pipeline.schema import markdown_table
    docs = (Path(__file__).resolve().parents[1] / "docs" / "formats.md").read_text()
    assert markdown_table() in docs, "docs/formats.md's stage-array table is stale: paste markdown_table() in"


# ----------------------------------------------------------------------------------- real entries are declared
@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    from core.testing.synthetic import make_synthetic_results
    return open_results(make_synthetic_results(tmp_path_factory.mktemp("syn"), n_voxels=300, n_test=20, k=8))


def _run_entries(res):
    return {s: res.stage(s) for s in json.loads((res.run_dir / "run.json").read_text())["stages"]}


def test_every_array_of_the_synthetic_run_is_declared_and_readable(synthetic):
    entries = _run_entries(synthetic)
    SCHEMA.check_entries(entries, conditions=CONDITIONS, dims={"k": 8})
    seen = set()
    for stage, entry in entries.items():
        for array, arr in entry.arrays.items():
            spec, condition = SCHEMA.parse(stage, array)
            assert synthetic.array(stage, spec.field, condition) is arr
            seen.add((stage, spec.field))
    # The synthetic run holds every declared array but those of the pipeline's own simulation and permutations,
    # and the file-column map of user files with voxels left out (tests/test_published_layouts.py has it).
    declared = {(stage, spec.field) for stage, st in SCHEMA.stages.items() for spec in st.arrays}
    assert declared - seen == {("dataset", "truth_labels_train"), ("dataset", "truth_labels_test"),
                               ("stats", "p_perm"), ("stats", "q_perm"), ("dataset", "voxel_index")}


def test_results_accessors_on_the_synthetic_run(synthetic):
    st = synthetic.stats("on")
    assert {"r", "p", "q", "significant", "bin", "valid", "cc_max", "r_norm"} <= set(st)
    np.testing.assert_array_equal(st["r"], synthetic.table["r_on"])
    geo = synthetic.geometry()
    assert geo["ijk"].shape == (synthetic.n_voxels, 3) and geo["ijk"].dtype == np.int16
    assert set(synthetic.truth()) == {"truth_signal_fraction", "truth_on_share", "truth_dominant_on", "truth_null",
                                      "truth_early_visual", "truth_object_scene", "truth_unique_on",
                                      "truth_unique_off", "truth_shared", "truth_delta_r", "truth_ar_phi",
                                      "truth_null_contrast"}
    voxels, coords = synthetic.umap("off")
    assert coords.shape == (voxels.size, 3)
    with pytest.raises(KeyError, match="holds no array 'p_perm_on'"):
        synthetic.array("stats", "p_perm", "on")


@pytest.mark.slow
def test_every_array_of_a_real_tiny_run_is_declared(tmp_path, s1_geometry, cortex_cache_dir):
    """The tiny simulated run of tests/test_pipeline.py up to UMAP, the thumbnails, the contrasts and the joint
    model (the cortex
    stage, ~50 s more, is left out): each commit was checked as it was made; here the entries are checked
    together."""
    import shutil
    from pathlib import Path

    from core.config import load_config
    from test_pipeline import TINY
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text(TINY % 0)
    cfg = load_config(cfg_file, None)
    out = tmp_path / "out"
    (out / "cache" / "cortex").mkdir(parents=True)
    for f in Path(cortex_cache_dir).glob("geometry_*.npz"):
        shutil.copy(f, out / "cache" / "cortex" / f.name)
    entries = Pipeline(cfg, out, device="cpu", progress=False).run(["umap", "thumbnails", "contrasts", "joint"],
                                                                   parallel=1)
    assert "contrasts" in entries and "joint" in entries
    assert {SCHEMA.parse("joint", a)[0].field for a in entries["joint"].arrays} == \
        {spec.field for spec in SCHEMA.stages["joint"].arrays}
    SCHEMA.check_entries(entries, conditions=tuple(cfg.features.modes), dims={"k": cfg.rsa.k})
    for stage, entry in entries.items():
        assert all(SCHEMA.parse(stage, a) is not None for a in entry.arrays), stage
