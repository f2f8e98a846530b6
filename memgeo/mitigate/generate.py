"""Generation with any mitigation method at a strength."""

from __future__ import annotations

import torch

from .._util import Settings
from .methods import METHODS, Generation, Request
from .steering import SteeringReference

__all__ = ["METHODS", "Generation", "generate"]


def generate(
    model,
    cond,
    x_T: torch.Tensor,
    *,
    method: str = "none",
    strength: float | None = None,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    reference: SteeringReference | None = None,
    seed: int = 0,
    preset: str = "memgeo",
    settings: Settings | None = None,
    progress: bool = False,
    reference_prompts=None,
) -> Generation:
    """Generate with a mitigation method at a strength.

    ``method`` and the meaning of ``strength``:

    * ``"none"``: plain CFG DDIM (strength unused);
    * ``"guidance"``: the baseline of simply lowering the guidance scale to ``strength``;
    * ``"embedding"``: :func:`adapt_embedding` of the guidance norm down to ``strength`` times its
      initial value (default 0.5), then generation with the adapted embedding;
    * ``"noise"``: :func:`optimize_noise` (sharpness proxy) for ``strength`` iterations (default 10);
    * ``"steer"``: :class:`SteeringPolicy` with threshold ``strength`` (default 3; lower steers more);
      flagged samples get the preset's ``low_guidance`` from its ``act_from`` to before its ``act_until`` (memgeo:
      -4 over the last tenth of the steps; official: 0 from the flag); needs ``reference`` (:func:`calibrate_steering`);
    * ``"basin"``: :class:`BasinPolicy`, guidance ``strength`` inside the attraction basin (default: the preset's,
      memgeo -2, official 1) until the guidance gap's first local minimum, full guidance after; no extra evaluation.

    ``reference_prompts`` (unlabelled ordinary prompts of the model at hand): for ``"embedding"`` and ``"noise"``,
    the stopping level is calibrated on them (:func:`~memgeo.mitigate.calibrate.reference_level`, their median
    guidance norm or sharpness on ``x_T``) instead of the preset's (a relative target, or an absolute threshold set
    on SD v1); ``strength`` is then unused for ``"embedding"``.

    ``preset`` selects the settings of ``"embedding"``, ``"noise"``, ``"steer"`` and ``"basin"`` (``"memgeo"`` or
    ``"official"``: :mod:`memgeo.mitigate.presets`), or ``settings`` gives them (an instance of the method's settings
    class, :attr:`~memgeo.mitigate.methods.MethodSpec.settings_type`); a ``strength`` given overrides the relative
    target, the iteration count or the threshold. The methods are :data:`~memgeo.mitigate.methods.METHODS`.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {tuple(METHODS)}, got {method!r}")
    spec = METHODS[method]
    spec.check_settings(settings)
    req = Request(strength=strength, n_steps=n_steps, guidance_scale=guidance_scale, preset=preset, settings=settings,
                  reference=reference, reference_prompts=reference_prompts, seed=seed, progress=progress)
    return spec.run(model, cond, x_T, req)
