"""The Attention Branch Network (Fukui et al., CVPR 2019) on torchvision's ResNet-50, and its weights.

Module names follow torchvision's ResNet-50 plus the official ABN modules, so torchvision ImageNet weights and
the official ABN checkpoints (machine-perception-robotics-group/attention_branch_network) both load strictly.
"""
from __future__ import annotations

import hashlib
import os
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.resnet import Bottleneck

from core._io import atomic_write
from core._validation import InputError

__all__ = [
    "ABN",
    "PERCEPTION_MODES",
    "RandomWeightsWarning",
    "UntrainedAttentionWarning",
    "build_abn",
    "load_state_dict_file",
    "save_checkpoint",
    "weights_fingerprint",
]

PERCEPTION_MODES = ("on", "off", "uniform")

# Our checkpoint format tag; official checkpoints carry none.
_CHECKPOINT_FORMAT = "attnbrain-abn/1"
# How many key names an error message lists before summarising the rest with a count.
_KEYS_SHOWN = 5
# torchvision ImageNet weights we accept from the local hub cache, in order of preference: V1 is the classic
# recipe (76.1 % top-1), the baseline the ABN paper compares against; V2 is the newer, stronger recipe.
_TORCHVISION_WEIGHTS = (ResNet50_Weights.IMAGENET1K_V1, ResNet50_Weights.IMAGENET1K_V2)


class RandomWeightsWarning(UserWarning):
    """The network has random weights: its features mean something only inside the simulation."""


class UntrainedAttentionWarning(UserWarning):
    """The backbone is pretrained but the attention branch is not: attention maps need fine-tuning first."""


def _att_layer4() -> nn.Sequential:
    """A copy of ResNet-50's layer4 built with stride 1 (the official ABN attention trunk).

    At 224 px it maps layer3's 1024 x 14 x 14 to 2048 x 14 x 14, keeping layer3's resolution so the
    attention map M lines up with the perception branch's input g.
    """
    downsample = nn.Sequential(
        nn.Conv2d(1024, 2048, kernel_size=1, stride=1, bias=False),
        nn.BatchNorm2d(2048),
    )
    return nn.Sequential(
        Bottleneck(1024, 512, stride=1, downsample=downsample),
        Bottleneck(2048, 512),
        Bottleneck(2048, 512),
    )


class ABN(nn.Module):
    """ResNet-50 Attention Branch Network with a switchable attention mechanism.

    The shared trunk g(x) is ResNet-50 up to ``layer3``. The attention branch turns g into a spatial
    attention map M in [0, 1] and attention logits; the perception branch runs ``layer4`` on g modulated by M
    (``g * (1 + M)``), average-pools and classifies with ``fc``. Pooling is adaptive, so any input of at least
    64 px works (the official code hard-codes 224 px pools); at 224 px the two are identical.

    Parameters
    ----------
    num_classes : int
        Number of classes K of both branches (1000 for ImageNet).

    Notes
    -----
    The state dict has 398 entries (332 without BatchNorm ``num_batches_tracked`` counters), the same names
    and shapes as the official ImageNet ResNet-50 ABN.
    """

    def __init__(self, num_classes: int = 1000):
        super().__init__()
        backbone = resnet50(weights=None, num_classes=num_classes)
        self.num_classes = int(num_classes)
        self.conv1 = backbone.conv1
        self.bn1 = backbone.bn1
        self.relu = backbone.relu
        self.maxpool = backbone.maxpool
        self.layer1 = backbone.layer1
        self.layer2 = backbone.layer2
        self.layer3 = backbone.layer3

        self.att_layer4 = _att_layer4()
        self.bn_att = nn.BatchNorm2d(2048)
        self.att_conv = nn.Conv2d(2048, num_classes, kernel_size=1, bias=False)
        self.bn_att2 = nn.BatchNorm2d(num_classes)
        self.att_conv2 = nn.Conv2d(num_classes, num_classes, kernel_size=1, bias=False)
        self.att_conv3 = nn.Conv2d(num_classes, 1, kernel_size=3, padding=1, bias=False)
        self.bn_att3 = nn.BatchNorm2d(1)

        self.layer4 = backbone.layer4
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = backbone.fc

        # torchvision already initialised the backbone; give the attention branch the official recipe
        # (He normal, fan_out, for convolutions; BatchNorm weight 1 and bias 0).
        for name in ("att_layer4", "bn_att", "att_conv", "bn_att2", "att_conv2", "att_conv3", "bn_att3"):
            for m in getattr(self, name).modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(m, nn.BatchNorm2d):
                    nn.init.ones_(m.weight)
                    nn.init.zeros_(m.bias)

    def trunk_layers(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the shared trunk and return the outputs of ``layer1``, ``layer2`` and ``layer3``.

        Parameters
        ----------
        x : tensor of shape (batch, 3, height, width)
            ImageNet-normalised images.

        Returns
        -------
        dict
            ``{"layer1": (B, 256, H/4, W/4), "layer2": (B, 512, H/8, W/8), "layer3": (B, 1024, H/16, W/16)}``
            (sizes rounded up).
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        l1 = self.layer1(x)
        l2 = self.layer2(l1)
        l3 = self.layer3(l2)
        return {"layer1": l1, "layer2": l2, "layer3": l3}

    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        """The shared feature extractor g(x): ResNet-50 up to ``layer3``.

        Parameters
        ----------
        x : tensor of shape (batch, 3, height, width)

        Returns
        -------
        g : tensor of shape (batch, 1024, h, w)
            h, w = height/16, width/16 rounded up (14 x 14 at 224 px).
        """
        return self.trunk_layers(x)["layer3"]

    def attention(self, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention branch.

        Parameters
        ----------
        g : tensor of shape (batch, 1024, h, w)
            Trunk output.

        Returns
        -------
        M : tensor of shape (batch, 1, h, w)
            Attention map in [0, 1].
        att_logits : tensor of shape (batch, num_classes)
            Attention-branch class scores (global average of ``att_conv2``).
        """
        a = self._attention_hidden(g)
        M = torch.sigmoid(self.bn_att3(self.att_conv3(a)))
        att_logits = self.att_conv2(a).mean(dim=(2, 3))
        return M, att_logits

    def attention_map(self, g: torch.Tensor) -> torch.Tensor:
        """The attention map M of :meth:`attention` alone (bit-identical), without the attention logits'
        ``att_conv2`` (a K x K 1x1 convolution that only training uses).

        Parameters
        ----------
        g : tensor of shape (batch, 1024, h, w)

        Returns
        -------
        M : tensor of shape (batch, 1, h, w)
        """
        return torch.sigmoid(self.bn_att3(self.att_conv3(self._attention_hidden(g))))

    def _attention_hidden(self, g: torch.Tensor) -> torch.Tensor:
        a = self.bn_att(self.att_layer4(g))
        return self.relu(self.bn_att2(self.att_conv(a)))

    def perception(
        self, g: torch.Tensor, M: torch.Tensor, mode: str = "on"
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The perception branch with attention switched on, off, or spread uniformly.

        Parameters
        ----------
        g : tensor of shape (batch, 1024, h, w)
            Trunk output.
        M : tensor of shape (batch, 1, h, w)
            Attention map from :meth:`attention`.
        mode : {"on", "off", "uniform"}
            ``on``: layer4(g * (1 + M)), the trained ABN. ``off``: layer4(g), plain ResNet-50.
            ``uniform``: layer4(g * (1 + mean_hw(M))), the same average gain as ``on`` with no spatial focus.

        Returns
        -------
        pooled : tensor of shape (batch, 2048)
            Globally average-pooled ``layer4`` output.
        logits : tensor of shape (batch, num_classes)
        layer4_map : tensor of shape (batch, 2048, h/2, w/2)
        """
        if mode == "on":
            # Written as g*M + g, the order of the official code, so official checkpoints give its numbers.
            x = g * M + g
        elif mode == "off":
            x = g
        elif mode == "uniform":
            x = g * M.mean(dim=(2, 3), keepdim=True) + g
        else:
            raise InputError(f"expected one of {', '.join(PERCEPTION_MODES)}, found {mode!r}", field="mode")
        fmap = self.layer4(x)
        pooled = torch.flatten(self.avgpool(fmap), 1)
        return pooled, self.fc(pooled), fmap

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training forward pass, attention on.

        Parameters
        ----------
        x : tensor of shape (batch, 3, height, width)

        Returns
        -------
        att_logits : tensor of shape (batch, num_classes)
        per_logits : tensor of shape (batch, num_classes)
        M : tensor of shape (batch, 1, h, w)
        """
        g = self.trunk(x)
        M, att_logits = self.attention(g)
        _, per_logits, _ = self.perception(g, M, "on")
        return att_logits, per_logits, M


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")


def _key_list(keys: list[str]) -> str:
    shown = ", ".join(keys[:_KEYS_SHOWN])
    more = f" and {len(keys) - _KEYS_SHOWN} more" if len(keys) > _KEYS_SHOWN else ""
    return f"{len(keys)} ({shown}{more})"


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat state dict with the ``module.`` prefix removed.

    Accepts the official format (an outer dict with ``state_dict``, keys prefixed ``module.`` by
    DataParallel), ours (see :func:`save_checkpoint`) and a bare state dict. Tensors land on the CPU.

    Parameters
    ----------
    path : str or path-like

    Returns
    -------
    dict of str to tensor

    Raises
    ------
    InputError
        If the file is missing, unreadable, or holds no state dict.
    """
    path = Path(path)
    source = f"checkpoint {path}"
    if not path.is_file():
        raise InputError(
            "file not found; expected a PyTorch checkpoint (.pth/.pt/.pth.tar) of an ABN. Check the path, or "
            "pass weights='auto' to use torchvision weights from the local cache or a random init",
            source=source, field="weights")
    try:
        # weights_only: a checkpoint from elsewhere must not be able to run code when unpickled.
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure to unpickle means the same thing to the user
        raise InputError(
            f"could not be read as a PyTorch checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "the file may be truncated or not a checkpoint. Re-download or re-save it",
            source=source, field="weights") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        state = obj["state_dict"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        state = obj
    else:
        found = sorted(obj)[:_KEYS_SHOWN] if isinstance(obj, dict) else type(obj).__name__
        raise InputError(
            f"expected a state dict or a dict with a 'state_dict' entry, found {found}",
            source=source, field="weights")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}


def _load_into(model: ABN, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` into ``model``; BN counters absent from old checkpoints are not required."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not _is_counter(k)]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys {_key_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_key_list(unexpected)}")
        raise InputError(
            f"does not match the ResNet-50 ABN: {'; '.join(parts)}. Expected the official ImageNet ResNet-50 "
            "ABN layout (conv1 ... layer4, fc, att_layer4, bn_att, att_conv, bn_att2, att_conv2, att_conv3, "
            "bn_att3); was it saved from another architecture?",
            source=source, field="weights")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise InputError(
            f"has tensors of the wrong shape (file vs model): {_key_list(wrong)}",
            source=source, field="weights")
    full = dict(state)
    for k, v in expected.items():
        full.setdefault(k, v)  # only counters can still be absent here
    model.load_state_dict(full, strict=True)


def _cached_torchvision_file() -> Path | None:
    """The first torchvision ResNet-50 ImageNet file already in the local hub cache, or None (no download)."""
    folder = Path(torch.hub.get_dir()) / "checkpoints"
    for w in _TORCHVISION_WEIGHTS:
        candidate = folder / os.path.basename(urlparse(w.url).path)
        if candidate.is_file():
            return candidate
    return None


def _seeded_model(num_classes: int, seed: int) -> ABN:
    # fork_rng keeps the caller's global random stream untouched by our seeding.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ABN(num_classes=num_classes)


def build_abn(
    weights: str | os.PathLike | None = None, *, seed: int = 0, num_classes: int | None = None
) -> ABN:
    """Build the ResNet-50 ABN and give it the best weights available, never downloading any.

    Parameters
    ----------
    weights : None, "auto", "random" or path
        A checkpoint path (official ABN format or ours) is loaded strictly. ``None``/``"auto"``: torchvision
        ImageNet weights for the backbone if they are already in the local torch hub cache (``layer4`` is
        also copied into ``att_layer4`` as a warm start; the rest of the attention branch stays random and a
        :class:`UntrainedAttentionWarning` says attention maps need ``train-abn`` first); otherwise a seeded
        random init with a :class:`RandomWeightsWarning`. ``"random"``: the seeded random init, no warning
        (the caller chose it).
    seed : int
        Seed of the random initialisation (used for every module that no file provides).
    num_classes : int or None
        Classes K of both branches. ``None`` reads K from the checkpoint's ``fc.weight``, or uses 1000
        otherwise. With torchvision weights and K != 1000, ``fc`` keeps its random init.

    Returns
    -------
    ABN
        In eval mode, on the CPU.

    Raises
    ------
    InputError
        If a checkpoint is missing, unreadable, or its keys or shapes do not match.
    """
    if weights is not None and not isinstance(weights, (str, os.PathLike)):
        raise InputError(f"expected None, 'auto', 'random' or a checkpoint path, found {weights!r}",
                         field="weights")
    if weights not in (None, "auto", "random"):
        state = load_state_dict_file(weights)
        fc = state.get("fc.weight")
        k_file = int(fc.shape[0]) if isinstance(fc, torch.Tensor) and fc.ndim == 2 else None
        if num_classes is not None and k_file is not None and k_file != num_classes:
            raise InputError(
                f"holds a {k_file}-class network (fc.weight {tuple(fc.shape)}) but num_classes={num_classes} "
                "was asked for; leave num_classes unset to use the file's, or fine-tune with train-abn",
                source=f"checkpoint {weights}", field="num_classes")
        k = num_classes or k_file or 1000
        model = _seeded_model(k, seed)
        _load_into(model, state, f"checkpoint {weights}")
        return model.eval()

    k = 1000 if num_classes is None else int(num_classes)
    model = _seeded_model(k, seed)
    if weights == "random":
        return model.eval()
    tv_file = _cached_torchvision_file()
    if tv_file is not None:
        state = torch.load(tv_file, map_location="cpu", weights_only=True)
        if k != 1000:
            state = {key: v for key, v in state.items() if not key.startswith("fc.")}
        missing, unexpected = model.load_state_dict(state, strict=False)
        backbone_missing = [m for m in missing if not m.startswith(("att_", "bn_att", "fc."))]
        if backbone_missing or unexpected:
            raise InputError(
                f"torchvision ResNet-50 weights do not fit the backbone: missing {_key_list(backbone_missing)}, "
                f"unexpected {_key_list(list(unexpected))}; delete the file so it is not picked up",
                source=str(tv_file), field="weights")
        # Same shapes, stride aside: the pretrained layer4 is a far better start for att_layer4 than noise.
        model.att_layer4.load_state_dict(model.layer4.state_dict())
        warnings.warn(
            f"ABN backbone uses torchvision ImageNet weights from {tv_file}, but the attention branch "
            "(att_conv, att_conv2, att_conv3 and their BatchNorms) is untrained: attention maps and "
            "attention-on features are not meaningful until it is fine-tuned with `precompute.py train-abn`.",
            UntrainedAttentionWarning, stacklevel=2)
        return model.eval()
    warnings.warn(
        "!!! ABN has RANDOM weights (seed "
        f"{seed}): no checkpoint was given and no torchvision ResNet-50 weights are in the local torch cache "
        f"({Path(torch.hub.get_dir()) / 'checkpoints'}). Features, attention maps and every result built on "
        "them are only meaningful for the simulation. Pass a trained ABN checkpoint for real data. !!!",
        RandomWeightsWarning, stacklevel=2)
    return model.eval()


def weights_fingerprint(model: nn.Module) -> str:
    """A short stable hash of a model's weights, for cache keys.

    Hashes every state-dict entry's name, dtype, shape and bytes (in sorted name order), except the
    BatchNorm ``num_batches_tracked`` counters, which do not affect outputs and are absent from official
    checkpoints. The result does not depend on device or memory format.

    Parameters
    ----------
    model : torch.nn.Module

    Returns
    -------
    str
        16 hexadecimal characters.
    """
    h = hashlib.blake2b(digest_size=8)
    state = model.state_dict()
    for key in sorted(state):
        if _is_counter(key):
            continue
        t = state[key].detach().to("cpu").contiguous()
        h.update(f"{key}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(model: nn.Module, path: str | os.PathLike, **extra) -> Path:
    """Write ``model``'s weights (and ``extra`` entries) to ``path`` atomically.

    The file is ``{"format": "attnbrain-abn/1", "num_classes": K, "state_dict": {...}, **extra}`` with CPU
    tensors and no ``module.`` prefix; :func:`build_abn` loads it. It is written to a temporary file in the
    same folder and renamed, so an interrupted save never leaves a half-written checkpoint.

    Parameters
    ----------
    model : ABN
    path : str or path-like
    **extra
        Further picklable entries (epoch, optimizer state, ...); plain Python and tensor values only, so the
        file loads with ``torch.load(weights_only=True)``.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    payload = {"format": _CHECKPOINT_FORMAT, "num_classes": getattr(model, "num_classes", None),
               "state_dict": state, **extra}
    return atomic_write(path, lambda f: torch.save(payload, f))
