"""train-abn: fine-tuning on a tiny generated ImageFolder, checkpoints, resume, and input errors.

Random-init ResNet-50 at 64 px on 2 cores: a few full-batch steps on 3 trivially separable classes.
"""
from __future__ import annotations

import argparse

import numpy as np
import pytest
import torch
from PIL import Image

from core._validation import InputError
from core.model.abn import build_abn, save_checkpoint
from core.model.train import _initial_model, add_train_arguments, default_lr_steps, run_train, train_abn

# Shared settings of the tiny runs: 64 px (the minimum), all 6 images in one batch, one step per epoch.
# Solid-colour images make RandomResizedCrop and flips exact no-ops, so every step sees the same batch and
# the step losses trace plain momentum SGD on one objective. lr 0.01: a fresh ResNet-50 ABN overshoots for a
# few steps, then fits; 0.1 (the recipe for batch 256 on ImageNet) diverges on 6 images.
_TINY = dict(batch_size=6, lr=0.01, lr_steps=[], input_size=64, val_fraction=0.0, device="cpu",
             progress=False, weights="random", seed=0)
_CLASSES = {"blue": (40, 60, 220), "green": (40, 190, 40), "red": (210, 40, 40)}


def _make_image_folder(root, n_per_class: int = 2, size: int = 64, seed: int = 0):
    """An ImageFolder of 3 classes of solid-colour images (red, green, blue at random brightness), PNG."""
    rng = np.random.default_rng(seed)
    for name, tint in _CLASSES.items():
        folder = root / name
        folder.mkdir(parents=True)
        for i in range(n_per_class):
            img = np.zeros((size, size, 3)) + np.array(tint) * rng.uniform(0.7, 1.0)
            Image.fromarray(np.rint(img).astype(np.uint8)).save(folder / f"{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return _make_image_folder(tmp_path_factory.mktemp("imagefolder"))


@pytest.fixture(scope="module")
def straight_run(data_dir, tmp_path_factory):
    """16 epochs in one go (one step each)."""
    return train_abn(data_dir, out_dir=tmp_path_factory.mktemp("straight"), epochs=16, **_TINY)


def test_loss_goes_down(straight_run):
    losses = straight_run["step_losses"]
    assert straight_run["steps"] == 16 == len(losses) and straight_run["epochs_completed"] == 16
    # Summed CE of two 3-way branches starts near 2 ln 3 = 2.2 (uninformed guesses).
    assert abs(losses[0] - 2 * np.log(3)) < 0.5
    # After the early overshoot the fit settles: seeds 0-2 of this setup end at 0.47-0.82, a fifth to a
    # third of the start; half the start leaves room for other CPUs' rounding.
    assert np.mean(losses[-3:]) < 0.5 * losses[0]
    assert straight_run["n_train"] == 6 and straight_run["n_val"] == 0
    assert straight_run["classes"] == sorted(_CLASSES)
    assert [e["epoch"] for e in straight_run["history"]] == list(range(1, 17))
    assert all(e["lr"] == 0.01 for e in straight_run["history"])


def test_checkpoint_reloads_to_identical_outputs(straight_run):
    model = straight_run["model"]
    reloaded = build_abn(straight_run["checkpoint"])
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for a, b in zip(model.eval()(x), reloaded(x), strict=True):
            assert torch.equal(a, b)
    payload = torch.load(straight_run["checkpoint"], weights_only=True)
    assert payload["epoch"] == 16 and payload["step"] == 16 and payload["classes"] == straight_run["classes"]
    assert build_abn(straight_run["checkpoint"]).fc.out_features == 3


def test_resumed_run_reproduces_the_straight_run(straight_run, data_dir, tmp_path):
    first = train_abn(data_dir, out_dir=tmp_path, epochs=2, **_TINY)
    assert first["epochs_completed"] == 2
    resumed = train_abn(data_dir, out_dir=tmp_path, epochs=4, **_TINY)
    assert resumed["steps"] == 4 and len(resumed["step_losses"]) == 2 and len(resumed["history"]) == 4
    # The losses after the restart depend on the restored weights, BatchNorm statistics, momentum buffers
    # and per-epoch seeds: on the same CPU they must equal the uninterrupted run's bit for bit.
    np.testing.assert_array_equal(first["step_losses"] + resumed["step_losses"], straight_run["step_losses"][:4])
    again = train_abn(data_dir, out_dir=tmp_path, epochs=4, **_TINY)  # nothing left to do
    assert again["steps"] == 4 and again["step_losses"] == []


def test_max_steps_resume_and_the_command_line(data_dir, tmp_path, capsys):
    parser = add_train_arguments(argparse.ArgumentParser())

    def cli(max_steps: str) -> str:
        args = parser.parse_args(["--data", str(data_dir), "--out", str(tmp_path), "--epochs", "2",
                                  "--batch-size", "1", "--input-size", "64", "--lr", "0.01", "--max-steps",
                                  max_steps, "--device", "cpu", "--weights", "random", "--workers", "0",
                                  "--no-progress", "--val-fraction", "0.34"])
        assert run_train(args) == 0
        return capsys.readouterr().out

    # 1 of 2 images per class is held out: 3 training images, 3 steps per epoch at batch size 1.
    out = cli("1")
    assert "0 epochs, 1 steps, 3 classes (3 train / 3 val images)" in out and "val top-1 attention" in out
    payload = torch.load(tmp_path / "last.pt", weights_only=True)
    # Epoch 1 was cut short: it is not counted, no best model yet, and a resumed run restarts it.
    assert payload["step"] == 1 and payload["epoch"] == 0 and not (tmp_path / "best.pt").exists()
    out = cli("4")
    assert "1 epochs, 4 steps" in out and "best:" in out
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    # Top-1 on 3 validation images is a multiple of 1/3.
    assert best["epoch"] == 1 and abs(best["val_top1_per"] * 3 - round(best["val_top1_per"] * 3)) < 1e-9


def test_new_classes_reinitialise_the_heads(tmp_path):
    src = build_abn("random", seed=4)  # a 1000-class network
    path = save_checkpoint(src, tmp_path / "imagenet.pt")
    with pytest.warns(UserWarning, match=r"1000 classes, the data 3: re-initialised att_conv, att_conv2, "
                                         r"att_conv3, bn_att2, fc"):
        model = _initial_model(path, 3, seed=0)
    assert model.fc.weight.shape == (3, 2048) and model.att_conv.weight.shape == (3, 2048, 1, 1)
    assert torch.equal(model.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    assert torch.equal(model.bn_att3.running_var, src.bn_att3.running_var)


def test_default_schedule_scales_the_official_one():
    assert default_lr_steps(90) == [31, 61]  # the official ImageNet recipe
    assert default_lr_steps(10) == [3, 7]
    assert default_lr_steps(1) == []


def test_bad_folders_are_input_errors(tmp_path, data_dir):
    with pytest.raises(InputError, match=r"missing.*'data'.*folder not found"):
        train_abn(tmp_path / "missing", out_dir=tmp_path / "o", epochs=1, batch_size=2, device="cpu")
    empty = tmp_path / "empty"
    (empty / "cats").mkdir(parents=True)
    (empty / "dogs").mkdir()
    with pytest.raises(InputError, match=r"empty.*not an ImageNet-style folder"):
        train_abn(empty, out_dir=tmp_path / "o", epochs=1, batch_size=2, device="cpu")
    flat = tmp_path / "flat"
    flat.mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(flat / "a.png")
    with pytest.raises(InputError, match=r"flat.*not an ImageNet-style folder"):
        train_abn(flat, out_dir=tmp_path / "o", epochs=1, batch_size=2, device="cpu")
    one = tmp_path / "one"
    (one / "cats").mkdir(parents=True)
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(one / "cats" / "a.png")
    with pytest.raises(InputError, match=r"at least 2 class sub-folders.*found 1 \(cats\)"):
        train_abn(one, out_dir=tmp_path / "o", epochs=1, batch_size=2, device="cpu")
    with pytest.raises(InputError, match=r"'input_size'.*at least 64"):
        train_abn(data_dir, out_dir=tmp_path / "o", epochs=1, batch_size=2, device="cpu", input_size=32)
    with pytest.raises(InputError, match=r"'val_fraction'.*\[0, 1\)"):
        train_abn(data_dir, out_dir=tmp_path / "o", epochs=1, batch_size=2, device="cpu", val_fraction=1.0)


def test_resume_refuses_a_checkpoint_of_other_classes(data_dir, tmp_path):
    model = build_abn("random", num_classes=3)
    save_checkpoint(model, tmp_path / "last.pt", classes=["a", "b", "c"], epoch=1, step=1)
    with pytest.raises(InputError, match=r"last\.pt.*'classes'.*\['a', 'b', 'c'\].*--no-resume"):
        train_abn(data_dir, out_dir=tmp_path, epochs=2, batch_size=2, device="cpu")
