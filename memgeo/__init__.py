"""memgeo: the geometry of a diffusion model's score field, to detect, explain and mitigate memorization.

Subpackages: :mod:`memgeo.geometry` (estimators over vector fields), :mod:`memgeo.gmm`
(analytic Gaussian mixtures), :mod:`memgeo.detect` (memorization signals, sampler, metrics),
:mod:`memgeo.mitigate` (mitigations) and :mod:`memgeo.sd` (diffusers checkpoints, the tiny
offline pipeline and the memorization testbed). Importing memgeo does not import diffusers;
``memgeo.sd`` does when it is imported.
"""

from . import detect, geometry, gmm, mitigate

__version__ = "0.1.0"
__all__ = ["detect", "geometry", "gmm", "mitigate", "__version__"]
