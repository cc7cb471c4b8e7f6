"""The ABN model: official layout and checkpoints, weight resolution, and the three perception modes.

References are independent of core.model.abn: torchvision's own ResNet-50 (for the backbone and the 'off' mode)
and hand-built official-format checkpoint files.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from torchvision.models import resnet50

from core._validation import InputError
from core.model.abn import (
    ABN,
    RandomWeightsWarning,
    UntrainedAttentionWarning,
    build_abn,
    save_checkpoint,
    weights_fingerprint,
)

_BACKBONE = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "fc.")


@pytest.fixture(scope="module")
def model() -> ABN:
    m = build_abn("random", seed=1)
    _randomise_bn_stats(m, seed=1)
    return m


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    # 3 images at 64 px (the smallest supported size) keep ResNet-50 forward passes cheap on 2 cores.
    return torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _randomise_bn_stats(m: torch.nn.Module, seed: int) -> None:
    """Give every BatchNorm non-default running statistics, so a load that skipped buffers would show."""
    gen = torch.Generator().manual_seed(seed)
    for mod in m.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            n = mod.num_features
            mod.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            mod.running_var.copy_(1.0 + 0.2 * torch.rand(n, generator=gen))
            mod.num_batches_tracked.fill_(7)


def _official_file(model: ABN, path, *, rename: dict[str, str] | None = None) -> None:
    """A checkpoint laid out like the official ABN release: DataParallel prefix, outer dict, no BN counters."""
    sd = {f"module.{k}": v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for old, new in (rename or {}).items():
        sd[new] = sd.pop(old)
    torch.save({"epoch": 90, "arch": "resnet50", "state_dict": sd, "best_acc": 76.9, "optimizer": {}}, path)


def _outputs(m: ABN, x: torch.Tensor):
    with torch.inference_mode():
        return m.eval()(x)


def _torchvision_copy(m: ABN) -> torch.nn.Module:
    """torchvision's own ResNet-50 holding our backbone weights (strict: every backbone key must match)."""
    tv = resnet50(weights=None, num_classes=m.num_classes)
    tv.load_state_dict({k: v for k, v in m.state_dict().items() if k.startswith(_BACKBONE)}, strict=True)
    return tv.eval()


def test_state_dict_has_the_official_layout(model):
    sd = model.state_dict()
    # 398 entries = the official ResNet-50 ABN's parameters and buffers, 66 of them BN counters.
    assert len(sd) == 398
    assert sum(not k.endswith("num_batches_tracked") for k in sd) == 332
    assert sd["att_conv3.weight"].shape == (1, 1000, 3, 3)
    assert sd["att_conv.weight"].shape == (1000, 2048, 1, 1)
    assert sd["att_conv2.weight"].shape == (1000, 1000, 1, 1)
    assert sd["bn_att3.weight"].shape == (1,)
    # att_layer4 is layer4 built with stride 1: same tensors, layer3's resolution kept.
    for k, v in sd.items():
        if k.startswith("layer4."):
            assert sd["att_" + k].shape == v.shape
    assert model.layer4[0].conv2.stride == (2, 2) and model.att_layer4[0].conv2.stride == (1, 1)
    assert model.att_conv3.padding == (1, 1) and model.att_conv3.bias is None


def test_official_checkpoint_loads_strictly_and_bit_for_bit(model, x, tmp_path):
    path = tmp_path / "resnet50_abn.pth.tar"
    _official_file(model, path)
    loaded = build_abn(path, seed=123)  # another seed: everything must come from the file
    for k, v in model.state_dict().items():
        if not k.endswith("num_batches_tracked"):
            assert torch.equal(loaded.state_dict()[k], v), k
    for a, b in zip(_outputs(model, x), _outputs(loaded, x), strict=True):
        assert torch.equal(a, b)  # same weights, same ops, same machine: exactly equal
    assert weights_fingerprint(loaded) == weights_fingerprint(model)


def test_checkpoint_with_a_wrong_key_names_it(model, tmp_path):
    path = tmp_path / "renamed.pth.tar"
    _official_file(model, path, rename={"module.att_conv3.weight": "module.att_conv3x3.weight"})
    with pytest.raises(InputError, match=r"renamed\.pth\.tar.*missing keys 1 \(att_conv3\.weight\).*"
                                         r"unexpected keys 1 \(att_conv3x3\.weight\)"):
        build_abn(path)


def test_checkpoint_with_a_wrong_shape_names_it(model, tmp_path):
    sd = dict(model.state_dict())
    sd["bn_att3.weight"] = torch.ones(2)
    path = tmp_path / "shape.pt"
    torch.save(sd, path)  # a bare state dict is accepted too
    with pytest.raises(InputError, match=r"wrong shape.*bn_att3\.weight \(2,\) vs \(1,\)"):
        build_abn(path)


def test_missing_and_broken_checkpoints_are_input_errors(tmp_path):
    with pytest.raises(InputError, match=r"nowhere\.pth.*file not found"):
        build_abn(tmp_path / "nowhere.pth")
    broken = tmp_path / "broken.pth"
    broken.write_bytes(b"PK\x03\x04 this is not a checkpoint")
    with pytest.raises(InputError, match=r"broken\.pth.*could not be read as a PyTorch checkpoint"):
        build_abn(broken)
    not_weights = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(InputError, match=r"list\.pth.*expected a state dict"):
        build_abn(not_weights)


def test_our_checkpoint_round_trip_and_fingerprint(model, x, tmp_path):
    path = save_checkpoint(model, tmp_path / "sub" / "ours.pt", epoch=3, classes=["a", "b"])
    assert not [p for p in path.parent.iterdir() if p.name != "ours.pt"]  # no temporary file left behind
    payload = torch.load(path, weights_only=True)
    assert payload["epoch"] == 3 and payload["format"] == "attnbrain-abn/1"
    loaded = build_abn(path)
    for a, b in zip(_outputs(model, x), _outputs(loaded, x), strict=True):
        assert torch.equal(a, b)
    fp = weights_fingerprint(loaded)
    assert fp == weights_fingerprint(model) and len(fp) == 16
    with torch.no_grad():
        loaded.layer2[1].conv2.weight[0, 0, 0, 0] += 1e-3
    assert weights_fingerprint(loaded) != fp


def test_checkpoint_class_count_is_read_from_the_file(tmp_path):
    small = build_abn("random", num_classes=3)
    path = save_checkpoint(small, tmp_path / "three.pt")
    assert build_abn(path).fc.out_features == 3
    with pytest.raises(InputError, match=r"three\.pt.*3-class network.*num_classes=5"):
        build_abn(path, num_classes=5)


def test_random_init_is_seeded_and_warns_loudly(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: nothing to find
    with pytest.warns(RandomWeightsWarning, match="RANDOM weights.*only meaningful for the simulation"):
        a = build_abn(None, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 'random' was asked for explicitly: no warning
        b = build_abn("random", seed=5)
    assert weights_fingerprint(a) == weights_fingerprint(b)
    assert weights_fingerprint(build_abn("random", seed=6)) != weights_fingerprint(a)


def test_torchvision_weights_are_taken_from_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    assert torch.hub.get_dir().startswith(str(tmp_path))
    tv = resnet50(weights=None)
    _randomise_bn_stats(tv, seed=3)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    # The file name torchvision's IMAGENET1K_V1 download would have.
    torch.save(tv.state_dict(), cache / "resnet50-0676ba61.pth")
    with pytest.warns(UntrainedAttentionWarning, match="attention branch.*untrained"):
        m = build_abn("auto")
    sd = m.state_dict()
    for k, v in tv.state_dict().items():
        assert torch.equal(sd[k], v), k
    for k, v in tv.state_dict().items():
        if k.startswith("layer4."):
            assert torch.equal(sd["att_" + k], v), k  # warm start of the attention trunk


def test_off_is_torchvision_resnet50(model, x):
    tv = _torchvision_copy(model)
    with torch.inference_mode():
        g = model.trunk(x)
        M, _ = model.attention(g)
        pooled, logits, fmap = model.perception(g, M, "off")
        ref_g = tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
        ref_map = tv.layer4(g)
        ref_logits = tv(x)
    # Same modules and kernels on the same inputs: bit-identical, no tolerance needed.
    assert torch.equal(g, ref_g)
    assert torch.equal(fmap, ref_map)
    assert torch.equal(pooled, tv.avgpool(ref_map).flatten(1))
    # tv(x) recomputes the trunk in one pass: equal up to float32 summation order (relative 1e-5).
    torch.testing.assert_close(logits, ref_logits, rtol=1e-5, atol=1e-5 * float(ref_logits.abs().max()))


def test_on_and_uniform_modulate_layer4_input(model, x):
    tv = _torchvision_copy(model)
    with torch.inference_mode():
        g = model.trunk(x)
        M, att_logits = model.attention(g)
        assert M.shape == (3, 1, 4, 4) and att_logits.shape == (3, 1000)
        assert float(M.min()) >= 0.0 and float(M.max()) <= 1.0
        # Precondition for a meaningful test: the map is not constant within an image.
        assert float(M.flatten(1).std(1).min()) > 0.05
        on = model.perception(g, M, "on")
        off = model.perception(g, M, "off")
        uni = model.perception(g, M, "uniform")
        ref_on = tv.avgpool(tv.layer4(g * (1.0 + M))).flatten(1)
        ref_uni = tv.avgpool(tv.layer4(g * (1.0 + M.mean(dim=(2, 3), keepdim=True)))).flatten(1)
    # g*(1+M) vs the model's g*M+g differ by one float32 rounding per element; through layer4 that stays
    # far below 1e-4 of the feature scale.
    scale = float(ref_on.abs().max())
    torch.testing.assert_close(on[0], ref_on, rtol=1e-4, atol=1e-4 * scale)
    torch.testing.assert_close(uni[0], ref_uni, rtol=1e-4, atol=1e-4 * scale)
    # Attention changes the features substantially (random weights, but a real gain of 1..2 on g).
    rel = float((on[0] - off[0]).norm() / off[0].norm())
    assert rel > 0.05


def test_uniform_has_the_mean_gain_of_on(model, x):
    seen = []
    hook = model.layer4.register_forward_pre_hook(lambda mod, inp: seen.append(inp[0].detach().clone()))
    try:
        with torch.inference_mode():
            g = model.trunk(x)
            M, _ = model.attention(g)
            model.perception(g, M, "on")
            model.perception(g, M, "uniform")
    finally:
        hook.remove()
    mask = g.abs() > 1e-3  # the gain is only observable where g is not ~0
    gains = []
    for inp in seen:
        gain = torch.where(mask, inp / torch.where(mask, g, torch.ones_like(g)), torch.nan)
        # The gain must not depend on the channel: read it per position as the median over channels.
        gains.append(gain.nanmedian(dim=1).values)
    gain_on, gain_uni = gains
    torch.testing.assert_close(gain_on, 1.0 + M[:, 0], rtol=1e-5, atol=1e-5)
    # Same mean gain over positions (float32 rounding only), but uniform has no spatial structure.
    torch.testing.assert_close(gain_uni.mean(dim=(1, 2)), gain_on.mean(dim=(1, 2)), rtol=1e-5, atol=1e-5)
    assert float(gain_uni.std(dim=(1, 2)).max()) < 1e-5
    assert float(gain_on.std(dim=(1, 2)).min()) > 0.05


@pytest.mark.parametrize("size", [(64, 64), (72, 96)])
def test_any_input_of_64px_or_more_runs(model, size):
    xs = torch.zeros(1, 3, *size)
    with torch.inference_mode():
        att, per, M = model(xs)
    assert att.shape == per.shape == (1, 1000)
    assert M.shape == (1, 1, -(-size[0] // 16), -(-size[1] // 16))
    assert bool(torch.isfinite(per).all())


def test_unknown_mode_is_an_input_error(model, x):
    with torch.inference_mode():
        g = model.trunk(x[:1])
        M, _ = model.attention(g)
        with pytest.raises(InputError, match=r"'mode'.*on, off, uniform.*'half'"):
            model.perception(g, M, "half")


def test_forward_is_attention_on(model, x):
    with torch.inference_mode():
        att, per, M = model(x)
        g = model.trunk(x)
        M2, att2 = model.attention(g)
        _, per2, _ = model.perception(g, M2, "on")
    assert torch.equal(att, att2) and torch.equal(per, per2) and torch.equal(M, M2)


def test_attention_map_is_the_attention_branch_map(model, x):
    with torch.inference_mode():
        g = model.trunk(x)
        M, _ = model.attention(g)
        M_only = model.attention_map(g)
    assert torch.equal(M_only, M)
