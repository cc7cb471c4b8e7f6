"""Component ids of the dashboard, in one place so layout, callbacks, clientside JS and tests agree.

Ids are plain strings (the clientside JS in ``assets/attnbrain.js`` sets some of them with
``dash_clientside.set_props``); per-condition ids are built by :func:`umap_graph` and friends.
"""
from __future__ import annotations

__all__ = [
    "INFERENCE_WARNING", "umap_graph", "flat_graph", "flat_click", "flat_set", "HEADER", "SEARCH", "SEARCH_GO", "SEARCH_MSG",
    "RULE", "BINS", "ROIS", "HEMIS", "THRESHOLD", "NS_MODE", "COLOUR", "CONTRAST", "OUTCOMES", "BIN_SET", "ADDS", "ROI_PARTITION", "LEGEND", "CAMERA_LINK", "FILTER_MSG", "SELECTED",
    "SELECTED_SET", "CLEAR_SET", "SET_MSG", "R_SCATTER", "R_SCATTER_SET", "BIN_COUNTS", "ROI_MEANS",
    "ROI_RDM", "ROI_CONTRAST", "AGREEMENT", "JACCARD", "JACCARD_MAP", "INSPECTOR", "SERIES", "URL", "voxel_href", "TABLE",
    "VIEWER_FRAME", "VIEWER_LOAD", "VIEWER_COND", "VIEWER_VIEW", "VIEWER_PICK", "VIEWER_STATUS", "VIEWER_SINK",
    "CAMERA_SINK", "APP", "VOCABULARY", "cond_col", "SHOWN", "CAMERA_STATE", "SCENES", "SCENE_TITLE", "SCENE_NOTE",
    "SCENE_SAVE", "SCENE_PICK",
    "SCENE_UP", "SCENE_DOWN", "SCENE_DELETE", "SCENE_EXPORT", "SCENE_DOWNLOAD", "SCENE_UPLOAD", "SCENE_MSG",
    "SCENE_GOTO", "SCENE_CAMERAS", "SCENE_READY", "SCENE_CAPTION", "URL_TOKEN", "URL_NOTICE", "PRESENT",
]



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
INFERENCE_WARNING = "inference-warning"
SEARCH = "voxel-search"
SEARCH_GO = "voxel-search-go"
SEARCH_MSG = "voxel-search-msg"

RULE = "filter-rule"
BINS = "filter-bins"
ROIS = "filter-rois"
HEMIS = "filter-hemis"
THRESHOLD = "filter-threshold"
NS_MODE = "filter-ns"
#: Colour the views by r bin or by a contrast's outcome; the contrast; its outcomes shown; the bin set.
COLOUR = "filter-colour"
CONTRAST = "filter-contrast"
OUTCOMES = "filter-outcomes"
BIN_SET = "filter-bin-set"
#: What the joint model finds attention adds: the codes shown (core.vocabulary.ADDS_CODES).
ADDS = "filter-adds"
#: The ROI summary of the joint model's variance partition.
ROI_PARTITION = "roi-partition"
#: The colour legend (it follows the colouring and the bin set).
LEGEND = "legend"
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
#: Per ROI: share of voxels where the selected contrast's a / b predicts better, and the median Δr.
ROI_CONTRAST = "roi-contrast"
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

# ---------------------------------------------------------------------------------------------- scenes
#: The page's root element; the clientside JS puts the class ``presenting`` on it in presentation mode.
APP = "app-root"
#: Element whose ``data-vocabulary`` attribute holds what the clientside JS names (conditions, graph ids,
#: trace names, the run's bin scheme), so assets/attnbrain.js never retypes them.
VOCABULARY = "attnbrain-vocabulary"


def cond_col(condition: str) -> str:
    """Id of the condition's column (hidden when a scene shows only the other condition)."""
    return f"col-{condition}"


#: Checklist of the conditions shown (a scene's ``conditions``).
SHOWN = "shown-conditions"
#: Store the clientside JS fills with both UMAP cameras ``{"off": camera, "on": camera}`` as they change.
CAMERA_STATE = "camera-state"
#: Store of the run's scenes (a list of :mod:`dashboard.scenefile` scenes), saved to ``scenes/scenes.json``.
SCENES = "scenes"
SCENE_TITLE = "scene-title"
SCENE_NOTE = "scene-note"
SCENE_SAVE = "scene-save"
#: The scene list (RadioItems, value = index of the current scene): selecting one applies it.
SCENE_PICK = "scene-pick"
SCENE_UP = "scene-up"
SCENE_DOWN = "scene-down"
SCENE_DELETE = "scene-delete"
SCENE_EXPORT = "scene-export"
SCENE_DOWNLOAD = "scene-download"
SCENE_UPLOAD = "scene-upload"
#: Feedback of saving, importing and exporting scenes (errors, the read-only notice).
SCENE_MSG = "scene-msg"
#: Store the keyboard writes ``{"index": i, "n": counter}`` into to apply scene i (presentation mode).
SCENE_GOTO = "scene-goto"
#: Store of the cameras a scene asks for ``{"off", "on", "n"}``; the clientside JS animates to them.
SCENE_CAMERAS = "scene-cameras"
#: Store set once the page's URL scene has been applied; only then is the URL rewritten.
SCENE_READY = "scene-ready"
#: The applied scene's title and note (shown as a caption in presentation mode).
SCENE_CAPTION = "scene-caption"
#: Store of the URL query (``?scene=<token>``) mirroring the current view; the JS writes it with replaceState.
URL_TOKEN = "url-token"
#: Visible notice when the page URL's scene could not be (fully) used.
URL_NOTICE = "url-notice"
#: The button that enters presentation mode (key ``p``).
PRESENT = "present"
