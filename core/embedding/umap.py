"""3-D UMAP embedding of voxels from their precomputed exact kNN graph.

UMAP's numba kernels are compiled on first use (tens of seconds); this module keeps them in an on-disk cache
so a fresh process reuses them. Call :func:`configure_numba_cache` before anything imports ``umap`` or
``pynndescent`` (this module imports them lazily, inside its functions, and configures the cache itself
when nobody did).
"""
from __future__ import annotations

import importlib
import os
import sys
import time
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from core._validation import InputError, check_finite, check_ndim, check_positive_int

__all__ = ["DEFAULT_NUMBA_CACHE", "configure_numba_cache", "default_umap_workers", "embed_umap", "embed_umap_each",
           "numba_cache_is_warm", "prewarm_numba_cache"]

DEFAULT_NUMBA_CACHE = Path("~/.cache/attnbrain/numba")
"""Where numba keeps compiled kernels unless ``NUMBA_CACHE_DIR`` or an explicit path says otherwise."""

# umap-learn 0.5 compiles these modules' kernels without cache=True; caching them is what saves the
# per-process compilation (pynndescent already caches its own).
_KERNEL_MODULES = ("umap.distances", "umap.utils", "umap.sparse", "umap.layouts", "umap.spectral", "umap.umap_")
#: Voxels in the largest graph from which :func:`embed_umap_each` embeds conditions in worker processes.
SPAWN_MIN_VOXELS = 30_000

# Warnings UMAP raises for choices made here on purpose: a seed makes it single-threaded, the precomputed
# graph comes without a search index (we never call transform), and graph-only fits.
_EXPECTED_WARNINGS = (r"n_jobs value .* overridden", r"precomputed_knn\[2\]", r".*transform_mode.*")
# Features of the random stand-in data UMAP is fitted on when no series is given (see embed_umap).
_STAND_IN_FEATURES = 8


# ------------------------------------------------------------------------------------------ numba cache
def configure_numba_cache(path: str | os.PathLike | None = None) -> Path:
    """Point numba's on-disk cache of compiled kernels at a writable folder.

    Call it before ``umap`` or ``pynndescent`` is imported: numba fixes a kernel's cache location when
    the kernel is defined, i.e. at import. If numba itself was already imported, its configuration is
    reloaded so kernels defined from now on use the folder.

    Parameters
    ----------
    path : str or path-like, optional
        Cache folder. Default: ``$NUMBA_CACHE_DIR`` if set, else ``~/.cache/attnbrain/numba``.

    Returns
    -------
    pathlib.Path
        The folder in use (created if missing).
    """
    chosen = Path(path) if path is not None else Path(os.environ.get("NUMBA_CACHE_DIR") or DEFAULT_NUMBA_CACHE)
    chosen = chosen.expanduser().resolve()
    try:
        chosen.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the numba cache folder {chosen} ({exc}); pass a writable folder",
                         field="numba_cache_dir") from exc
    if not os.access(chosen, os.W_OK | os.X_OK):
        raise InputError(f"the numba cache folder {chosen} is not writable; pass a writable folder",
                         field="numba_cache_dir")
    os.environ["NUMBA_CACHE_DIR"] = str(chosen)
    if "numba" in sys.modules:
        from numba.core import config
        config.reload_config()
    return chosen


def numba_cache_is_warm(path: str | os.PathLike | None = None) -> bool:
    """Whether the numba cache already holds the UMAP layout's compiled epoch kernel (:mod:`core.embedding.layout`, the
    one a run spends most of its compilation on): a fresh machine has none, every later process loads it in
    well under a second."""
    chosen = Path(path or os.environ.get("NUMBA_CACHE_DIR") or DEFAULT_NUMBA_CACHE).expanduser()
    return chosen.is_dir() and any(chosen.rglob("layout._epoch-*.nbi"))


def _prewarm_job() -> None:
    """In a spawned process: a tiny seeded embedding and RDM agreement, with the same argument types as the
    pipeline's, so that their numba kernels get compiled into the on-disk cache."""
    try:
        from core import rsa
        rng = np.random.default_rng(0)
        series = rng.standard_normal((40, 400)).astype(np.float32)
        idx, dist = rsa.knn_correlation(series, k=10, device="cpu")
        embed_umap(idx, dist, n_components=3, random_state=0, n_epochs=5, series=series)
        rsa.rdm_agreement(series, series[::-1], n_pairs=2_000, n_boot=20, seed=0, device="cpu")
    except Exception:  # noqa: BLE001 - best effort: the real stages compile whatever is still missing
        pass


def prewarm_numba_cache():
    """Compile UMAP's (and the RDM bootstrap's) numba kernels into the on-disk cache in a background process,
    while the run's GPU stages go on; the UMAP workers then load them instead of compiling (~25-40 s each on a
    fresh machine). Only where the cache is cold; the pipeline calls it only when it runs stages side by side
    (cores to spare: on a 2-core machine it would compete with the ridge). Returns the daemon process (ended
    with this one), or None when nothing was started."""
    if not os.environ.get("NUMBA_CACHE_DIR"):
        configure_numba_cache()  # the spawned process inherits the environment, hence the same cache
    if numba_cache_is_warm():
        return None
    from core._proc import start_helper
    return start_helper(_prewarm_job, name="numba-prewarm")


def _import_umap():
    """Import umap after the cache is configured, with its kernels set to cache on disk."""
    if "umap" not in sys.modules and not os.environ.get("NUMBA_CACHE_DIR"):
        configure_numba_cache()
    import umap
    from numba.core.caching import NullCache
    from numba.core.dispatcher import Dispatcher

    kernels: dict[int, list] = {}
    for name in _KERNEL_MODULES:
        for kernel in vars(importlib.import_module(name)).values():
            if isinstance(kernel, Dispatcher):
                group = kernels.setdefault(id(kernel.py_func), [])
                if all(kernel is not other for other in group):
                    group.append(kernel)
    for group in kernels.values():
        # numba's cache key ignores compile options, so of several kernels built from one Python function
        # (umap's epoch loop exists serial and parallel) only the serial one may cache: otherwise a seeded
        # run could load the parallel build written by an unseeded one.
        serial = [k for k in group if not k.targetoptions.get("parallel")]
        if len(group) > 1 and len(serial) != 1:
            continue
        kernel = serial[0] if len(group) > 1 else group[0]
        # enable_caching() is what @njit(cache=True) calls at definition time. Kernels compiled earlier in
        # this process keep their in-memory code; new signatures are cached from now on.
        if isinstance(getattr(kernel, "_cache", None), NullCache):
            kernel.enable_caching()
    return umap


@contextmanager
def _expected_umap_warnings():
    with warnings.catch_warnings():
        for message in _EXPECTED_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        yield


# ---------------------------------------------------------------------------------------------- inputs
def _check_graph(indices, distances, n_neighbors, *, which: str = "") -> tuple[np.ndarray, np.ndarray, int]:
    """Validate a kNN graph and return int64/float32 copies pruned to ``n_neighbors`` columns."""
    idx, dist = np.asarray(indices), np.asarray(distances)
    f_idx, f_dist = f"indices{which}", f"distances{which}"
    check_ndim(idx, (2,), source="embedding", field=f_idx, layout="of shape (n_voxels, k)")
    check_ndim(dist, (2,), source="embedding", field=f_dist, layout="of shape (n_voxels, k)")
    if idx.shape != dist.shape:
        raise InputError(f"expected distances of the same shape as indices {idx.shape}, found {dist.shape}",
                         source="embedding", field=f_dist)
    if not np.issubdtype(idx.dtype, np.integer):
        raise InputError(f"expected integer voxel indices, found dtype {idx.dtype}", source="embedding", field=f_idx)
    check_finite(dist, source="embedding", field=f_dist)
    n_voxels, k = idx.shape
    if idx.min() < 0 or idx.max() >= n_voxels:
        raise InputError(f"expected indices in [0, {n_voxels}), found [{idx.min()}, {idx.max()}]",
                         source="embedding", field=f_idx)
    if not np.array_equal(idx[:, 0], np.arange(n_voxels)) or np.any(dist[:, 0] != 0) or np.any(dist < 0):
        raise InputError("expected each voxel to be its own first neighbour at distance 0 and all distances "
                         ">= 0 (the layout of rsa.knn_correlation)", source="embedding", field=f_idx)
    n_neighbors = k if n_neighbors is None else check_positive_int(n_neighbors, field="n_neighbors",
                                                                 source="embedding")
    if not 2 <= n_neighbors <= k:
        raise InputError(f"expected 2 <= n_neighbors <= k = {k} (the graph's columns, self included), "
                         f"found {n_neighbors}", source="embedding", field="n_neighbors")
    if n_voxels <= n_neighbors:
        raise InputError(f"expected more voxels than n_neighbors = {n_neighbors}, found {n_voxels}",
                         source="embedding", field=f_idx)
    # UMAP marks disconnected edges in place on the arrays it is given: hand it copies.
    return (np.ascontiguousarray(idx[:, :n_neighbors], dtype=np.int64).copy(),
            np.ascontiguousarray(dist[:, :n_neighbors], dtype=np.float32).copy(), n_neighbors)


def _fit_data(series, n_voxels: int, random_state) -> np.ndarray:
    """The data matrix UMAP is fitted on, of shape (n_voxels, n_features).

    With a precomputed graph, UMAP reads the data only to place connected components of the graph relative
    to each other (correlation between component centroids). The z-scored series give that placement its
    meaning; without them a seeded random stand-in places components arbitrarily, as UMAP itself does
    when it has no data.
    """
    if series is None:
        seed = 0 if random_state is None else random_state
        return np.random.default_rng(seed).standard_normal((n_voxels, _STAND_IN_FEATURES)).astype(np.float32)
    from core.rsa import zscore_series
    z = zscore_series(series)
    if z.shape[1] != n_voxels:
        raise InputError(f"expected series of shape (n_samples, {n_voxels}) matching the graph, found "
                         f"{z.shape}", source="embedding", field="series")
    return np.ascontiguousarray(z.T)


def _check_seed(random_state):
    if random_state is not None and (isinstance(random_state, bool) or not isinstance(random_state, (int, np.integer))
                                     or random_state < 0):
        raise InputError(f"expected a non-negative integer seed or None, found {random_state!r}",
                         source="embedding", field="random_state")


def _mapper(umap, idx, dist, n_components, min_dist, random_state, n_epochs, verbose, **extra):
    return umap.UMAP(
        n_components=n_components, n_neighbors=idx.shape[1], min_dist=min_dist, metric="correlation",
        precomputed_knn=(idx, dist), random_state=random_state, n_epochs=n_epochs, verbose=verbose,
        n_jobs=1 if random_state is not None else -1, **extra)


# ---------------------------------------------------------------------------------- spectral initialisation
#: Lanczos settings of the spectral initialisation: ARPACK's basis size and tolerance on the eigenvalues of the
#: normalised adjacency (~1); below ``_DENSE_EIGH_MAX`` vertices a dense eigendecomposition is used instead.
_LANCZOS_NCV = 40
_LANCZOS_TOL = 1e-6
_DENSE_EIGH_MAX = 2000


def _laplacian_eigenmap(graph, dim: int) -> np.ndarray:
    """The ``dim`` eigenvectors of the normalised graph Laplacian ``I - D^-1/2 A D^-1/2`` with the smallest
    non-zero eigenvalues (of a connected graph), float64 (n_vertices, dim).

    umap-learn asks ARPACK for the smallest eigenvalues of the Laplacian (``which="SM"``) with a basis of
    sqrt(n) vectors and a tolerance relative to those tiny eigenvalues: 27 s for a 50,000-voxel graph on one
    core. The same vectors are the largest of ``D^-1/2 A D^-1/2`` (the Krylov spaces are identical); asked
    for those with a 40-vector basis and ``tol=1e-6`` ARPACK took 7.6 s there, and the subspace it returned
    differs from shift-invert's (exact to 1e-14) by 1 - cos = 1.6e-7 (tests/test_embedding.py checks it
    against a dense eigendecomposition). Shift-invert itself (3.6 s there) needs a sparse LU whose fill-in
    is unbounded on high-dimensional neighbourhood graphs, so it is not used.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import eigsh
    n, k = graph.shape[0], dim + 1
    inv_sqrt = sp.diags(1.0 / np.sqrt(np.asarray(graph.sum(axis=0), dtype=np.float64).ravel()))
    M = (inv_sqrt @ graph.astype(np.float64) @ inv_sqrt).tocsr()
    if n <= _DENSE_EIGH_MAX:
        from scipy.linalg import eigh
        w, V = eigh(M.toarray())
    else:
        w, V = eigsh(M, k, which="LA", ncv=min(n - 1, max(2 * k + 1, _LANCZOS_NCV)), tol=_LANCZOS_TOL,
                     v0=np.ones(n), maxiter=n * 5)
    return V[:, np.argsort(-w)[1:k]]


def _default_epochs(n_vertices: int) -> int:
    """umap-learn's default number of epochs: 500 up to 10,000 vertices, 200 above."""
    return 500 if n_vertices <= 10_000 else 200


def _prune(graph, n_epochs: int | None):
    """The graph UMAP optimises and initialises from: edges too weak to be sampled once in ``n_epochs``
    dropped, as in ``umap.umap_.simplicial_set_embedding`` (CSR, float32)."""
    g = graph.tocoo(copy=True)
    g.sum_duplicates()
    if not n_epochs or n_epochs <= 10:  # none or too few to prune by: umap-learn prunes by its default count
        n_epochs = _default_epochs(g.shape[0])
    g.data[g.data < g.data.max() / float(n_epochs)] = 0.0
    g.eliminate_zeros()
    return g.tocsr()


def _spectral_layout(graph, data: np.ndarray, dim: int, rs: np.random.RandomState) -> np.ndarray:
    """umap-learn's ``spectral_layout`` with a faster eigensolver, float64 (n_vertices, dim).

    A connected graph gets its Laplacian eigenmap. Several components are placed by umap's
    ``component_layout`` (spectral embedding of the components' centroids in ``data``, correlation distance)
    or, for at most ``2 dim`` of them, on +-unit axes; each component's own eigenmap is scaled to half the
    distance to the nearest other component and centred on its place (components of fewer than ``2 dim``
    vertices: uniform random there). Only the eigensolver differs from umap (see :func:`_laplacian_eigenmap`).
    """
    from scipy.sparse.csgraph import connected_components
    from sklearn.metrics import pairwise_distances
    from umap.spectral import component_layout

    n_comp, labels = connected_components(graph, directed=False)
    if n_comp == 1:
        return _laplacian_eigenmap(graph, dim)
    emb = np.empty((graph.shape[0], dim), dtype=np.float64)
    if n_comp > 2 * dim:
        meta = component_layout(data, n_comp, labels, dim, rs, metric="correlation", metric_kwds={})
    else:
        half = int(np.ceil(n_comp / 2.0))
        base = np.hstack([np.eye(half), np.zeros((half, dim - half))])
        meta = np.vstack([base, -base])[:n_comp]
    for label in range(n_comp):
        members = labels == label
        size = int(members.sum())
        gaps = pairwise_distances(meta[label:label + 1], meta)
        data_range = gaps[gaps > 0.0].min() / 2.0
        if size < 2 * dim or size <= dim + 1:
            emb[members] = rs.uniform(-data_range, data_range, size=(size, dim)) + meta[label]
        else:
            part = _laplacian_eigenmap(graph[members][:, members], dim)
            emb[members] = part * (data_range / np.abs(part).max()) + meta[label]
    return emb


def _spectral_init(graph, data: np.ndarray, dim: int, seed: int | None) -> np.ndarray:
    """umap-learn's ``init="spectral"`` of the pruned ``graph``, float32 (n_vertices, dim): the layout, scaled
    to at most 10 and jittered by 1e-4 (``noisy_scale_coords``), seeded by ``seed``."""
    from scipy.sparse.linalg import ArpackError
    from umap.umap_ import noisy_scale_coords

    rs = np.random.RandomState(seed)
    try:
        emb = _spectral_layout(graph, data, dim, rs)
    except ArpackError as err:  # umap-learn's own fallback, said out loud
        warnings.warn(f"spectral initialisation of the UMAP failed ({err}); using a seeded random initialisation",
                      RuntimeWarning, stacklevel=3)
        emb = rs.uniform(-10.0, 10.0, size=(graph.shape[0], dim))
    return noisy_scale_coords(emb, rs, max_coord=10, noise=0.0001).astype(np.float32)


def _umap_graph(umap, idx: np.ndarray, dist: np.ndarray, data: np.ndarray, seed: int | None):
    """The fuzzy simplicial set ``UMAP.fit`` builds from a precomputed kNN graph: same call and defaults, and
    like it, neighbours at correlation distance 2 (r = -1) disconnected first."""
    from umap.umap_ import DISCONNECTION_DISTANCES, fuzzy_simplicial_set
    far = dist >= DISCONNECTION_DISTANCES["correlation"]
    if far.any():
        idx, dist = np.where(far, -1, idx), np.where(far, np.inf, dist)
    graph, _, _ = fuzzy_simplicial_set(data, idx.shape[1], np.random.RandomState(seed), "correlation",
                                       knn_indices=idx, knn_dists=dist)
    return graph


# ------------------------------------------------------------------------------------------- embedding
def embed_umap(indices, distances, *, n_components: int = 3, n_neighbors: int | None = None,
               min_dist: float = 0.1, random_state: int | None = 0, n_epochs: int | None = None,
               verbose: bool = False, series=None) -> np.ndarray:
    """UMAP embedding of voxels from their precomputed kNN graph under correlation distance.

    umap-learn's fuzzy graph and spectral initialisation (the latter computed here by :func:`_spectral_init`:
    same eigenvectors and component placement, a faster eigensolver), then the layout optimised by
    :func:`core.embedding.layout.optimize_layout`: umap-learn's objective, schedule and gradients, reordered into blocks
    so that it runs on every core and gives the same layout for any thread count. For 50,000 voxels on this
    project's 2-core machine: 4-10 s of graph and initialisation instead of ~29 s, 200 epochs in 26.5 s on one
    thread and 16.5 s on two, and trustworthiness equal to umap-learn's (tested within 0.01).

    Parameters
    ----------
    indices : int array of shape (n_voxels, k)
        Neighbours of each voxel, itself first (as returned by :func:`core.rsa.knn_correlation`).
    distances : float array of shape (n_voxels, k)
        Correlation distances ``1 - r`` to those neighbours, 0 first.
    n_components : int
        Embedding dimensions (3 for the study's views).
    n_neighbors : int, optional
        Neighbours UMAP uses, self included, ``2 <= n_neighbors <= k``; default ``k``.
    min_dist : float
        UMAP's minimum distance between embedded points.
    random_state : int or None
        Seed. The layout is bit-identical for a given seed whatever the number of threads; ``None`` draws one.
    n_epochs : int, optional
        Optimisation epochs; default UMAP's (500 below 10,000 voxels, 200 above).
    verbose : bool
        Print UMAP's progress.
    series : array of shape (n_samples, n_voxels), optional
        The predicted series the graph was built from. UMAP uses them only to place disconnected parts of
        the graph relative to each other; without them those parts are placed arbitrarily (seeded).

    Returns
    -------
    embedding : float32 array of shape (n_voxels, n_components)
    """
    _check_seed(random_state)
    n_components = check_positive_int(n_components, field="n_components", source="embedding")
    if n_epochs is not None:
        n_epochs = check_positive_int(n_epochs, field="n_epochs", source="embedding")
    idx, dist, _ = _check_graph(indices, distances, n_neighbors)
    data = _fit_data(series, idx.shape[0], random_state)
    umap = _import_umap()
    from threadpoolctl import threadpool_limits
    from umap.umap_ import find_ab_params

    from core.embedding.layout import optimize_layout
    seed = random_state if random_state is not None else int(np.random.SeedSequence().entropy % 2**32)
    n_epochs = n_epochs or _default_epochs(idx.shape[0])
    t0 = time.perf_counter()
    # One BLAS thread in the spectral initialisation: its result then does not depend on the machine's core
    # count or on how many embeddings run side by side (the layout's own threads never change its result).
    with _expected_umap_warnings(), threadpool_limits(1):
        graph = _prune(_umap_graph(umap, idx, dist, data, seed), n_epochs)
        init = _spectral_init(graph, data, n_components, seed)
        a, b = find_ab_params(1.0, min_dist)
    t1 = time.perf_counter()
    embedding = optimize_layout(init, graph, a, b, n_epochs, seed)   # numba threads, outside the BLAS limit
    if verbose:
        print(f"UMAP of {idx.shape[0]:,} voxels: graph and spectral initialisation {t1 - t0:.1f} s, "
              f"{n_epochs} epochs {time.perf_counter() - t1:.1f} s", flush=True)
    return np.asarray(embedding, dtype=np.float32)


def _embed_umap_job(args: tuple) -> np.ndarray:
    indices, distances, series, kwargs, threads = args
    if threads:
        import numba
        numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    return embed_umap(indices, distances, series=series, **kwargs)


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def default_umap_workers(graph_sizes: Sequence[int]) -> int:
    """Worker processes :func:`embed_umap_each` uses by default for graphs of these voxel counts (1: none).

    A worker costs a Python start-up and the umap/numba imports (~5-7 s on 2 cores); it pays back by running
    one condition's single-threaded graph and initialisation beside another's, which matters only for large
    graphs. ``bench/umap_workers.py`` on 2 cores, two conditions (medians of 2): 300 voxels 11.0 s in workers
    against 8.8 s one after the other in-process, 5,000 21.7 against 21.7 s, 20,000 31.3 against 30.2 s,
    53,000 82.5 against 90.1 s.
    """
    workers = min(len(graph_sizes), _cores())
    if workers < 2 or max(graph_sizes) < SPAWN_MIN_VOXELS:
        return 1
    return workers


def embed_umap_each(graphs: Sequence[tuple[np.ndarray, np.ndarray]], *, series: Sequence | None = None,
                    max_workers: int | None = None, **kwargs) -> list[np.ndarray]:
    """:func:`embed_umap` of each graph (e.g. attention off and on), side by side in worker processes.

    The graph and the spectral initialisation run on one core, so on a machine with several cores large
    graphs are embedded at the same time, each in its own process (``spawn``: no state is inherited from a
    parent that has already started OpenMP thread pools) with an equal share of the cores for its layout
    optimisation. The result is identical to embedding them one after the other (the layout does not depend
    on the thread count). Small graphs, one graph or one core need no workers: those run here, in order.

    Parameters
    ----------
    graphs : sequence of (indices, distances)
        One kNN graph per condition, as for :func:`embed_umap`.
    series : sequence of arrays or None, optional
        Per graph, as ``series`` in :func:`embed_umap`.
    max_workers : int, optional
        Most processes at once. Default: :func:`default_umap_workers` (one per graph, at most one per core,
        if the largest graph has :data:`SPAWN_MIN_VOXELS` voxels or more, else none: all run here, in order).
    **kwargs
        Passed to :func:`embed_umap` (``n_components``, ``n_neighbors``, ``min_dist``, ``random_state``...).

    Returns
    -------
    list of float32 arrays of shape (n_voxels_c, n_components), in the order of ``graphs``.
    """
    series = [None] * len(graphs) if series is None else list(series)
    if len(series) != len(graphs):
        raise InputError(f"expected one series per graph ({len(graphs)}), found {len(series)}",
                         source="embedding", field="series")
    cores = _cores()
    if max_workers is None:
        workers = default_umap_workers([len(i) for i, _ in graphs])
    else:
        workers = min(len(graphs), check_positive_int(max_workers, field="max_workers", source="embedding"))
    if workers <= 1:
        return [_embed_umap_job((i, d, s, kwargs, None)) for (i, d), s in zip(graphs, series)]
    jobs = [(i, d, s, kwargs, max(1, cores // workers)) for (i, d), s in zip(graphs, series)]
    for i, d, _, _, _ in jobs:  # bad input fails here, with its message, not inside a worker
        _check_graph(i, d, kwargs.get("n_neighbors"))
    from core._proc import spawn_pool
    with spawn_pool(workers) as pool:
        return list(pool.map(_embed_umap_job, jobs))


