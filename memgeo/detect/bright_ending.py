r"""Bright ending (Chen et al., ICLR 2025): the guidance gap where the end token attends at the last step.

Memorized regions keep the end-of-prompt token's cross-attention bright at the end of generation. The
released code (``chenchen-usyd/BE-PRSS``, ``detect_mem.py``, ``controller.py``, ``local_sd_pipeline.py``)
runs two generations from the same seed: the first stores the conditional branch's cross-attention
probabilities at the last of 50 DDIM steps in the down blocks at the latent's full resolution
(``attn.shape[1] == 64 ** 2 and key == "down_cross"``), averaged over the heads; the mask ``M`` is their
mean over those layers at the end token (row ``len(tokenizer.encode(prompt)) - 1``), the raw map. The
second generation records, at every step, ``|(eps_c - eps_u) * M|_2 / mean(M)`` per image.

Both generations follow the same deterministic trajectory (storing attention does not change it), so
memgeo runs one: it records the gap at every step, reads the mask with one more conditional evaluation
at the last step's input (the conditional half of that step's batch, the same attention), and applies
it afterwards. The values are the released ones; the cost is ``2 n_steps + 1`` evaluations instead of
``4 n_steps``. The released code keeps the per-step values; the score is their mean over the steps
(``steps="all"``, as the guidance-norm tracks of Wen et al. are read), or the first step's
(``steps="first"``); every step is in ``extras["trace"]``.
"""

from __future__ import annotations

import torch

from ..guidance import sample_norm
from ..models.attention import end_token_rows, require_cross_attention, token_attention
from ..guidance import timestep_value
from ..sampling import ddim_sample
from .common import SignalResult
from .presets import resolve

__all__ = ["bright_ending", "bright_ending_mask"]


class _GapRecorder:
    """Keeps the guidance gap of every step and the last step's input (free: the sampler computes both)."""

    evals_per_step = 0

    def __init__(self):
        self.gaps: list[torch.Tensor] = []
        self.x_last = None

    def __call__(self, model, state) -> torch.Tensor:
        self.gaps.append((state.eps_c - state.eps_u).detach())
        self.x_last = state.x.detach()
        return torch.zeros(state.x.shape[0])


def bright_ending_mask(model, cond, x_last: torch.Tensor, t_last, *, layers: str = "down") -> torch.Tensor:
    """The end token's cross-attention ``[S, 1, h, w]`` at the last step: head-averaged, then averaged over the
    cross-attention layers of the finest resolution that has any, in the down blocks (``layers="down"``, as
    released: on SD v1/v2 the latent's full resolution, 64x64 at 512 px) or anywhere (``"all"``). Where that
    resolution is coarser than the latent (SDXL's first down block has no attention) the map is resized to the
    latent grid (bilinear)."""
    if layers not in ("down", "all"):
        raise ValueError(f"layers must be 'down' or 'all', got {layers!r}")
    S = x_last.shape[0]
    h, w = model.event_shape[-2:]
    maps = token_attention(model, cond, x_last, t_last, end_token_rows(model, cond, S), "bright ending")
    cross = {name: m for name, m in maps.items() if "attn2" in name and (layers == "all" or name.startswith("down_blocks"))}
    if not cross:
        raise ValueError(f"the UNet has no cross-attention layer{' in its down blocks' if layers == 'down' else ''} "
                         "(bright ending reads those)")
    finest = max(m.shape[-1] for m in cross.values())
    mask = torch.stack([m for m in cross.values() if m.shape[-1] == finest]).mean(0)  # [S, N]
    side_h = int(round((finest * h / w) ** 0.5))
    mask = mask.reshape(S, 1, side_h, finest // side_h)
    if (side_h, finest // side_h) != (h, w):
        mask = torch.nn.functional.interpolate(mask.float(), size=(h, w), mode="bilinear", align_corners=False)
    return mask.to(x_last.dtype)


def bright_ending(model, cond, x_T: torch.Tensor, *, preset: str = "memgeo", steps: str | None = None,
                  layers: str | None = None, n_steps: int = 50, guidance_scale: float = 7.5,
                  generator: torch.Generator | None = None) -> SignalResult:
    r"""Bright-ending masked guidance norm (Chen et al., ICLR 2025): :math:`\|(\epsilon_c - \epsilon_u) \odot M\| / \bar M`
    at every step of the CFG DDIM generation, ``M`` the end token's last-step cross-attention
    (:func:`bright_ending_mask`); the mean over the steps (``steps="all"``) or the first step's value.
    Needs a model with UNet cross-attention (SD v1/v2, SDXL, the testbed); ``2 n_steps + 1`` evaluations."""
    opts = resolve("bright_ending", preset, steps=steps, layers=layers)
    if opts["steps"] not in ("all", "first"):
        raise ValueError(f"steps must be 'all' or 'first', got {opts['steps']!r}")
    require_cross_attention(model, "bright ending")
    end_token_rows(model, cond, x_T.shape[0])  # checks cond before any work
    rec = _GapRecorder()
    res = ddim_sample(model, cond, x_T, n_steps=n_steps, guidance_scale=guidance_scale, trackers={"gap": rec})
    t_last = timestep_value(res.timesteps[-1])
    with torch.no_grad():
        mask = bright_ending_mask(model, cond, rec.x_last, t_last, layers=opts["layers"])
    scale = mask.flatten(1).mean(1)  # mean(M) per image
    trace = torch.stack([sample_norm(g * mask) / scale for g in rec.gaps])  # [n_steps, S]
    v = trace.mean(0) if opts["steps"] == "all" else trace[0]
    return SignalResult("bright_ending", v, v, res.n_evals + 1, extras={"trace": trace, "mask": mask[:, 0], "x0": res.denoised})
