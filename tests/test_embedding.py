"""UMAP of the exact kNN graph: embedding quality (trustworthiness), seeding, graph use, numba cache, alignment."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from sklearn.manifold import trustworthiness

from core._validation import InputError
from core.embedding.umap import configure_numba_cache, embed_umap, embed_umap_each
from core.rsa import knn_correlation, zscore_series
from test_rsa import clustered_series

K = 15


@pytest.fixture(scope="module")
def clustered_graph():
    rng = np.random.default_rng(77)
    series = clustered_series(rng, 3000, n_samples=200, n_latent=20)
    idx, dist = knn_correlation(series, k=K, device="cpu")
    return series, idx, dist


def test_umap_trustworthiness_on_clustered_voxels(clustered_graph):
    series, idx, dist = clustered_graph
    emb = embed_umap(idx, dist, random_state=0)
    assert emb.shape == (3000, 3) and emb.dtype == np.float32 and np.isfinite(emb).all()
    voxels = zscore_series(series).T
    # The bar: neighbourhoods in 3-D keep the correlation-distance neighbourhoods (k = 15).
    assert trustworthiness(voxels, emb, n_neighbors=K, metric="correlation") >= 0.9
    # The measure discriminates: an unrelated layout of the same points scores near 0.5.
    scrambled = np.random.default_rng(0).standard_normal(emb.shape)
    assert trustworthiness(voxels, scrambled, n_neighbors=K, metric="correlation") < 0.6


def test_seeded_umap_is_reproducible():
    series = clustered_series(np.random.default_rng(5), 800, n_samples=100)
    idx, dist = knn_correlation(series, k=K, device="cpu")
    first = embed_umap(idx, dist, random_state=3, n_epochs=60)
    assert np.array_equal(first, embed_umap(idx, dist, random_state=3, n_epochs=60))
    assert not np.allclose(first, embed_umap(idx, dist, random_state=4, n_epochs=60))


def test_conditions_embedded_side_by_side_equal_one_after_the_other():
    rng = np.random.default_rng(8)
    graphs, series = [], []
    for _ in range(2):
        s = clustered_series(rng, 700, n_samples=100)
        graphs.append(knn_correlation(s, k=K, device="cpu"))
        series.append(s)
    # Two spawned worker processes (seeded UMAP, one BLAS thread each) give bit-identical layouts.
    parallel = embed_umap_each(graphs, series=series, max_workers=2, random_state=1, n_epochs=50)
    serial = [embed_umap(i, d, series=s, random_state=1, n_epochs=50) for (i, d), s in zip(graphs, series)]
    assert len(parallel) == 2
    for a, b in zip(parallel, serial):
        assert np.array_equal(a, b)
    with pytest.raises(InputError, match="own first neighbour"):  # checked before any worker starts
        embed_umap_each([graphs[0], (graphs[1][0][:, ::-1], graphs[1][1])], max_workers=2, random_state=1)


@pytest.mark.parametrize("cores, voxels, spawned", [(16, 29_999, False),   # too small to pay for a start-up
                                                     (16, 30_000, True), (2, 30_000, True),
                                                     (1, 50_000, False)])   # one core: nothing to share
def test_workers_only_where_they_pay(monkeypatch, cores, voxels, spawned):
    """By default conditions go to worker processes only when there are >= 2 cores and the largest graph has
    >= SPAWN_MIN_VOXELS voxels; otherwise they run here, one after the other."""
    import core._proc
    from core.embedding import umap as embedding
    assert embedding.SPAWN_MIN_VOXELS == 30_000
    calls, ran = [], []

    class InProcess:                       # a stand-in pool: records that workers were asked for
        def __init__(self, workers):
            calls.append(workers)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def map(self, fn, jobs):           # here, leaving this process's numba thread count alone
            return [fn(job[:-1] + (None,)) for job in jobs]

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    monkeypatch.setattr(core._proc, "spawn_pool", InProcess)
    monkeypatch.setattr(embedding, "embed_umap", lambda i, d, **kw: ran.append(len(i)) or np.zeros((len(i), 3)))

    def ring(n):                            # a valid 2-NN graph: each voxel, then the next one
        return np.stack([np.arange(n), (np.arange(n) + 1) % n], 1), np.tile(np.float32([0, 0.5]), (n, 1))
    graph, small = ring(voxels), ring(50)
    out = embed_umap_each([graph, small], random_state=0)
    assert [len(e) for e in out] == [voxels, 50] and ran == [voxels, 50]
    assert calls == ([2] if spawned else [])
    calls.clear()
    embed_umap_each([small, small], max_workers=2, random_state=0)   # an explicit max_workers is obeyed
    assert calls == [2]


def test_n_neighbors_reads_the_first_columns_of_the_graph():
    series = clustered_series(np.random.default_rng(6), 600, n_samples=100)
    idx, dist = knn_correlation(series, k=K, device="cpu")
    # UMAP itself would ignore n_neighbors < k below 4096 points; the graph must be cut to n_neighbors.
    pruned = embed_umap(idx, dist, n_neighbors=8, random_state=0, n_epochs=40)
    assert np.array_equal(pruned, embed_umap(idx[:, :8], dist[:, :8], random_state=0, n_epochs=40))
    assert not np.allclose(pruned, embed_umap(idx, dist, random_state=0, n_epochs=40))
    # The caller's arrays are left as they were (UMAP edits its inputs in place).
    assert np.array_equal(idx[:, 0], np.arange(600))


@pytest.mark.parametrize("change, match", [
    (lambda i, d: (i[:, ::-1], d), "own first neighbour"),
    (lambda i, d: (i, d - 0.5), "own first neighbour"),
    (lambda i, d: (i, np.where(np.arange(d.size).reshape(d.shape) == 50, np.nan, d)), r"NaN.*\(3, 5\)"),
    (lambda i, d: (i[:, :5], d), "same shape"),
    (lambda i, d: (i[0], d[0]), "2-D"),
    (lambda i, d: (i.astype(float), d), "integer"),
    (lambda i, d: (np.where(i > 500, 10_000, i), d), r"in \[0, 600\)"),
], ids=["self-not-first", "negative", "nan", "shape", "1-D", "float-index", "out-of-range"])
def test_bad_graph_raises(change, match):
    series = clustered_series(np.random.default_rng(8), 600, n_samples=60)
    idx, dist = knn_correlation(series, k=K, device="cpu")
    with pytest.raises(InputError, match=match):
        embed_umap(*change(idx, dist))


def test_bad_parameters_raise(clustered_graph):
    series, idx, dist = clustered_graph
    with pytest.raises(InputError, match="n_neighbors <= k = 15"):
        embed_umap(idx, dist, n_neighbors=16)
    with pytest.raises(InputError, match="seed"):
        embed_umap(idx, dist, random_state=-1)
    with pytest.raises(InputError, match="matching the graph"):
        embed_umap(idx, dist, series=series[:, :100])


def test_configure_numba_cache(tmp_path):
    before = os.environ.get("NUMBA_CACHE_DIR")
    try:
        chosen = configure_numba_cache(tmp_path / "numba")
        assert chosen == (tmp_path / "numba").resolve() and chosen.is_dir()
        assert os.environ["NUMBA_CACHE_DIR"] == str(chosen)
        from numba.core import config
        assert config.CACHE_DIR == str(chosen)  # numba itself now writes there
        blocker = tmp_path / "file"
        blocker.write_text("not a folder")
        with pytest.raises(InputError, match="cannot create the numba cache folder"):
            configure_numba_cache(blocker / "numba")
    finally:
        if before is None:
            os.environ.pop("NUMBA_CACHE_DIR", None)
        else:
            configure_numba_cache(before)


def test_umap_kernels_are_cached_on_disk(clustered_graph):
    from numba.core.caching import NullCache

    from core.embedding.umap import _import_umap
    _, idx, dist = clustered_graph
    embed_umap(idx, dist, random_state=0, n_epochs=5)
    umap = _import_umap()
    # umap's kernels (the fuzzy graph's and the epoch loops') cache on disk...
    assert not isinstance(umap.umap_.smooth_knn_dist._cache, NullCache)
    assert not isinstance(umap.layouts._nb_optimize_layout_euclidean_single_epoch._cache, NullCache)
    # ...except a parallel twin that shares its Python function, hence numba's cache key, with a serial one.
    assert isinstance(umap.layouts._nb_optimize_layout_euclidean_single_epoch_parallel._cache, NullCache)
    # The compiled code and index of the graph's and the layout's kernels are in the folder, for the next process.
    folder = Path(os.environ["NUMBA_CACHE_DIR"])
    assert any(folder.rglob("umap_.smooth_knn_dist*.nbi"))
    assert any(folder.rglob("layout._epoch*.nbi"))


def test_prewarm_only_on_a_cold_cache(tmp_path, monkeypatch):
    from core.embedding.umap import numba_cache_is_warm, prewarm_numba_cache
    warm = tmp_path / "warm"
    (warm / "core").mkdir(parents=True)
    (warm / "core" / "layout._epoch-40.py311.nbi").write_bytes(b"")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(warm))
    assert numba_cache_is_warm() and prewarm_numba_cache() is None


@pytest.mark.slow
def test_prewarm_fills_a_cold_cache_in_the_background(tmp_path, monkeypatch):
    """On a fresh machine the background process compiles the UMAP layout's epoch kernel into the cache (what
    the UMAP workers then load instead of compiling); once warm, nothing more is started."""
    from core.embedding.umap import numba_cache_is_warm, prewarm_numba_cache
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "cold"))
    assert not numba_cache_is_warm()
    proc = prewarm_numba_cache()
    assert proc is not None and proc.daemon
    proc.join(timeout=300)
    assert proc.exitcode == 0 and numba_cache_is_warm()
    assert prewarm_numba_cache() is None


# ------------------------------------------------------------------------------ spectral initialisation
def sheet_series(rng, n_voxels: int, n_samples: int = 200) -> np.ndarray:
    """Voxels scattered on a 2-D sheet whose series vary smoothly across it: a connected kNN graph."""
    pos = rng.random((n_voxels, 2))
    freq = rng.standard_normal((40, 2)) * 3.0
    drive = rng.standard_normal((n_samples, 40))
    return (drive @ np.cos(np.pi * pos @ freq.T).T
            + 0.3 * rng.standard_normal((n_samples, n_voxels))).astype(np.float32)


def _subspace_gap(a: np.ndarray, b: np.ndarray) -> float:
    """1 - the smallest cosine of the principal angles between the column spaces of a and b (0: same span)."""
    qa, _ = np.linalg.qr(a)
    qb, _ = np.linalg.qr(b)
    return float(1.0 - np.linalg.svd(qa.T @ qb, compute_uv=False).min())


def _fuzzy_graph(series, seed=0):
    from core.embedding.umap import _fit_data, _import_umap, _prune, _umap_graph
    idx, dist = knn_correlation(series, k=K, device="cpu")
    data = _fit_data(series, idx.shape[0], seed)
    return _prune(_umap_graph(_import_umap(), idx, dist, data, seed), None), data, (idx, dist)


def test_laplacian_eigenmap_matches_a_dense_eigendecomposition():
    from scipy.sparse.csgraph import connected_components

    from core.embedding.umap import _DENSE_EIGH_MAX, _laplacian_eigenmap
    series = sheet_series(np.random.default_rng(3), _DENSE_EIGH_MAX + 500)   # the Lanczos path
    graph, _, _ = _fuzzy_graph(series)
    assert connected_components(graph)[0] == 1
    # Brute-force reference: every eigenpair of the dense normalised Laplacian.
    A = graph.toarray().astype(np.float64)
    inv_sqrt = 1.0 / np.sqrt(A.sum(0))
    w, V = np.linalg.eigh(np.eye(A.shape[0]) - inv_sqrt[:, None] * A * inv_sqrt[None, :])
    # The wanted span (eigenvectors 2-4) is well defined: its edge eigenvalue is separated from the next.
    assert (w[4] - w[3]) / w[3] > 0.05
    ours = _laplacian_eigenmap(graph, 3)
    # ARPACK's tol=1e-6 on eigenvalues ~1 of D^-1/2 A D^-1/2 bounds the span's error far below this.
    assert _subspace_gap(ours, V[:, 1:4]) < 1e-5
    assert _subspace_gap(ours, V[:, 4:7]) > 0.5          # and the comparison can fail


def test_spectral_layout_of_several_components_matches_umap_learn():
    """Disconnected groups are laid out where umap-learn lays them out: both place the components through
    umap's component_layout from the same seed, each component's eigenmap scaled within half the distance to
    its nearest neighbour component."""
    from scipy.sparse.csgraph import connected_components
    from umap.spectral import spectral_layout

    from core.embedding.umap import _spectral_layout
    rng = np.random.default_rng(6)
    # Eight groups of voxels driven by independent signals: no kNN edge joins two groups.
    series = np.hstack([sheet_series(rng, 200 + 40 * g) for g in range(8)])
    graph, data, _ = _fuzzy_graph(series)
    n_comp, labels = connected_components(graph, directed=False)
    assert n_comp > 6        # more than 2 x dim: the data-driven component_layout path
    ours = _spectral_layout(graph, data, 3, np.random.RandomState(0))
    theirs = spectral_layout(data, graph, 3, np.random.RandomState(0), metric="correlation")
    o = np.array([ours[labels == c].mean(0) for c in range(n_comp)])
    t = np.array([theirs[labels == c].mean(0) for c in range(n_comp)])
    gaps = np.sqrt(((t[:, None] - t[None]) ** 2).sum(-1))
    np.fill_diagonal(gaps, np.inf)
    # Each of our components sits within its own place (closer to umap's centroid than half the distance
    # from there to any other component), so every component also has the same nearest neighbour.
    assert (np.sqrt(((o - t) ** 2).sum(1)) < gaps.min(1) / 2).all()
    assert np.array_equal(gaps.argmin(1), np.where(np.eye(n_comp, dtype=bool), np.inf,
                                                   np.sqrt(((o[:, None] - o[None]) ** 2).sum(-1))).argmin(1))


def test_embedding_keeps_umap_learns_quality():
    """Trustworthiness of our UMAP (faster spectral initialisation, synchronous parallel layout) within 0.01 of
    umap-learn's own on the same graph (the issue's bar for changing how UMAP is computed): a connected sheet
    and disconnected groups."""
    from core.embedding.umap import _import_umap, _mapper
    rng = np.random.default_rng(4)
    for series in (sheet_series(rng, 2500), np.hstack([sheet_series(rng, 300) for _ in range(4)])):
        _, data, (idx, dist) = _fuzzy_graph(series)
        ours = embed_umap(idx, dist, series=series, random_state=0, n_epochs=200)
        with pytest.warns(UserWarning):   # umap's own: a seed overrides n_jobs
            theirs = _mapper(_import_umap(), idx, dist, 3, 0.1, 0, 200, False).fit_transform(data)
        z = zscore_series(series).T
        t_ours = trustworthiness(z, ours, n_neighbors=K, metric="correlation")
        t_theirs = trustworthiness(z, theirs, n_neighbors=K, metric="correlation")
        assert t_ours >= t_theirs - 0.01 and t_ours > 0.95, (t_ours, t_theirs)


def test_layout_does_not_depend_on_the_thread_count():
    import numba
    series = sheet_series(np.random.default_rng(9), 600, n_samples=80)
    idx, dist = knn_correlation(series, k=K, device="cpu")
    threads = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = embed_umap(idx, dist, series=series, random_state=2, n_epochs=80)
        numba.set_num_threads(numba.config.NUMBA_NUM_THREADS)
        many = embed_umap(idx, dist, series=series, random_state=2, n_epochs=80)
    finally:
        numba.set_num_threads(threads)
    assert numba.config.NUMBA_NUM_THREADS > 1   # CI and this machine have 2 cores: the comparison means something
    assert np.array_equal(one, many)


def test_layout_optimiser_follows_umap_learns_objective():
    """From the same graph and initial layout, our synchronous optimiser and umap-learn's sequential one end
    equally faithful (trustworthiness within 0.01), and far from the initial layout."""
    from umap.layouts import optimize_layout_euclidean
    from umap.umap_ import find_ab_params, make_epochs_per_sample

    from core.embedding.umap import _spectral_init
    from core.embedding.layout import optimize_layout
    series = sheet_series(np.random.default_rng(12), 1500)
    graph, data, _ = _fuzzy_graph(series)
    init = _spectral_init(graph, data, 3, 0)
    a, b = find_ab_params(1.0, 0.1)
    ours = optimize_layout(init, graph, a, b, 200, seed=0)
    coo = graph.tocoo()
    start = (10.0 * (init - init.min(0)) / (init.max(0) - init.min(0))).astype(np.float32)
    theirs = start.copy()
    optimize_layout_euclidean(theirs, theirs, coo.row, coo.col, 200, coo.shape[0],
                              make_epochs_per_sample(coo.data, 200), a, b, np.random.RandomState(0).randint(
                                  np.iinfo(np.int32).min, np.iinfo(np.int32).max, 3).astype(np.int64),
                              move_other=True)
    z = zscore_series(series).T
    trust = lambda e: trustworthiness(z, e, n_neighbors=K, metric="correlation")  # noqa: E731
    assert abs(trust(ours) - trust(theirs)) <= 0.01
    # The optimiser itself builds the structure: from a random layout (trustworthiness ~0.5) it gets far.
    scattered = np.random.default_rng(0).uniform(0.0, 10.0, init.shape).astype(np.float32)
    assert trust(scattered) < 0.6
    assert trust(optimize_layout(scattered, graph, a, b, 200, seed=0)) > 0.9


def test_layout_attraction_moves_both_ends_of_an_edge_equally():
    """umap-learn's move_other: an attraction step moves the edge's two ends by equal and opposite amounts,
    so without repulsion (gamma = 0) the layout's centroid never moves, however much the layout contracts.
    (Moving each end on its own turn, from where it then is, breaks this and cost 0.008-0.011 of
    trustworthiness on paper-sim graphs.)"""
    from umap.umap_ import find_ab_params

    from core.embedding.umap import _spectral_init
    from core.embedding.layout import optimize_layout
    series = sheet_series(np.random.default_rng(21), 800, n_samples=80)
    graph, data, _ = _fuzzy_graph(series)
    init = _spectral_init(graph, data, 3, 0)
    start = 10.0 * (init - init.min(0)) / (init.max(0) - init.min(0))
    out = optimize_layout(init, graph, *find_ab_params(1.0, 0.1), 60, seed=0, gamma=0.0)
    coo = graph.tocoo()
    edge_length = lambda e: np.linalg.norm(e[coo.row] - e[coo.col], axis=1).mean()  # noqa: E731
    assert edge_length(out) < 0.5 * edge_length(start)                       # attraction did its work
    # float32 positions ~10 summed over 800 vertices: the centroid holds to ~1e-5 of the layout's scale.
    np.testing.assert_allclose(out.mean(0), start.mean(0), atol=1e-4)
