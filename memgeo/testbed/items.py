"""The training items as tensors, and one training step's predictions from a batch drawn from the run's generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["MITIGATION_RULES"]

#: Label-free thresholds for training-time mitigation (Wen et al.'s filter, whose released threshold is an absolute
#: gap norm set on Stable Diffusion). ``"fence"``: a conditioned sample is left out of the loss where its gap norm
#: reaches Tukey's far-out fence ``q3 + k (q3 - q1)`` of the gap norms that the last ``window`` batches' conditioned
#: samples had in its timestep bin (``bins`` equal bins of the training timesteps), from step ``start`` on, in a
#: bin that holds at least ``min_samples`` of them; the reference is the run's own unlabelled batches, so the
#: threshold follows the model wherever its norms lie.
MITIGATION_RULES = {"fence": {"k": 3.0, "window": 100, "bins": 10, "start": 1000, "min_samples": 20}}


class _GapWindow:
    """The gap norms and timesteps of the last ``window`` batches (a ring; NaN for caption-dropped samples), and the
    per-timestep-bin fence they give (:data:`MITIGATION_RULES`)."""

    def __init__(self, rule: str, batch_size: int, n_timesteps: int):
        self.rule = MITIGATION_RULES[rule]
        self.n_timesteps = n_timesteps
        self.norms = torch.full((self.rule["window"], batch_size), float("nan"), dtype=torch.float32)
        self.t = torch.zeros((self.rule["window"], batch_size), dtype=torch.long)
        self.seen = 0  # batches pushed so far

    def limits(self, t: torch.Tensor) -> torch.Tensor:
        """Each sample's threshold: its timestep bin's fence; infinite before the rule's start step, and in a bin
        that holds fewer than the rule's ``min_samples`` conditioned samples."""
        out = torch.full(t.shape, float("inf"), dtype=torch.float32)
        if self.seen < self.rule["start"]:
            return out
        bins = self.rule["bins"]
        have = ~torch.isnan(self.norms)
        window_bin, batch_bin = self.t * bins // self.n_timesteps, t * bins // self.n_timesteps
        for b in batch_bin.unique().tolist():
            values = self.norms[have & (window_bin == b)]
            if len(values) >= self.rule["min_samples"]:
                q1, q3 = torch.quantile(values, torch.tensor([0.25, 0.75], dtype=values.dtype)).tolist()
                out[batch_bin == b] = q3 + self.rule["k"] * (q3 - q1)
        return out

    def push(self, norms: torch.Tensor, t: torch.Tensor, conditioned: torch.Tensor) -> None:
        row = self.seen % self.rule["window"]
        self.norms[row] = torch.where(conditioned, norms, torch.tensor(float("nan")))
        self.t[row] = t
        self.seen += 1

    def state(self) -> dict:
        return {"norms": self.norms, "t": self.t, "seen": torch.tensor(self.seen)}

    def load(self, state: dict, step: int) -> None:
        """The window a checkpoint at ``step`` saved (checked: its batch size and window, and one batch per step)."""
        if state["norms"].shape != self.norms.shape or int(state["seen"]) != step:
            raise ValueError(f"the checkpoint's gap window holds {int(state['seen'])} batches of shape "
                             f"{tuple(state['norms'].shape)}, not {step} of {tuple(self.norms.shape)} (window x "
                             "batch_size): resume it with the same batch_size and mitigate_rule")
        self.norms, self.t, self.seen = state["norms"].float(), state["t"].long(), int(state["seen"])


@dataclass
class _TrainingItems:
    """The training items as tensors: every caption's token ids (the empty one included), each item's image and
    caption index, whether its caption is duplicated, and the empty caption's index."""

    ids: torch.Tensor
    image: torch.Tensor
    caption: torch.Tensor
    duplicated: torch.Tensor
    empty: int

    @classmethod
    def of(cls, data, tokenizer, max_length: int) -> "_TrainingItems":
        captions = sorted({c for _, c in data.items} | {""})
        ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                        return_tensors="pt").input_ids
        if bool((ids[:, -1] != tokenizer.pad_token_id).any()):  # the end token would be cut off
            raise ValueError(f"a caption does not fit the text encoder's {max_length} token positions")
        index = {c: i for i, c in enumerate(captions)}
        # an item is duplicated when its image is the target of a prompt with more than one copy (not one of the
        # companions that share such a caption, which are singles)
        duplicated = {i for p in data.prompts if p["kind"] == "memorized" and p["duplication"] > 1 for i in p["targets"]}
        return cls(ids, torch.tensor([i for i, _ in data.items]), torch.tensor([index[c] for _, c in data.items]),
                   torch.tensor([i in duplicated for i, _ in data.items]), index[""])


def _step_predictions(unet, text_encoder, items: _TrainingItems, latents, abar, gen, settings, dropped: dict,
                      window: _GapWindow | None = None):
    """One step's ``(prediction, target noise)``: a batch drawn from ``gen`` (items, caption dropout, timesteps and
    noise, in that order), noised, and predicted; under training-time mitigation the samples whose gap norm reaches
    the threshold (``settings.mitigate_threshold``, or the fence of ``window``, which then takes this batch's norms)
    are left out (counted in ``dropped``). ``settings``: the run's resolved
    :class:`~memgeo.testbed.options.TrainingSettings` (batch size, caption dropout, mitigation threshold)."""
    batch_size, dropout, dropout_duplicated = settings.batch_size, settings.dropout, settings.dropout_duplicated
    mitigate_threshold = settings.mitigate_threshold
    device = latents.device
    j = torch.randint(len(items.image), (batch_size,), generator=gen)
    p_drop = torch.where(items.duplicated[j], dropout_duplicated, dropout)  # = dropout everywhere by default: same draws
    cap = torch.where(torch.rand(batch_size, generator=gen, dtype=torch.float32) < p_drop, items.empty, items.caption[j])
    t = torch.randint(0, len(abar), (batch_size,), generator=gen)
    noise = torch.randn((batch_size, *latents.shape[1:]), generator=gen, dtype=torch.float32).to(device)
    x0, t, cap_d = latents[items.image[j].to(device)], t.to(device), cap.to(device)
    a = abar[t].reshape(-1, 1, 1, 1)
    x_t = (a.sqrt() * x0 + (1 - a).sqrt() * noise).contiguous(memory_format=torch.channels_last)
    pred = unet(x_t, t, encoder_hidden_states=text_encoder(items.ids[cap_d])[0]).sample
    if mitigate_threshold is None and window is None:
        return pred, noise
    with torch.no_grad():
        uncond = unet(x_t, t, encoder_hidden_states=text_encoder(items.ids[[items.empty]])[0].expand(batch_size, -1, -1)).sample
        norms = (pred.detach().float() - uncond.float()).flatten(1).norm(dim=1).cpu()
    if window is not None:
        limit = window.limits(t.cpu())  # from the batches before this one
        window.push(norms, t.cpu(), cap != items.empty)
    else:
        limit = mitigate_threshold
    keep = norms < limit
    left = ~keep
    dropped["unconditional"] += int((left & (cap == items.empty)).sum())
    dropped["duplicated"] += int((left & (cap != items.empty) & items.duplicated[j]).sum())
    dropped["single"] += int((left & (cap != items.empty) & ~items.duplicated[j]).sum())
    return pred[keep.to(device)], noise[keep.to(device)]
