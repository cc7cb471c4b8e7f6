"""Voxel x voxel correlation-distance structure of predicted activity, without ever building the dense RDM.

The correlation distance between voxels a and b is ``1 - r_ab``, where ``r_ab`` is the Pearson correlation of
their predicted test series. With each voxel's series centred and scaled to unit norm, ``r_ab`` is a dot
product, so blocks of the RDM are matrix products of the z-scored series: the exact kNN graph
(:mod:`core.rsa.knn`), ROI x ROI block means and neighbourhood change (:mod:`core.rsa.summaries`) and the
on-vs-off agreement over voxel pairs (:mod:`core.rsa.agreement`) all work from that fact.
"""
from core.rsa.agreement import rdm_agreement, rdm_reference_scales
from core.rsa.knn import knn_correlation, knn_tile_shape, zscore_series
from core.rsa.summaries import SELECTION_RULES, knn_jaccard, roi_block_rdm, select_voxels

__all__ = ["SELECTION_RULES", "zscore_series", "knn_correlation", "knn_tile_shape", "select_voxels", "roi_block_rdm",
           "rdm_agreement", "rdm_reference_scales", "knn_jaccard"]
