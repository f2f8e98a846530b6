"""The memorization testbed: a small text-to-image diffusion model trained here, with known memorized prompts.

Data (:mod:`memgeo.testbed.canvas`): 16x16 canvases of four scikit-learn digits, folded
space-to-depth into ``4 x 8 x 8`` latents (256 numbers) so that, as in Stable Diffusion, each
position has a 4-channel vector. Every caption comes from one grammar (``"thin seven, thick two,
regular one, thin zero"``), memorized or not, so the text alone says nothing about memorization.
Duplication is graded and of three kinds: matching verbatim, template verbatim and local (one
region duplicated). A regime (:data:`REGIMES`) sets the data and schedule: the embedded testbed is
the benchmark protocol's primary-1 (``"sd-bench"``, Stable Diffusion's regime, :mod:`~memgeo.testbed.protocol`:
50,000 pixel-unique canvases, each warped cell its own, seen about 23 times in 20,000 steps; 52 duplicated
prompts on share ladders at 0.02-0.49% of the draws per image; the averaged weights at the fixed final step, in
half precision); the small-data regime reuses 1,797 unwarped digits, every canvas seen about 250 times.

Model: a diffusers ``UNet2DConditionModel`` conditioned through a small ``CLIPTextModel`` (trained
jointly) on a ``CLIPTokenizer`` whose vocabulary has the grammar's words as single tokens and every
byte as a fallback; 10% prompt dropout for classifier-free guidance (a regime may spare duplicated
items); Stable Diffusion's scaled-linear schedule with epsilon prediction. It is saved in the Stable
Diffusion folder layout (no VAE: the latents are the images) and loaded by
:meth:`~memgeo.models.DiffusersScoreModel.from_pretrained`, exactly as SD is.

Ground truth is measured by generation (:func:`memorization_ground_truth`): a generation is a verbatim
copy when its distance to the nearest distinct training canvas is below a third of that to the second
nearest (Gu et al.), a replica when that nearest is the prompt's own image and the ratio below a half.

Rooms: :mod:`~memgeo.testbed.canvas` (data), :mod:`~memgeo.testbed.train` (training),
:mod:`~memgeo.testbed.truth` (ground truth by generation), :mod:`~memgeo.testbed.labels` (labels
and rates from it), :mod:`~memgeo.testbed.folder` (the weights and loading). The testbed knows
models, not signals.
"""

from .canvas import KINDS, CanvasData, build_canvas_data, to_images, to_latents
from .folder import (
    TESTBED_DIR,
    base_folder,
    load_model_folder,
    load_testbed,
    testbed_data,
    testbed_folder,
    testbed_metadata,
    testbed_name,
    weights_fingerprint,
)
from .labels import (
    duplication_curve,
    format_duplication_curve,
    format_truth_summary,
    is_hard_negative,
    memorization_rate,
    memorization_rates,
    testbed_kinds,
    testbed_labels,
)
from .options import TrainingSettings
from .train import REGIMES, train_testbed
from .truth import (
    copied_cells,
    generation_copies,
    mask_position,
    memorization_ground_truth,
    nearest_neighbour_threshold,
    target_copies,
)

__all__ = [
    "TESTBED_DIR", "base_folder", "weights_fingerprint", "KINDS", "CanvasData", "build_canvas_data", "to_latents", "to_images", "load_testbed", "testbed_data",
    "testbed_folder", "load_model_folder", "testbed_metadata", "testbed_name", "REGIMES", "train_testbed", "TrainingSettings", "memorization_ground_truth", "generation_copies", "copied_cells",
    "mask_position", "nearest_neighbour_threshold", "target_copies", "is_hard_negative", "memorization_rate", "memorization_rates", "testbed_labels",
    "testbed_kinds", "duplication_curve", "format_duplication_curve", "format_truth_summary",
]
