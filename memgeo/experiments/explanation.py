"""How well explanation and localization find what the testbed duplicated."""

from __future__ import annotations

import numpy as np

from ..testbed.labels import memorization_rate
from ..testbed.truth import mask_position

__all__ = ["nearest_unmemorized_captions", "explanation_hit_rate", "localization_auroc"]


def nearest_unmemorized_captions(text: str, captions) -> tuple[int, list[list[int]]]:
    """The captions of ``captions`` nearest to ``text`` in the canvas grammar, by the number of its 8
    words (4 thicknesses, 4 digits) that differ: ``(distance, [differing word indices per nearest caption])``."""
    from ..testbed.canvas import parse_caption

    own = [w for cell in parse_caption(text) for w in cell[::-1]]  # thickness, digit per position
    best, diffs = 9, []
    for c in captions:
        other = [w for cell in parse_caption(c) for w in cell[::-1]]
        d = [i for i in range(8) if own[i] != other[i]]
        if 0 < len(d) < best:
            best, diffs = len(d), [d]
        elif len(d) == best:
            diffs.append(d)
    return best, diffs


def explanation_hit_rate(model, data, prompts: list[dict] | None = None, *, seeds: int = 4, n_steps: int = 50,
                         signal: str = "guidance_norm", progress: bool = False, seed_start: int = 0) -> dict:
    """How often token attributions rank first a token that tells a memorized caption from its nearest
    non-memorized caption (the captions seen once in training).

    For each memorized prompt (default: every memorized-by-construction prompt of ``data``), the
    nearest single-copy captions (fewest differing words; ties all kept) give the distinguishing
    words; a hit is a top-ranked token among them, averaged over tied neighbours; chance is the
    share of distinguishing tokens among the prompt's tokens. Attributions: the gradient with
    respect to the input token embeddings, with respect to the prompt-embedding rows (Wen et al.'s
    released code), and leave-one-out. For local prompts, also the hit rate of the two words of
    the duplicated position. Returns per-method hit rates, chance, the mean Spearman correlation of
    each gradient ranking with leave-one-out, and per-prompt rows. The noises are seeds ``seed_start`` to
    ``seed_start + seeds - 1`` (a labelled testbed's are its scoring seeds, apart from its label seeds).
    """
    from collections import Counter

    from scipy.stats import spearmanr
    from tqdm.auto import tqdm

    from ..explain import token_attribution

    prompts = prompts if prompts is not None else [p for p in data.prompts if p["kind"] == "memorized"]
    copies = Counter(c for _, c in data.items)
    singles = [c for c, k in copies.items() if k == 1]
    seeds = list(range(seed_start, seed_start + seeds))
    rows = []
    for p in tqdm(prompts, desc="explain", disable=not progress):
        tokens = model.prompt_tokens(p["text"])
        word_pos = [i for i, t in enumerate(tokens) if t != ","]  # token index of each of the 8 words
        if len(word_pos) != 8:
            raise ValueError(f"prompt {p['text']!r} does not tokenize into the grammar's 8 words")
        dist, diffs = nearest_unmemorized_captions(p["text"], singles)
        inp = token_attribution(model, p["text"], signal=signal, method="both", space="input", seeds=seeds, n_steps=n_steps)
        out = token_attribution(model, p["text"], signal=signal, method="gradient", space="output", seeds=seeds,
                                n_steps=n_steps)
        row = {"text": p["text"], "memorization": p.get("memorization"), "distance": dist, "n_neighbours": len(diffs),
               "chance": float(np.mean([len(d) / len(tokens) for d in diffs]))}
        ranks = {"gradient_input": inp.gradient, "gradient_output": out.gradient, "leave_one_out": inp.leave_one_out}
        for name, scores in ranks.items():
            top = int(np.argmax(scores))
            row[name] = float(np.mean([top in {word_pos[i] for i in d} for d in diffs]))
            if p.get("memorization") == "local":
                pos = mask_position(p["mask"])
                row[name + "_local"] = float(top in {word_pos[2 * pos], word_pos[2 * pos + 1]})
                row["local_chance"] = 2 / len(tokens)
        row["spearman_input"] = float(spearmanr(inp.gradient, inp.leave_one_out).statistic)
        row["spearman_output"] = float(spearmanr(out.gradient, inp.leave_one_out).statistic)
        rows.append(row)
    summary = {"n_prompts": len(rows), "chance": float(np.mean([r["chance"] for r in rows])), "rows": rows}
    for name in ("gradient_input", "gradient_output", "leave_one_out"):
        summary[name] = float(np.mean([r[name] for r in rows]))
        local = [r[name + "_local"] for r in rows if name + "_local" in r]
        if local:
            summary[name + "_local"] = float(np.mean(local))
    local_chance = [r["local_chance"] for r in rows if "local_chance" in r]
    summary["local_chance"] = float(np.mean(local_chance)) if local_chance else None
    for name in ("input", "output"):
        summary["spearman_" + name] = float(np.nanmean([r["spearman_" + name] for r in rows]))
    return summary


def localization_auroc(model, prompts: list[dict], *, seeds: int = 8, n_steps: int = 50, guidance_scale: float = 7.5,
                       progress: bool = False, seed_start: int = 0) -> list[dict]:
    """Pixel AUROC of :func:`memgeo.explain.localize` and of two baselines against each prompt's ``mask``: the
    cross-attention map (end token, every layer) and bright ending's mask (Chen et al.: the end token's last-step
    attention at the down blocks' finest resolution, :func:`~memgeo.detect.bright_ending.bright_ending_mask`, averaged
    over seeds); with the map's AUROC at every step (one row per prompt). Seeds ``seed_start`` on, as
    :func:`explanation_hit_rate`."""
    from tqdm.auto import tqdm

    from ..detect.bright_ending import bright_ending_mask
    from ..explain import cross_attention_map, image_map, localize, pixel_auroc, pixel_map
    from ..guidance import timestep_value

    rows = []
    for p in tqdm(prompts, desc="localize", disable=not progress):
        if "mask" not in p:
            raise ValueError(f"prompt {p.get('text')!r} has no mask: localization is scored on local-memorization prompts")
        loc = localize(model, p["text"], seeds=list(range(seed_start, seed_start + seeds)), n_steps=n_steps,
                       guidance_scale=guidance_scale)
        attn = cross_attention_map(model, p["text"], n_steps=n_steps, x_last=loc.x_last)
        t_last = timestep_value(model.timesteps(n_steps)[-1])
        be = bright_ending_mask(model, p["text"], loc.x_last, t_last).float().mean(0)[0]  # [h, w], over seeds
        be = image_map(model, be.expand(model.event_shape[0], *be.shape))
        rows.append({"text": p["text"], "rate": memorization_rate(p), "step": loc.step,
                     "map": pixel_auroc(loc.map, p["mask"]), "cross_attention": pixel_auroc(attn, p["mask"]),
                     "bright_ending": pixel_auroc(be, p["mask"]),
                     "per_step": [pixel_auroc(pixel_map(model, m), p["mask"]) for m in loc.per_step]})
    return rows
