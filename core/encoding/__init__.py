"""Voxelwise ridge encoding models with run-aware cross-validation and FIR delays."""
from core.encoding.folds import make_delayed, make_folds
from core.encoding.ridge import DEFAULT_ALPHAS, VoxelRidgeCV, fit_predict, refine_levels
from core.encoding.solvers import SOLVERS

__all__ = ["DEFAULT_ALPHAS", "SOLVERS", "VoxelRidgeCV", "fit_predict", "make_delayed", "make_folds", "refine_levels"]
