"""Token attribution of a memorization signal (Wen et al., ICLR 2024): gradient and leave-one-out."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .._checks import check_int
from ..guidance import gap_objective, objective_times
from ..sampling import initial_noise

__all__ = ["TokenAttribution", "token_attribution"]


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


#: The signals token attribution explains: differentiable objectives on pure noise (:data:`memgeo.guidance.OBJECTIVES`).
ATTRIBUTED = ("guidance_norm", "anisotropy")


def _signal(model, emb: torch.Tensor, x_T: torch.Tensor, signal: str, times) -> torch.Tensor:
    return gap_objective(model, x_T, emb, signal, times, "auto")


def _encode_from_token_embeddings(model, ids: torch.Tensor):
    """``(leaves, prompt_embedding)``: the input token embeddings ``[1, L, E]`` of every text encoder that
    reads the tokenizer's ids (SDXL and SD3: two), each a leaf that requires grad, and the prompt embedding
    computed from them (differentiable)."""
    encoders = list(getattr(model, "text_encoders", None) or [model.text_encoder])
    ids = ids.to(model.device)[None]
    leaves, hooks = [], []
    for enc in encoders:
        layer = enc.get_input_embeddings()
        leaf = layer(ids).detach().requires_grad_(True)  # [1, L, E]
        leaves.append(leaf)
        hooks.append(layer.register_forward_hook(lambda module, inputs, output, leaf=leaf: leaf))
    try:
        conditioning = getattr(model, "conditioning", None)
        out = conditioning.encode_ids(ids)[0] if conditioning is not None else model.text_encoder(ids)[0][0]
    finally:
        for h in hooks:
            h.remove()
    return leaves, out.to(model.dtype)


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
    gradient flowing through the text encoder (SDXL, SD3: the norm over both CLIP encoders' input embeddings); ``space="output"`` the token's row of the prompt
    embedding (the text encoder's output), as Wen et al. 2024's released code (those rows are
    contextual: a comma's row carries its neighbours); ``"leave_one_out"`` -
    the signal minus the signal of the prompt with that token removed (re-tokenized ids, encoded
    again), one forward evaluation per token; ``"both"`` computes the two, scores by the gradient
    and reports their Spearman correlation. Needs a model with a tokenizer and text encoder
    (:meth:`~memgeo.models.DiffusersScoreModel.from_pretrained`).
    """
    if method not in ("gradient", "leave_one_out", "both"):
        raise ValueError(f"method must be 'gradient', 'leave_one_out' or 'both', got {method!r}")
    if space not in ("input", "output"):
        raise ValueError(f"space must be 'input' or 'output', got {space!r}")
    if signal not in ATTRIBUTED:
        raise ValueError(f"signal must be 'guidance_norm' or 'anisotropy', got {signal!r}")
    if not hasattr(model, "prompt_tokens"):
        raise ValueError(f"{type(model).__name__} has no tokenizer: token attribution needs a text-to-image model")
    tokens = model.prompt_tokens(prompt)
    if not tokens:
        raise ValueError("prompt must hold at least one token (it is empty)")
    n_steps = check_int("n_steps", n_steps)
    times = objective_times(model, n_steps)
    x_T = initial_noise(model, seeds)
    ids = model.prompt_ids(prompt)
    n = min(len(tokens), len(ids) - 2)  # a truncated prompt keeps the tokens the encoder saw
    tokens = tokens[:n]
    grad = loo = None
    with torch.enable_grad():
        if space == "input" and method != "leave_one_out":
            leaves, e = _encode_from_token_embeddings(model, ids)
        else:
            e = model.encode_ids(ids[None])[0].requires_grad_(True)
            leaves = [e]
        value = _signal(model, e, x_T, signal, times).mean()
        if method in ("gradient", "both"):  # per token: the norm over every encoder's embedding of it
            gs = torch.autograd.grad(value, leaves)
            sq = sum(g.reshape(-1, g.shape[-1])[1:1 + n].double().pow(2).sum(-1) for g in gs)
            grad = sq.sqrt().tolist()
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
            loo = [value - float(_signal(model, embs[i], x_T, signal, times).mean()) for i in range(n)]
    rho = None
    if grad is not None and loo is not None and n > 1:
        from scipy.stats import spearmanr

        r = spearmanr(grad, loo).statistic
        rho = None if r != r else float(r)
    scores = grad if grad is not None else loo
    return TokenAttribution(tokens, scores, grad, loo, value, rho,
                            {"signal": signal, "method": method, "space": space, "seeds": int(x_T.shape[0]),
                             "n_steps": n_steps})
