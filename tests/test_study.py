"""Studies (core.study): a study file expands into runs; they run as tasks on a Dask LocalCluster (bound to
loopback) into one results folder, and each run's arrays are those ``precompute.py`` computes for it alone."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core._validation import InputError
from core.study.spec import expand_study, load_study, to_toml
from core.testing.studies import tiny_study

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow

_STUDY = tiny_study().replace('layers = ["layer4", "pool"]', 'layers = ["layer4", "pool"]\nretries = 1')


def _precompute(args, env=None):
    return subprocess.run([sys.executable, str(ROOT / "precompute.py"), *args], capture_output=True, text=True,
                          cwd=ROOT, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                      "ATTNBRAIN_PARALLEL_STAGES": "1", **(env or {})})


def test_a_study_file_expands_into_subject_x_layer_x_weights_runs(tmp_path):
    f = tmp_path / "study.toml"
    f.write_text(_STUDY)
    study = load_study(f)
    assert [r.label for r in study.runs] == ["sim-1/layer4/auto", "sim-1/pool/auto", "sim-2/layer4/auto",
                                             "sim-2/pool/auto"]
    assert [r.cfg.features.layer for r in study.runs] == ["layer4", "pool", "layer4", "pool"]
    assert [r.cfg.simulation.subject for r in study.runs] == [0, 0, 2, 2]
    assert all(r.simulated for r in study.runs) and study.retries == 1
    # Every run's config written as TOML reads back to the same config (what its precompute.py runs).
    from core.config import load_config
    for r in study.runs:
        (tmp_path / "run.toml").write_text(to_toml(r.cfg))
        assert load_config(tmp_path / "run.toml") == r.cfg


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("study"), "needs a \\[study\\] table"),
    (lambda d: d["study"].update(layers=[]), "study.layers.*non-empty list"),
    (lambda d: d["study"].update(layers=["pool", "pool"]), "listed twice"),
    (lambda d: d["study"].update(colour="red"), "unknown setting\\(s\\) study.colour"),
    (lambda d: d["study"]["subjects"].append({"label": "sim-1"}), "subject 'sim-1' is listed twice"),
    (lambda d: d["study"].update(layers=["layer9"]), "run sim-1/layer9/auto"),
    (lambda d: d["study"]["subjects"][0].update(colour=1), "a subject has label, data"),
])
def test_bad_study_files_are_one_clear_error(edit, match):
    import tomllib
    doc = tomllib.loads(_STUDY)
    edit(doc)
    with pytest.raises(InputError, match=match):
        expand_study(doc)


def test_each_localcluster_worker_of_a_gpu_machine_gets_one_gpu():
    from core.study.execute import gpu_env
    assert [gpu_env(i, 2) for i in range(4)] == [{"CUDA_VISIBLE_DEVICES": v} for v in ("0", "1", "0", "1")]
    assert gpu_env(3, 0) == {} and gpu_env("tcp://w", 2) == {}


def test_a_localcluster_study_equals_each_run_alone(tmp_path):
    """4 tiny runs (2 simulated subjects x 2 layers) as a study on a LocalCluster of 2 workers: every run done,
    the study summary lists them, and each run's arrays equal those of precompute.py run alone on its config."""
    from core.outputs.reader import open_results
    from core.study.execute import study_id
    f = tmp_path / "study.toml"
    f.write_text(_STUDY)
    out = tmp_path / "study_out"
    dry = _precompute(["study", str(f), "--out", str(out), "--dry-run", "--stages", "umap"])
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.count("(run ") == 4 and "compute" in dry.stdout and not out.exists()
    proc = _precompute(["study", str(f), "--out", str(out), "--workers", "2", "--stages", "umap"])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Dask scheduler tcp://127.0.0.1:" in proc.stdout
    import re
    assert re.search(r"running [12],", proc.stdout), proc.stdout       # the progress counts saw runs running
    study = load_study(f)
    summary = json.loads((out / f"study-{study_id(study)}.json").read_text())
    assert summary["counts"] == {"queued": 0, "running": 0, "done": 4, "bad input": 0, "failed": 0}
    for r, entry in zip(study.runs, summary["runs"]):
        assert entry["label"] == r.label and entry["state"] == "done"
        assert Path(entry["log"]).is_file()
        alone = tmp_path / f"alone-{entry['label'].replace('/', '_')}"
        (tmp_path / "run.toml").write_text(to_toml(r.cfg))
        single = _precompute(["--config", str(tmp_path / "run.toml"), "--out", str(alone), "--quiet", "--stages",
                              "umap"])
        assert single.returncode == 0, single.stderr
        a, b = open_results(alone), open_results(out, run_id=entry["run_id"])
        assert a.run_id == b.run_id
        for stage in ("dataset", "encoding", "stats", "umap"):
            for name, arr in a.stage(stage).arrays.items():
                np.testing.assert_array_equal(np.asarray(b.stage(stage).arrays[name]), np.asarray(arr),
                                              err_msg=f"{entry['label']} {stage} {name}")
    # The simulated subjects differ in planted weights and noise, not in stimuli.
    s1 = open_results(out, run_id=summary["runs"][1]["run_id"])
    s2 = open_results(out, run_id=summary["runs"][3]["run_id"])
    assert not np.array_equal(np.asarray(s1.array("encoding", "measured")), np.asarray(s2.array("encoding",
                                                                                                "measured")))
    np.testing.assert_array_equal(np.asarray(s1.array("features", "X", "on")), np.asarray(s2.array("features", "X",
                                                                                                 "on")))


def test_a_killed_worker_is_retried_and_a_bad_input_is_reported_without_stopping_the_others(tmp_path):
    """The Dask worker running one run is SIGKILLed 3 s into it (once): the study still completes, that run is
    run again on a live worker (its log holds both attempts) and continues; a run with a bad input (a checkpoint
    that does not exist) is reported with its error line and never retried; every stage entry left in the
    folder is whole, and no temporary is left."""
    from core.outputs.reader import open_results
    from core.study.execute import study_id
    f = tmp_path / "study.toml"
    f.write_text(_STUDY.replace('layers = ["layer4", "pool"]', 'layers = ["pool"]\nweights = ["auto", "missing.pth"]')
                 .split("[[study.subjects]]")[0])
    out = tmp_path / "out"
    once = tmp_path / "killed-once"
    proc = _precompute(["study", str(f), "--out", str(out), "--workers", "2", "--stages", "umap"],
                       env={"ATTNBRAIN_STUDY_FAULT": "kill-worker:sim-1__pool__auto:3", "ATTNBRAIN_FAULT_ONCE": str(once)})
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]   # not every run done: the bad input
    assert once.is_file()                                                   # the worker was killed
    summary = json.loads((out / f"study-{study_id(load_study(f))}.json").read_text())
    states = {r["label"]: r for r in summary["runs"]}
    assert summary["counts"] == {"queued": 0, "running": 0, "done": 1, "bad input": 1, "failed": 0}
    good, bad = states["sim-1/pool/auto"], states["sim-1/pool/missing"]
    assert good["state"] == "done"
    assert Path(good["log"]).read_text().count("--- ") == 2                # the killed attempt and the retry
    assert bad["state"] == "bad input" and "checkpoint file not found" in bad["error"]
    assert Path(bad["log"]).read_text().count("--- ") == 1                 # never retried
    res = open_results(out, run_id=good["run_id"])
    assert res.has_stage("umap")
    for entry in (out / "cache" / "stages").iterdir():
        assert (entry / "meta.json").is_file(), entry
    assert not list((out / "cache" / "stages").glob(".*.tmp-*"))


def test_a_study_runs_on_a_real_slurm_through_dask_jobqueue(tmp_path):
    """A single-node SLURM started here (tests/slurm_node.py); a 2-run study with --cluster slurm: its runs are
    SLURM jobs (dask_jobqueue.SLURMCluster, workers on loopback), both done, each equal to the run alone."""
    from core.outputs.reader import open_results
    from core.study.execute import study_id
    from slurm_node import slurm_node
    f = tmp_path / "study.toml"
    f.write_text(_STUDY.split("[[study.subjects]]")[0]
                 + f'[cluster]\npartition = "debug"\ncores = 1\nmemory = "3GB"\nwalltime = "00:20:00"\n'
                   f'interface = "lo"\nmax_jobs = 2\nlog_directory = "{tmp_path / "jobs"}"\n')
    out = tmp_path / "out"
    with slurm_node(tmp_path / "slurm") as env:
        proc = _precompute(["study", str(f), "--out", str(out), "--cluster", "slurm", "--stages", "umap"],
                           env={"SLURM_CONF": env["SLURM_CONF"]})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Dask scheduler tcp://127.0.0.1:" in proc.stdout
    assert list((tmp_path / "jobs").glob("dask-worker-*.out"))          # the workers ran as SLURM jobs
    study = load_study(f)
    summary = json.loads((out / f"study-{study_id(study)}.json").read_text())
    assert summary["counts"]["done"] == 2
    for r, entry in zip(study.runs, summary["runs"]):
        alone = tmp_path / f"alone-{r.layer}"
        (tmp_path / "run.toml").write_text(to_toml(r.cfg))
        assert _precompute(["--config", str(tmp_path / "run.toml"), "--out", str(alone), "--quiet", "--stages",
                            "umap"]).returncode == 0
        a, b = open_results(alone), open_results(out, run_id=entry["run_id"])
        for name, arr in a.stage("stats").arrays.items():
            np.testing.assert_array_equal(np.asarray(b.stage("stats").arrays[name]), np.asarray(arr))


def test_a_study_and_a_single_precompute_share_one_folder(tmp_path):
    """A 2-run study and, started at the same time, a single precompute.py of a third run that shares their
    dataset and features (another UMAP seed) on the same folder: all finish (no deadlock), each shared stage
    entry exists once, and nothing is left half-written."""
    f = tmp_path / "study.toml"
    f.write_text(_STUDY.split("[[study.subjects]]")[0].replace('layers = ["layer4", "pool"]', 'layers = ["pool"]\n'
                                                                'weights = ["auto", "random"]'))
    single = tmp_path / "single.toml"
    single.write_text(_STUDY.split("[study]")[0] + "[umap]\nseed = 7\n")
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ATTNBRAIN_PARALLEL_STAGES": "1"}
    procs = [subprocess.Popen([sys.executable, str(ROOT / "precompute.py"), *args], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for args in (["study", str(f), "--out", str(out), "--workers", "1", "--stages", "umap"],
                          ["--config", str(single), "--out", str(out), "--quiet", "--stages", "umap"])]
    for p in procs:
        o, e = p.communicate(timeout=900)
        assert p.returncode == 0, o[-2000:] + e[-2000:]
    summaries = [json.loads(s.read_text()) for s in out.glob("*/summary.json")]
    assert len(summaries) == 3
    keys = [s["stage_keys"] for s in summaries]
    for name in ("dataset", "features", "encoding"):
        for key in {k[name] for k in keys}:
            assert (out / "cache" / "stages" / f"{name}-{key}" / "meta.json").is_file()
    # The single run and the study's "auto" run share everything up to the UMAP.
    assert len({k["rsa"] for k in keys}) == 2
    assert not list((out / "cache" / "stages").glob(".*.tmp-*"))


def test_the_group_table_summarises_each_run_and_roi_against_brute_force(tmp_path):
    """A study whose runs include a layer before layer4 (identical on and off features: r_on = r_off exactly,
    the built-in negative control) and pool: the group table's numbers equal those computed here from each run's
    arrays."""
    from core.outputs.reader import open_results
    from core.study.execute import study_id
    from core.study.group import GROUP_COLUMNS, group_table
    f = tmp_path / "study.toml"
    f.write_text(_STUDY.split("[[study.subjects]]")[0].replace('layers = ["layer4", "pool"]',
                                                              'layers = ["layer3", "pool"]'))
    out = tmp_path / "out"
    proc = _precompute(["study", str(f), "--out", str(out), "--workers", "2", "--stages", "contrasts,umap"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((out / f"study-{study_id(load_study(f))}.json").read_text())
    table = group_table(out, summary)
    assert list(table.columns) == list(GROUP_COLUMNS)
    import pandas as pd
    written = pd.read_csv(out / f"study-{summary['id']}-group.csv", keep_default_na=False, na_values=[""])
    assert list(written.columns) == list(GROUP_COLUMNS) and len(written) == len(table)
    assert set(table["layer"]) == {"layer3", "pool"}
    for entry in summary["runs"]:
        res = open_results(out, run_id=entry["run_id"])
        rows = table[table["run_id"] == entry["run_id"]]
        r_on, r_off = (np.asarray(res.stats(m)["r"], np.float64) for m in ("on", "off"))
        roi = np.asarray(res.geometry()["roi"])
        for _, row in rows.iterrows():
            mask = np.ones(r_on.size, bool) if row["roi"] == "all" else roi == res.roi_names.index(row["roi"])
            assert row["n_voxels"] == mask.sum()
            assert row["median_r_on"] == pytest.approx(np.median(r_on[mask]), abs=1e-12)
            assert row["share_sig_off"] == pytest.approx(np.asarray(res.stats("off")["significant"])[mask].mean())
            outcome = np.asarray(res.contrast("on_off")["outcome"])[mask]
            assert row["share_on_better"] == pytest.approx((outcome == 1).mean())
        shared = entry["layer"] == "layer3"
        assert rows["shared_layer"].all() == shared
        if shared:                                  # attention acts after layer3: on and off are the same model
            np.testing.assert_array_equal(r_on, r_off)
            assert (rows["median_delta_r"] == 0).all() and (rows["share_on_better"] == 0).all()
