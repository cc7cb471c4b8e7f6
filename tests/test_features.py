"""Feature extraction (trunk once per batch, modes, layers, invariance, cache) and attention overlays.

References: torchvision's ResNet-50 with the same weights, run on inputs normalised here in float64 numpy;
matplotlib's jet and torch's bilinear resize for the overlays.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.models import resnet50

from core._validation import InputError
from core.model.abn import build_abn
from core.model.features import MODES, extract_features, extract_features_cached, feature_dim
from core.model.overlay import _upsample, attention_overlay, jet, save_overlay_png

_BACKBONE = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.", "fc.")


@pytest.fixture(scope="module")
def model():
    return build_abn("random", seed=2)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """5 smooth 'natural-ish' 64 px images (blurred noise plus a bright blob), seeded."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:64, 0:64]
    out = []
    for _ in range(5):
        base = rng.normal(size=(8, 8, 3)).repeat(8, 0).repeat(8, 1) * 40 + 110
        cy, cx = rng.integers(16, 48, 2)
        base[(yy - cy) ** 2 + (xx - cx) ** 2 < 100] = rng.uniform(150, 255, 3)
        out.append(np.clip(base, 0, 255).astype(np.uint8))
    return np.stack(out)


def _reference_input(images: np.ndarray) -> torch.Tensor:
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    x = (images.astype(np.float64) / 255.0 - mean) / std
    return torch.from_numpy(x.transpose(0, 3, 1, 2).astype(np.float32))


def _torchvision_copy(m) -> torch.nn.Module:
    tv = resnet50(weights=None)
    tv.load_state_dict({k: v for k, v in m.state_dict().items() if k.startswith(_BACKBONE)}, strict=True)
    return tv.eval()


def _close(actual: np.ndarray, desired: np.ndarray, rel: float) -> None:
    """Max abs difference within ``rel`` of the reference's largest magnitude (float32 pipelines)."""
    err = np.abs(actual - desired).max()
    assert err <= rel * np.abs(desired).max(), (err, np.abs(desired).max())


def _count_calls(monkeypatch, module: torch.nn.Module) -> list[int]:
    calls = [0]
    inner = module.forward

    def counted(*args, **kwargs):
        calls[0] += 1
        return inner(*args, **kwargs)

    monkeypatch.setattr(module, "forward", counted)
    return calls


def test_trunk_and_attention_run_once_per_batch(model, images, monkeypatch):
    layer3 = _count_calls(monkeypatch, model.layer3)
    att = _count_calls(monkeypatch, model.att_layer4)
    layer4 = _count_calls(monkeypatch, model.layer4)
    fs = extract_features(model, images, batch_size=2, device="cpu")  # 5 images -> 3 batches
    assert layer3[0] == 3 and att[0] == 3
    assert layer4[0] == 3 * len(MODES)  # only the perception branch runs per mode
    assert set(fs.features) == set(MODES)
    assert fs.features["on"].shape == (5, 2048) and fs.features["on"].dtype == np.float32
    assert fs.attention.shape == (5, 4, 4) and fs.input_size == (64, 64)


def test_modes_match_torchvision_references(model, images):
    fs = extract_features(model, images, batch_size=5, device="cpu")
    tv = _torchvision_copy(model)
    x = _reference_input(images)
    with torch.inference_mode():
        g = tv.layer3(tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))))
        M, _ = model.attention(g)
        ref = {
            "off": tv.avgpool(tv.layer4(g)).flatten(1),
            "on": tv.avgpool(tv.layer4(g * (1 + M))).flatten(1),
            "uniform": tv.avgpool(tv.layer4(g * (1 + M.mean(dim=(2, 3), keepdim=True)))).flatten(1),
        }
    # The inputs differ from ours by float32 vs float64 normalisation rounding (~1e-7 relative); the
    # random network amplifies that by at most a few hundred times: 1e-4 of the feature scale.
    for mode in MODES:
        _close(fs.features[mode], ref[mode].numpy(), 1e-4)
    _close(fs.attention, M[:, 0].numpy(), 1e-4)
    # Attention matters: 'on' is not 'off' (same data, same weights).
    diff = np.linalg.norm(fs.features["on"] - fs.features["off"]) / np.linalg.norm(fs.features["off"])
    assert diff > 0.05


def test_shared_layers_are_one_array_for_all_modes(model, images):
    fs = extract_features(model, images[:2], layer="layer2", device="cpu")
    assert fs.features["on"] is fs.features["off"] is fs.features["uniform"]
    tv = _torchvision_copy(model)
    with torch.inference_mode():
        x = _reference_input(images[:2])
        ref = tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(x)))))).mean(dim=(2, 3))
    assert fs.features["on"].shape == (2, feature_dim("layer2")) == (2, 512)
    _close(fs.features["on"], ref.numpy(), 1e-5)  # a shallower float32 path than the full network


def test_layer4_grid_pool_and_logits_agree(model, images):
    kw = dict(modes=("on", "off"), device="cpu")
    pool = extract_features(model, images[:2], **kw)
    grid = extract_features(model, images[:2], layer="layer4", **kw)
    logits = extract_features(model, images[:2], layer="logits", **kw)
    for mode in ("on", "off"):
        # At 64 px layer4 is 2 x 2, so the 2 x 2 grid is the map itself and its mean is the pooled feature.
        cells = grid.features[mode].reshape(2, 2048, 2, 2)
        _close(cells.mean(axis=(2, 3)), pool.features[mode], 1e-6)
        with torch.inference_mode():
            ref = model.fc(torch.from_numpy(pool.features[mode])).numpy()
        _close(logits.features[mode], ref, 1e-5)
    assert grid.features["on"].shape[1] == feature_dim("layer4") == 8192
    assert logits.features["on"].shape[1] == feature_dim("logits") == 1000


def test_batch_size_and_repeat_invariance(model):
    rng = np.random.default_rng(1)
    imgs = rng.integers(0, 256, size=(32, 64, 64, 3), dtype=np.uint8)
    one = extract_features(model, imgs, batch_size=1, modes=("on", "off"), device="cpu")
    full = extract_features(model, imgs, batch_size=32, modes=("on", "off"), device="cpu")
    again = extract_features(model, imgs, batch_size=32, modes=("on", "off"), device="cpu")
    # Eval-mode BatchNorm makes every image independent; only the convolution kernels' blocking (and so
    # float32 summation order) may change with the batch size: 1e-5 of the feature scale.
    for mode in ("on", "off"):
        _close(one.features[mode], full.features[mode], 1e-5)
        np.testing.assert_array_equal(full.features[mode], again.features[mode])
    # M = sigmoid(z) with |z| up to ~1e3 in this random network: a 1e-6 relative change of z moves M by up
    # to 0.25 * 1e-3 where the sigmoid is steep, so M gets 1e-3 absolute.
    _close(one.attention, full.attention, 1e-3)
    np.testing.assert_array_equal(full.attention, again.attention)


def test_input_sizes(model, images):
    fs = extract_features(model, images[:2], input_size=(64, 96), modes=("off",), device="cpu")
    assert fs.input_size == (64, 96) and fs.attention.shape == (2, 4, 6)
    with pytest.raises(InputError, match=r"'input_size'.*at least 64 x 64 px, found 63 x 63"):
        extract_features(model, images[:1], input_size=63, device="cpu")
    small = np.zeros((1, 48, 80, 3), np.uint8)
    with pytest.raises(InputError, match=r"at least 64 x 64 px, found 48 x 80.*native size"):
        extract_features(model, small, device="cpu")
    # Upscaling a too-small stimulus is allowed once the user asks for a valid size.
    upscaled = extract_features(model, small, input_size=64, modes=("off",), device="cpu")
    assert upscaled.features["off"].shape == (1, 2048)


def test_mixed_sizes_in_a_sequence(model, images):
    big = np.asarray(
        torch.nn.functional.interpolate(torch.from_numpy(images[1:2]).permute(0, 3, 1, 2).float(), size=(80, 72))
        .round().clamp(0, 255).byte().permute(0, 2, 3, 1)[0])
    seq = [images[0], big]
    fs = extract_features(model, seq, input_size=64, modes=("off",), device="cpu")
    alone = extract_features(model, big[None], input_size=64, modes=("off",), device="cpu")
    # The mixed batch resizes image by image on the CPU, the single one on the device (here the same CPU
    # kernel): the same numbers up to summation order.
    _close(fs.features["off"][1:], alone.features["off"], 1e-5)
    with pytest.raises(InputError, match=r"image 1 is 80 x 72 px but image 0 is 64 x 64"):
        extract_features(model, seq, device="cpu")


def test_lazy_sequence_with_workers_matches_the_array(model, images):
    class Lazy:
        """Stands in for stimuli decoded from disk on demand."""

        def __init__(self, broken: int | None = None):
            self.broken = broken

        def __len__(self):
            return 4

        def __getitem__(self, i):
            return images[i].astype(np.float32) if i == self.broken else images[i]

    ref = extract_features(model, images[:4], batch_size=2, modes=("off",), device="cpu")
    lazy = extract_features(model, Lazy(), batch_size=2, modes=("off",), device="cpu", num_workers=2)
    # Same uint8 batches reach the same kernels: bit-identical.
    np.testing.assert_array_equal(lazy.features["off"], ref.features["off"])
    np.testing.assert_array_equal(lazy.attention, ref.attention)
    # A bad image found by a worker still surfaces as an InputError naming it.
    with pytest.raises(InputError, match=r"dtype float32 at index 3"):
        extract_features(model, Lazy(broken=3), batch_size=2, device="cpu", num_workers=2)


@pytest.mark.parametrize(
    "bad, match",
    [
        (np.zeros((2, 64, 64, 3), np.float32), r"'images'.*uint8.*float32"),
        (np.zeros((2, 64, 64), np.uint8), r"'images'.*\(n_images, height, width, 3\).*\(2, 64, 64\)"),
        (np.zeros((0, 64, 64, 3), np.uint8), r"at least one image"),
        ([np.zeros((64, 64, 4), np.uint8)], r"shape \(64, 64, 4\).*index 0"),
    ],
)
def test_bad_images_are_input_errors(model, bad, match):
    with pytest.raises(InputError, match=match):
        extract_features(model, bad, device="cpu")


def test_bad_layer_and_modes(model, images):
    with pytest.raises(InputError, match=r"'layer'.*layer1.*'fc7'"):
        extract_features(model, images, layer="fc7", device="cpu")
    with pytest.raises(InputError, match=r"'modes'.*'sideways'"):
        extract_features(model, images, modes=("on", "sideways"), device="cpu")


def test_cache_hit_does_not_call_the_model(model, images, tmp_path, monkeypatch):
    first = extract_features_cached(model, images[:3], cache_dir=tmp_path, modes=("on", "off"), device="cpu")
    assert not first.from_cache

    def forbidden(*args, **kwargs):
        raise AssertionError("the model ran on a cache hit")

    monkeypatch.setattr(model.layer3, "forward", forbidden)
    monkeypatch.setattr(model.layer4, "forward", forbidden)
    again = extract_features_cached(model, images[:3], cache_dir=tmp_path, modes=("on", "off"), device="cpu")
    subset = extract_features_cached(model, images[:3], cache_dir=tmp_path, modes=("off",), device="cpu")
    assert again.from_cache and subset.from_cache
    for mode in ("on", "off"):
        np.testing.assert_array_equal(again.features[mode], first.features[mode])
    np.testing.assert_array_equal(subset.features["off"], first.features["off"])
    np.testing.assert_array_equal(again.attention, first.attention)
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temporary files

    # Any change to the stimuli or the weights is a miss: the (forbidden) model must run.
    changed = images[:3].copy()
    changed[2, 10, 10, 0] ^= 1
    with pytest.raises(AssertionError, match="the model ran"):
        extract_features_cached(model, changed, cache_dir=tmp_path, modes=("off",), device="cpu")
    with pytest.raises(AssertionError, match="the model ran"):
        extract_features_cached(model, images[:3], cache_dir=tmp_path, modes=("uniform",), device="cpu")
    other = build_abn("random", seed=3)
    assert not extract_features_cached(other, images[:3], cache_dir=tmp_path, modes=("off",), device="cpu").from_cache


def test_cache_computes_only_missing_modes(model, images, tmp_path, monkeypatch):
    extract_features_cached(model, images[:2], cache_dir=tmp_path, modes=("off",), device="cpu")
    layer4 = _count_calls(monkeypatch, model.layer4)
    fs = extract_features_cached(model, images[:2], cache_dir=tmp_path, modes=MODES, device="cpu")
    assert layer4[0] == 2  # one batch, two missing modes
    ref = extract_features(model, images[:2], device="cpu")
    for mode in MODES:
        np.testing.assert_array_equal(fs.features[mode], ref.features[mode])



def test_array_hash_is_sha256_of_its_blocks_in_order():
    # Reference written out: SHA-256 of the shape, then of each 256-image block's SHA-256, in order (the
    # blocks are hashed on threads). 600 images: two full blocks and a partial one.
    import hashlib

    from core.model.features import _images_hash
    rng = np.random.default_rng(5)
    imgs = rng.integers(0, 256, size=(600, 8, 8, 3), dtype=np.uint8)
    ref = hashlib.sha256(f"array|{imgs.shape}|".encode())
    for i in range(0, 600, 256):
        ref.update(hashlib.sha256(imgs[i:i + 256].tobytes()).digest())
    assert _images_hash(imgs) == ref.hexdigest()[:24]
    # A non-contiguous array hashes as its contiguous copy; one changed bit or a swap of two images is a miss.
    wide = np.zeros((600, 8, 16, 3), np.uint8)
    wide[:, :, ::2] = imgs
    assert _images_hash(wide[:, :, ::2]) == _images_hash(imgs)
    changed = imgs.copy()
    changed[599, 7, 7, 2] ^= 1
    swapped = imgs[[1, 0, *range(2, 600)]]
    assert len({_images_hash(imgs), _images_hash(changed), _images_hash(swapped)}) == 3


def test_image_folder_cache_key_reads_files_without_decoding_them(model, images, tmp_path, monkeypatch):
    from core.data.datasets import FolderImages
    folder = tmp_path / "stimuli"
    folder.mkdir()
    for i, im in enumerate(images[:3]):
        Image.fromarray(im).save(folder / f"img{i}.png")
    first = extract_features_cached(model, FolderImages(folder), cache_dir=tmp_path / "cache", modes=("off",),
                                    device="cpu")
    np.testing.assert_array_equal(first.features["off"],
                                  extract_features(model, images[:3], modes=("off",), device="cpu").features["off"])

    decode = FolderImages.__getitem__

    def no_decoding(self, i):  # the first image is opened for the input size, the others must not be
        if i:
            raise AssertionError("an image was decoded for the cache key")
        return decode(self, i)

    monkeypatch.setattr(FolderImages, "__getitem__", no_decoding)
    again = extract_features_cached(model, FolderImages(folder, verify=False), cache_dir=tmp_path / "cache",
                                    modes=("off",), device="cpu")
    assert again.from_cache
    np.testing.assert_array_equal(again.features["off"], first.features["off"])
    # Re-saving one image with different pixels changes its bytes: a miss (the model decodes, and fails here).
    Image.fromarray(images[3]).save(folder / "img1.png")
    with pytest.raises(AssertionError, match="decoded"):
        extract_features_cached(model, FolderImages(folder, verify=False), cache_dir=tmp_path / "cache",
                                modes=("off",), device="cpu")

# Attention overlays (core.model.overlay): the thumbnails that show each stimulus's M.


def test_jet_matches_matplotlib():
    matplotlib = pytest.importorskip("matplotlib")
    v = np.arange(256) / 255.0
    ref = matplotlib.colormaps["jet"](v)[:, :3]  # the 256-entry table holds jet exactly at i / 255
    np.testing.assert_allclose(jet(v), ref, rtol=0, atol=1e-7)  # float64 interpolation either way


def test_overlay_against_an_independent_blend():
    matplotlib = pytest.importorskip("matplotlib")
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    M = rng.uniform(0.2, 0.7, size=(4, 5)).astype(np.float32)
    out = attention_overlay(image, M, alpha=0.4)
    scaled = (M - M.min()) / (M.max() - M.min())
    up = torch.nn.functional.interpolate(torch.from_numpy(scaled)[None, None].double(), size=(64, 80),
                                         mode="bilinear", align_corners=False)[0, 0].numpy()
    # PIL's bilinear resize (used by the overlay) and torch's half-pixel bilinear agree to float32 rounding.
    np.testing.assert_allclose(_upsample(scaled, (64, 80)), up, rtol=0, atol=1e-6)
    ref = 0.6 * image + 0.4 * 255 * matplotlib.colormaps["jet"](up)[..., :3]
    # The colormap table quantises to 1/256 steps (jet's slope is <= 4.5 per unit, so <= 4.5 / 256 * 255
    # * 0.4 = 1.8 grey levels) and both sides round to uint8: at most 3 levels apart.
    assert np.abs(out.astype(int) - np.rint(ref).astype(int)).max() <= 3
    assert out.shape == image.shape and out.dtype == np.uint8


def test_overlay_extremes_and_constant_map(tmp_path):
    image = np.full((64, 64, 3), 100, np.uint8)
    M = np.zeros((4, 4))
    M[0, 0] = 5.0  # min-max scaling makes the range irrelevant
    out = attention_overlay(image, M, alpha=0.5)
    # Far from the peak M is 0 -> dark blue (0, 0, 127.5); the peak's pixel centre lies near (1.5, 1.5).
    np.testing.assert_array_equal(out[-1, -1], np.rint(0.5 * 100 + 0.5 * np.array([0, 0, 127.5])))
    assert out[0, 0, 0] > out[0, 0, 2]  # red dominates at the top-left corner, blue elsewhere
    flat = attention_overlay(image, np.full((4, 4), 0.3), alpha=0.5)
    np.testing.assert_array_equal(flat, np.broadcast_to(out[-1, -1], flat.shape))
    np.testing.assert_array_equal(attention_overlay(image, M, alpha=0.0), image)
    path = save_overlay_png(tmp_path / "thumbs" / "s0.png", image, M, alpha=0.5)
    np.testing.assert_array_equal(np.asarray(Image.open(path)), out)


def test_overlay_bad_inputs():
    image = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(InputError, match=r"'image'.*uint8.*float64"):
        attention_overlay(image.astype(float), np.zeros((4, 4)))
    with pytest.raises(InputError, match=r"'M'.*2-D"):
        attention_overlay(image, np.zeros((1, 4, 4)))
    with pytest.raises(InputError, match=r"'alpha'.*\[0, 1\]"):
        attention_overlay(image, np.zeros((4, 4)), alpha=1.5)


def test_cpu_extraction_leaves_the_model_layout_alone(images):
    m = build_abn("random", seed=5)
    assert m.conv1.weight.is_contiguous()
    fs = extract_features(m, images[:2], modes=("off",), device="cpu")
    # channels_last is used inside the extraction only; the caller's model comes back in its own layout.
    assert m.conv1.weight.is_contiguous() and not m.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    assert fs.features["off"].shape == (2, 2048)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_bf16_features_match_cpu_float32(model, images):
    """The GPU path (bf16 autocast, channels_last) against the CPU's float32 on the same 224-px inputs."""
    cpu = extract_features(model, images, batch_size=5, device="cpu", input_size=224)
    gpu = extract_features(model, images, batch_size=5, device="cuda", input_size=224)
    flips = np.abs(gpu.attention - cpu.attention) > 0.1
    print({m: float(np.abs(gpu.features[m] - cpu.features[m]).max() / np.abs(cpu.features[m]).max()) for m in MODES},
          "attention cells moved by > 0.1:", float(flips.mean()))
    for mode in MODES:
        # bf16 keeps 8 significant bits (relative rounding 2^-9 ~ 2e-3 per operand); ~50 layers of convolutions
        # accumulate that to ~1e-2 of the feature scale. 3e-2 leaves room for this random network.
        _close(gpu.features[mode], cpu.features[mode], 3e-2)
    # What the study measures is the on - off difference: bf16 noise must stay well below the effect itself.
    d_cpu = cpu.features["on"] - cpu.features["off"]
    d_gpu = gpu.features["on"] - gpu.features["off"]
    assert np.linalg.norm(d_gpu - d_cpu) <= 0.1 * np.linalg.norm(d_cpu)
    # Attention maps: this random network's attention logits reach |z| ~ 1e3, where bf16 rounds by ~4, so a cell
    # whose logit lies within a few units of 0 can swing across the sigmoid (seen on an H100: one cell of five
    # maps moved by 0.77). Such cells are a few per cent of the map at most; the rest stay saturated alike.
    assert flips.mean() <= 0.05
