r"""Gaussian mixtures with closed-form log-density, score and Hessian.

A mixture :math:`p(x) = \sum_k \pi_k \mathcal N(x; \mu_k, S_k)` is stored through the
eigendecomposition :math:`S_k = U_k \operatorname{diag}(\lambda_k) U_k^\top`, computed once.
Noising, :math:`\alpha X + \sigma N(0, I)`, keeps the eigenvectors and maps
:math:`\lambda \mapsto \alpha^2 \lambda + \sigma^2`, :math:`\mu \mapsto \alpha \mu` (docs/conventions.md, section 2),
so the marginals of a diffusion cost nothing to form. Isotropic and diagonal mixtures skip
:math:`U` entirely. All methods take points with arbitrary leading dimensions ``[..., dim]``.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from .._checks import (
    check_finite,
    check_int,
    check_nonnegative,
    check_positive,
    check_tensor,
)

__all__ = ["GaussianMixture"]

_KINDS = ("isotropic", "diagonal", "full")


class GaussianMixture:
    r"""A mixture of Gaussians in :math:`\mathbb R^d` with closed-form derivatives of :math:`\log p`.

    Args:
        weights: mixture weights :math:`\pi`, shape ``[K]``, non-negative, summing to one.
        means: component means :math:`\mu`, shape ``[K, d]``.
        covariances: ``[K, d, d]`` (full, symmetric positive definite), ``[K, d]`` (diagonal
            variances) or ``[K]`` (isotropic variances).
        dtype: floating dtype of every stored quantity; inputs are converted once here.
            Points passed to the methods must already have this dtype.
        device: device of the stored quantities.

    Raises:
        ValueError: for mismatched shapes, NaN or infinity, negative weights or weights that
            do not sum to one, and covariances that are not symmetric positive definite.
    """

    def __init__(self, weights, means, covariances, *, dtype: torch.dtype = torch.float64, device=None):
        weights = torch.as_tensor(weights, dtype=dtype, device=device)
        means = torch.as_tensor(means, dtype=dtype, device=device)
        covariances = torch.as_tensor(covariances, dtype=dtype, device=device)
        if means.dim() != 2:
            raise ValueError(f"means must have shape [K, d], got {tuple(means.shape)}")
        K, d = means.shape
        if K < 1 or d < 1:
            raise ValueError(f"means must have at least one component and one dimension, got {tuple(means.shape)}")
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape [K] = [{K}] to match means, got {tuple(weights.shape)}")
        for name, t in (("weights", weights), ("means", means), ("covariances", covariances)):
            check_finite(name, t)
        if bool((weights < 0).any()):
            raise ValueError(f"weights must be non-negative, got {weights.tolist()}")
        total = float(weights.sum())
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"weights must sum to one, they sum to {total}")

        if covariances.shape == (K,):
            kind, lam, U = "isotropic", covariances[:, None].expand(K, d).clone(), None
            if bool((covariances <= 0).any()):
                raise ValueError("covariances (isotropic variances, shape [K]) must be > 0")
        elif covariances.shape == (K, d):
            kind, lam, U = "diagonal", covariances.clone(), None
            if bool((covariances <= 0).any()):
                raise ValueError("covariances (diagonal variances, shape [K, d]) must be > 0")
        elif covariances.shape == (K, d, d):
            kind = "full"
            asym = (covariances - covariances.transpose(-1, -2)).abs().max()
            scale = covariances.abs().max().clamp_min(1.0)
            if float(asym) > 1e-10 * float(scale):
                raise ValueError(f"covariances must be symmetric, max |S - S^T| = {float(asym):.3g}")
            lam, U = torch.linalg.eigh(0.5 * (covariances + covariances.transpose(-1, -2)))
            if bool((lam <= 0).any()):
                raise ValueError(
                    f"covariances must be positive definite, smallest eigenvalue {float(lam.min()):.3g}"
                )
        else:
            raise ValueError(
                f"covariances must have shape [K] (isotropic), [K, d] (diagonal) or [K, d, d] (full) "
                f"with K = {K}, d = {d}; got {tuple(covariances.shape)}"
            )
        self._set(weights, means, lam, U, kind)

    # ------------------------------------------------------------------ construction helpers
    def _set(self, weights, means, lam, U, kind):
        self.weights = weights  # pi: [K]
        self.means = means  # mu: [K, d]
        self.eigenvalues = lam  # lambda: [K, d]
        self.eigenvectors = U  # U: [K, d, d] (columns) or None for isotropic / diagonal
        self.kind = kind
        self._log_weights = torch.log(weights)  # -inf for zero weights, harmless in logsumexp
        self._logdet = torch.log(lam).sum(-1)  # log det S_k: [K]

    @classmethod
    def _from_eigen(cls, weights, means, lam, U, kind) -> "GaussianMixture":
        obj = cls.__new__(cls)
        obj._set(weights, means, lam, U, kind)
        return obj

    @classmethod
    def concatenate(cls, mixtures: Sequence["GaussianMixture"], weights) -> "GaussianMixture":
        r"""The mixture :math:`\sum_j w_j p_j` of mixtures :math:`p_j` (components concatenated).

        Mixtures of different kinds are promoted to the most general kind among them.
        """
        if len(mixtures) == 0:
            raise ValueError("mixtures must hold at least one GaussianMixture")
        ref = mixtures[0]
        w = torch.as_tensor(weights, dtype=ref.dtype, device=ref.device)
        if w.shape != (len(mixtures),):
            raise ValueError(f"weights must have shape [{len(mixtures)}], got {tuple(w.shape)}")
        check_finite("weights", w.detach())
        if bool((w.detach() < 0).any()) or abs(float(w.detach().sum()) - 1.0) > 1e-6:
            raise ValueError(f"weights must be non-negative and sum to one, got {w.tolist()}")
        for m in mixtures:
            if m.dim != ref.dim or m.dtype != ref.dtype:
                raise ValueError("mixtures must share dim and dtype to be concatenated")
        kind = max((m.kind for m in mixtures), key=_KINDS.index)
        eye = torch.eye(ref.dim, dtype=ref.dtype, device=ref.device)
        Us = [
            (m.eigenvectors if m.eigenvectors is not None else eye.expand(m.n_components, -1, -1))
            for m in mixtures
        ]
        return cls._from_eigen(
            torch.cat([wj * m.weights for wj, m in zip(w, mixtures)]),
            torch.cat([m.means for m in mixtures]),
            torch.cat([m.eigenvalues for m in mixtures]),
            torch.cat(Us) if kind == "full" else None,
            kind,
        )

    # ------------------------------------------------------------------ properties
    @property
    def dim(self) -> int:
        return self.means.shape[-1]

    @property
    def n_components(self) -> int:
        return self.means.shape[0]

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def covariances(self) -> torch.Tensor:
        """The full covariance matrices ``[K, d, d]``."""
        if self.eigenvectors is None:
            return torch.diag_embed(self.eigenvalues)
        U = self.eigenvectors
        return torch.einsum("kde,ke,kfe->kdf", U, self.eigenvalues, U)  # U diag(lam) U^T

    @property
    def precisions(self) -> torch.Tensor:
        """The inverse covariance matrices ``[K, d, d]``."""
        if self.eigenvectors is None:
            return torch.diag_embed(1.0 / self.eigenvalues)
        U = self.eigenvectors
        return torch.einsum("kde,ke,kfe->kdf", U, 1.0 / self.eigenvalues, U)

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.n_components}, dim={self.dim}, kind={self.kind!r}, dtype={self.dtype})"

    # ------------------------------------------------------------------ closed forms
    def _check_x(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor("x", x, min_dim=1, dtype=self.dtype)
        if x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape [..., {self.dim}], got {tuple(x.shape)}")
        check_finite("x", x)
        return x

    def _whiten(self, x: torch.Tensor):
        """Per-component quantities at x: ``log pi_k N_k(x)`` and ``z = U^T (x - mu) / lam``."""
        diff = x[..., None, :] - self.means  # x - mu_k: [..., K, d]
        if self.eigenvectors is not None:
            diff = torch.einsum("...kd,kde->...ke", diff, self.eigenvectors)  # U_k^T (x - mu_k): [..., K, d]
        z = diff / self.eigenvalues  # lam^-1 U^T (x - mu): [..., K, d]
        maha = (diff * z).sum(-1)  # (x - mu)^T S^-1 (x - mu): [..., K]
        log_comp = self._log_weights - 0.5 * (self.dim * math.log(2 * math.pi) + self._logdet + maha)  # [..., K]
        return log_comp, z

    def _component_scores(self, z: torch.Tensor) -> torch.Tensor:
        if self.eigenvectors is None:
            return -z  # s_k = -S_k^-1 (x - mu_k): [..., K, d]
        return -torch.einsum("kde,...ke->...kd", self.eigenvectors, z)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log p(x)`` by logsumexp over components, finite far from every mode. Shape ``[...]``."""
        log_comp, _ = self._whiten(self._check_x(x))
        return torch.logsumexp(log_comp, dim=-1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities ``r_k(x)``, shape ``[..., K]``."""
        log_comp, _ = self._whiten(self._check_x(x))
        return torch.softmax(log_comp, dim=-1)

    def score(self, x: torch.Tensor) -> torch.Tensor:
        r"""Score :math:`s = \nabla \log p = \sum_k r_k s_k`, shape ``[..., d]``."""
        log_comp, z = self._whiten(self._check_x(x))
        r = torch.softmax(log_comp, dim=-1)  # r_k: [..., K]
        return torch.einsum("...k,...kd->...d", r, self._component_scores(z))

    def score_and_hessian(self, x: torch.Tensor):
        r"""Score and Hessian of :math:`\log p` in one pass.

        :math:`H = \sum_k r_k (-S_k^{-1}) + \sum_k r_k (s_k - s)(s_k - s)^\top`, the second term
        written as a covariance for numerical stability. Shapes ``[..., d]`` and ``[..., d, d]``.
        """
        log_comp, z = self._whiten(self._check_x(x))
        r = torch.softmax(log_comp, dim=-1)  # [..., K]
        s_k = self._component_scores(z)  # [..., K, d]
        s = torch.einsum("...k,...kd->...d", r, s_k)  # [..., d]
        c = s_k - s[..., None, :]  # s_k - s: [..., K, d]
        between = torch.einsum("...k,...kd,...ke->...de", r, c, c)  # sum_k r_k c_k c_k^T: [..., d, d]
        if self.eigenvectors is None:
            within = torch.diag_embed(r @ (1.0 / self.eigenvalues))  # sum_k r_k S_k^-1: [..., d, d]
        else:
            within = torch.einsum("...k,kde->...de", r, self.precisions)
        return s, between - within

    def hessian(self, x: torch.Tensor) -> torch.Tensor:
        r"""Hessian :math:`\nabla^2 \log p`, shape ``[..., d, d]`` (symmetric)."""
        return self.score_and_hessian(x)[1]

    def laplacian(self, x: torch.Tensor) -> torch.Tensor:
        r""":math:`\Delta \log p = \sum_k r_k(|s_k - s|^2 - \operatorname{tr} S_k^{-1})` without forming H. Shape ``[...]``."""
        log_comp, z = self._whiten(self._check_x(x))
        r = torch.softmax(log_comp, dim=-1)
        s_k = self._component_scores(z)
        s = torch.einsum("...k,...kd->...d", r, s_k)
        spread = ((s_k - s[..., None, :]) ** 2).sum(-1)  # |s_k - s|^2: [..., K]
        return (r * (spread - (1.0 / self.eigenvalues).sum(-1))).sum(-1)

    # ------------------------------------------------------------------ sampling and noising
    def sample(self, n: int, *, generator: torch.Generator | None = None, return_components: bool = False):
        """Draw ``n`` samples, shape ``[n, d]`` (and the component index of each if asked)."""
        n = check_int("n", n, minimum=1)
        comp = torch.multinomial(self.weights.cpu(), n, replacement=True, generator=generator).to(self.device)
        eps = torch.randn(n, self.dim, dtype=self.dtype, generator=generator).to(self.device)
        y = eps * self.eigenvalues[comp].sqrt()  # sqrt(lam) eps: [n, d]
        if self.eigenvectors is not None:
            y = torch.einsum("nde,ne->nd", self.eigenvectors[comp], y)  # U sqrt(lam) eps
        x = self.means[comp] + y
        return (x, comp) if return_components else x

    def noised(self, alpha, sigma) -> "GaussianMixture":
        r"""The law of :math:`\alpha X + \sigma N(0, I)`: :math:`\sum_k \pi_k N(\alpha\mu_k, \alpha^2 S_k + \sigma^2 I)`.

        ``alpha`` must be > 0 and ``sigma`` >= 0 (``sigma = 0`` is a pure rescaling).
        """
        alpha = check_positive("alpha", alpha)
        sigma = check_nonnegative("sigma", sigma)
        return GaussianMixture._from_eigen(
            self.weights,
            alpha * self.means,
            alpha**2 * self.eigenvalues + sigma**2,
            self.eigenvectors,
            self.kind,
        )
