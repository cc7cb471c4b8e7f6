"""Measured responses as published: sample-major (``Y_train``, ``Y_test``[, ``run_onsets``]: shortclips and this
tool's own) or voxel-major (vim-2's ``rt``, ``rv``, ``rva``), read into sample-major float32 arrays of the voxels
that have data (voxels NaN in every test sample are left out, ``voxel_index`` keeps the file's numbering), with a
clear error for every bad input."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core._validation import InputError, check_finite, check_ndim

__all__ = ["Responses", "load_responses", "RESPONSE_EXTENSIONS"]

RESPONSE_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".mat", ".npz")


def _open_h5(path: Path):
    import h5py
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        hint = " (a .mat file before MATLAB v7.3 is not HDF5: save it with -v7.3)" if path.suffix.lower() == ".mat" \
            else ""
        raise InputError(f"not a readable HDF5 file ({exc}){hint}", source=str(path)) from None


@dataclass
class Responses:
    """Measured BOLD responses. ``Y_test`` is the repeat average when repeats were given."""
    Y_train: np.ndarray | None               # (n_train, n_voxels) float32; None when read with train=False
    Y_test: np.ndarray                       # (n_test, n_voxels) float32
    Y_test_repeats: np.ndarray | None = None  # (n_repeats, n_test, n_voxels) float32
    run_onsets: np.ndarray | None = None     # (n_runs,) int64 sample indices into the training set
    source: str = ""
    train_shape: tuple[int, int] | None = None  # (n_train, n_voxels), known also when Y_train was not read
    voxel_index: np.ndarray | None = None    # (n_voxels,) int64 file column of each voxel; None: all, in order
    n_file_voxels: int | None = None         # voxels in the file, the excluded (all-NaN) ones included
    layout: str = "samples"                  # "samples" (Y_train / Y_test) | "vim2" (rt / rv / rva)

    def __post_init__(self):
        if self.train_shape is None:
            self.train_shape = tuple(int(n) for n in self.Y_train.shape)

    @property
    def n_train(self) -> int:
        return int(self.train_shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.train_shape[1])

    @property
    def n_excluded(self) -> int:
        """Voxels of the file left out: NaN/inf in every test sample."""
        return 0 if self.n_file_voxels is None else self.n_file_voxels - self.n_voxels


def load_responses(path: str | Path, *, train: bool = True) -> Responses:
    """Read the responses in either published layout (detected by the file's keys):

    - sample-major (shortclips, and this tool's own): ``Y_train`` (n_train, n_voxels), ``Y_test`` (n_test,
      n_voxels) or (n_repeats, n_test, n_voxels), optional ``run_onsets``;
    - vim-2 (MATLAB v7.3 = HDF5): ``rt`` (training), ``rv`` (test, the repeat mean) and optional ``rva``
      (test repeats), voxel-major (see :func:`_load_voxel_major`).

    Voxels that are NaN/inf in every test sample (voxels outside the brain in a published volume) are left out
    and counted (``n_excluded``); ``voxel_index`` keeps each remaining voxel's column in the file, so results
    are numbered as the file is. A voxel with only some non-finite samples is an error.

    With ``train=False`` only the test responses are read and checked (``Y_train`` is None; its shape is
    still known): what the statistics need, without reading the ~2 GB training responses of a study-sized
    dataset again after the dataset stage has checked them.
    """
    p = Path(path)
    name = str(p)
    if not str(path):
        raise InputError("no response file given; set data.responses", field="responses")
    if not p.is_file():
        raise InputError("response file not found", source=name)
    suffix = p.suffix.lower()
    if suffix not in RESPONSE_EXTENSIONS:
        raise InputError(f"unsupported response file type '{suffix}'; expected one of "
                         f"{', '.join(RESPONSE_EXTENSIONS)}", source=name)
    if suffix == ".npz":
        try:
            store = np.load(p, allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"not a readable .npz file ({exc})", source=name) from None
        keys = list(store.files)
        get = store.__getitem__
        shape = lambda k: _npz_member_shape(store, k)  # noqa: E731
        dataset = get
    else:
        store = _open_h5(p)
        keys = list(store.keys())
        get = lambda k: store[k][()]  # noqa: E731
        shape = lambda k: tuple(store[k].shape)  # noqa: E731
        dataset = store.__getitem__
    if "Y_train" not in keys and "Y_test" not in keys and {"rt", "rv"} <= set(keys):
        return _load_voxel_major(dataset, keys, name, train)
    missing = [k for k in ("Y_train", "Y_test") if k not in keys]
    if missing:
        raise InputError(f"missing key(s) {', '.join(missing)}; found {sorted(keys)}. Responses need Y_train "
                         "(n_train, n_voxels) and Y_test (n_test, n_voxels) or (n_repeats, n_test, n_voxels), "
                         "or vim-2's rt and rv (voxel-major)", source=name, field=missing[0])
    arrays = {}
    for key in ("Y_train", "Y_test") if train else ("Y_test",):
        arr = np.asarray(get(key))
        if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
            raise InputError(f"expected numbers, found dtype {arr.dtype}", source=name, field=key)
        arrays[key] = arr
    train_shape = tuple(arrays["Y_train"].shape) if train else shape("Y_train")
    if train:
        check_ndim(arrays["Y_train"], (2,), source=name, field="Y_train", layout="(n_train, n_voxels)")
    elif len(train_shape) != 2:
        raise InputError(f"expected a 2-D array (n_train, n_voxels), found a {len(train_shape)}-D array of shape "
                         f"{train_shape}", source=name, field="Y_train")
    check_ndim(arrays["Y_test"], (2, 3), source=name, field="Y_test",
               layout="(n_test, n_voxels) or (n_repeats, n_test, n_voxels)")
    Y_test_raw = arrays["Y_test"].astype(np.float32, copy=False)
    if Y_test_raw.shape[-1] != train_shape[1]:
        raise InputError(f"Y_test has {Y_test_raw.shape[-1]} voxels but Y_train has {train_shape[1]}; both must "
                         "hold the same voxels in the same order (last axis)", source=name, field="Y_test")
    keep = _kept_voxels(Y_test_raw.reshape(-1, Y_test_raw.shape[-1]), name)
    n_file = int(train_shape[1])
    if keep is not None:
        Y_test_raw = Y_test_raw[..., keep]
    Y_train = None
    if train:
        Y_train = arrays["Y_train"].astype(np.float32, copy=False)
        if keep is not None:
            Y_train = Y_train[:, keep]          # one copy of the kept columns (the file held NaN voxels)
        _check_finite_voxels(Y_train, keep, name, "Y_train")
    _check_finite_voxels(Y_test_raw, keep, name, "Y_test")
    repeats = Y_test_raw if Y_test_raw.ndim == 3 else None
    Y_test = Y_test_raw.mean(axis=0, dtype=np.float64).astype(np.float32) if repeats is not None else Y_test_raw
    onsets = None
    if "run_onsets" in keys:
        onsets = np.asarray(get("run_onsets"))
        if onsets.ndim != 1 or not np.issubdtype(onsets.dtype, np.integer):
            raise InputError(f"expected a 1-D integer array of run start indices, found dtype {onsets.dtype} "
                             f"shape {onsets.shape}", source=name, field="run_onsets")
        onsets = onsets.astype(np.int64)
        n = train_shape[0]
        if onsets.size == 0 or onsets[0] != 0 or np.any(np.diff(onsets) <= 0) or onsets[-1] >= n:
            raise InputError(f"expected strictly increasing run starts beginning at 0 and below n_train = {n}, "
                             f"found {onsets[:10].tolist()}", source=name, field="run_onsets")
    if train:
        _check_constant(Y_train, name, "Y_train", keep)
    n_kept = n_file if keep is None else int(keep.size)
    return Responses(Y_train=Y_train, Y_test=Y_test, Y_test_repeats=repeats, run_onsets=onsets, source=name,
                     train_shape=(int(train_shape[0]), n_kept), voxel_index=keep, n_file_voxels=n_file,
                     layout="samples")


def _kept_voxels(test: np.ndarray, source: str = "") -> np.ndarray | None:
    """Columns of ``test`` (samples, voxels) with any finite value, or None when that is every column."""
    if not np.issubdtype(test.dtype, np.floating):
        return None
    with np.errstate(over="ignore", invalid="ignore"):
        total = test.sum(axis=0, dtype=np.float32)
    if np.isfinite(total).all():
        return None
    alive = np.isfinite(test).any(axis=0)
    if alive.all():
        return None
    if not alive.any():
        raise InputError("every voxel is NaN/inf in every test sample; expected measured responses",
                         source=source or None, field="Y_test")
    return np.flatnonzero(alive).astype(np.int64)


def _check_finite_voxels(arr: np.ndarray, keep: np.ndarray | None, source: str, fieldname: str) -> None:
    """:func:`check_finite`, naming the first bad value by the file's voxel column."""
    try:
        check_finite(arr, source=source, field=fieldname)
    except InputError:
        bad = ~np.isfinite(arr)
        first = [int(i) for i in np.argwhere(bad)[0]]
        if keep is not None:
            first[-1] = int(keep[first[-1]])
        raise InputError(f"found {int(bad.sum())} NaN/inf values (first at index {tuple(first)}) in voxels that "
                         "have finite values too; expected finite numbers. A voxel NaN in every test sample is "
                         "left out; impute or drop partly missing voxels before running",
                         source=source, field=fieldname) from None


def _voxel_axis(shapes: dict[str, tuple[int, ...]], source: str) -> int:
    """Which end of the vim-2 arrays is the voxel axis: the length ``rt`` and ``rv`` share (first for the files
    as documented, (n_voxels, n_samples); last where a reader reverses MATLAB's axes)."""
    rt, rv = shapes["rt"], shapes["rv"]
    for arr in ("rt", "rv"):
        if len(shapes[arr]) != 2:
            raise InputError(f"expected a 2-D voxel-major array, found shape {shapes[arr]}", source=source, field=arr)
    first, last = rt[0] == rv[0], rt[-1] == rv[-1]
    if first == last:
        raise InputError(f"cannot tell the voxel axis: rt {rt} and rv {rv} share {'both' if first else 'no'} "
                         "lengths; expected (n_voxels, n_train) and (n_voxels, n_test)", source=source, field="rv")
    return 0 if first else -1


def _load_voxel_major(dataset, keys, name: str, train: bool, block: int = 4096) -> Responses:
    """vim-2's responses: ``rt`` (n_voxels, n_train), ``rv`` (n_voxels, n_test) and ``rva`` (n_voxels, n_repeats,
    n_test) when present (then ``Y_test`` is the repeats' mean, as ``rv``), read in blocks of voxels into
    sample-major arrays of the kept voxels (never two full copies in memory). Axes reversed by a MATLAB reader,
    (n_train, n_voxels) etc., are recognised by the lengths ``rt`` and ``rv`` share."""
    test_key = "rva" if "rva" in keys else "rv"
    shapes = {k: tuple(dataset(k).shape) for k in ("rt", "rv") + (("rva",) if "rva" in keys else ())}
    axis = _voxel_axis(shapes, name)
    n_vox = shapes["rt"][axis]
    n_train = shapes["rt"][1 if axis == 0 else 0]
    if test_key == "rva":
        if len(shapes["rva"]) != 3 or shapes["rva"][axis] != n_vox:
            raise InputError(f"expected ({n_vox}, n_repeats, n_test) test repeats, found {shapes['rva']}",
                             source=name, field="rva")
    for k in shapes:
        dt = dataset(k).dtype
        if not (np.issubdtype(dt, np.floating) or np.issubdtype(dt, np.integer)):
            raise InputError(f"expected numbers, found dtype {dt}", source=name, field=k)

    def blocks(key):
        ds = dataset(key)
        for i in range(0, n_vox, block):
            j = min(n_vox, i + block)
            part = np.asarray(ds[i:j] if axis == 0 else ds[..., i:j], dtype=np.float32)
            # Voxels last, (repeats and) samples first: (n_samples, voxels) or (n_repeats, n_test, voxels); a
            # reversed file has every axis reversed, (n_test, n_repeats, voxels).
            yield i, j, (np.moveaxis(part, 0, -1) if axis == 0 else
                         np.transpose(part, tuple(range(part.ndim - 2, -1, -1)) + (part.ndim - 1,)))

    alive = np.zeros(n_vox, bool)
    for i, j, part in blocks(test_key):
        alive[i:j] = np.isfinite(part.reshape(-1, j - i)).any(axis=0)
    if not alive.any():
        raise InputError("every voxel is NaN/inf in every test sample; expected measured responses",
                         source=name, field=test_key)
    keep = None if alive.all() else np.flatnonzero(alive).astype(np.int64)
    cols = np.flatnonzero(alive)
    pos = np.cumsum(alive) - 1                   # file voxel -> kept column

    def fill(key, shape):
        out = np.empty(shape + (cols.size,), np.float32)
        for i, j, part in blocks(key):
            sel = alive[i:j]
            if sel.any():
                out[..., pos[i:j][sel]] = part[..., sel]
        return out

    test_shape = shapes[test_key][1:] if axis == 0 else shapes[test_key][:-1][::-1]
    test = fill(test_key, tuple(test_shape))
    _check_finite_voxels(test, keep, name, test_key)
    repeats = test if test.ndim == 3 else None
    Y_test = test.mean(axis=0, dtype=np.float64).astype(np.float32) if repeats is not None else test
    Y_train = None
    if train:
        Y_train = fill("rt", (n_train,))
        _check_finite_voxels(Y_train, keep, name, "rt")
        _check_constant(Y_train, name, "rt", keep)
    return Responses(Y_train=Y_train, Y_test=Y_test, Y_test_repeats=repeats, run_onsets=None, source=name,
                     train_shape=(int(n_train), int(cols.size)), voxel_index=keep, n_file_voxels=int(n_vox),
                     layout="vim2")


def _npz_member_shape(store, key: str) -> tuple[int, ...]:
    """Shape of array ``key`` (present) in an open ``.npz`` without reading its data (the member's .npy
    header)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with store.zip.open(f"{key}.npy") as fh:
        reader = readers.get(np.lib.format.read_magic(fh))
        shape = reader(fh)[0] if reader else store[key].shape  # other versions: read the array
    return tuple(int(n) for n in shape)


def _check_constant(Y: np.ndarray, source: str, fieldname: str, keep: np.ndarray | None = None) -> None:
    # A voxel without variance in the training data cannot be fitted or correlated; it is almost always a
    # masking error (voxels outside the brain), so we stop rather than silently drop it.
    # min == max is exact (a float32 std of equal values need not be 0) and, unlike std, allocates no
    # temporary of the array's size (2 GB at the study's scale).
    const = np.flatnonzero(Y.min(axis=0) == Y.max(axis=0))
    if const.size and keep is not None:
        const = keep[const]                 # the file's voxel columns
    if const.size:
        raise InputError(
            f"{const.size} voxel(s) are constant over all samples (first voxel indices {const[:8].tolist()}); "
            "expected every voxel to vary. Drop those columns, or use a mask that excludes them",
            source=source, field=fieldname)
