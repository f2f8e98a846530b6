"""The training items as tensors, and one training step's predictions from a batch drawn from the run's generator."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__: list[str] = []


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


def _step_predictions(unet, text_encoder, items: _TrainingItems, latents, abar, gen, settings, dropped: dict):
    """One step's ``(prediction, target noise)``: a batch drawn from ``gen`` (items, caption dropout, timesteps and
    noise, in that order), noised, and predicted; under training-time mitigation the samples whose gap norm reaches
    the threshold are left out (counted in ``dropped``). ``settings``: the run's resolved
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
    if mitigate_threshold is None:
        return pred, noise
    with torch.no_grad():
        uncond = unet(x_t, t, encoder_hidden_states=text_encoder(items.ids[[items.empty]])[0].expand(batch_size, -1, -1)).sample
        keep = ((pred.detach() - uncond).flatten(1).norm(dim=1) < mitigate_threshold).cpu()
    left = ~keep
    dropped["unconditional"] += int((left & (cap == items.empty)).sum())
    dropped["duplicated"] += int((left & (cap != items.empty) & items.duplicated[j]).sum())
    dropped["single"] += int((left & (cap != items.empty) & ~items.duplicated[j]).sum())
    return pred[keep.to(device)], noise[keep.to(device)]
