"""Every signal under its official preset and memgeo's default, on labelled prompts."""

from __future__ import annotations

import numpy as np
import torch

from ..detect import auroc
from ..sampling import initial_noise

__all__ = ["preset_comparison", "format_preset_comparison"]


def preset_comparison(model, texts, labels, *, seeds: int = 2, n_steps: int = 50, guidance_scale: float = 7.5,
                      signals=None, presets=("memgeo", "official"), progress: bool = True,
                      seed_start: int = 0) -> list[dict]:
    """Every signal under every preset, and each anisotropy term alone, on labelled conditions.

    Returns one row per (signal, preset) with the AUROC per generation and per prompt (the score
    averaged over its seeds), the strict TPR@1%FPR per generation, and the evaluations per sample.
    Generation signals draw their random directions from a generator seeded by the prompt's index,
    the same under both presets; FLIPD's probe time comes from ``texts`` themselves (no labels read). The noises
    are seeds ``seed_start`` to ``seed_start + seeds - 1`` (a labelled testbed's are its scoring seeds).
    """
    from tqdm.auto import tqdm

    from ..detect import SIGNALS, detection_metrics

    if len(texts) == 0 or len(texts) != len(labels):
        raise ValueError(f"texts must be non-empty and as long as labels, got {len(texts)} and {len(labels)}")
    signals = tuple(signals or SIGNALS)
    x_T = initial_noise(model, list(range(seed_start, seed_start + seeds)))
    y_gen = np.repeat(np.asarray(labels), seeds)
    rows = []
    bar = tqdm(total=len(signals) * len(presets) * len(texts), desc="presets", disable=not progress)
    for name in signals:
        for preset in presets:
            scores, parts, n_evals = [], {}, 0
            fixed = SIGNALS[name].fixed_options(model, texts, preset=preset, guidance_scale=guidance_scale,
                                                n_steps=n_steps)  # FLIPD: one probe time for every prompt
            for i, c in enumerate(texts):
                kw = {**SIGNALS[name].options(n_steps=n_steps, preset=preset, guidance_scale=guidance_scale,
                                              generator=torch.Generator().manual_seed(i)), **fixed}
                res = SIGNALS[name](model, c, x_T, **kw)
                scores.append(res.score.detach().double().numpy())
                n_evals = res.n_evals
                for term in SIGNALS[name].terms:  # each term alone, oriented as the combination
                    parts.setdefault(term, []).append(res.extras[term].detach().double().numpy())
                bar.update(1)
            entries = [(name, scores)] + [(f"{name}: {t} term alone", v) for t, v in parts.items()]
            for label, vals in entries:
                s = np.stack(vals)  # [prompts, seeds]
                ok = np.isfinite(s).all(1)
                m = detection_metrics(y_gen[np.repeat(ok, seeds)], s[ok].ravel())
                rows.append({"signal": label, "preset": preset, "auroc_gen": m["auroc"], "tpr1_gen": m["tpr@1%fpr"],
                             "auroc_prompt": auroc(np.asarray(labels)[ok], s[ok].mean(1)),
                             "n_evals": n_evals if label == name else None, "undefined": int((~ok).sum())})
    bar.close()
    return rows


def format_preset_comparison(rows: list[dict], *, title: str = "") -> str:
    """A markdown table of :func:`preset_comparison` rows."""
    lines = [title, ""] if title else []
    lines += ["| signal | preset | AUROC (per generation) | TPR@1%FPR (strict, per generation) | AUROC (per prompt) | "
              "evaluations / sample |", "|---|---|---|---|---|---|"]
    for r in rows:
        ev = "" if r["n_evals"] is None else str(r["n_evals"])
        note = f" ({r['undefined']} prompts undefined)" if r["undefined"] else ""
        lines.append(f"| {r['signal']} | {r['preset']} | {r['auroc_gen']:.3f} | {r['tpr1_gen']:.3f} | "
                     f"{r['auroc_prompt']:.3f}{note} | {ev} |")
    return "\n".join(lines)
