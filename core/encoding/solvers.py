"""Ridge solvers: one eigendecomposition per fold (primal or dual), shared by every alpha and voxel."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["SOLVERS"]


# --------------------------------------------------------------------------------------------------------------
# Solvers: one eigendecomposition per fold, shared by every alpha and every voxel
# --------------------------------------------------------------------------------------------------------------

@dataclass
class _Fold:
    """What the alpha loop of one fold needs: validation rows projected on the fold's eigenbasis."""
    train: torch.Tensor          # (n_train,) indices
    val: torch.Tensor            # (n_val,) indices
    A_val: torch.Tensor          # (n_val, rank) validation design (centred on the training mean) in the eigenbasis
    eigvals: torch.Tensor        # (rank,) float64, the numerically non-zero eigenvalues
    basis: torch.Tensor          # (p, rank) primal or (n_train, rank) dual eigenvectors
    x_train_mean: torch.Tensor   # (p,) mean of the training rows of the design
    val_design_t: torch.Tensor | None = None  # (p, n_val) validation rows of the design, transposed (primal)


def _mm(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """``a @ b`` for the voxel-batch products, which are nearly all of a fit's flops.

    On the CPU the product runs through NumPy's BLAS on the same memory (zero-copy views): on this project's
    2-core AMD EPYC, NumPy's OpenBLAS ran these float32 shapes 10-30% faster than torch's bundled MKL
    (``bench/ridge.py`` measures the whole fit). Same products up to float rounding; CUDA uses torch.
    """
    if a.device.type != "cpu" or a.requires_grad or b.requires_grad:
        return torch.matmul(a, b, out=out)
    a_np, b_np = a.resolve_conj().numpy(), b.resolve_conj().numpy()
    if out is None:
        return torch.from_numpy(np.matmul(a_np, b_np))
    np.matmul(a_np, b_np, out=out.numpy())
    return out


def _eigh(matrix64: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenpairs of a PSD Gram/kernel matrix, keeping only the numerically non-zero ones.

    Directions with eigenvalue ~0 contribute exactly nothing to ridge predictions (the right-hand side or the
    design is orthogonal to them), but in finite precision they would be amplified by 1 / alpha for small
    alphas; dropping them (threshold as in ``numpy.linalg.matrix_rank``) is exact and also lowers the rank.

    On the CPU the decomposition is SciPy's LAPACK divide and conquer (``syevd`` in its OpenBLAS): for a
    float64 2048 x 2048 Gram matrix on the project's 2-core AMD EPYC, 1.3 s on 2 threads and 2.1 s on one,
    against 1.9 / 2.8 s for torch's bundled MKL (and 4.6 / 3.4 s vs 5.6 / 4.8 s beside a busy GEMM process);
    six of them per fit.
    """
    if matrix64.device.type == "cpu":
        from scipy.linalg import eigh
        w_np, U_np = eigh(matrix64.numpy(), driver="evd", check_finite=False)
        w, U = torch.from_numpy(w_np), torch.from_numpy(U_np)
    else:
        w, U = torch.linalg.eigh(matrix64)
    keep = w > w[-1].clamp_min(0) * matrix64.shape[0] * torch.finfo(matrix64.dtype).eps
    return w[keep], U[:, keep]


class _PrimalSolver:
    """Primal ridge in the eigenbasis of the p x p Gram matrix X^T X.

    For fold k the training Gram matrix is the full one minus the validation rows (with the rank-one
    correction for centring on the training mean), so no SVD of the tall design is needed. The training
    right-hand side X_T^T Y_T is likewise the full X^T Y minus the validation part.
    """

    name = "eigh"

    def __init__(self, D: torch.Tensor, folds: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype,
                 center: bool = True, alphas: torch.Tensor | None = None, operator_max_bytes: float = 0):
        # alphas / operator_max_bytes: used by the kernel solver only.
        # Decompositions in float64: eigendecomposing a Gram matrix squares its condition number.
        D64 = D.to(torch.float64)
        gram = D64.T @ D64
        self.D = D
        self.folds = []
        for train, val in folds:
            tr = torch.as_tensor(train, device=D.device)
            va = torch.as_tensor(val, device=D.device)
            Dv = D64[va]
            m = D64[tr].mean(0) if center else torch.zeros_like(D64[0])
            gram_k = gram - Dv.T @ Dv - len(train) * torch.outer(m, m)
            w, U = _eigh(gram_k)
            A_val = ((Dv - m) @ U).to(dtype)
            self.folds.append(_Fold(tr, va, A_val, w, U.to(dtype), m.to(dtype), D[va].T.contiguous()))
        self.eigvals, U = _eigh(gram)
        self.basis = U.to(dtype)

    def rank(self) -> int:
        return max(f.eigvals.numel() for f in self.folds)

    def batch_state(self, Yc: torch.Tensor) -> torch.Tensor:
        return _mm(self.D.T, Yc)

    def fold_coordinates(self, fold: _Fold, Yc: torch.Tensor, XtY: torch.Tensor, y_train_mean: torch.Tensor,
                         Yv: torch.Tensor) -> torch.Tensor:
        """``U_k^T X_T^T (Y_T - mean)``, from the batch's ``X^T Y`` less the fold's validation rows ``Yv``."""
        rhs = _mm(fold.val_design_t, Yv)
        torch.sub(XtY, rhs, out=rhs)
        rhs.addr_(fold.x_train_mean, y_train_mean, alpha=-fold.train.numel())
        return _mm(fold.basis.T, rhs)

    def refit(self, Yc: torch.Tensor, XtY: torch.Tensor, alphas: torch.Tensor) -> torch.Tensor:
        shrink = (1.0 / (self.eigvals[:, None] + alphas[None, :])).to(Yc.dtype)
        return _mm(self.basis, _mm(self.basis.T, XtY).mul_(shrink))


class _KernelSolver:
    """Dual (kernel) ridge in the eigenbasis of the n_train x n_train linear kernel X X^T.

    Cheaper than the primal form when samples are fewer than features (small presets, many delays). The fitted
    state is the dual coordinates ``diag(1 / (w + alpha)) U^T Y`` (rank x n_voxels): predictions are
    ``(X_new X^T U)`` times them, and the primal weights ``X^T U`` times them are formed only on request.

    When the ``n_alphas`` residual operators fit in memory (``n_alphas * n^2`` numbers: 44 MB for the demo's
    1,000 samples and 11 alphas), cross-validation uses them directly: for alpha a, ``R_a = M_a Y`` holds the
    out-of-fold residual of every training sample, where ``M_a`` folds together, in float64, each fold's
    ``X_val (K_train + alpha I)^-1 X_train^T`` restricted to its rows, the training-mean centring and the
    ``- Y_val`` term. One n x n GEMM per alpha replaces, per fold, a gather of the training rows, their
    projection on the fold's eigenbasis and the (n_val x rank) product per alpha, and no cancellation happens
    in float32.
    """

    name = "kernel"

    def __init__(self, D: torch.Tensor, folds: list[tuple[np.ndarray, np.ndarray]], dtype: torch.dtype,
                 center: bool = True, alphas: torch.Tensor | None = None, operator_max_bytes: float = 0):
        D64 = D.to(torch.float64)
        n = D64.shape[0]
        itemsize = torch.finfo(dtype).bits // 8
        use_operators = alphas is not None and alphas.numel() * n * n * itemsize <= operator_max_bytes
        self.folds = []
        self.residual_ops = None
        if use_operators:
            M = torch.zeros((alphas.numel(), n, n), dtype=torch.float64, device=D.device)
            seg = torch.zeros((len(folds), n), dtype=dtype, device=D.device)
            row = 0
        for k, (train, val) in enumerate(folds):
            tr = torch.as_tensor(train, device=D.device)
            va = torch.as_tensor(val, device=D.device)
            m = D64[tr].mean(0) if center else torch.zeros_like(D64[0])
            Dt = D64[tr] - m
            w, U = _eigh(Dt @ Dt.T)
            A_val = (D64[va] - m) @ Dt.T @ U
            if use_operators:
                rows = slice(row, row + va.numel())
                diag = torch.arange(rows.start, rows.stop, device=D.device)
                for a, alpha in enumerate(alphas):
                    H = (A_val / (w + alpha)) @ U.T                 # (n_val, n_train): fold-k predictions
                    M[a, rows, tr] = H if not center else H + ((1.0 - H.sum(1)) / tr.numel())[:, None]
                    M[a, diag, va] -= 1.0                           # - Y_val
                seg[k, rows] = 1
                row = rows.stop
                self.folds.append(_Fold(tr, va, None, w, None, None))
            else:
                self.folds.append(_Fold(tr, va, A_val.to(dtype), w, U.to(dtype), m.to(dtype)))
        if use_operators:
            self.residual_ops = M.to(dtype)
            self.fold_rows = seg   # (n_folds, n): which rows of R_a belong to which fold's validation set
        self.eigvals, U = _eigh(D64 @ D64.T)
        self.basis = U.to(dtype)
        # X^T U formed in float64: predictions are X_new X^T U diag(1 / (w + alpha)) U^T Y.
        self.design_basis = (D64.T @ U).to(dtype)

    def rank(self) -> int:
        return max(f.eigvals.numel() for f in self.folds)

    def batch_state(self, Yc: torch.Tensor) -> None:
        return None

    def fold_coordinates(self, fold: _Fold, Yc: torch.Tensor, XtY, y_train_mean: torch.Tensor,
                         Yv: torch.Tensor) -> torch.Tensor:
        return _mm(fold.basis.T, Yc[fold.train] - y_train_mean)

    def refit(self, Yc: torch.Tensor, XtY, alphas: torch.Tensor) -> torch.Tensor:
        """Dual coordinates (rank, n_voxels) of the refit on all training samples."""
        shrink = (1.0 / (self.eigvals[:, None] + alphas[None, :])).to(Yc.dtype)
        return _mm(self.basis.T, Yc).mul_(shrink)


#: Ridge solvers by name. Both choose the same alphas and give the same weights (up to rounding);
#: ``"eigh"`` costs O(p^3) per fold, ``"kernel"`` O(n^3).
SOLVERS = {"eigh": _PrimalSolver, "kernel": _KernelSolver}

