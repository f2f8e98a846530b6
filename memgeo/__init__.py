"""memgeo: the geometry of a diffusion model's score field, to detect, explain and mitigate memorization.

Rooms, bottom to top (imports point down only): :mod:`memgeo.geometry` (estimators over vector
fields); :mod:`memgeo.gmm` (analytic Gaussian mixtures) and :mod:`memgeo.models` (the score-model
interface, the diffusers adapter); :mod:`memgeo.guidance` (the guidance gap, written once) and
:mod:`memgeo.sampling` (the CFG sampler, trackers); :mod:`memgeo.detect` (signals, registry,
presets, metrics), :mod:`memgeo.mitigate` and :mod:`memgeo.explain`; :mod:`memgeo.testbed`,
:mod:`memgeo.scan` and :mod:`memgeo.experiments`; :mod:`memgeo.cli`. Importing memgeo does not
import diffusers; :mod:`memgeo.models` does when a model is built or loaded.
"""

from . import detect, geometry, gmm, guidance, mitigate, sampling

__version__ = "0.1.0"
__all__ = ["detect", "geometry", "gmm", "guidance", "mitigate", "sampling", "__version__"]
