"""Explain memorization: which tokens trigger it, and where in the image it sits.

* :func:`token_attribution` - per-token attribution of a memorization signal (Wen et al., ICLR
  2024): the norm of the signal's gradient with respect to each token's input embedding (through
  the text encoder) or its row of the prompt embedding (the text encoder's output, as Wen et al.'s
  released code), and, as the exact reference, the drop of the signal when the token is left out
  of the prompt and the prompt is encoded again.
* :func:`localize` - a per-pixel memorization map from the coordinate-wise variance collapse of
  the conditional field against the unconditional one: at each step, the log-ratio of the
  across-seed variances of the denoised estimate ``x0_hat`` per latent coordinate, along the
  unconditional model's own generation and along the prompt's guided generation. Where the
  prompt pins a region to one training image, the conditional estimates of that region agree
  across seeds while the unconditional ones still spread; regions that every image shares (a
  constant background) collapse in both and cancel. The variance of ``x0_hat`` across
  trajectories tracks the posterior covariance, ``Cov[x0 | x_t] = sigma_t^2 / alpha_t^2 (I +
  sigma_t^2 H)`` (Tweedie), so the map is the per-position curvature of log p_t, conditional
  against unconditional. It is smoothed by a Gaussian of one latent position's width: a pixel
  alone cannot tell a copied stroke from a background pixel that every image shares.
* :func:`cross_attention_map` - the baseline in the spirit of bright-ending attention (Chen et al.,
  ICLR 2025): the cross-attention of the end-of-prompt token at the last denoising step, averaged
  over heads, layers and seeds.

Maps are returned in latent layout ``[h, w]`` (channel-averaged) and in image layout through
:func:`image_map`: the testbed's space-to-depth fold (exact, one latent coordinate per pixel), or
Stable Diffusion's VAE layout (each latent position covers ``f x f`` pixels).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._checks import check_int
from .detect.sampling import ddim_sample, initial_noise
from .parameterization import eps_to_x0

__all__ = [
    "TokenAttribution",
    "token_attribution",
    "Localization",
    "localize",
    "cross_attention_map",
    "image_map",
    "pixel_map",
    "smooth",
    "default_localization_step",
    "pixel_auroc",
    "plot_token_attribution",
    "plot_localization",
]


# ---------------------------------------------------------------------------------------------- tokens
@dataclass
class TokenAttribution:
    """Output of :func:`token_attribution`.

    Attributes:
        tokens: the prompt's tokens (start, end and padding excluded).
        scores: the attribution of each token by ``method`` (larger = contributes more).
        gradient: the gradient-norm attribution per token (Wen et al.), when computed.
        leave_one_out: the signal's drop per left-out token (``value - value without it``), when computed.
        value: the signal of the full prompt (mean over seeds).
        spearman: rank correlation of the two attributions, when both were computed.
        settings: signal, method, seeds and steps.
    """

    tokens: list[str]
    scores: list[float]
    gradient: list[float] | None = None
    leave_one_out: list[float] | None = None
    value: float = float("nan")
    spearman: float | None = None
    settings: dict = field(default_factory=dict)

    def ranking(self) -> list[int]:
        """Token indices from the largest attribution down."""
        return sorted(range(len(self.scores)), key=lambda i: -self.scores[i])

    def to_json(self) -> dict:
        return {"tokens": self.tokens, "scores": self.scores, "gradient": self.gradient,
                "leave_one_out": self.leave_one_out, "value": self.value, "spearman": self.spearman,
                "settings": self.settings}


def _signal(model, emb: torch.Tensor, x_T: torch.Tensor, signal: str, n_steps: int) -> torch.Tensor:
    from .mitigate import _objective

    return _objective(model, emb, x_T, signal, n_steps, "auto")


def _encode_from_token_embeddings(model, ids: torch.Tensor):
    """``(leaf, prompt_embedding)``: the input token embeddings ``[1, L, E]`` as a leaf that requires
    grad, and the text encoder's output computed from them (differentiable)."""
    layer = model.text_encoder.get_input_embeddings()
    ids = ids.to(model.device)[None]
    leaf = layer(ids).detach().requires_grad_(True)  # [1, L, E]
    hook = layer.register_forward_hook(lambda module, inputs, output: leaf)
    try:
        out = model.text_encoder(ids)[0][0]
    finally:
        hook.remove()
    return leaf, out.to(model.dtype)


def token_attribution(
    model,
    prompt: str,
    *,
    signal: str = "guidance_norm",
    method: str = "both",
    space: str = "input",
    seeds=4,
    n_steps: int = 50,
) -> TokenAttribution:
    """Attribute ``signal`` (``"guidance_norm"`` or ``"anisotropy"``, evaluated on pure noise as in
    detection) to the prompt's tokens.

    ``method``: ``"gradient"`` - the norm of the gradient of the signal (mean over seeds) with
    respect to the token's embedding: ``space="input"`` the token's own input embedding, the
    gradient flowing through the text encoder; ``space="output"`` the token's row of the prompt
    embedding (the text encoder's output), as Wen et al. 2024's released code (those rows are
    contextual: a comma's row carries its neighbours); ``"leave_one_out"`` -
    the signal minus the signal of the prompt with that token removed (re-tokenized ids, encoded
    again), one forward evaluation per token; ``"both"`` computes the two, scores by the gradient
    and reports their Spearman correlation. Needs a model with a tokenizer and text encoder
    (:meth:`~memgeo.sd.DiffusersScoreModel.from_pretrained`).
    """
    if method not in ("gradient", "leave_one_out", "both"):
        raise ValueError(f"method must be 'gradient', 'leave_one_out' or 'both', got {method!r}")
    if space not in ("input", "output"):
        raise ValueError(f"space must be 'input' or 'output', got {space!r}")
    if signal not in ("guidance_norm", "anisotropy"):
        raise ValueError(f"signal must be 'guidance_norm' or 'anisotropy', got {signal!r}")
    if not hasattr(model, "prompt_tokens"):
        raise ValueError(f"{type(model).__name__} has no tokenizer: token attribution needs a text-to-image model")
    tokens = model.prompt_tokens(prompt)
    if not tokens:
        raise ValueError("prompt must hold at least one token (it is empty)")
    n_steps = check_int("n_steps", n_steps)
    x_T = initial_noise(model, seeds)
    ids = model.prompt_ids(prompt)
    n = min(len(tokens), len(ids) - 2)  # a truncated prompt keeps the tokens the encoder saw
    tokens = tokens[:n]
    grad = loo = None
    with torch.enable_grad():
        if space == "input" and method != "leave_one_out":
            leaf, e = _encode_from_token_embeddings(model, ids)
        else:
            leaf = e = model.encode_ids(ids[None])[0].requires_grad_(True)
        value = _signal(model, e, x_T, signal, n_steps).mean()
        if method in ("gradient", "both"):
            (g,) = torch.autograd.grad(value, leaf)
            grad = g.reshape(-1, g.shape[-1])[1:1 + n].double().norm(dim=-1).tolist()
    value = float(value.detach())
    if method in ("leave_one_out", "both"):
        # ids = [start, n tokens, end, padding]: drop one token and pad again to the same length
        start, body, stop, pad = int(ids[0]), ids[1:1 + n].tolist(), int(ids[1 + n]), model.tokenizer.pad_token_id
        rows = []
        for i in range(n):
            kept = [start] + body[:i] + body[i + 1:] + [stop]
            rows.append(kept + [pad] * (len(ids) - len(kept)))
        embs = model.encode_ids(torch.tensor(rows))
        with torch.no_grad():
            loo = [value - float(_signal(model, embs[i], x_T, signal, n_steps).mean()) for i in range(n)]
    rho = None
    if grad is not None and loo is not None and n > 1:
        from scipy.stats import spearmanr

        r = spearmanr(grad, loo).statistic
        rho = None if r != r else float(r)
    scores = grad if grad is not None else loo
    return TokenAttribution(tokens, scores, grad, loo, value, rho,
                            {"signal": signal, "method": method, "space": space, "seeds": int(x_T.shape[0]),
                             "n_steps": n_steps})


# ---------------------------------------------------------------------------------------------- maps
def image_map(model, latent_map: torch.Tensor) -> torch.Tensor:
    """A per-coordinate map ``[C, h, w]`` of the latent in image layout.

    The testbed (a folder with ``testbed.json``): its space-to-depth fold, one latent coordinate
    per pixel (``[2h, 2w]`` for 4 channels). Otherwise the VAE layout: the channel mean, each
    latent position repeated over the ``f x f`` pixels it decodes to (``f`` from the folder's
    ``vae/config.json``, 8 when there is none)."""
    if latent_map.dim() != 3:
        raise ValueError(f"latent_map must have shape [C, h, w], got {tuple(latent_map.shape)}")
    folder = Path(str(getattr(model, "name", "")))
    if folder.is_dir() and (folder / "testbed.json").exists():
        from .sd.testbed import to_images

        return to_images(latent_map[None].float())[0]
    f = 8
    cfg = folder / "vae" / "config.json" if folder.is_dir() else None
    if cfg is not None and cfg.exists():
        f = 2 ** (len(json.loads(cfg.read_text()).get("block_out_channels", [0] * 4)) - 1)
    m = latent_map.float().mean(0)
    return m.repeat_interleave(f, 0).repeat_interleave(f, 1)


def default_localization_step(model, n_steps: int) -> int:
    """The first DDIM step at which the signal-to-noise ratio ``alpha_t^2 / sigma_t^2`` reaches 1.

    Before it, ``x_t`` is mostly noise and every denoised estimate is still the prompt's mean
    image; after it, the estimates of every region commit to one image, memorized or not. At
    SNR 1 the posterior covariance ``Cov[x0 | x_t]`` is halfway between the prior's and zero, so
    a region that the prompt pins to one training image already stands out from the rest."""
    ts = model.timesteps(n_steps)
    snr = [float(model.alpha(int(t))) ** 2 / float(model.sigma(int(t))) ** 2 for t in ts]
    return next((i for i, v in enumerate(snr) if v >= 1.0), len(ts) - 1)


@dataclass
class Localization:
    """Output of :func:`localize`.

    Attributes:
        map: the memorization map in image layout ``[H, W]`` (larger = more collapsed).
        latent_map: the per-coordinate map ``[C, h, w]`` at the chosen step (before smoothing).
        step, t: the DDIM step index and timestep of ``map``.
        per_step: the latent map at every step ``[n_steps, C, h, w]``.
        samples: the generated latents ``[S, C, h, w]`` (final denoised estimates).
        x_last: the guided generation's ``x_t`` at its last step (the input of that UNet call;
            :func:`cross_attention_map` takes it to skip generating again).
        settings: seeds, steps, guidance scale.
    """

    map: torch.Tensor
    latent_map: torch.Tensor
    step: int
    t: int
    per_step: torch.Tensor
    samples: torch.Tensor
    x_last: torch.Tensor | None = None
    settings: dict = field(default_factory=dict)


class _VarianceTracker:
    """Records, per step, the across-seed variance of the conditional denoised estimate, and the
    last state's ``x`` (no model evaluations)."""

    evals_per_step = 0

    def __init__(self):
        self.var = []
        self.x = None

    def __call__(self, model, state) -> torch.Tensor:
        self.var.append(eps_to_x0(state.eps_c, state.x, state.alpha, state.sigma).var(0).detach().cpu())
        self.x = state.x
        return torch.zeros(state.x.shape[0])


def smooth(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur of a ``[H, W]`` map (standard deviation ``sigma`` pixels, edges replicated)."""
    if sigma <= 0:
        return image
    r = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-x**2 / (2 * sigma**2))
    k = k / k.sum()
    im = torch.nn.functional.pad(image.float()[None, None], (r, r, r, r), mode="replicate")
    im = torch.nn.functional.conv2d(im, k.reshape(1, 1, 1, -1))
    return torch.nn.functional.conv2d(im, k.reshape(1, 1, -1, 1))[0, 0]


def localize(
    model,
    prompt,
    *,
    seeds=8,
    n_steps: int = 50,
    guidance_scale: float = 7.5,
    step: int | None = None,
    progress: bool = False,
) -> Localization:
    """Where in the image ``prompt`` is memorized: ``log var_u - log var_c`` per latent coordinate,
    the across-seed variances of the denoised estimate along the unconditional generation and the
    prompt's guided generation from the same ``seeds``, at ``step`` (default
    :func:`default_localization_step`); mapped to pixels by :func:`image_map` and smoothed by a
    Gaussian of one latent position's width. Costs two generations per seed (4 evaluations a step)."""
    n_steps = check_int("n_steps", n_steps)
    x_T = initial_noise(model, seeds)
    if x_T.shape[0] < 2:
        raise ValueError("seeds must name at least 2 seeds: the map compares variances across seeds")
    step = default_localization_step(model, n_steps) if step is None else check_int("step", step, minimum=0)
    if step >= n_steps:
        raise ValueError(f"step must lie in [0, n_steps) = [0, {n_steps}), got {step}")
    cond, ref = _VarianceTracker(), _VarianceTracker()
    res = ddim_sample(model, prompt, x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                      trackers={"variance": cond}, progress=progress)
    ddim_sample(model, None, x_T, n_steps=n_steps, guidance_scale=1.0, trackers={"variance": ref}, progress=progress)
    tiny = torch.finfo(x_T.dtype).tiny
    per_step = torch.stack(ref.var).clamp_min(tiny).log() - torch.stack(cond.var).clamp_min(tiny).log()
    return Localization(pixel_map(model, per_step[step]), per_step[step], step, int(res.timesteps[step]), per_step,
                        res.denoised, cond.x,
                        {"seeds": int(x_T.shape[0]), "n_steps": n_steps, "guidance_scale": guidance_scale})


def pixel_map(model, latent_map: torch.Tensor) -> torch.Tensor:
    """:func:`image_map`, smoothed by a Gaussian whose width is one latent position in pixels."""
    img = image_map(model, latent_map)
    return smooth(img, img.shape[-1] / latent_map.shape[-1])


class _AttentionCapture:
    """An attention processor that keeps the cross-attention probabilities and then runs the default one."""

    def __init__(self, store: list, token: int):
        from diffusers.models.attention_processor import AttnProcessor

        self.store, self.token, self.inner = store, token, AttnProcessor()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if encoder_hidden_states is not None and hidden_states.dim() == 3:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross else encoder_hidden_states
            q = attn.head_to_batch_dim(attn.to_q(hidden_states))
            k = attn.head_to_batch_dim(attn.to_k(context))
            probs = attn.get_attention_scores(q, k, None)  # [B * heads, N, L]
            B = hidden_states.shape[0]
            self.store.append(probs.reshape(B, attn.heads, *probs.shape[1:])[..., self.token].mean(1).detach())
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb)


def cross_attention_map(model, prompt: str, *, seeds=8, n_steps: int = 50, guidance_scale: float = 7.5,
                        token: str | int = "end", x_last: torch.Tensor | None = None,
                        progress: bool = False) -> torch.Tensor:
    """The cross-attention baseline: attention of one prompt token (``"end"``: the end-of-prompt
    token, as bright-ending attention; or a row index) at the last DDIM step, averaged over heads,
    every cross-attention layer (each resized to the latent grid) and seeds; in image layout
    (:func:`image_map`). Needs a diffusers UNet (``model.unet`` with attention processors).
    ``x_last``: the generation's state at its last step when already known (``Localization.x_last``
    of the same prompt, seeds, steps and guidance); otherwise the generation is run here."""
    unet = getattr(model, "unet", None)
    if unet is None or not hasattr(unet, "attn_processors"):
        raise ValueError(f"{type(model).__name__} exposes no diffusers UNet attention: the cross-attention map needs one")
    if token == "end":
        ids = model.prompt_ids(prompt).tolist()
        eos = model.tokenizer.eos_token_id
        row = ids.index(eos, 1) if eos in ids[1:] else len(ids) - 1
    else:
        row = check_int("token", token, minimum=0)
    n_steps = check_int("n_steps", n_steps)
    if x_last is None:
        x_last = _last_state(model, prompt, initial_noise(model, seeds), n_steps, guidance_scale, progress)
    t_last = int(model.timesteps(n_steps)[-1])
    store: list = []
    saved = unet.attn_processors
    try:
        unet.set_attn_processor(_AttentionCapture(store, row))
        model.eps(x_last, t_last, prompt)
    finally:
        unet.set_attn_processor(saved)
    h, w = model.event_shape[-2:]
    maps = []
    for p in store:  # [S, N]
        side = int(round(math.sqrt(p.shape[-1] * h / w)))
        grid = p.reshape(p.shape[0], 1, side, p.shape[-1] // side).float()
        maps.append(torch.nn.functional.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False))
    if not maps:
        raise ValueError("the UNet ran no cross-attention layer")
    m = torch.stack(maps).mean((0, 1))[0]  # [h, w]
    return image_map(model, m.expand(model.event_shape[0], h, w))


def _last_state(model, prompt, x_T, n_steps: int, guidance_scale: float, progress: bool = False) -> torch.Tensor:
    """``x_t`` at the last DDIM step (the input of its UNet call)."""
    keep = {}

    def grab(state, trace):
        if state.index == n_steps - 1:
            keep["x"] = state.x
        return None

    ddim_sample(model, prompt, x_T, n_steps=n_steps, guidance_scale=guidance_scale, policy=grab, progress=progress)
    return keep["x"]


def pixel_auroc(score_map: torch.Tensor, mask) -> float:
    """AUROC of a per-pixel map against a 0/1 mask of the same shape (the memorized region)."""
    from sklearn.metrics import roc_auc_score

    m = torch.as_tensor(mask).reshape(-1)
    s = torch.as_tensor(score_map).reshape(-1)
    if m.shape != s.shape:
        raise ValueError(f"mask must have the map's shape {tuple(score_map.shape)}, got {tuple(torch.as_tensor(mask).shape)}")
    if m.min() == m.max():
        raise ValueError("mask must mark some pixels and leave some unmarked")
    return float(roc_auc_score(m.numpy(), s.double().numpy()))


# ---------------------------------------------------------------------------------------------- figures
def plot_token_attribution(att: TokenAttribution, path, *, title: str = "", ax=None):
    """Bar plot of the token attributions (gradient and, when computed, leave-one-out, each scaled to its maximum)."""
    import matplotlib

    if ax is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = ax is None
    if own:
        fig, ax = plt.subplots(figsize=(max(4.0, 0.45 * len(att.tokens) + 1.5), 2.6))
    x = torch.arange(len(att.tokens)).numpy()
    series = [(n, v) for n, v in (("gradient", att.gradient), ("leave-one-out", att.leave_one_out)) if v is not None]
    width = 0.8 / len(series)
    for j, (name, vals) in enumerate(series):
        v = torch.tensor(vals, dtype=torch.float64)
        scale = float(v.abs().max()) or 1.0
        ax.bar(x + (j - (len(series) - 1) / 2) * width, (v / scale).numpy(), width, label=name)
    ax.set_xticks(x)
    ax.set_xticklabels(att.tokens, rotation=60, fontsize=7)
    ax.set_ylabel("attribution / max")
    ax.axhline(0, color="k", lw=0.5)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=8)
    if own:
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return Path(path) if path is not None else None


def plot_localization(model, loc: Localization, path, *, cross_attention=None, mask=None, title: str = "", axes=None):
    """The mean generated image, the memorization map over it (mask outlined when given) and the
    cross-attention baseline."""
    import matplotlib

    if axes is None:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    own = axes is None
    n = 2 + (cross_attention is not None)
    if own:
        fig, axes = plt.subplots(1, n, figsize=(2.3 * n, 2.6))
    img = image_map(model, loc.samples.float().mean(0)) if loc.samples.shape[1] == 4 and Path(
        str(getattr(model, "name", ""))).joinpath("testbed.json").exists() else None
    panels = [("mean sample" if img is not None else "mean latent (channel 0)",
               img if img is not None else loc.samples.float().mean(0)[0], "gray_r")]
    panels.append((f"map, step {loc.step}", loc.map, "magma"))
    if cross_attention is not None:
        panels.append(("cross-attention (end token)", cross_attention, "magma"))
    for ax, (name, m, cmap) in zip(axes, panels):
        ax.imshow(torch.as_tensor(m).numpy(), cmap=cmap)
        if mask is not None and torch.as_tensor(mask).shape == torch.as_tensor(m).shape:
            ax.contour(torch.as_tensor(mask).numpy(), levels=[0.5], colors="c", linewidths=1.0)
        ax.set_title(name, fontsize=7)
        ax.axis("off")
    if own:
        if title:
            fig.suptitle(title, fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
    return Path(path) if path is not None else None
