"""The dataset contract: stimuli + responses + cortex mapping, loaded and checked before heavy work.

Stimuli come as an image folder (sorted names), an (N, H, W, 3) uint8 array in ``.npy`` or HDF5 (or
channels second, or a MATLAB v7.3 file's reversed axes), a list of those (one per run), frames of a movie
pooled per response sample (``stimulus_fps``), or a movie file cut to one frame per sample at a given TR and
offset. Responses come as HDF5 or NPZ with ``Y_train`` (n_train, n_voxels) and ``Y_test`` (n_test, n_voxels) or
(n_repeats, n_test, n_voxels), and optionally ``run_onsets`` (shortclips' layout), or voxel-major as vim-2
publishes them (``rt``, ``rv``, ``rva``). Voxels NaN in every test sample are left out and counted. Every
mismatch is raised as :class:`~core._validation.InputError` naming file and field.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from core._validation import InputError
from core.data.responses import RESPONSE_EXTENSIONS, Responses, _open_h5, load_responses  # noqa: F401 (re-exported)

__all__ = ["ImageSource", "ArrayImages", "FolderImages", "MovieFrames", "PooledFrames", "ConcatImages",
           "Responses", "CortexSpec", "STIMULUS_LAYOUTS", "is_matlab_v73",
           "Dataset", "open_stimuli", "load_responses", "validate_dataset", "check_cortex_spec",
           "IMAGE_EXTENSIONS", "MOVIE_EXTENSIONS"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MOVIE_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class ImageSource(Protocol):
    """What feature extraction reads: ``len(src)`` stimuli, ``src[i]`` an (H, W, 3) uint8 array."""
    name: str

    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


#: Per-image axis order of a 4-D stimulus array, to (H, W, 3): frames first, then (H, W, 3) as numpy
#: and PIL have it, (3, H, W) as PyTorch has it, or (3, W, H): a MATLAB (H, W, 3, N) array read from a v7.3
#: (HDF5) file, whose axes a reader sees reversed (vim-2's ``st`` / ``sv``).
STIMULUS_LAYOUTS = {"nhwc": None, "nchw": (1, 2, 0), "matlab": (2, 1, 0)}


class ArrayImages:
    """Stimuli held in an (N, H, W, 3) uint8 array (memory-mapped ``.npy``, HDF5 dataset or in memory), or
    channel-first (``layout``: see :data:`STIMULUS_LAYOUTS`), each image returned as (H, W, 3)."""

    def __init__(self, array, name: str = "array", layout: str = "nhwc"):
        self.array = array
        self.name = name
        self.layout = layout
        shape = tuple(array.shape)
        channel_axis = 3 if layout == "nhwc" else 1
        if len(shape) != 4 or shape[channel_axis] != 3:
            raise InputError(
                f"expected an image array of shape (N, H, W, 3), found shape {shape}"
                + (" (a grayscale stack? repeat it to 3 channels)" if len(shape) == 3 else
                   "; channels second, (N, 3, H, W), and a MATLAB v7.3 file's (N, 3, W, H) are read too"),
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
        img = np.asarray(self.array[i])
        axes = STIMULUS_LAYOUTS[self.layout]
        return img if axes is None else np.ascontiguousarray(img.transpose(axes))

    def frames(self, start: int, stop: int) -> np.ndarray:
        """Images ``start`` to ``stop`` as (n, H, W, 3): one read of a contiguous block."""
        block = np.asarray(self.array[start:stop])
        axes = STIMULUS_LAYOUTS[self.layout]
        return block if axes is None else block.transpose((0,) + tuple(a + 1 for a in axes))

    def as_array(self) -> np.ndarray:
        if STIMULUS_LAYOUTS[self.layout] is not None:
            return np.ascontiguousarray(self.frames(0, len(self)))
        return np.asarray(self.array)


class PooledFrames:
    """A movie's frames, ``per_sample`` consecutive frames per response sample (``stimulus_fps x movie_tr``):
    ``rule = "mean"``, the frames' mean (rounded to uint8), or ``"first"``, the sample's first frame."""

    def __init__(self, frames, per_sample: int, rule: str = "mean"):
        self.frames_source, self.per_sample, self.rule = frames, int(per_sample), rule
        self.name = getattr(frames, "name", "frames")
        n = len(frames)
        if n % self.per_sample:
            raise InputError(f"{n} frames is not a whole number of samples at {self.per_sample} frames per sample "
                             f"(data.stimulus_fps x data.movie_tr); {n % self.per_sample} frames left over. Every "
                             "run file must hold whole TRs", source=self.name, field="stimulus_fps")

    def __len__(self) -> int:
        return len(self.frames_source) // self.per_sample

    def __getitem__(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(i)
        k = self.per_sample
        if self.rule == "first":
            return self.frames_source[i * k]
        block = self.frames_source.frames(i * k, (i + 1) * k) if hasattr(self.frames_source, "frames") else \
            np.stack([self.frames_source[j] for j in range(i * k, (i + 1) * k)])
        return np.rint(block.mean(axis=0, dtype=np.float64)).astype(np.uint8)


class ConcatImages:
    """Several stimulus sources (one per run file, in order) as one sequence."""

    def __init__(self, parts: list):
        self.parts = list(parts)
        self.name = " + ".join(getattr(p, "name", "part") for p in self.parts)
        self._ends = np.cumsum([len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self._ends[-1]) if self.parts else 0

    def __getitem__(self, i: int) -> np.ndarray:
        k = int(np.searchsorted(self._ends, i, side="right"))
        if i < 0 or k >= len(self.parts):
            raise IndexError(i)
        return self.parts[k][i - (int(self._ends[k - 1]) if k else 0)]

    def fingerprint(self) -> str | None:
        prints = [getattr(p, "fingerprint", lambda: None)() for p in self.parts]
        return None if None in prints else "+".join(prints)


def is_matlab_v73(path: Path) -> bool:
    """A MATLAB v7.3 MAT-file (HDF5 with MATLAB's 512-byte header): its arrays read with their axes reversed."""
    try:
        with open(path, "rb") as fh:
            return fh.read(19) == b"MATLAB 7.3 MAT-file"
    except OSError:
        return False


def _array_layout(shape: tuple, path: Path) -> str:
    if len(shape) == 4 and shape[-1] != 3 and shape[1] == 3:
        return "matlab" if is_matlab_v73(path) else "nchw"
    return "nhwc"


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


def open_stimuli(path, *, key: str = "stimuli", movie_tr: float = 0.0, movie_offset: float = 0.0,
                 n_samples: int | None = None, size: int | None = None, verify: bool = True,
                 stimulus_fps: float = 0.0, frame_pooling: str = "mean") -> ImageSource:
    """Open a stimulus source by what ``path`` is: a folder, ``.npy``, HDF5 or a movie file; or a list of
    them (one per run, in order), concatenated.

    ``stimulus_fps > 0``: the arrays hold a movie's frames at that rate, ``stimulus_fps x movie_tr`` frames per
    response sample (a whole number), pooled by ``frame_pooling`` ("mean" or "first", see :class:`PooledFrames`)
    in each file. ``verify``: open every image file of a folder once and check it is a readable image.
    """
    if isinstance(path, (list, tuple)):
        if not path:
            raise InputError("an empty list of stimulus files", field="stimuli")
        if len(path) == 1:
            path = path[0]
        else:
            kw = dict(key=key, movie_tr=movie_tr, movie_offset=movie_offset, size=size, verify=verify,
                      stimulus_fps=stimulus_fps, frame_pooling=frame_pooling)
            if any(Path(p).suffix.lower() in MOVIE_EXTENSIONS for p in path):
                raise InputError("a list of stimulus files takes image arrays (.npy, .h5/.hdf/.mat) or folders, "
                                 "not movie files; give one movie file", source=str(path[0]), field="stimuli")
            return ConcatImages([open_stimuli(p, **kw) for p in path])
    source = _open_one(path, key=key, movie_tr=movie_tr, movie_offset=movie_offset, n_samples=n_samples,
                       size=size, verify=verify, frames=stimulus_fps > 0)
    if stimulus_fps > 0 and not isinstance(source, MovieFrames):
        per = float(stimulus_fps) * float(movie_tr)
        if movie_tr <= 0 or abs(per - round(per)) > 1e-6 or round(per) < 1:
            raise InputError(f"data.stimulus_fps x data.movie_tr = {stimulus_fps:g} x {movie_tr:g} = {per:g} frames "
                             "per sample; expected a whole number of frames per response sample (set data.movie_tr "
                             "to the TR in seconds)", source=str(path), field="stimulus_fps")
        return PooledFrames(source, int(round(per)), frame_pooling)
    return source


def _open_one(path, *, key: str, movie_tr: float, movie_offset: float, n_samples: int | None, size: int | None,
              verify: bool, frames: bool) -> ImageSource:
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
        return ArrayImages(arr, name=str(p), layout=_array_layout(arr.shape, p))
    if suffix in (".h5", ".hdf5", ".hdf", ".mat"):
        h5 = _open_h5(p)
        if key not in h5:
            raise InputError(f"missing dataset '{key}'; found {sorted(h5.keys())}; set data.stimuli_key",
                             source=str(p), field=key)
        return ArrayImages(h5[key], name=f"{p}:{key}", layout=_array_layout(h5[key].shape, p))
    if suffix in MOVIE_EXTENSIONS:
        if frames:
            raise InputError("data.stimulus_fps is for arrays of frames; a movie file is cut at data.movie_tr "
                             "itself: set data.stimulus_fps = 0", source=str(p), field="stimulus_fps")
        if n_samples is None:
            raise InputError("a movie stimulus needs the number of samples (from the responses)",
                             source=str(p))
        return MovieFrames(p, tr=movie_tr, offset=movie_offset, n_samples=n_samples, size=size)
    raise InputError(f"unsupported stimulus file type '{suffix}'; expected a folder of images, .npy, .h5 or a "
                     f"movie ({', '.join(MOVIE_EXTENSIONS)})", source=str(p))


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
    mapper: str = ""                         # a mapper file instead of the pycortex subject (cortex is None)


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
    check_cortex_spec(ds.cortex, r.n_voxels if r.voxel_index is None else None, source=r.source)
    if ds.cortex is not None and r.voxel_index is not None:
        raise InputError(f"{r.n_excluded} of the file's {r.n_file_voxels} voxels are NaN in every test sample, "
                         "but a pycortex mask needs one finite column per mask voxel; drop them with a smaller "
                         "mask, or use data.mapper / data.subject = \"\"", source=r.source, field="Y_test")
    if ds.mapper:
        from core.cortex.mapper import load_mapper
        load_mapper(ds.mapper, r.n_file_voxels or r.n_voxels)
