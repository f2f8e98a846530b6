"""Settings of every published detection signal, as data: the paper's released code (``"official"``) and memgeo's default.

Each method has one table row per preset. A function resolves its options with :func:`resolve`:
an argument the caller gives explicitly wins, anything left as ``None`` comes from the preset. The
tables are documented, parameter by parameter and with the reason memgeo differs, in
docs/conventions.md, section 4.
"""

from __future__ import annotations

from .._util import PRESET_NAMES, resolve_preset

__all__ = ["PRESETS", "PRESET_NAMES", "resolve"]

PRESETS: dict[str, dict[str, dict]] = {
    # Wen et al., ICLR 2024 (YuxinWenRick/diffusion_memorization)
    "guidance_norm": {
        "memgeo": {"steps": "first", "space": "eps"},  # |d_eps| at x_T and the first timestep: 2 evaluations
        "official": {"steps": "all", "space": "prediction"},  # mean over the CFG generation of the raw outputs' gap
    },
    # Asthana & Belagiannis, ICLR 2026 (rohanasthana/memorization-anisotropy)
    "anisotropy": {
        "memgeo": {"weights": "auto", "norm": "reference_size", "space": "eps"},
        "official": {"weights": "auto", "norm": "released", "space": "prediction"},
    },
    # Jeon et al., ICML 2025: memgeo matches the released code
    "sharpness": {"memgeo": {}, "official": {}},
    # Brokman et al., SSVM 2025 (Identifying-Memorization-of-Diffusion-Models-through-p-Laplace-Analysis)
    "p_laplace": {
        "memgeo": {"field": "score", "p": 1.0, "n_directions": 16, "t_probe": None, "center": "renoised",
                   "value": "flux", "probe": "data"},
        "official": {"field": "eps", "p": 1.0, "n_directions": 128, "t_probe": 10, "center": "scaled",
                     "value": "mean_cosine", "probe": "generated"},
    },
    # Brokman et al., NeurReps 2025 (Tracking-Memorization-Geometry-throughout-the-Diffusion-Model-Generative-Process)
    "kappa_delta": {
        "memgeo": {"n_directions": 4, "geometry": "memgeo", "step": None},
        # the released run: 500 PNDM steps (SD v1.4's scheduler), latents saved by the pipeline callback at
        # steps 1 and every 50th (the callback skips PNDM's warm-up step 0), each probed at t = its step index
        "official": {"n_directions": 16, "geometry": "official", "step": 500, "released_steps": 500,
                     "probe_steps": (1, *range(50, 501, 50))},
    },
    # Kamkari et al. 2024 (layer6ai-labs FLIPD). memgeo probes on the data (the sample projected to the model's data
    # range where it declares one; benchmarks/results/probe_points/), the official preset the sample as generated
    "flipd": {
        "memgeo": {"t": "auto", "method": "hutchinson_fd", "n_probes": 8, "probe": "data"},
        "official": {"t": "auto", "method": "exact_up_to_3500", "n_probes": 8, "probe": "generated"},
    },
    # Chen et al., ICLR 2025 (chenchen-usyd/BE-PRSS): the released code keeps every step's value; memgeo's default
    # is the same reading
    "bright_ending": {
        "memgeo": {"steps": "all", "layers": "down"},
        "official": {"steps": "all", "layers": "down"},
    },
    # Huang et al., KDD 2026 ("Broken Memories"): no released code; the first 3 steps, as their table's column
    "update_norm": {"memgeo": {"k": 3}, "official": {"k": 3}},
    # memgeo's own detector for every kind of memorization: the sharpness field's largest region (quarter-area
    # windows, starts every quarter side), by a forward difference of 0.1 sigma_t along the gap; no released code,
    # so both presets are the same
    "regional_sharpness": {
        "memgeo": {"window": 0.5, "stride": 0.25, "step": 0.1},
        "official": {"window": 0.5, "stride": 0.25, "step": 0.1},
    },
}


def resolve(name: str, preset: str, **given) -> dict:
    """The options of the signal ``name`` under ``preset``, overridden by every ``given`` value that is not None."""
    return resolve_preset(PRESETS, name, preset, **given)
