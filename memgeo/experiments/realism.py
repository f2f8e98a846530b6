"""Does a testbed behave like Stable Diffusion? The realism checks R1-R4, measured by generation.

- R1: per-step AUROC of the guidance-gap norm |eps_c - eps_u| (DDIM, w = 7.5), memorized prompts (target rate >= 0.5)
  against ordinary ones (copy rate <= 0.1), each prompt's mean over its seeds. On SD v1.4 (Wen et al.'s released
  notebook) the memorized gap stays above the ordinary one at every step.
- R2: unconditional generations (no prompt, no guidance) that copy a training image, and a duplicated one.
- R3: copy rates of ordinary and held-out prompts.
- R4: graded memorization: duplicated prompts with rates strictly between 0.1 and 0.9, and memorized prompts
  (rate >= 0.5) of each kind, by duplication count.

Ground truth is the field's criterion (:func:`memgeo.testbed.truth.nearest_ratios`: nearest / second-nearest
distinct training canvas below 1/3, Gu et al.); the traces of R1 come from the same generations. Per rung of the
duplication ladder: each image's share of the training draws, its views so far, the mean rate and the median ratio.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ..detect import auroc
from ..sampling import GuidanceNormTracker, ddim_sample, initial_noise
from ..testbed.canvas import KINDS, to_images
from ..testbed.criteria import CRITERIA, criterion as criterion_of
from ..testbed.truth import nearest_ratios

__all__ = ["MEMORIZED_RATE", "TARGETS", "measure_realism", "gap_auroc_by_step", "realism", "realism_verdicts", "format_realism", "append_markdown"]

#: A duplicated prompt (or a rung, by its prompts' mean rate) is memorized where at least this share of its seeds copy.
MEMORIZED_RATE = 0.5

#: What a testbed must show to stand in for Stable Diffusion, as data.
TARGETS = {
    "R1": {"every_step_above": 0.5, "median_at_least": 0.8},
    "R2": {"copy_rate_at_most": 0.01},
    "R3": {"copy_rate_at_most": 0.0},
    "R4": {"graded_at_least": 6, "memorized_per_kind_at_least": 4},
}


def measure_realism(model, data, prompts, *, seeds: int, n_steps: int, guidance_scale: float, uncond_seeds: int,
                    progress: bool = False, seed_start: int = 0) -> dict:
    """Rates and median ratios per prompt, gap traces ``[n_steps]`` per prompt (mean over seeds), and the
    unconditional copy rates, by the field's criterion (:func:`memgeo.testbed.truth.nearest_ratios`); the
    generations from seeds ``seed_start`` on (a protocol model's checks from its scoring seeds, 1000)."""
    from tqdm.auto import tqdm

    level = "canvas"
    x_T = initial_noise(model, list(range(seed_start, seed_start + seeds)))
    n_items = len(data.items)
    rows = []
    for p in tqdm(prompts, desc="prompts", disable=not progress):
        res = ddim_sample(model, p["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers={"gap": GuidanceNormTracker()})
        c = nearest_ratios(data, p, to_images(res.denoised.float()), level=level)
        per_image = p.get("duplication", 0) / max(1, len(p["targets"]) if p.get("memorization") == "template" else 1)
        row = {"text": p["text"], "kind": p["kind"], "memorization": p.get("memorization"),
               "duplication": p.get("duplication"), **({"companions": p["companions"]} if p.get("companions") else {}),
               "share": per_image / n_items, "ratio": float(c["ratio"].median()),
               "nearest_target_rate": float(c["nearest_is_target"].double().mean()),
               "gap": res.trace["gap"].double().mean(1).tolist()}
        for crit in CRITERIA.values():  # each criterion's rates under its realism keys (Criterion.realism)
            own, anyone = crit.realism[:2]
            row[own] = float(c[crit.target if p["kind"] == "memorized" else crit.mark].double().mean())
            row[anyone] = float(c[crit.mark].double().mean())
        rows.append(row)
    un = ddim_sample(model, None, initial_noise(model, list(range(10_000, 10_000 + uncond_seeds))), n_steps=n_steps,
                     guidance_scale=1.0).denoised
    duplicated = sorted({i for p in data.prompts if p["kind"] == "memorized" for i in p["targets"]})
    c = nearest_ratios(data, {"targets": duplicated}, to_images(un.float()), level="canvas")
    unconditional = {"seeds": uncond_seeds, "median_ratio": float(c["ratio"].median())}
    for crit in CRITERIA.values():
        u_any, u_dup = crit.realism[2:]
        unconditional[u_any], unconditional[u_dup] = (float(c[crit.mark].double().mean()),
                                                      float(c[crit.target].double().mean()))
    return {"criterion": level, "prompts": rows, "unconditional": unconditional}


def gap_auroc_by_step(positive, negative) -> list[float]:
    """The per-step AUROC of the gap norm (R1's statistic): ``positive`` and ``negative`` gap traces ``[steps]`` (one
    per prompt, :func:`measure_realism`'s ``"gap"``), the positive ones scored above."""
    y = np.array([1] * len(positive) + [0] * len(negative))
    gaps = np.array([*positive, *negative])  # [prompts, steps]
    return [auroc(y, gaps[:, s]) for s in range(gaps.shape[1])]


def realism(result: dict, *, views: float | None = None, criterion: str = "verbatim") -> dict:
    """R1-R4 from :func:`measure_realism`; ``views``: training draws so far, to turn each rung's share into views;
    ``criterion``: verbatim copies (ratio < 1/3) or the replication level (own image nearest, ratio < 1/2)."""
    own, anyone, u_any, u_dup = criterion_of(criterion).realism
    rows = [{**r, "rate": r[own], "copy_rate": r[anyone]} for r in result["prompts"]]
    u = result["unconditional"]
    unconditional = {**u, "copy_rate": u[u_any], "duplicated_copy_rate": u[u_dup]}
    mem = [r for r in rows if r["kind"] == "memorized" and r["rate"] >= MEMORIZED_RATE]
    ordinary = [r for r in rows if r["kind"] == "ordinary" and r["copy_rate"] <= 0.1]
    r1 = gap_auroc_by_step([r["gap"] for r in mem], [r["gap"] for r in ordinary]) if mem and ordinary else None
    dup = [r for r in rows if r["kind"] == "memorized"]
    graded = [r for r in dup if 0.1 < r["rate"] < 0.9]
    by_kind = {k: sum(r["rate"] >= MEMORIZED_RATE for r in dup if r["memorization"] == k) for k in KINDS}
    rungs = defaultdict(list)
    for r in dup:  # a rung: kind, copies and the companions sharing its caption
        rungs[(r["memorization"], r["duplication"], r.get("companions", 0))].append(r)
    ladder = [{"kind": k, "duplication": d, **({"companions": m, "caption_share": d / (d + m)} if m else {}),
               "share": rs[0]["share"], **({"views": rs[0]["share"] * views} if views else {}),
               "rate": float(np.mean([r["rate"] for r in rs])), "median_ratio": float(np.median([r["ratio"] for r in rs])),
               "nearest_target_rate": float(np.mean([r["nearest_target_rate"] for r in rs]))}
              for (k, d, m), rs in sorted(rungs.items(), key=lambda kv: (kv[0][0], -kv[1][0]["share"], kv[0][2]))]
    return {
        "criterion": result.get("criterion"), "labels": criterion, "R1": r1, "R2": unconditional,
        "R3": {k: max((r["copy_rate"] for r in rows if r["kind"] == k), default=None) for k in ("ordinary", "heldout")},
        "R4": {"graded": len(graded), "duplicated": len(dup), "memorized_by_kind": by_kind, "ladder": ladder},
        "ordinary_median_ratio": float(np.median([r["ratio"] for r in rows if r["kind"] == "ordinary"] or [np.nan])),
        "n_memorized": len(mem), "n_ordinary": len(ordinary),
    }


def realism_verdicts(r: dict) -> dict:
    """Whether each target of :data:`TARGETS` is met by :func:`realism`'s result (R1: None without both groups)."""
    r1, u, r3, r4 = r["R1"], r["R2"], r["R3"], r["R4"]
    return {
        "R1": None if r1 is None else bool(min(r1) > TARGETS["R1"]["every_step_above"]
                                           and float(np.median(r1)) >= TARGETS["R1"]["median_at_least"]),
        "R2": bool(u["copy_rate"] <= TARGETS["R2"]["copy_rate_at_most"]),
        "R3": all(v <= TARGETS["R3"]["copy_rate_at_most"] for v in r3.values() if v is not None),
        "R4": bool(r4["graded"] >= TARGETS["R4"]["graded_at_least"]
                   and min(r4["memorized_by_kind"].values()) >= TARGETS["R4"]["memorized_per_kind_at_least"]),
    }


def format_realism(r: dict, title: str) -> str:
    """A markdown section: the targets, what was measured and whether each is met, then the duplication ladder."""
    verdicts = realism_verdicts(r)
    rule = criterion_of(r.get("labels", "verbatim")).rule
    lines = [f"## {title}", "", f"Copy criterion: nearest / second-nearest distinct training {r['criterion']} {rule}; "
             f"a prompt is memorized at rate >= {MEMORIZED_RATE}.", "",
             "| check | target | measured | met |", "|---|---|---|---|"]
    r1 = r["R1"]
    if r1 is None:
        lines.append("| R1 per-step gap AUROC | > 0.5 every step, median >= 0.8 | "
                     f"no memorized ({r['n_memorized']}) or ordinary ({r['n_ordinary']}) prompts | no |")
    else:
        ok = verdicts["R1"]
        lines.append(f"| R1 per-step gap AUROC ({r['n_memorized']} memorized vs {r['n_ordinary']} ordinary) | > 0.5 every "
                     f"step, median >= 0.8 | min {min(r1):.2f}, median {float(np.median(r1)):.2f} | {'yes' if ok else 'no'} |")
    u = r["R2"]
    lines.append(f"| R2 unconditional copies ({u['seeds']} seeds) | <= 1% | {100 * u['copy_rate']:.1f}% (of a duplicated "
                 f"image: {100 * u['duplicated_copy_rate']:.1f}%; median ratio {u['median_ratio']:.2f}) | "
                 f"{'yes' if verdicts['R2'] else 'no'} |")
    r3 = r["R3"]
    lines.append(f"| R3 ordinary / held-out copy rate (max) | 0 | {r3['ordinary']} / {r3['heldout']} | "
                 f"{'yes' if verdicts['R3'] else 'no'} |")
    r4 = r["R4"]
    lines.append(f"| R4 graded; memorized per kind | >= 6 graded; >= 4 per kind | {r4['graded']} of {r4['duplicated']} "
                 f"graded; {r4['memorized_by_kind']} | {'yes' if verdicts['R4'] else 'no'} |")
    shared = any("companions" in row for row in r4["ladder"])  # a column only where some caption has companions
    lines += ["", f"Ordinary prompts' median ratio: {r['ordinary_median_ratio']:.2f}", "",
              "| kind | copies | " + "companions (duplicate's share of its caption) | " * shared + "share per image | "
              "views per image | memorization rate | median ratio | nearest is target |", "|---" * (7 + shared) + "|"]
    for row in r4["ladder"]:
        views = f"{row['views']:.0f}" if "views" in row else "-"
        mix = f"{row['companions']} ({row['caption_share']:.2f}) | " if "companions" in row else "0 (1.00) | "
        lines.append(f"| {row['kind']} | {row['duplication']} | {mix * shared}{100 * row['share']:.3f}% | {views} | "
                     f"{row['rate']:.2f} | {row['median_ratio']:.2f} | {row['nearest_target_rate']:.2f} |")
    if r1 is not None:
        lines += ["", "R1 per step (first to last): " + " ".join(f"{a:.2f}" for a in r1)]
    return "\n".join(lines) + "\n"


def append_markdown(path, text: str) -> None:
    """Append ``text`` (and a blank line) to the markdown file ``path``, creating its folder: results of several
    testbeds or snapshots collect in one file."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(text + "\n")
