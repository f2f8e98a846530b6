"""Does a testbed behave like Stable Diffusion? The realism checks R1-R4, measured by generation.

    python benchmarks/bench_realism.py [--model TESTBED] [--seeds 8] [--uncond-seeds 128] [--out FILE.md]

- R1: per-step AUROC of the guidance-gap norm |eps_c - eps_u| (50 DDIM steps, w = 7.5), memorized prompts
  (target rate >= 0.5) against ordinary ones (copy rate <= 0.1), each prompt's mean over its seeds. On SD
  v1.4 (Wen et al.'s released notebook) the memorized gap stays above the ordinary one at every step.
- R2: unconditional generations (no prompt, no guidance) that copy a training image, and a duplicated one.
- R3: copy rates of ordinary and held-out prompts.
- R4: graded memorization: duplicated prompts with rates strictly between 0.1 and 0.9, and memorized prompts
  (rate >= 0.5) of each kind, by duplication count.

Ground truth is the field's criterion (:func:`memgeo.testbed.truth.nearest_ratios`: nearest / second-nearest
distinct training canvas below 1/3, Gu et al.; a local prompt's duplicated cell among the cells at its position); the traces of R1 come from the same generations. Per rung of the duplication ladder: each image's share of
the training draws, its views so far, the mean rate and the median ratio (the sweep's curve).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

from memgeo.detect import auroc
from memgeo.sampling import GuidanceNormTracker, ddim_sample, initial_noise
from memgeo.testbed import load_testbed, testbed_data, testbed_metadata
from memgeo.testbed.canvas import KINDS, to_images
from memgeo.testbed.truth import nearest_ratios

#: The smallest setting, run by the test suite ('{tmp}' is a scratch folder); None where it takes over 30 s.
SMOKE = ["--seeds", "1", "--steps", "4", "--uncond-seeds", "2", "--max-prompts", "6", "--out", "{tmp}/realism.md"]


def measure(model, data, prompts, *, seeds: int, n_steps: int, guidance_scale: float, uncond_seeds: int,
            progress: bool = False) -> dict:
    """Rates and median ratios per prompt, gap traces ``[n_steps]`` per prompt (mean over seeds), and the
    unconditional copy rates, by the field's criterion (:func:`memgeo.testbed.truth.nearest_ratios`)."""
    from tqdm.auto import tqdm

    level = "canvas"
    x_T = initial_noise(model, seeds)
    n_items = len(data.items)
    rows = []
    for p in tqdm(prompts, desc="prompts", disable=not progress):
        res = ddim_sample(model, p["text"], x_T, n_steps=n_steps, guidance_scale=guidance_scale,
                          trackers={"gap": GuidanceNormTracker()})
        c = nearest_ratios(data, p, to_images(res.denoised.float()), level=level)
        rate = c["target_copy"] if p["kind"] == "memorized" else c["copy"]
        per_image = p.get("duplication", 0) / max(1, len(p["targets"]) if p.get("memorization") == "template" else 1)
        rows.append({"text": p["text"], "kind": p["kind"], "memorization": p.get("memorization"),
                     "duplication": p.get("duplication"), "share": per_image / n_items, "rate": float(rate.double().mean()),
                     "copy_rate": float(c["copy"].double().mean()), "ratio": float(c["ratio"].median()),
                     "nearest_target_rate": float(c["nearest_is_target"].double().mean()),
                     "gap": res.trace["gap"].double().mean(1).tolist()})
    un = ddim_sample(model, None, initial_noise(model, list(range(10_000, 10_000 + uncond_seeds))), n_steps=n_steps,
                     guidance_scale=1.0).denoised
    duplicated = sorted({i for p in data.prompts if p["kind"] == "memorized" for i in p["targets"]})
    c = nearest_ratios(data, {"targets": duplicated}, to_images(un.float()), level="canvas")
    return {"criterion": level, "prompts": rows,
            "unconditional": {"seeds": uncond_seeds, "copy_rate": float(c["copy"].double().mean()),
                              "duplicated_copy_rate": float(c["target_copy"].double().mean()),
                              "median_ratio": float(c["ratio"].median())}}


def realism(result: dict, *, views: float | None = None) -> dict:
    """R1-R4 from :func:`measure`; ``views``: training draws so far, to turn each rung's share into views."""
    rows = result["prompts"]
    mem = [r for r in rows if r["kind"] == "memorized" and r["rate"] >= 0.5]
    ordinary = [r for r in rows if r["kind"] == "ordinary" and r["copy_rate"] <= 0.1]
    r1 = None
    if mem and ordinary:
        y = np.array([1] * len(mem) + [0] * len(ordinary))
        gaps = np.array([r["gap"] for r in mem + ordinary])  # [prompts, steps]
        r1 = [auroc(y, gaps[:, s]) for s in range(gaps.shape[1])]
    dup = [r for r in rows if r["kind"] == "memorized"]
    graded = [r for r in dup if 0.1 < r["rate"] < 0.9]
    by_kind = {k: sum(r["rate"] >= 0.5 for r in dup if r["memorization"] == k) for k in KINDS}
    rungs = defaultdict(list)
    for r in dup:
        rungs[(r["memorization"], r["duplication"])].append(r)
    ladder = [{"kind": k, "duplication": d, "share": rs[0]["share"],
               **({"views": rs[0]["share"] * views} if views else {}),
               "rate": float(np.mean([r["rate"] for r in rs])), "median_ratio": float(np.median([r["ratio"] for r in rs])),
               "nearest_target_rate": float(np.mean([r["nearest_target_rate"] for r in rs]))}
              for (k, d), rs in sorted(rungs.items(), key=lambda kv: (kv[0][0], -kv[1][0]["share"]))]
    return {
        "criterion": result.get("criterion"), "R1": r1, "R2": result["unconditional"],
        "R3": {k: max((r["copy_rate"] for r in rows if r["kind"] == k), default=None) for k in ("ordinary", "heldout")},
        "R4": {"graded": len(graded), "duplicated": len(dup), "memorized_by_kind": by_kind, "ladder": ladder},
        "ordinary_median_ratio": float(np.median([r["ratio"] for r in rows if r["kind"] == "ordinary"] or [np.nan])),
        "n_memorized": len(mem), "n_ordinary": len(ordinary),
    }


def format_realism(r: dict, title: str) -> str:
    lines = [f"## {title}", "", f"Copy criterion: nearest / second-nearest distinct training {r['criterion']} below 1/3 "
             "(Gu et al.); a prompt is memorized at rate >= 0.5.", "",
             "| check | target | measured | met |", "|---|---|---|---|"]
    r1 = r["R1"]
    if r1 is None:
        lines.append("| R1 per-step gap AUROC | > 0.5 every step, median >= 0.8 | "
                     f"no memorized ({r['n_memorized']}) or ordinary ({r['n_ordinary']}) prompts | no |")
    else:
        ok = min(r1) > 0.5 and float(np.median(r1)) >= 0.8
        lines.append(f"| R1 per-step gap AUROC ({r['n_memorized']} memorized vs {r['n_ordinary']} ordinary) | > 0.5 every "
                     f"step, median >= 0.8 | min {min(r1):.2f}, median {float(np.median(r1)):.2f} | {'yes' if ok else 'no'} |")
    u = r["R2"]
    lines.append(f"| R2 unconditional copies ({u['seeds']} seeds) | <= 1% | {100 * u['copy_rate']:.1f}% (of a duplicated "
                 f"image: {100 * u['duplicated_copy_rate']:.1f}%; median ratio {u['median_ratio']:.2f}) | "
                 f"{'yes' if u['copy_rate'] <= 0.01 else 'no'} |")
    r3 = r["R3"]
    ok3 = all(v == 0 for v in r3.values() if v is not None)
    lines.append(f"| R3 ordinary / held-out copy rate (max) | 0 | {r3['ordinary']} / {r3['heldout']} | {'yes' if ok3 else 'no'} |")
    r4 = r["R4"]
    ok4 = r4["graded"] >= 6 and min(r4["memorized_by_kind"].values()) >= 4
    lines.append(f"| R4 graded; memorized per kind | >= 6 graded; >= 4 per kind | {r4['graded']} of {r4['duplicated']} "
                 f"graded; {r4['memorized_by_kind']} | {'yes' if ok4 else 'no'} |")
    lines += ["", f"Ordinary prompts' median ratio: {r['ordinary_median_ratio']:.2f}", "",
              "| kind | copies | share per image | views per image | memorization rate | median ratio | nearest is target |",
              "|---|---|---|---|---|---|---|"]
    for row in r4["ladder"]:
        views = f"{row['views']:.0f}" if "views" in row else "-"
        lines.append(f"| {row['kind']} | {row['duplication']} | {100 * row['share']:.3f}% | {views} | {row['rate']:.2f} | "
                     f"{row['median_ratio']:.2f} | {row['nearest_target_rate']:.2f} |")
    if r1 is not None:
        lines += ["", "R1 per step (first to last): " + " ".join(f"{a:.2f}" for a in r1)]
    return "\n".join(lines) + "\n"


def append_markdown(path, text: str) -> None:
    """Append ``text`` (and a blank line) to the markdown file ``path``, creating its folder."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a") as f:
        f.write(text + "\n")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="testbed folder (default: the embedded testbed)")
    ap.add_argument("--seeds", type=int, default=8)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--guidance", type=float, default=7.5)
    ap.add_argument("--uncond-seeds", type=int, default=128)
    ap.add_argument("--max-prompts", type=int, help="at most this many prompts (a quick look)")
    ap.add_argument("--title", help="heading of the table (default: the testbed's regime and steps)")
    ap.add_argument("--out", help="append the table to this markdown file")
    ap.add_argument("--json", help="write R1-R4 and the per-prompt numbers to this file")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    model = load_testbed(args.model)
    folder = Path(args.model) if args.model else None
    meta = testbed_metadata(folder)
    data = testbed_data(folder)
    prompts = data.prompts[: args.max_prompts] if args.max_prompts else data.prompts
    result = measure(model, data, prompts, seeds=args.seeds, n_steps=args.steps, guidance_scale=args.guidance,
                     uncond_seeds=args.uncond_seeds, progress=True)
    r = realism(result, views=meta["steps"] * meta["batch_size"])
    regime = "sd" if meta["data"].get("augment") else "small-data"
    title = args.title or (f"{regime} regime, {meta['steps']} steps ({len(data.images)} distinct images, "
                           f"{meta['n_training_items']} items), {args.seeds} seeds")
    text = format_realism(r, title)
    print(text)
    if args.out:
        append_markdown(args.out, text)
    if args.json:
        Path(args.json).write_text(json.dumps({"title": title, "steps": meta["steps"], **r, "raw": result}, indent=1))


if __name__ == "__main__":
    main()
