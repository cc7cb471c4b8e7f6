"""Batched ABN feature extraction with attention on, off and uniform, plus an on-disk feature cache.

For every batch the shared trunk and the attention branch run once; only the perception branch (layer4 and
after) runs once per mode, so three modes cost far less than three forward passes.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from core._io import atomic_write
from core._validation import InputError
from core.vocabulary import FEATURE_LAYERS, SHARED_LAYERS
from core.model.abn import ABN, PERCEPTION_MODES, weights_fingerprint
from core.device import resolve_device

__all__ = [
    "LAYERS",
    "MIN_INPUT_SIZE",
    "MODES",
    "FeatureSet",
    "extract_features",
    "extract_features_cached",
    "feature_dim",
]

MODES = PERCEPTION_MODES
# Shared layers come from the trunk, before attention acts: one array serves every mode.
_SHARED_LAYERS = SHARED_LAYERS
LAYERS = FEATURE_LAYERS
# Below 64 px layer4 shrinks to 1 x 1 and the attention map to 2 x 2: there is no spatial focus left to study.
MIN_INPUT_SIZE = 64
# Grid that the "layer4" features keep: 2 x 2 cells keep where in the image a feature fired (which global
# pooling throws away) at a size ridge regression still handles (2048 * 4 = 8192 features).
_LAYER4_GRID = 2
_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# Bump when a change here alters feature values, so old cache entries are not reused.
# 2: channels_last on the CPU (float32 summation order of the convolutions).
_CACHE_VERSION = 2


@dataclass
class FeatureSet:
    """Features of one layer for a set of stimuli, per attention mode.

    Attributes
    ----------
    features : dict of str to array of shape (n_images, n_features), float32
        One entry per requested mode. For the shared layers (layer1..layer3) every mode maps to the same
        array object.
    attention : array of shape (n_images, h, w), float32
        The attention map M of each stimulus (h, w = input size / 16, rounded up).
    layer : str
        One of :data:`LAYERS`.
    input_size : tuple of int
        (height, width) in pixels that the network saw.
    from_cache : bool
        True when the arrays were read from the cache instead of computed.
    """

    features: dict[str, np.ndarray]
    attention: np.ndarray
    layer: str
    input_size: tuple[int, int]
    from_cache: bool = field(default=False)

    @property
    def n_images(self) -> int:
        return int(self.attention.shape[0])


def feature_dim(layer: str, num_classes: int = 1000) -> int:
    """Number of features per image that ``layer`` yields.

    Parameters
    ----------
    layer : str
        One of :data:`LAYERS`.
    num_classes : int
        Classes of the model (for ``logits``).

    Returns
    -------
    int
    """
    dims = {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048 * _LAYER4_GRID ** 2, "pool": 2048,
            "logits": num_classes}
    _check_layer(layer)
    return dims[layer]


def _check_layer(layer: str) -> None:
    if layer not in LAYERS:
        raise InputError(f"expected one of {', '.join(LAYERS)}, found {layer!r}", field="layer")


def _check_modes(modes) -> tuple[str, ...]:
    modes = (modes,) if isinstance(modes, str) else tuple(modes)
    bad = [m for m in modes if m not in MODES]
    if not modes or bad or len(set(modes)) != len(modes):
        raise InputError(
            f"expected a non-empty list of distinct modes from {', '.join(MODES)}, found {list(modes)!r}",
            field="modes")
    return modes


def _check_size(size: tuple[int, int], what: str) -> None:
    if min(size) < MIN_INPUT_SIZE:
        raise InputError(
            f"expected images of at least {MIN_INPUT_SIZE} x {MIN_INPUT_SIZE} px, found {size[0]} x {size[1]} "
            f"({what}); pass input_size >= {MIN_INPUT_SIZE} to resize them", field="input_size")


def _check_image(img, index: int) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise InputError(
            f"expected an RGB image array of shape (height, width, 3) and dtype uint8, found shape "
            f"{tuple(img.shape)} and dtype {img.dtype} at index {index}; convert with "
            "np.asarray(PIL.Image.open(f).convert('RGB'))", source="stimuli", field="images")
    return img


def _resolve_input(images, input_size) -> tuple[tuple[int, int], bool]:
    """Validate the stimuli and return the (height, width) the network sees and whether sizes vary."""
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[3] != 3:
            raise InputError(
                "expected a uint8 array of shape (n_images, height, width, 3), found shape "
                f"{tuple(images.shape)} and dtype {images.dtype}", source="stimuli", field="images")
        n = images.shape[0]
        native = {tuple(images.shape[1:3])}
    else:
        if not (hasattr(images, "__len__") and hasattr(images, "__getitem__")):
            raise InputError(
                f"expected a uint8 array (n, height, width, 3) or a sequence of (height, width, 3) arrays, "
                f"found {type(images).__name__}", source="stimuli", field="images")
        n = len(images)
        # Only the first image is opened up front; the others are checked as they are loaded.
        native = {tuple(_check_image(images[0], 0).shape[:2])} if n else set()
    if n == 0:
        raise InputError("expected at least one image, found none", source="stimuli", field="images")
    if input_size is None:
        size = next(iter(native))
        _check_size(size, "native size of the stimuli")
        return size, False
    if isinstance(input_size, (int, np.integer)) and not isinstance(input_size, bool):
        size = (int(input_size), int(input_size))
    elif (isinstance(input_size, (tuple, list)) and len(input_size) == 2
          and all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in input_size)):
        size = (int(input_size[0]), int(input_size[1]))
    else:
        raise InputError(f"expected an int or a (height, width) pair, found {input_size!r}", field="input_size")
    _check_size(size, "input_size")
    return size, True


def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinear, antialiased resize of float images (batch, 3, H, W); a no-op at the target size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)


class _Batches(Dataset):
    """Batch ``b`` of the stimuli as one tensor, ready for :func:`_to_network_input`.

    Indexing by batch (not image) lets an in-memory array be sliced in one copy, and lets a lazy sequence
    (e.g. images decoded from disk) be read by DataLoader workers in parallel. A batch of equal-sized images
    comes back as uint8 (batch, H, W, 3) and is resized on the compute device; a batch of mixed sizes is
    resized here, image by image on the CPU, and comes back as float (batch, 3, H, W) in [0, 1].
    """

    def __init__(self, images, batch_size: int, size: tuple[int, int], allow_resize: bool):
        self.images = images
        self.batch_size = batch_size
        self.size = size
        self.allow_resize = allow_resize

    def __len__(self) -> int:
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, b: int) -> torch.Tensor:
        lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, len(self.images))
        if isinstance(self.images, np.ndarray):
            return torch.from_numpy(np.ascontiguousarray(self.images[lo:hi]))
        imgs = [_check_image(self.images[i], i) for i in range(lo, hi)]
        if not self.allow_resize:
            for i, im in zip(range(lo, hi), imgs, strict=True):
                if im.shape[:2] != self.size:
                    raise InputError(
                        f"image {i} is {im.shape[0]} x {im.shape[1]} px but image 0 is {self.size[0]} x "
                        f"{self.size[1]} px; pass input_size to resize them all to one size",
                        source="stimuli", field="images")
        if len({im.shape for im in imgs}) == 1:
            return torch.from_numpy(np.stack(imgs))
        return torch.cat([
            _resize(torch.from_numpy(im).permute(2, 0, 1)[None].float().div_(255), self.size) for im in imgs])


def _to_network_input(batch: torch.Tensor, size, device: torch.device, channels_last: bool) -> torch.Tensor:
    """uint8 (B, H, W, 3) or float (B, 3, H, W) in [0, 1] -> resized, ImageNet-normalised float32 on device."""
    batch = batch.to(device, non_blocking=True)
    x = batch.permute(0, 3, 1, 2).float().div_(255) if batch.dtype == torch.uint8 else batch.float()
    x = _resize(x, size)
    mean = torch.tensor(_IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(_IMAGENET_STD, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x.contiguous()


def _layer_features(model: ABN, g_layers: dict, M: torch.Tensor, layer: str, mode: str) -> torch.Tensor:
    if layer in _SHARED_LAYERS:
        return g_layers[layer].mean(dim=(2, 3))
    pooled, logits, fmap = model.perception(g_layers["layer3"], M, mode)
    if layer == "pool":
        return pooled
    if layer == "logits":
        return logits
    return torch.flatten(F.adaptive_avg_pool2d(fmap, _LAYER4_GRID), 1)


def extract_features(
    model: ABN,
    images,
    *,
    modes=MODES,
    layer: str = "pool",
    batch_size: int = 32,
    device,
    input_size: int | tuple[int, int] | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> FeatureSet:
    """Features of one ABN layer for every stimulus, with attention on, off and/or uniform.

    Per batch the trunk (up to layer3) and the attention branch run once; the perception branch runs once per
    requested mode. Runs in eval mode under ``torch.inference_mode`` with channels_last tensors: float32 on
    the CPU; on CUDA with bf16 autocast (features are returned as float32 either way).

    Parameters
    ----------
    model : ABN
        Moved to ``device`` and to channels_last (on the CPU its memory format is restored afterwards); its
        train/eval mode is restored afterwards.
    images : uint8 array of shape (n_images, height, width, 3), or a sequence of (height, width, 3) uint8 arrays
        RGB stimuli. A sequence is read lazily (``num_workers`` processes can decode in parallel); its images
        may differ in size when ``input_size`` is given.
    modes : sequence of {"on", "off", "uniform"}
        ``on``: layer4(g * (1 + M)); ``off``: layer4(g); ``uniform``: layer4(g * (1 + mean(M))).
    layer : {"layer1", "layer2", "layer3", "layer4", "pool", "logits"}
        ``layer1``..``layer3``: globally average-pooled trunk maps (256/512/1024 features), identical for
        every mode. ``layer4``: the perception branch's layer4 map average-pooled to a 2 x 2 grid, flattened
        channel-major (2048 * 4 = 8192 features: channel c, cells row by row), which keeps coarse position.
        ``pool`` (default): the globally pooled 2048-d perception features, the input of ``fc``.
        ``logits``: ``fc`` output (num_classes features).
    batch_size : int
        Images per forward pass; results do not depend on it beyond float rounding.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"auto"``.
    input_size : int, (height, width) or None
        Resize every image to this size (bilinear, antialiased) before normalising; ``None`` keeps the native
        size. Each side must be at least 64 px.
    num_workers : int
        DataLoader worker processes that read batches (useful for lazy sequences).
    progress : bool
        Show a progress bar.

    Returns
    -------
    FeatureSet

    Raises
    ------
    InputError
        For an unknown layer or mode, images that are not uint8 RGB, or a size below 64 px.
    """
    _check_layer(layer)
    modes = _check_modes(modes)
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise InputError(f"expected a positive integer, found {batch_size!r}", field="batch_size")
    if isinstance(num_workers, bool) or not isinstance(num_workers, (int, np.integer)) or num_workers < 0:
        raise InputError(f"expected a non-negative integer, found {num_workers!r}", field="num_workers")
    size, allow_resize = _resolve_input(images, input_size)
    device = resolve_device(device)
    on_cuda = device.type == "cuda"
    n = len(images)

    was_training = model.training
    model.eval()
    # channels_last on the CPU as well: oneDNN convolves NHWC directly, while NCHW inputs are reordered to its
    # blocked layout and back around every convolution (~1.4x faster trunk at 112 px, same float32 results up
    # to summation order). The CPU model gets its memory format back afterwards.
    restore_format = not on_cuda and not model.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    model.to(device, memory_format=torch.channels_last)
    loader = DataLoader(_Batches(images, int(batch_size), size, allow_resize), batch_size=None, shuffle=False,
                        num_workers=int(num_workers), pin_memory=on_cuda)
    out: dict[str, np.ndarray] = {}
    attention: np.ndarray | None = None
    compute_modes = ("shared",) if layer in _SHARED_LAYERS else modes
    try:
        bar = tqdm(total=n, desc=f"ABN features ({layer}, {'/'.join(modes)})", unit="img", disable=not progress)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=on_cuda):
            lo = 0
            for batch in loader:
                x = _to_network_input(batch, size, device, True)
                hi = lo + x.shape[0]
                g_layers = model.trunk_layers(x)
                M = model.attention_map(g_layers["layer3"])
                if attention is None:
                    attention = np.empty((n, *M.shape[2:]), dtype=np.float32)
                attention[lo:hi] = M[:, 0].float().cpu().numpy()
                for mode in compute_modes:
                    f = _layer_features(model, g_layers, M, layer, mode).float().cpu().numpy()
                    if mode not in out:
                        out[mode] = np.empty((n, f.shape[1]), dtype=np.float32)
                    out[mode][lo:hi] = f
                lo = hi
                bar.update(x.shape[0])
        bar.close()
    finally:
        model.train(was_training)
        if restore_format:
            model.to(memory_format=torch.contiguous_format)
    if layer in _SHARED_LAYERS:
        out = {mode: out["shared"] for mode in modes}
    return FeatureSet(features=out, attention=attention, layer=layer, input_size=size)


def _images_hash(images) -> str:
    """Hash of the stimuli (in order), so the cache notices any changed image.

    An array: SHA-256 of its shape and pixels, in blocks of 256 images hashed on several threads (hashlib
    releases the GIL) and combined in order. A lazy sequence with a ``fingerprint()`` (an image folder: its
    files' bytes) uses that, so nothing is decoded; any other sequence is decoded and its pixels hashed.
    """
    if isinstance(images, np.ndarray):
        from concurrent.futures import ThreadPoolExecutor
        flat = images.reshape(len(images), -1) if images.flags.c_contiguous else None

        def block(i: int) -> bytes:
            chunk = flat[i:i + 256] if flat is not None else np.ascontiguousarray(images[i:i + 256])
            return hashlib.sha256(memoryview(chunk).cast("B")).digest()
        h = hashlib.sha256(f"array|{images.shape}|".encode())
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for d in pool.map(block, range(0, len(images), 256)):
                h.update(d)
        return h.hexdigest()[:24]
    fingerprint = getattr(images, "fingerprint", None)
    fingerprint = fingerprint() if callable(fingerprint) else None
    if fingerprint:
        return hashlib.sha256(f"source|{fingerprint}".encode()).hexdigest()[:24]
    h = hashlib.sha256(f"sequence|{len(images)}|".encode())
    for i in range(len(images)):
        img = _check_image(images[i], i)
        h.update(f"{img.shape}|".encode())
        h.update(np.ascontiguousarray(img).tobytes())
    return h.hexdigest()[:24]


def _atomic_save(path: Path, arr: np.ndarray) -> None:
    atomic_write(path, lambda f: np.save(f, arr))


def extract_features_cached(
    model: ABN,
    images,
    *,
    cache_dir: str | os.PathLike,
    modes=MODES,
    layer: str = "pool",
    batch_size: int = 32,
    device,
    input_size: int | tuple[int, int] | None = None,
    num_workers: int = 0,
    progress: bool = False,
) -> FeatureSet:
    """:func:`extract_features` with an on-disk cache, so a rerun reads features instead of recomputing them.

    Entries are keyed by the weights (:func:`~core.model.abn.weights_fingerprint`), the input size, the compute
    precision (float32 on CPU, bf16 on CUDA: their features differ by rounding), a hash of the stimuli's
    pixels, and a cache format version; inside an entry, one ``.npy`` file per (layer, mode) plus the
    attention maps. Modes already cached are read; only missing ones are computed. Every file is written to a
    temporary name in the same folder and renamed, so an interrupted run never leaves a half-written array.

    Parameters
    ----------
    model, images, modes, layer, batch_size, device, input_size, num_workers, progress
        As for :func:`extract_features`.
    cache_dir : str or path-like
        Folder of the cache (created if needed).

    Returns
    -------
    FeatureSet
        ``from_cache`` is True when nothing had to be computed.
    """
    _check_layer(layer)
    modes = _check_modes(modes)
    size, _ = _resolve_input(images, input_size)
    dev = resolve_device(device)
    precision = "bf16" if dev.type == "cuda" else "fp32"
    key = {"version": _CACHE_VERSION, "weights": weights_fingerprint(model), "input_size": list(size),
           "precision": precision, "images": _images_hash(images), "n_images": len(images)}
    digest = hashlib.blake2b(json.dumps(key, sort_keys=True).encode(), digest_size=10).hexdigest()
    entry = Path(cache_dir) / f"abn-{size[0]}x{size[1]}-{precision}-{digest}"
    shared = layer in _SHARED_LAYERS
    names = {m: f"{layer}.npy" if shared else f"{layer}-{m}.npy" for m in modes}
    att_path = entry / "attention.npy"
    missing = [m for m in modes if not (entry / names[m]).is_file()]
    if not att_path.is_file():
        missing = list(modes)
    if not missing:
        features, loaded = {}, {}
        for m in modes:
            name = names[m]
            loaded.setdefault(name, np.load(entry / name))
            features[m] = loaded[name]
        return FeatureSet(features=features, attention=np.load(att_path), layer=layer, input_size=size,
                          from_cache=True)

    fs = extract_features(model, images, modes=missing, layer=layer, batch_size=batch_size, device=dev,
                          input_size=input_size, num_workers=num_workers, progress=progress)
    entry.mkdir(parents=True, exist_ok=True)
    text = json.dumps(key, indent=1, sort_keys=True).encode()
    atomic_write(entry / "key.json", lambda f: f.write(text))
    for m in missing:
        _atomic_save(entry / names[m], fs.features[m])
    _atomic_save(att_path, fs.attention)
    # For shared layers every mode is missing together, so all modes keep pointing at one array.
    features = {m: fs.features[m] if m in fs.features else np.load(entry / names[m]) for m in modes}
    return FeatureSet(features=features, attention=fs.attention, layer=layer, input_size=size)
