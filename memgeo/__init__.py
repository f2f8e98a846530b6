"""memgeo: the geometry of a diffusion model's score field, to detect, explain and mitigate memorization.

Subpackages: :mod:`memgeo.geometry` (estimators over vector fields), :mod:`memgeo.gmm`
(analytic Gaussian mixtures). Importing memgeo does not import diffusers.
"""

from . import geometry, gmm

__version__ = "0.1.0"
__all__ = ["geometry", "gmm", "__version__"]
