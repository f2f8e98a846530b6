r"""Model families behind one score-model interface: Stable Diffusion v1/v2, SDXL and Stable Diffusion 3.

A family says how a diffusers folder loads, how prompt token ids become the condition the denoiser reads, how the
denoiser is called, which noise schedule it was trained with and how a LoRA loads into it: one
:class:`~memgeo.models.families.base.FamilySpec` per family, in its own module (``sd``, ``sdxl``, ``sd3``).
Everything else (signals, sampler, mitigation, explanation) sees only ``eps(x, t, cond)`` and friends.

The condition is one tensor per prompt, ``[L', D]``: the text encoders' token rows, then (SDXL, SD3) the
pooled embedding laid out in the rows after them, zero-padded to whole rows of width ``D``. So a
prompt embedding is still one tensor that mitigation can adapt and token tools can read row by row
(row ``i + 1`` is token ``i``), and the family unpacks it before each call.

To add a family: a module with a ``FamilySpec`` subclass, listed in :data:`SPECS`; a refused one is a line in
:data:`REFUSED`.
"""

from __future__ import annotations

from .base import (DISTILLATION_MARKERS, DISTILLED_NAMES, FamilySpec, TextConditioning, distillation_notes,
                   pack_condition, read_index, unpack_condition)
from .sd import SD
from .sd3 import SD3
from .sdxl import SDXL
from ...gmm.schedules import FlowMatchSchedule

__all__ = ["SPECS", "FAMILIES", "REFUSED", "FamilySpec", "TextConditioning", "FlowMatchSchedule", "model_family",
           "distillation_notes", "pack_condition", "unpack_condition", "read_index", "DISTILLATION_MARKERS",
           "DISTILLED_NAMES"]

#: Every supported family, by memgeo's name.
SPECS: dict[str, FamilySpec] = {spec.name: spec for spec in (SD, SDXL, SD3)}

#: Pipeline class (``model_index.json``'s ``_class_name``) -> its family's spec, as :data:`SPECS` stood at import
#: (:func:`model_family` reads SPECS itself, so a family added later is found).
FAMILIES: dict[str, FamilySpec] = {spec.pipeline: spec for spec in SPECS.values()}

#: Pipeline classes memgeo knows and refuses (class-name prefix -> why), as data.
REFUSED = {
    "Flux": "FLUX is not a supported family. Its usual generation is one pass with no unconditional branch: FLUX.1-dev "
            "is guidance-distilled (the guidance scale is an input of the transformer) and FLUX.1-schnell is "
            "timestep-distilled, so the guidance gap of that generation is not defined; FluxPipeline can evaluate a "
            "negative prompt under true_cfg_scale, which gives a gap, but memgeo has no FLUX family (its T5 + CLIP "
            "conditioning, packed latents and flow schedule) to read it through",
}


def model_family(index: dict, path: str) -> FamilySpec:
    """The family of a folder from its ``model_index.json`` contents (none: an SD v1/v2 layout); a clear error for
    anything else."""
    name = str(index.get("_class_name", SD.pipeline))
    families = {spec.pipeline: spec for spec in SPECS.values()}  # read when called: a family added later is known
    if name in families:
        return families[name]
    for prefix, why in REFUSED.items():
        if name.startswith(prefix):
            raise ValueError(f"model {path!r} is a {name}: {why}")
    raise ValueError(f"model {path!r} is a {name}; memgeo supports {', '.join(sorted(families))} folders")
