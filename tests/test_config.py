"""The typed run config: presets, TOML overrides, errors naming unknown keys, stage hashes."""
import dataclasses

import pytest
import torch

from core._validation import InputError
from core.config import PRESETS, config_hash, load_config, make_config


def test_paper_preset_matches_the_study():
    cfg = PRESETS["paper"]
    assert (cfg.simulation.n_train, cfg.simulation.n_test) == (7200, 600)
    assert cfg.stats.rule == "p" and cfg.stats.level == 0.01
    assert cfg.stats.bin_edges == (0.0, 0.1, 0.2, 0.3)
    assert cfg.features.layer == "pool" and cfg.features.input_size == 224
    assert cfg.data.mask == "thick" and cfg.simulation.n_voxels == 0  # the full mask


def test_paper_sim_is_the_study_scale_on_simulated_data():
    """paper-sim differs from paper in simulating the study's 70,933 voxels (a subset of S1's thick mask,
    80,615 voxels) in 12 runs, and in the FIR delays its haemodynamic response needs; its run id and every stage
    key differ from paper's, so the two never share a cache entry."""
    ps, p = PRESETS["paper-sim"], PRESETS["paper"]
    assert ps.simulation.n_voxels == 70_933 and ps.data.kind == "simulated" and ps.data.mask == "thick"
    assert (ps.simulation.n_train, ps.simulation.n_test, ps.simulation.image_size) == (7200, 600, 224)
    assert ps.features == p.features and ps.stats == p.stats
    assert ps.simulation.n_runs == 12 and ps.simulation.hrf and ps.encoding.delays == (1, 2, 3, 4)
    assert dataclasses.replace(ps.encoding, delays=()) == p.encoding
    assert ps.rsa == p.rsa and ps.umap == p.umap
    assert config_hash(ps, "simulation") != config_hash(p, "simulation")
    assert load_config(None, "paper-sim") == ps


def test_demo_is_smaller_than_paper():
    d, p = PRESETS["demo"], PRESETS["paper"]
    assert d.simulation.n_train < p.simulation.n_train and d.features.input_size < p.features.input_size
    # Runs, haemodynamics and the delays that model it.
    assert d.simulation.n_runs == 5 and d.simulation.hrf and d.encoding.delays == (1, 2, 3, 4)


@pytest.mark.parametrize("override, fieldname", [
    ({"n_runs": 0}, "simulation.n_runs"), ({"n_runs": 600}, "simulation.n_runs"),
    ({"tr": 0.0}, "simulation.tr"), ({"ar_range": [0.5, 0.2]}, "simulation.ar_range"),
    ({"ar_range": [0.2, 1.0]}, "simulation.ar_range"), ({"ar_range": [0.2]}, "simulation.ar_range"),
    ({"null_contrast_fraction": 1.0}, "simulation.null_contrast_fraction")])
def test_bad_simulation_settings_are_named(override, fieldname):
    with pytest.raises(InputError) as err:
        make_config("demo", {"simulation": override})
    assert err.value.field == fieldname


@pytest.mark.parametrize("override, fieldname, match", [
    ({"n_steps": 0}, "joint.n_steps", "an integer from 1"), ({"voxels": "significant"}, "joint.voxels", "predicted"),
    ({"uniform": "yes"}, "joint.uniform", "expected bool")])
def test_bad_joint_settings_are_named(override, fieldname, match):
    with pytest.raises(InputError, match=match) as err:
        make_config("demo", {"joint": override})
    assert err.value.field == fieldname


def test_white_noise_simulation_from_toml_integers():
    cfg = make_config("demo", {"simulation": {"ar_range": [0, 0], "hrf": False}})
    assert cfg.simulation.ar_range == (0.0, 0.0) and not cfg.simulation.hrf


def test_toml_overrides_any_field(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('preset = "demo"\n[umap]\nseed = 7\n[encoding]\ndelays = [1, 2, 3]\nalpha_min_log10 = -1\n')
    cfg = load_config(f)
    assert cfg.umap.seed == 7 and cfg.encoding.delays == (1, 2, 3) and cfg.encoding.alpha_min_log10 == -1.0
    assert cfg.simulation.n_train == PRESETS["demo"].simulation.n_train


def test_unknown_key_is_named(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text("[umap]\nseeed = 7\n")
    with pytest.raises(InputError, match=r"c.toml.*unknown setting\(s\) umap.seeed.*allowed here: .*seed"):
        load_config(f)


def test_unknown_section_is_named():
    with pytest.raises(InputError, match="unknown setting.*ridge"):
        make_config("demo", {"ridge": {"alpha": 1}})


def test_wrong_type_is_named():
    with pytest.raises(InputError, match="'stats.level': expected float, found str"):
        make_config("demo", {"stats": {"level": "0.01"}})


def test_bad_values_are_rejected():
    with pytest.raises(InputError, match="stats.rule"):
        make_config("demo", {"stats": {"rule": "bonferroni"}})
    with pytest.raises(InputError, match="umap.n_neighbors.*rsa.k"):
        make_config("demo", {"umap": {"n_neighbors": 30}})
    with pytest.raises(InputError, match="bin_edges"):
        make_config("demo", {"stats": {"bin_edges": [0.0, 0.3, 0.2]}})


def test_invalid_toml_and_missing_file(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text("[umap\nseed=")
    with pytest.raises(InputError, match="bad.toml.*not valid TOML"):
        load_config(f)
    with pytest.raises(InputError, match="config file not found"):
        load_config(tmp_path / "nope.toml")
    with pytest.raises(InputError, match="unknown preset 'huge'"):
        make_config("huge")


def test_stage_hashes_depend_only_on_their_fields():
    a = make_config("demo")
    b = make_config("demo", {"umap": {"seed": 1}})
    assert config_hash(a, "encoding", "features") == config_hash(b, "encoding", "features")
    assert config_hash(a, "umap") != config_hash(b, "umap")
    c = make_config("demo", {"stats": {"level": 0.05}})
    assert config_hash(a, "encoding") == config_hash(c, "encoding")
    assert config_hash(a, "stats") != config_hash(c, "stats")


def test_feature_batch_size_auto_and_explicit():
    from core.pipeline.inputs import feature_batch_size
    auto = make_config("demo")
    assert auto.features.batch_size == 0
    assert feature_batch_size(auto, torch.device("cpu")) == 32
    assert feature_batch_size(auto, torch.device("cuda", 0)) == 128  # a device object needs no GPU
    assert feature_batch_size(auto, "cuda") == 128
    fixed = make_config("demo", {"features": {"batch_size": 8}})
    assert feature_batch_size(fixed, torch.device("cuda")) == 8
    with pytest.raises(InputError, match="features.batch_size"):
        make_config("demo", {"features": {"batch_size": -1}})
