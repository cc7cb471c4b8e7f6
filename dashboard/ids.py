"""Component ids of the dashboard, in one place so layout, callbacks, clientside JS and tests agree.

Ids are plain strings (the clientside JS in ``assets/attnbrain.js`` sets some of them with
``dash_clientside.set_props``); per-condition ids are built by :func:`umap_graph` and friends.
"""
from __future__ import annotations

__all__ = [
    "PAIR", "umap_graph", "flat_graph", "flat_click", "flat_set", "HEADER", "SEARCH", "SEARCH_GO", "SEARCH_MSG",
    "RULE", "BINS", "ROIS", "HEMIS", "THRESHOLD", "NS_MODE", "CAMERA_LINK", "FILTER_MSG", "SELECTED",
    "SELECTED_SET", "CLEAR_SET", "SET_MSG", "R_SCATTER", "R_SCATTER_SET", "BIN_COUNTS", "ROI_MEANS",
    "ROI_RDM", "AGREEMENT", "JACCARD", "JACCARD_MAP", "INSPECTOR", "SERIES", "URL", "voxel_href", "TABLE", "VIEWER_FRAME",
    "VIEWER_LOAD", "VIEWER_COND", "VIEWER_VIEW", "VIEWER_PICK", "VIEWER_STATUS", "VIEWER_SINK", "CAMERA_SINK",
]

#: The two conditions shown side by side, left to right.
PAIR = ("off", "on")


def umap_graph(condition: str) -> str:
    """Id of the condition's 3-D UMAP ``dcc.Graph``."""
    return f"umap-{condition}"


def flat_graph(condition: str) -> str:
    """Id of the condition's flatmap ``dcc.Graph``."""
    return f"flat-{condition}"


def flat_click(condition: str) -> str:
    """Id of the ``dcc.Store`` the clientside JS fills with the data coordinates of a flatmap click."""
    return f"flat-click-{condition}"


def flat_set(condition: str) -> str:
    """Id of the ``dcc.Store`` holding the lasso/box outline drawn on the condition's flatmap."""
    return f"flat-set-{condition}"


HEADER = "header"
SEARCH = "voxel-search"
SEARCH_GO = "voxel-search-go"
SEARCH_MSG = "voxel-search-msg"

RULE = "filter-rule"
BINS = "filter-bins"
ROIS = "filter-rois"
HEMIS = "filter-hemis"
THRESHOLD = "filter-threshold"
NS_MODE = "filter-ns"
CAMERA_LINK = "camera-link"
FILTER_MSG = "filter-msg"

SELECTED = "selected-voxel"
SELECTED_SET = "selected-set"
CLEAR_SET = "clear-set"
SET_MSG = "set-msg"

R_SCATTER = "r-scatter"
R_SCATTER_SET = "r-scatter-set"
BIN_COUNTS = "bin-counts"
ROI_MEANS = "roi-means"
ROI_RDM = "roi-rdm"
AGREEMENT = "rdm-agreement"
JACCARD = "knn-jaccard"
#: The neighbourhood-change map (Jaccard per voxel at its flatmap position; clicks select).
JACCARD_MAP = "knn-jaccard-map"

INSPECTOR = "inspector"
SERIES = "inspector-series"
#: The page URL (``dcc.Location``): its hash ``#voxel=<row>`` is the selected voxel, so links in the
#: inspector and the table select voxels, selections are bookmarkable and the back button steps back.
URL = "url"


def voxel_href(voxel: int) -> str:
    """Link target that selects ``voxel`` (see :data:`URL`)."""
    return f"#voxel={int(voxel)}"


#: The voxel table (a Markdown table whose voxel ids are :func:`voxel_href` links).
TABLE = "voxel-table"

VIEWER_FRAME = "viewer-frame"
VIEWER_LOAD = "viewer-load"
VIEWER_COND = "viewer-condition"
VIEWER_VIEW = "viewer-view"
VIEWER_PICK = "viewer-pick"
VIEWER_STATUS = "viewer-status"
VIEWER_SINK = "viewer-sink"
CAMERA_SINK = "camera-sink"
