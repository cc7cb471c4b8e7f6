"""The dataset contract: stimuli + responses + cortex mapping, loaded and checked before heavy work.

Stimuli come as an image folder (sorted names), an (N, H, W, 3) uint8 array in ``.npy`` or HDF5, or a
movie cut to one frame per sample at a given TR and offset. Responses come as HDF5 or NPZ with ``Y_train``
(n_train, n_voxels) and ``Y_test`` (n_test, n_voxels) or (n_repeats, n_test, n_voxels), and optionally
``run_onsets``. Every mismatch is raised as :class:`~core._validation.InputError` naming file and field.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from core._validation import InputError, check_finite, check_ndim

__all__ = ["ImageSource", "ArrayImages", "FolderImages", "MovieFrames", "Responses", "CortexSpec",
           "Dataset", "open_stimuli", "load_responses", "validate_dataset", "check_cortex_spec",
           "IMAGE_EXTENSIONS", "MOVIE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MOVIE_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")
RESPONSE_EXTENSIONS = (".h5", ".hdf5", ".hdf", ".npz")


class ImageSource(Protocol):
    """What feature extraction reads: ``len(src)`` stimuli, ``src[i]`` an (H, W, 3) uint8 array."""
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


class ArrayImages:
    """Stimuli held in an (N, H, W, 3) uint8 array (memory-mapped ``.npy``, HDF5 dataset or in memory)."""

    def __init__(self, array, name: str = "array"):
        self.array = array
        self.name = name
        shape = tuple(array.shape)
        if len(shape) != 4 or shape[-1] != 3:
            raise InputError(
                f"expected an image array of shape (N, H, W, 3), found shape {shape}"
                + (" (a grayscale stack? repeat it to 3 channels)" if len(shape) == 3 else ""),
                source=name, field="stimuli")
        if np.dtype(array.dtype) != np.uint8:
            raise InputError(
                f"expected dtype uint8 (0-255 RGB), found {array.dtype}; convert with "
                "np.clip(x * 255, 0, 255).astype(np.uint8) if your images are floats in [0, 1]",
                source=name, field="stimuli")
        if shape[0] == 0:
            raise InputError("the image array holds no images (N = 0)", source=name, field="stimuli")

    def __len__(self) -> int:
        return int(self.array.shape[0])

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self.array[i])

    def as_array(self) -> np.ndarray:
        return np.asarray(self.array)


class FolderImages:
    """A folder of image files, read in sorted-name order."""

    def __init__(self, folder: str | Path, *, verify: bool = True):
        self.folder = Path(folder)
        self.name = str(self.folder)
        if not self.folder.is_dir():
            raise InputError("stimulus folder not found; check the path in data.stimuli_train/test",
                             source=self.name)
        self.files = sorted(p for p in self.folder.iterdir()
                            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        if not self.files:
            others = sorted(p.name for p in self.folder.iterdir())[:5]
            raise InputError(
                f"the folder holds no images with extensions {', '.join(IMAGE_EXTENSIONS)}"
                + (f" (found e.g. {', '.join(others)})" if others else " (it is empty)"),
                source=self.name)
        if verify:
            self._verify()

    def _verify(self) -> None:
        from PIL import Image, UnidentifiedImageError
        for path in self.files:
            try:
                with Image.open(path) as im:
                    im.verify()
            except (UnidentifiedImageError, OSError, SyntaxError) as exc:
                raise InputError(f"image file cannot be read ({exc.__class__.__name__}: {exc}); "
                                 "remove or re-export it", source=str(path)) from None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> np.ndarray:
        from PIL import Image
        with Image.open(self.files[i]) as im:
            return np.asarray(im.convert("RGB"), dtype=np.uint8)

    def fingerprint(self) -> str:
        """SHA-256 over the files' names and bytes, in order: changes whenever an image does, without decoding
        one (7,800 224-px PNGs: a fraction of a second on several threads, against seconds to decode them)."""
        import hashlib
        from concurrent.futures import ThreadPoolExecutor

        def digest(path: Path) -> bytes:  # hashlib releases the GIL on large buffers: threads overlap
            return hashlib.sha256(path.read_bytes()).digest()
        h = hashlib.sha256(f"files|{len(self.files)}|".encode())
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            for path, d in zip(self.files, pool.map(digest, self.files, chunksize=64), strict=True):
                h.update(path.name.encode() + b"|" + d)
        return h.hexdigest()


class MovieFrames:
    """One frame per sample cut from a movie: sample ``i`` is the frame on screen at ``offset + i * tr``.

    Frames are decoded once, sequentially (random seeks are slow and inexact in compressed video), and
    kept in memory, optionally resized to ``size`` x ``size``.
    """

    def __init__(self, path: str | Path, *, tr: float, n_samples: int, offset: float = 0.0,
                 size: int | None = None):
        self.path = Path(path)
        self.name = str(self.path)
        if not self.path.is_file():
            raise InputError("movie file not found", source=self.name)
        if tr <= 0:
            raise InputError(f"expected a positive TR in seconds for a movie stimulus, found {tr!r}; "
                             "set data.movie_tr", source=self.name, field="movie_tr")
        if offset < 0:
            raise InputError(f"expected a non-negative offset, found {offset!r}", source=self.name,
                             field="movie_offset")
        self.tr, self.offset, self.n_samples, self.size = float(tr), float(offset), int(n_samples), size
        self.times = self.offset + self.tr * np.arange(self.n_samples)
        self.duration = self._probe()
        last = float(self.times[-1]) if self.n_samples else 0.0
        if last >= self.duration:
            raise InputError(
                f"movie is {self.duration:.2f} s long but {self.n_samples} samples at TR {self.tr:g} s "
                f"from offset {self.offset:g} s need frames up to {last:.2f} s; check data.movie_tr, "
                "data.movie_offset or the number of response samples", source=self.name)
        self._frames: np.ndarray | None = None

    def _probe(self) -> float:
        import av
        try:
            with av.open(str(self.path)) as container:
                if not container.streams.video:
                    raise InputError("the file holds no video stream", source=self.name)
                stream = container.streams.video[0]
                if stream.duration is not None and stream.time_base is not None:
                    return float(stream.duration * stream.time_base)
                if container.duration is not None:
                    return container.duration / 1_000_000
                n = sum(1 for _ in container.decode(video=0))
                rate = float(stream.average_rate or 0) or 1.0
                return n / rate
        except av.FFmpegError as exc:
            raise InputError(f"movie cannot be decoded ({exc})", source=self.name) from None

    def _decode(self) -> np.ndarray:
        import av
        from PIL import Image
        frames: list[np.ndarray] = []
        want = iter(enumerate(self.times))
        idx, t_next = next(want)
        previous = None
        with av.open(str(self.path)) as container:
            for frame in container.decode(video=0):
                t = float(frame.pts * frame.time_base) if frame.pts is not None else frame.time
                # The frame on screen at time t_next is the last one whose timestamp is <= t_next.
                while t > t_next + 1e-6 and previous is not None:
                    frames.append(previous)
                    try:
                        idx, t_next = next(want)
                    except StopIteration:
                        return np.stack(frames)
                image = frame.to_image()
                if self.size:
                    image = image.resize((self.size, self.size), Image.BILINEAR)
                previous = np.asarray(image.convert("RGB"), dtype=np.uint8)
            while len(frames) < self.n_samples and previous is not None:
                frames.append(previous)
        if len(frames) < self.n_samples:
            raise InputError(f"decoded only {len(frames)} of {self.n_samples} frames", source=self.name)
        return np.stack(frames[: self.n_samples])

    def __len__(self) -> int:
        return self.n_samples

    def __getitem__(self, i: int) -> np.ndarray:
        if self._frames is None:
            self._frames = self._decode()
        return self._frames[i]


def open_stimuli(path: str | Path, *, key: str = "stimuli", movie_tr: float = 0.0, movie_offset: float = 0.0,
                 n_samples: int | None = None, size: int | None = None, verify: bool = True) -> ImageSource:
    """Open a stimulus source by what ``path`` is: a folder, ``.npy``, HDF5 or a movie file.

    ``verify``: open every image file of a folder once and check it is a readable image before returning.
    """
    p = Path(path)
    if not str(path):
        raise InputError("no stimulus path given; set data.stimuli_train and data.stimuli_test",
                         field="stimuli")
    if p.is_dir():
        return FolderImages(p, verify=verify)
    if not p.exists():
        raise InputError("stimulus file or folder not found", source=str(p))
    suffix = p.suffix.lower()
    if suffix == ".npy":
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise InputError(f"not a readable .npy array ({exc})", source=str(p)) from None
        return ArrayImages(arr, name=str(p))
    if suffix in (".h5", ".hdf5", ".hdf"):
        h5 = _open_h5(p)
        if key not in h5:
            raise InputError(f"missing dataset '{key}'; found {sorted(h5.keys())}; set data.stimuli_key",
                             source=str(p), field=key)
        return ArrayImages(h5[key], name=f"{p}:{key}")
    if suffix in MOVIE_EXTENSIONS:
        if n_samples is None:
            raise InputError("a movie stimulus needs the number of samples (from the responses)",
                             source=str(p))
        return MovieFrames(p, tr=movie_tr, offset=movie_offset, n_samples=n_samples, size=size)
    raise InputError(f"unsupported stimulus file type '{suffix}'; expected a folder of images, .npy, .h5 or a "
                     f"movie ({', '.join(MOVIE_EXTENSIONS)})", source=str(p))


def _open_h5(path: Path):
    import h5py
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", source=str(path)) from None


@dataclass
class Responses:
    """Measured BOLD responses. ``Y_test`` is the repeat average when repeats were given."""
    Y_train: np.ndarray | None               # (n_train, n_voxels) float32; None when read with train=False
    Y_test: np.ndarray                       # (n_test, n_voxels) float32
    Y_test_repeats: np.ndarray | None = None  # (n_repeats, n_test, n_voxels) float32
    run_onsets: np.ndarray | None = None     # (n_runs,) int64 sample indices into the training set
    source: str = ""
    train_shape: tuple[int, int] | None = None  # (n_train, n_voxels), known also when Y_train was not read

    def __post_init__(self):
        if self.train_shape is None:
            self.train_shape = tuple(int(n) for n in self.Y_train.shape)

    @property
    def n_train(self) -> int:
        return int(self.train_shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.train_shape[1])


def load_responses(path: str | Path, *, train: bool = True) -> Responses:
    """Read ``Y_train``, ``Y_test`` (2-D, or 3-D with repeats first) and optional ``run_onsets``.

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
    else:
        store = _open_h5(p)
        keys = list(store.keys())
        get = lambda k: store[k][()]  # noqa: E731
        shape = lambda k: tuple(store[k].shape)  # noqa: E731
    missing = [k for k in ("Y_train", "Y_test") if k not in keys]
    if missing:
        raise InputError(f"missing key(s) {', '.join(missing)}; found {sorted(keys)}. Responses need Y_train "
                         "(n_train, n_voxels) and Y_test (n_test, n_voxels) or (n_repeats, n_test, n_voxels)",
                         source=name, field=missing[0])
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
    Y_train = arrays["Y_train"].astype(np.float32, copy=False) if train else None
    Y_test_raw = arrays["Y_test"].astype(np.float32, copy=False)
    if train:
        check_finite(Y_train, source=name, field="Y_train")
    check_finite(Y_test_raw, source=name, field="Y_test")
    if Y_test_raw.shape[-1] != train_shape[1]:
        raise InputError(f"Y_test has {Y_test_raw.shape[-1]} voxels but Y_train has {train_shape[1]}; both must "
                         "hold the same voxels in the same order (last axis)", source=name, field="Y_test")
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
        _check_constant(Y_train, name, "Y_train")
    return Responses(Y_train=Y_train, Y_test=Y_test, Y_test_repeats=repeats, run_onsets=onsets, source=name,
                     train_shape=(int(train_shape[0]), int(train_shape[1])))


def _npz_member_shape(store, key: str) -> tuple[int, ...]:
    """Shape of array ``key`` (present) in an open ``.npz`` without reading its data (the member's .npy
    header)."""
    readers = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
    with store.zip.open(f"{key}.npy") as fh:
        reader = readers.get(np.lib.format.read_magic(fh))
        shape = reader(fh)[0] if reader else store[key].shape  # other versions: read the array
    return tuple(int(n) for n in shape)


def _check_constant(Y: np.ndarray, source: str, fieldname: str) -> None:
    # A voxel without variance in the training data cannot be fitted or correlated; it is almost always a
    # masking error (voxels outside the brain), so we stop rather than silently drop it.
    # min == max is exact (a float32 std of equal values need not be 0) and, unlike std, allocates no
    # temporary of the array's size (2 GB at the study's scale).
    const = np.flatnonzero(Y.min(axis=0) == Y.max(axis=0))
    if const.size:
        raise InputError(
            f"{const.size} voxel(s) are constant over all samples (first voxel indices {const[:8].tolist()}); "
            "expected every voxel to vary. Drop those columns, or use a mask that excludes them",
            source=source, field=fieldname)


@dataclass(frozen=True)
class CortexSpec:
    subject: str
    transform: str
    mask: str


def check_cortex_spec(spec: CortexSpec | None, n_voxels: int | None = None, *, source: str = "config") -> int | None:
    """Check that the pycortex subject, transform and mask exist (and match ``n_voxels``); returns mask size."""
    if spec is None:
        return None
    import cortex  # noqa: imported late: pycortex is slow to import and optional for table-only runs
    subjects = sorted(cortex.db.subjects)
    if spec.subject not in subjects:
        raise InputError(f"unknown pycortex subject {spec.subject!r}; this pycortex database "
                         f"({cortex.database.default_filestore}) has {subjects}. Import yours with "
                         "cortex.freesurfer.import_subj, or set data.subject = \"\" for no brain views",
                         source=source, field="data.subject")
    xfm_dir = Path(cortex.database.default_filestore) / spec.subject / "transforms"
    transforms = sorted(p.name for p in xfm_dir.iterdir()) if xfm_dir.is_dir() else []
    if spec.transform not in transforms:
        raise InputError(f"unknown transform {spec.transform!r} for subject {spec.subject}; available: "
                         f"{transforms}", source=source, field="data.transform")
    masks = ("thick", "thin", "cortical", "nearest", "trilinear", "line_nearest", "line_lanczos")
    mask_files = sorted(p.name.split("mask_")[-1].rsplit(".", 1)[0]
                        for p in (xfm_dir / spec.transform).glob("mask_*"))
    if spec.mask not in masks and spec.mask not in mask_files:
        raise InputError(f"unknown mask {spec.mask!r}; expected one of {sorted(set(masks) | set(mask_files))}",
                         source=source, field="data.mask")
    mask = cortex.db.get_mask(spec.subject, spec.transform, spec.mask)
    size = int(mask.sum())
    if n_voxels is not None and n_voxels != size:
        raise InputError(f"the responses have {n_voxels} voxels but mask {spec.subject}/{spec.transform}/"
                         f"{spec.mask} holds {size}; responses must have one column per mask voxel, in the "
                         "mask's C order", source=source, field="data.mask")
    return size


@dataclass
class Dataset:
    """Everything one run reads. ``truth`` holds the planted answers for simulated data."""
    stimuli_train: ImageSource
    stimuli_test: ImageSource
    responses: Responses
    cortex: CortexSpec | None
    simulated: bool = False
    truth: dict[str, np.ndarray] = field(default_factory=dict)
    name: str = ""


def validate_dataset(ds: Dataset) -> None:
    """All the cheap cross-checks, run before any feature extraction or fitting."""
    r = ds.responses
    for label, stim, n in (("train", ds.stimuli_train, r.Y_train.shape[0]),
                           ("test", ds.stimuli_test, r.Y_test.shape[0])):
        if len(stim) != n:
            raise InputError(
                f"{len(stim)} {label} stimuli but Y_{label} has {n} samples (rows); every response sample needs "
                "exactly one stimulus, in the same order", source=getattr(stim, "name", label),
                field=f"stimuli_{label}")
    if r.Y_train.shape[0] < 10:
        raise InputError(f"only {r.Y_train.shape[0]} training samples; the encoding model needs at least 10",
                         source=r.source, field="Y_train")
    if r.Y_test.shape[0] < 3:
        raise InputError(f"only {r.Y_test.shape[0]} test samples; correlations need at least 3",
                         source=r.source, field="Y_test")
    check_cortex_spec(ds.cortex, r.n_voxels, source=r.source)
