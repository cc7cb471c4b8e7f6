"""3-D UMAP of the voxels' kNN graphs (:mod:`core.embedding.umap`) and its layout optimiser
(:mod:`core.embedding.layout`)."""
from core.embedding.umap import (DEFAULT_NUMBA_CACHE, configure_numba_cache, default_umap_workers, embed_umap,
                                 embed_umap_each, numba_cache_is_warm, prewarm_numba_cache)

__all__ = ["DEFAULT_NUMBA_CACHE", "configure_numba_cache", "default_umap_workers", "embed_umap", "embed_umap_each",
           "numba_cache_is_warm", "prewarm_numba_cache"]
