"""Model-agnostic geometry of vector fields: exact formulas from derivatives, and estimators that
only call the field (and its JVP/VJP). Nothing here knows about diffusion models."""

from .estimators import DIVERGENCE_METHODS, P_LAPLACIAN_METHODS, Estimate, divergence, jacobian
from .operators import direction_flux, flipd, p_laplacian
from .exact import (
    alignment_cosine,
    alignment_cosine_per_position,
    anisotropy_index,
    flipd_from_derivatives,
    mean_curvature_from_derivatives,
    normalized_infinity_laplacian,
    p_laplacian_from_derivatives,
    principal_curvatures_from_derivatives,
)
from .fields import (
    flatten_field,
    jvp,
    math_attention,
    normalized_field,
    power_field,
    vjp,
)
from .lanczos import Spectrum, hessian_eigenvalues, lanczos, principal_curvatures

__all__ = [
    "Estimate",
    "Spectrum",
    "DIVERGENCE_METHODS",
    "P_LAPLACIAN_METHODS",
    "divergence",
    "jacobian",
    "p_laplacian",
    "direction_flux",
    "flipd",
    "hessian_eigenvalues",
    "principal_curvatures",
    "lanczos",
    "p_laplacian_from_derivatives",
    "normalized_infinity_laplacian",
    "principal_curvatures_from_derivatives",
    "mean_curvature_from_derivatives",
    "anisotropy_index",
    "alignment_cosine",
    "alignment_cosine_per_position",
    "flipd_from_derivatives",
    "flatten_field",
    "jvp",
    "vjp",
    "math_attention",
    "power_field",
    "normalized_field",
]
