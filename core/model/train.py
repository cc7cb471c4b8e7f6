"""Fine-tuning the ABN on an ImageNet-style folder (the official recipe), with resumable checkpoints.

Backs ``python precompute.py train-abn --data DIR --epochs N ...``: loss CE(attention) + CE(perception), SGD
with momentum and step decay, RandomResizedCrop + flip, top-1 of both branches on a held-out split.
"""
from __future__ import annotations

import argparse
import math
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Subset
from torchvision import datasets, transforms
from tqdm.auto import tqdm

from core._validation import InputError, check_positive_int
from core.model.abn import ABN, build_abn, save_checkpoint
from core.device import resolve_device
from core.model.features import MIN_INPUT_SIZE

__all__ = ["add_train_arguments", "default_lr_steps", "run_train", "train_abn"]

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
# The official ImageNet schedule divides the learning rate by 10 at epochs 31 and 61 of 90.
_OFFICIAL_STEPS = (31 / 90, 61 / 90)
_LAST = "last.pt"
_BEST = "best.pt"


def default_lr_steps(epochs: int) -> list[int]:
    """The official step schedule (x0.1 at epochs 31 and 61 of 90) scaled to ``epochs``.

    Parameters
    ----------
    epochs : int

    Returns
    -------
    list of int
        Epoch indices (0-based) from which the learning rate is divided by 10 once more.
    """
    steps = sorted({round(f * epochs) for f in _OFFICIAL_STEPS})
    return [s for s in steps if 0 < s < epochs]


def _open_image_folder(data_dir: Path) -> datasets.ImageFolder:
    source = f"training data {data_dir}"
    if not data_dir.is_dir():
        raise InputError("folder not found; expected an ImageNet-style folder DIR/<class name>/<image files>",
                         source=source, field="data")
    try:
        folder = datasets.ImageFolder(str(data_dir))
    except (FileNotFoundError, RuntimeError) as exc:
        raise InputError(
            f"not an ImageNet-style folder ({str(exc).splitlines()[0]}); expected one sub-folder per class, "
            "each holding that class's images (.jpg, .png, ...)", source=source, field="data") from None
    if len(folder.classes) < 2:
        raise InputError(
            f"expected at least 2 class sub-folders with images, found {len(folder.classes)} "
            f"({', '.join(folder.classes)}); a classifier needs two classes or more", source=source, field="data")
    return folder


def _split(targets: list[int], n_classes: int, val_fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Seeded per-class split, so every class is in the validation set and rare classes stay in training."""
    rng = np.random.default_rng(seed)
    targets = np.asarray(targets)
    train, val = [], []
    for c in range(n_classes):
        idx = rng.permutation(np.flatnonzero(targets == c))
        n_val = min(len(idx) - 1, max(1, round(val_fraction * len(idx)))) if val_fraction > 0 else 0
        val.extend(idx[:n_val].tolist())
        train.extend(idx[n_val:].tolist())
    return sorted(train), sorted(val)


def _initial_model(weights, n_classes: int, seed: int) -> ABN:
    """The starting network; class-specific heads are re-initialised when the checkpoint's classes differ."""
    if weights in (None, "auto", "random"):
        return build_abn(weights, seed=seed, num_classes=n_classes)
    base = build_abn(weights, seed=seed)
    if base.num_classes == n_classes:
        return base
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ABN(num_classes=n_classes)
    target = model.state_dict()
    kept = {k: v for k, v in base.state_dict().items() if k in target and target[k].shape == v.shape}
    model.load_state_dict(kept, strict=False)
    fresh = sorted({k.split(".")[0] for k in target if k not in kept})
    warnings.warn(
        f"checkpoint {weights} has {base.num_classes} classes, the data {n_classes}: re-initialised "
        f"{', '.join(fresh)}; everything else starts from the checkpoint", UserWarning, stacklevel=3)
    return model


@torch.inference_mode()
def _evaluate(model: ABN, loader: DataLoader, device: torch.device) -> tuple[float, float, float]:
    """Top-1 accuracy of the attention and perception branches, and the mean summed loss, on ``loader``."""
    model.eval()
    n = correct_att = correct_per = 0
    loss_sum = 0.0
    for x, y in loader:
        x, y = x.to(device), y.to(device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            att, per, _ = model(x)
        att, per = att.float(), per.float()
        loss_sum += float(F.cross_entropy(att, y, reduction="sum") + F.cross_entropy(per, y, reduction="sum"))
        correct_att += int((att.argmax(1) == y).sum())
        correct_per += int((per.argmax(1) == y).sum())
        n += len(y)
    return correct_att / n, correct_per / n, loss_sum / n


def train_abn(
    data_dir: str | os.PathLike,
    *,
    out_dir: str | os.PathLike,
    epochs: int,
    batch_size: int,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    lr_steps: list[int] | None = None,
    input_size: int = 224,
    val_fraction: float = 0.1,
    device,
    resume: bool = True,
    weights: str | os.PathLike | None = None,
    seed: int = 0,
    progress: bool = True,
    max_steps: int | None = None,
    num_workers: int = 0,
) -> dict:
    """Fine-tune (or train) the ABN on an ImageFolder with the official ABN recipe.

    Loss = CE(attention logits) + CE(perception logits); SGD with momentum and weight decay; the learning
    rate is divided by 10 at each epoch in ``lr_steps``; training images get RandomResizedCrop(input_size)
    and a horizontal flip, validation images Resize(input_size / 0.875) + CenterCrop(input_size); both are
    ImageNet-normalised. After every epoch ``out_dir/last.pt`` (weights, optimizer, schedule, history) is
    written atomically, and ``out_dir/best.pt`` whenever the perception branch's validation top-1 is the best
    so far. Both load with :func:`core.model.abn.build_abn`. Each epoch's shuffling and augmentation are seeded
    from (seed, epoch), so a run resumed from ``last.pt`` reproduces an uninterrupted one on the CPU.

    Parameters
    ----------
    data_dir : str or path-like
        ``data_dir/<class>/<image>``; at least two classes.
    out_dir : str or path-like
        Where checkpoints go (created if needed).
    epochs : int
        Total epochs (a resumed run continues up to this number).
    batch_size : int
    lr, momentum, weight_decay : float
        SGD settings (official: 0.1, 0.9, 1e-4).
    lr_steps : list of int or None
        0-based epochs from which the rate is divided by 10 again; None scales the official 31/61 of 90.
    input_size : int
        Training crop size in px (>= 64).
    val_fraction : float
        Share of each class held out for validation, in [0, 1); each class keeps at least one training image.
    device : str or torch.device
    resume : bool
        Continue from ``out_dir/last.pt`` when it exists.
    weights : None, "auto", "random" or path
        Starting weights, as for :func:`core.model.abn.build_abn`; class-specific heads are re-initialised when the
        checkpoint's number of classes differs from the folder's. Ignored when resuming.
    seed : int
        Seeds the split, the initialisation of new modules, shuffling and augmentation.
    progress : bool
        Show a progress bar with the running loss.
    max_steps : int or None
        Stop after this many optimizer steps in total (counting those of resumed runs); the epoch in progress
        is then not counted as completed and is restarted by a resumed run.
    num_workers : int
        DataLoader worker processes decoding images.

    Returns
    -------
    dict
        ``model`` (the trained ABN, eval mode), ``checkpoint`` (path of last.pt), ``best_checkpoint`` (path
        or None), ``classes``, ``n_train``, ``n_val``, ``epochs_completed``, ``steps`` (total optimizer
        steps), ``step_losses`` (summed loss of each step run in this call), ``history`` (one dict per
        completed epoch: epoch, lr, train_loss, val_loss, val_top1_att, val_top1_per),
        ``val_top1_att`` and ``val_top1_per`` (latest validation top-1 in [0, 1], None without a split).

    Raises
    ------
    InputError
        For a missing folder, a folder not in ImageFolder layout, fewer than 2 classes, bad settings, or a
        ``last.pt`` from a different class list.
    """
    data_dir, out_dir = Path(data_dir), Path(out_dir)
    epochs = check_positive_int(epochs, field="epochs")
    batch_size = check_positive_int(batch_size, field="batch_size")
    if max_steps is not None:
        max_steps = check_positive_int(max_steps, field="max_steps")
    input_size = check_positive_int(input_size, field="input_size")
    if input_size < MIN_INPUT_SIZE:
        raise InputError(f"expected at least {MIN_INPUT_SIZE} px, found {input_size}", field="input_size")
    if not 0.0 <= float(val_fraction) < 1.0:
        raise InputError(f"expected a fraction in [0, 1), found {val_fraction!r}", field="val_fraction")
    for name, value in (("lr", lr), ("momentum", momentum), ("weight_decay", weight_decay)):
        ok = isinstance(value, (int, float)) and math.isfinite(value)
        if not ok or value < 0 or (name == "lr" and value == 0):
            kind = "positive" if name == "lr" else "non-negative"
            raise InputError(f"expected a finite {kind} number, found {value!r}", field=name)
    steps = default_lr_steps(epochs) if lr_steps is None else sorted(int(s) for s in lr_steps)
    device = resolve_device(device)

    folder = _open_image_folder(data_dir)
    classes = list(folder.classes)
    normalize = transforms.Normalize(_IMAGENET_MEAN, _IMAGENET_STD)
    train_tf = transforms.Compose([transforms.RandomResizedCrop(input_size), transforms.RandomHorizontalFlip(),
                                   transforms.ToTensor(), normalize])
    val_tf = transforms.Compose([transforms.Resize(round(input_size / 0.875)), transforms.CenterCrop(input_size),
                                 transforms.ToTensor(), normalize])
    train_idx, val_idx = _split(folder.targets, len(classes), float(val_fraction), seed)
    train_set = Subset(datasets.ImageFolder(str(data_dir), transform=train_tf), train_idx)
    val_set = Subset(datasets.ImageFolder(str(data_dir), transform=val_tf), val_idx)

    out_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path = out_dir / _LAST, out_dir / _BEST
    state = None
    if resume and last_path.is_file():
        state = torch.load(last_path, map_location="cpu", weights_only=True)
        if state.get("classes") != classes:
            raise InputError(
                f"was trained on classes {state.get('classes')}, the folder has {classes}; use another --out "
                "folder or --no-resume", source=f"checkpoint {last_path}", field="classes")
        model = build_abn(last_path)
    else:
        model = _initial_model(weights, len(classes), seed)
    model.to(device)
    if device.type == "cuda":
        model.to(memory_format=torch.channels_last)

    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=steps, gamma=0.1)
    start_epoch, step, history, best = 0, 0, [], -1.0
    if state is not None:
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch, step = int(state["epoch"]), int(state["step"])
        history, best = list(state["history"]), float(state["best_val_top1_per"])

    val_loader = DataLoader(val_set, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    step_losses: list[float] = []
    val_att = val_per = None
    if history:
        val_att, val_per = history[-1]["val_top1_att"], history[-1]["val_top1_per"]

    def save_last(epochs_done: int) -> None:
        save_checkpoint(model, last_path, classes=classes, epoch=epochs_done, step=step,
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(), history=history,
                        best_val_top1_per=best, seed=seed, input_size=input_size)

    completed = start_epoch
    # Seeding the global generators would leak into the caller: fork them for the duration of training.
    cuda_ids = [device.index if device.index is not None else torch.cuda.current_device()] \
        if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda_ids):
        for epoch in range(start_epoch, epochs):
            if max_steps is not None and step >= max_steps:
                break
            torch.manual_seed(seed * 100_003 + epoch)
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            train_loader = DataLoader(train_set, batch_size=batch_size, shuffle=True, generator=gen,
                                      num_workers=num_workers, drop_last=len(train_set) > batch_size,
                                      pin_memory=device.type == "cuda")
            model.train()
            lr_now = optimizer.param_groups[0]["lr"]
            bar = tqdm(train_loader, desc=f"train-abn epoch {epoch + 1}/{epochs}", disable=not progress,
                       unit="batch")
            n_batches, seen, loss_sum = 0, 0, 0.0
            for x, y in bar:
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    att, per, _ = model(x)
                loss = F.cross_entropy(att.float(), y) + F.cross_entropy(per.float(), y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                n_batches += 1
                value = float(loss.detach())
                step_losses.append(value)
                seen += len(y)
                loss_sum += value * len(y)
                bar.set_postfix(loss=f"{value:.3f}", lr=f"{lr_now:g}")
                if max_steps is not None and step >= max_steps:
                    break
            bar.close()
            if n_batches < len(train_loader):  # max_steps cut this epoch short: it does not count
                if val_idx:
                    val_att, val_per, _ = _evaluate(model, val_loader, device)
                save_last(completed)
                break
            scheduler.step()
            val_att, val_per, val_loss = _evaluate(model, val_loader, device) if val_idx else (None, None, None)
            history.append({"epoch": epoch + 1, "lr": lr_now, "train_loss": loss_sum / max(seen, 1),
                            "val_loss": val_loss, "val_top1_att": val_att, "val_top1_per": val_per})
            if val_per is not None and val_per > best:
                best = val_per
                save_checkpoint(model, best_path, classes=classes, epoch=epoch + 1, val_top1_att=val_att,
                                val_top1_per=val_per, input_size=input_size)
            completed = epoch + 1
            save_last(completed)
            if progress:
                tqdm.write(f"epoch {completed}: train loss {history[-1]['train_loss']:.4f}"
                           + (f", val top-1 attention {val_att:.3f} perception {val_per:.3f}" if val_idx else ""))
    model.eval()
    return {
        "model": model,
        "checkpoint": str(last_path),
        "best_checkpoint": str(best_path) if best_path.is_file() else None,
        "classes": classes,
        "n_train": len(train_idx),
        "n_val": len(val_idx),
        "epochs_completed": completed,
        "steps": step,
        "step_losses": step_losses,
        "history": history,
        "val_top1_att": val_att,
        "val_top1_per": val_per,
    }


def add_train_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the ``train-abn`` options to ``parser`` (defaults: the official ABN ImageNet recipe).

    Parameters
    ----------
    parser : argparse.ArgumentParser

    Returns
    -------
    argparse.ArgumentParser
        The same parser.
    """
    parser.add_argument("--data", required=True, help="ImageNet-style folder: DATA/<class>/<images>")
    parser.add_argument("--out", default="results/abn-finetune",
                        help="checkpoint folder (last.pt, best.pt); default %(default)s")
    parser.add_argument("--epochs", type=int, default=90, help="total epochs (default %(default)s, official)")
    parser.add_argument("--batch-size", type=int, default=64,
                        help="images per step (default %(default)s; official 256 on 4 GPUs)")
    parser.add_argument("--lr", type=float, default=0.1, help="initial learning rate (default %(default)s)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="default %(default)s")
    parser.add_argument("--lr-steps", type=int, nargs="+", default=None,
                        help="0-based epochs where the rate drops x0.1 (default: 31 and 61 of 90, scaled)")
    parser.add_argument("--input-size", type=int, default=224, help="crop size in px (default %(default)s)")
    parser.add_argument("--val-fraction", type=float, default=0.1,
                        help="share of each class held out for validation (default %(default)s)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default %(default)s)")
    parser.add_argument("--weights", default=None,
                        help="starting checkpoint; default: torchvision weights if cached, else random")
    parser.add_argument("--no-resume", dest="resume", action="store_false",
                        help="start afresh even if OUT/last.pt exists")
    parser.add_argument("--seed", type=int, default=0, help="default %(default)s")
    parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps in total")
    parser.add_argument("--workers", type=int, default=4, help="image-decoding processes (default %(default)s)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return parser


def run_train(args: argparse.Namespace) -> int:
    """Run ``train-abn`` from parsed arguments and print a summary.

    Parameters
    ----------
    args : argparse.Namespace
        From a parser set up by :func:`add_train_arguments`.

    Returns
    -------
    int
        0 on success. Bad input raises :class:`~core._validation.InputError` for the CLI to report.
    """
    result = train_abn(
        args.data, out_dir=args.out, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        momentum=args.momentum, weight_decay=args.weight_decay, lr_steps=args.lr_steps,
        input_size=args.input_size, val_fraction=args.val_fraction, device=args.device, resume=args.resume,
        weights=args.weights, seed=args.seed, progress=args.progress, max_steps=args.max_steps,
        num_workers=args.workers)
    top1 = ("no validation split" if result["val_top1_per"] is None else
            f"val top-1 attention {result['val_top1_att']:.3f}, perception {result['val_top1_per']:.3f}")
    print(f"train-abn: {result['epochs_completed']} epochs, {result['steps']} steps, {len(result['classes'])} "
          f"classes ({result['n_train']} train / {result['n_val']} val images); {top1}")
    print(f"checkpoint: {result['checkpoint']}" + (f"; best: {result['best_checkpoint']}"
                                                    if result["best_checkpoint"] else ""))
    return 0
